"""History: the bounded per-property telemetry rings the UIs chart."""

from __future__ import annotations

from typing import Any

import pytest

from cloudservice.errors import StoreError
from cloudservice.history import AddResult, History
from tests.unit.conftest import MakeStore

JSONObject = dict[str, Any]


def entry(value: float = 1.0, count: int = 3) -> JSONObject:
    return {"min": value - 1, "max": value + 1, "mean": value, "count": count, "last": value}


def summary(start: int, end: int, **props: JSONObject) -> JSONObject:
    return {"window": {"start": start, "end": end}, "data": props}


def ends(h: History, prop: str = "t", since_ms: int | None = None) -> list[int]:
    return [p["end"] for p in h.series("ns", "dev", prop, since_ms).get(prop, [])]


def test_point_shape() -> None:
    h = History()
    assert h.add("ns", "dev", summary(1000, 2000, t=entry(20.5, 7))) == AddResult(kept=1)
    assert h.series("ns", "dev") == {
        "t": [{"start": 1000, "end": 2000, "min": 19.5, "max": 21.5, "mean": 20.5, "count": 7, "last": 20.5}]
    }


@pytest.mark.parametrize(
    ("max_points", "adds", "kept_ends"),
    [
        (3, 2, [1, 2]),
        (3, 3, [1, 2, 3]),
        (3, 5, [3, 4, 5]),  # the oldest go first
        (1, 4, [4]),
    ],
)
def test_ring_is_bounded(max_points: int, adds: int, kept_ends: list[int]) -> None:
    h = History(max_points)
    for i in range(1, adds + 1):
        h.add("ns", "dev", summary(i - 1, i, t=entry()))
    assert ends(h) == kept_ends


@pytest.mark.parametrize(
    ("windows", "kept_ends", "stale"),
    [
        ([(0, 10), (10, 20), (20, 30)], [10, 20, 30], 0),
        (
            [(0, 10), (10, 20), (0, 10), (10, 20), (20, 30)],
            [10, 20, 30],
            2,
        ),  # an outbox flush after reconnect
        ([(0, 10), (0, 10)], [10], 1),  # the same window twice
        ([(10, 20), (0, 5)], [20], 1),  # older than the last kept
        ([(0, 20), (15, 20)], [20], 1),  # same end, other start: not newer
    ],
)
def test_resends_are_dropped(windows: list[tuple[int, int]], kept_ends: list[int], stale: int) -> None:
    h = History()
    results = [h.add("ns", "dev", summary(s, e, t=entry())) for s, e in windows]
    assert ends(h) == kept_ends
    assert sum(r.stale for r in results) == stale
    assert sum(r.kept for r in results) == len(kept_ends)


def test_staleness_is_per_property() -> None:
    h = History()
    h.add("ns", "dev", summary(0, 20, a=entry()))
    assert h.add("ns", "dev", summary(0, 10, a=entry(), b=entry())) == AddResult(kept=1, stale=1)
    assert ends(h, "a") == [20] and ends(h, "b") == [10]


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "x",
        {},
        {"max": 1, "mean": 1, "count": 1, "last": 1},  # no min
        {**entry(), "mean": "1"},
        {**entry(), "last": None},
        {**entry(), "min": True},  # a bool is not a reading
        {**entry(), "mean": float("nan")},
        {**entry(), "max": float("inf")},
        {**entry(), "count": 0},
        {**entry(), "count": 2.0},
        {**entry(), "min": 5, "max": 4},
    ],
)
def test_malformed_entries_are_rejected_alone(bad: Any) -> None:
    h = History()
    result = h.add("ns", "dev", summary(0, 10, good=entry(), bad=bad))
    assert result == AddResult(kept=1, rejected=1)
    assert list(h.series("ns", "dev")) == ["good"]


@pytest.mark.parametrize(
    ("summary_", "rejected"),
    [
        ({"data": {"t": entry()}}, 1),  # no window
        ({"window": {"start": 0}, "data": {"t": entry(), "u": entry()}}, 2),
        ({"window": {"start": 10, "end": 5}, "data": {"t": entry()}}, 1),  # ends before it starts
        ({"window": {"start": -1, "end": 5}, "data": {"t": entry()}}, 1),
        ({"window": {"start": 0.5, "end": 5}, "data": {"t": entry()}}, 1),
        ({"window": {"start": 0, "end": 5}}, 1),  # no data
        ({"window": {"start": 0, "end": 5}, "data": []}, 1),
        ("not an object", 1),
    ],
)
def test_malformed_summaries_are_rejected_whole(summary_: Any, rejected: int) -> None:
    h = History()
    assert h.add("ns", "dev", summary_) == AddResult(rejected=rejected)
    assert not h.known("ns", "dev")
    assert h.series("ns", "dev") == {}


@pytest.mark.parametrize("name", ["", "x" * 254])
def test_bad_property_names_are_rejected(name: str) -> None:
    h = History()
    assert h.add("ns", "dev", {"window": {"start": 0, "end": 1}, "data": {name: entry()}}).rejected == 1


def test_properties_per_device_are_bounded() -> None:
    h = History(max_properties=2)
    assert h.add("ns", "dev", summary(0, 1, a=entry(), b=entry(), c=entry())) == AddResult(kept=2, rejected=1)
    # Known properties keep being recorded.
    assert h.add("ns", "dev", summary(1, 2, a=entry(), c=entry())) == AddResult(kept=1, rejected=1)
    assert list(h.series("ns", "dev")) == ["a", "b"]


@pytest.mark.parametrize(
    ("since_ms", "kept_ends"),
    [
        (None, [10, 20, 30]),
        (0, [10, 20, 30]),
        (10, [20, 30]),  # strictly after: poll with the last end you have
        (15, [20, 30]),
        (30, []),
        (99, []),
    ],
)
def test_since_filter(since_ms: int | None, kept_ends: list[int]) -> None:
    h = History()
    for end in (10, 20, 30):
        h.add("ns", "dev", summary(end - 10, end, t=entry()))
    assert ends(h, since_ms=since_ms) == kept_ends
    # A property with nothing new is still listed.
    assert "t" in h.series("ns", "dev", since_ms=since_ms)


def test_series_filters_and_isolation() -> None:
    h = History()
    h.add("ns", "dev", summary(0, 10, b=entry(), a=entry()))
    h.add("ns", "other", summary(0, 10, c=entry()))
    h.add("ns2", "dev", summary(0, 10, d=entry()))
    assert list(h.series("ns", "dev")) == ["a", "b"]  # sorted by name
    assert list(h.series("ns", "dev", "b")) == ["b"]
    assert h.series("ns", "dev", "c") == {}  # another device's property
    assert h.series("ns", "nobody") == {}
    # The returned points are copies: changing them does not change the history.
    h.series("ns", "dev", "a")["a"][0]["min"] = 999
    assert h.series("ns", "dev", "a")["a"][0]["min"] == 0.0


async def test_forget() -> None:
    h = History()
    h.add("ns", "dev", summary(0, 10, t=entry()))
    h.add("ns", "keep", summary(0, 10, t=entry()))
    await h.forget("ns", "dev")
    await h.forget("ns", "never-seen")
    assert not h.known("ns", "dev") and h.known("ns", "keep")
    assert h.series("ns", "dev") == {}
    # A device added again after forget starts afresh: an old window is no longer stale.
    assert h.add("ns", "dev", summary(0, 5, t=entry())).kept == 1


@pytest.mark.parametrize("kwargs", [{"max_points": 0}, {"max_properties": 0}, {"max_devices": 0}])
def test_bounds_must_be_positive(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be at least 1"):
        History(**kwargs)


# -- persistence: History over a real store (SQLite file and PostgreSQL) -------------------------------


async def test_points_survive_a_restart(make_store: MakeStore) -> None:
    store = await make_store()
    h = History(store=store)
    results = await h.add_many(
        [
            ("ns", "dev", summary(0, 10, t=entry(1.0), p=entry(5.0))),
            ("ns", "dev", summary(10, 20, t=entry(2.0))),
            ("ns", "other", summary(0, 10, t=entry(9.0))),
        ]
    )
    assert results == [AddResult(kept=2), AddResult(kept=1), AddResult(kept=1)]
    # A new History on the same store (a restarted cloud) reads it back on first use.
    again = History(store=await make_store())
    assert not again.known("ns", "dev")
    await again.load("ns", "dev")
    assert again.series("ns", "dev") == h.series("ns", "dev")
    assert [p["end"] for p in again.series("ns", "dev", "t")["t"]] == [10, 20]
    # What was already stored is stale after the restart too: an edge's resend adds nothing.
    assert (await again.add_many([("ns", "dev", summary(10, 20, t=entry(2.0)))])) == [AddResult(stale=1)]


async def test_store_rows_are_pruned_to_the_ring(make_store: MakeStore) -> None:
    store = await make_store()
    h = History(10, store=store)
    for i in range(1, 36):
        await h.add_many([("ns", "dev", summary(i * 10, i * 10 + 10, t=entry(float(i))))])
    rows = await store.telemetry("ns", "dev")
    # Pruned every max_points // 10 points once the ring is full: never more than a prune step over.
    assert 10 <= len(rows) <= 11
    assert rows[-1].point.end == 360
    await h.forget("ns", "dev")
    assert await store.telemetry("ns", "dev") == []


async def test_devices_beyond_the_cache_are_reloaded(make_store: MakeStore) -> None:
    h = History(store=await make_store(), max_devices=2)
    for dev in ("a", "b", "c"):
        await h.add_many([("ns", dev, summary(0, 10, t=entry()))])
    assert not h.known("ns", "a")  # evicted, least recently used
    await h.load("ns", "a")
    assert ends(h, since_ms=None) == [] and h.series("ns", "a")["t"][0]["end"] == 10


async def test_a_failed_write_is_not_acknowledged_and_can_be_resent(make_store: MakeStore) -> None:
    store = await make_store()
    h = History(store=store)
    await h.add_many([("ns", "dev", summary(0, 10, t=entry()))])
    await store.close()
    with pytest.raises(StoreError):
        await h.add_many([("ns", "dev", summary(10, 20, t=entry()))])
    # The device was evicted, so the resend (to a working store) is not mistaken for a stale duplicate.
    h.store = await make_store()
    assert await h.add_many([("ns", "dev", summary(10, 20, t=entry()))]) == [AddResult(kept=1)]

"""The telemetry aggregator: table-driven tests of its pure window logic, and the real process against a
real Mosquitto broker (twin updates in, one summary per device and window out)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from edgeservice.workloads.adapter import EXIT_CONFIG, ConfigError
from edgeservice.workloads.aggregator import (
    Aggregator,
    Sample,
    Window,
    data_topic,
    device_of_twin_topic,
    parse_config,
    parse_number,
    samples_of,
    summary_payload,
)
from tests.services import require_mosquitto
from tests.workloads import run_workload, stop_workload

BROKER = ("127.0.0.1", 1883)
TIMEOUT = 20.0

# --- pure window logic -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([], {}),
        ([("t", 12.5, 1)], {"t": {"min": 12.5, "max": 12.5, "mean": 12.5, "count": 1, "last": 12.5}}),
        (
            [("t", 1.0, 1), ("t", 3.0, 2), ("t", 2.0, 3)],
            {"t": {"min": 1.0, "max": 3.0, "mean": 2.0, "count": 3, "last": 2.0}},
        ),
        # last follows the value's timestamp, not the arrival order; a tie goes to the later one
        (
            [("t", 5.0, 20), ("t", -1.0, 10)],
            {"t": {"min": -1.0, "max": 5.0, "mean": 2.0, "count": 2, "last": 5.0}},
        ),
        (
            [("t", 1.0, 7), ("t", 2.0, 7)],
            {"t": {"min": 1.0, "max": 2.0, "mean": 1.5, "count": 2, "last": 2.0}},
        ),
        # properties are independent
        (
            [("a", 1.0, 1), ("b", 10.0, 1), ("a", 3.0, 2)],
            {
                "a": {"min": 1.0, "max": 3.0, "mean": 2.0, "count": 2, "last": 3.0},
                "b": {"min": 10.0, "max": 10.0, "mean": 10.0, "count": 1, "last": 10.0},
            },
        ),
    ],
)
def test_window_summary(samples: list[tuple[str, float, int]], expected: dict[str, Any]) -> None:
    w = Window()
    for prop, value, ts in samples:
        w.add(prop, value, ts)
    assert w.summary() == expected
    assert w.empty() is (not samples)
    w.reset()
    assert w.summary() == {} and w.empty()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12.5", 12.5),
        (" 7 ", 7.0),
        ("-3e2", -300.0),
        (4, 4.0),
        (2.5, 2.5),
        ("true", None),
        (True, None),
        ("open", None),
        ("nan", None),
        ("inf", None),
        ("", None),
        (None, None),
        ({"v": 1}, None),
    ],
)
def test_parse_number(value: Any, expected: float | None) -> None:
    assert parse_number(value) == expected


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("$hw/events/device/pump-1/twin/update", "pump-1"),
        ("$hw/events/device/pump-1/twin/update/delta", None),
        ("$hw/events/device/pump-1/state/update", None),
        ("$hw/events/device//twin/update", None),
        ("$ke/events/device/pump-1/data/update", None),
    ],
)
def test_device_of_twin_topic(topic: str, expected: str | None) -> None:
    assert device_of_twin_topic(topic) == expected


def _actual(value: Any, ts: int | None = None) -> dict[str, Any]:
    return {"actual": {"value": value, "metadata": {} if ts is None else {"timestamp": ts}}}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            {"event_id": "e", "timestamp": 5, "twin": {"t": _actual("12.5", 9), "on": _actual("true", 9)}},
            [Sample("t", 12.5, 9)],
        ),
        ({"timestamp": 5, "twin": {"t": _actual("1")}}, [Sample("t", 1.0, 5)]),  # the message's timestamp
        ({"twin": {"t": {"expected": {"value": "3"}}}}, []),  # desired values are not readings
        ({"twin": {"t": "12", "u": _actual("2", 1)}}, [Sample("u", 2.0, 1)]),  # a bad property is skipped
        ({"twin": []}, []),
        ([1, 2], []),
        ("not json", []),
    ],
)
def test_samples_of(payload: Any, expected: list[Sample]) -> None:
    raw = payload if isinstance(payload, str) else json.dumps(payload)
    assert samples_of(raw.encode()) == expected


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"window": 1.0}, "broker"),
        ({"broker": "http://x", "window": 1.0}, "broker"),
        ({"broker": "mqtt://127.0.0.1:1883"}, "window"),
        ({"broker": "mqtt://127.0.0.1:1883", "window": "10"}, "window"),
        ({"broker": "mqtt://127.0.0.1:1883", "window": 0}, "window"),
        ({"broker": "mqtt://127.0.0.1:1883", "window": True}, "window"),
        ({"broker": "mqtt://127.0.0.1:1883", "window": 1, "devices": "pump-1"}, "devices"),
        ({"broker": "mqtt://127.0.0.1:1883", "window": 1, "devices": [1]}, "devices"),
        ([], ""),
    ],
)
def test_parse_config_names_the_field(obj: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(obj)
    assert info.value.field == field


def test_parse_config() -> None:
    cfg = parse_config({"broker": "mqtt://10.0.0.1:1884", "window": 2, "devices": ["a", "b"]})
    assert (cfg.broker.host, cfg.broker.port, cfg.window_s, cfg.devices) == (
        "10.0.0.1",
        1884,
        2.0,
        frozenset({"a", "b"}),
    )
    assert parse_config({"broker": "mqtt://h", "window": 0.5}).devices is None


def test_summary_payload_shape() -> None:
    w = Window()
    w.add("t", 4.0, 1)
    assert summary_payload(w, start=100, end=600, event_id="e", timestamp=600) == {
        "event_id": "e",
        "timestamp": 600,
        "window": {"start": 100, "end": 600},
        "data": {"t": {"min": 4.0, "max": 4.0, "mean": 4.0, "count": 1, "last": 4.0}},
    }


async def test_flush_publishes_one_summary_per_device_with_samples_and_filters_devices() -> None:
    agg = Aggregator(parse_config({"broker": "mqtt://h", "window": 1, "devices": ["a", "b"]}))
    msg = json.dumps({"timestamp": 1, "twin": {"t": _actual("2")}})
    agg.add("a", msg)
    agg.add("a", msg)
    agg.add("c", msg)  # not ours
    agg.add("b", json.dumps({"timestamp": 1, "twin": {"on": _actual("true")}}))  # nothing numeric
    assert agg.flush() == 1
    topic, data = await agg.outbox.get()
    assert topic == data_topic("a")
    assert json.loads(data)["data"] == {"t": {"min": 2.0, "max": 2.0, "mean": 2.0, "count": 2, "last": 2.0}}
    assert agg.flush() == 0  # the next window is empty: nothing is published


# --- the process against Mosquitto -------------------------------------------------------------------------


@pytest.fixture
async def mqtt() -> AsyncIterator[aiomqtt.Client]:
    require_mosquitto()
    async with aiomqtt.Client(*BROKER, identifier=f"test-{uuid.uuid4().hex[:8]}") as client:
        yield client


def _update(values: dict[str, str]) -> bytes:
    ts = int(time.time() * 1000)
    twin = {p: {"actual": {"value": v, "metadata": {"timestamp": ts}}} for p, v in values.items()}
    return json.dumps({"event_id": uuid.uuid4().hex, "timestamp": ts, "twin": twin}).encode()


async def _publish(client: aiomqtt.Client, device: str, values: dict[str, str]) -> None:
    await client.publish(f"$hw/events/device/{device}/twin/update", _update(values), qos=1)


async def _next_summary(client: aiomqtt.Client, device: str, seen: list[str]) -> dict[str, Any]:
    """The next summary of ``device``; every summary topic that arrives meanwhile goes into ``seen``."""
    async with asyncio.timeout(TIMEOUT):
        async for message in client.messages:
            seen.append(message.topic.value)
            if message.topic.value == data_topic(device):
                assert isinstance(message.payload, bytes)
                result: dict[str, Any] = json.loads(message.payload)
                return result
    raise AssertionError("unreachable")


async def test_aggregator_publishes_window_summaries(mqtt: aiomqtt.Client, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    warm, device, other = f"warm-{tag}", f"pump-{tag}", f"other-{tag}"
    config = tmp_path / "aggregator.json"
    config.write_text(
        json.dumps({"broker": f"mqtt://{BROKER[0]}:{BROKER[1]}", "window": 0.5, "devices": [warm, device]})
    )
    await mqtt.subscribe("$ke/events/device/+/data/update", qos=1)
    seen: list[str] = []
    proc = await run_workload("aggregator", config)
    try:
        # Until the aggregator has subscribed, updates are lost: feed a warm-up device until its first
        # summary shows the aggregator is listening.
        async def feed() -> None:
            while True:
                await _publish(mqtt, warm, {"t": "1"})
                await asyncio.sleep(0.1)

        feeder = asyncio.create_task(feed(), name="test.feed")
        try:
            await _next_summary(mqtt, warm, seen)
        finally:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)

        # A device not in the config's list is not summarised; non-numeric values are ignored.
        await _publish(mqtt, other, {"temperature": "99"})
        values = ["20.5", "18", "23.5", "22"]
        for v in values:
            await _publish(mqtt, device, {"temperature": v, "running": "true"})

        # The updates normally land in one window; should a boundary fall between them, the
        # consecutive summaries are merged, which must give the same figures.
        summaries: list[dict[str, Any]] = []
        while sum(s["data"]["temperature"]["count"] for s in summaries) < len(values):
            summaries.append(await _next_summary(mqtt, device, seen))
        stats = [s["data"]["temperature"] for s in summaries]
        assert all(set(s["data"]) == {"temperature"} for s in summaries)  # "running" is not a number
        assert min(s["min"] for s in stats) == 18.0
        assert max(s["max"] for s in stats) == 23.5
        assert sum(s["count"] for s in stats) == 4
        assert sum(s["mean"] * s["count"] for s in stats) / 4 == pytest.approx(21.0)
        assert stats[-1]["last"] == 22.0
        for s in summaries:
            uuid.UUID(s["event_id"])
            assert s["window"]["start"] < s["window"]["end"] <= s["timestamp"]

        # One more window with a sample: any summary of the excluded device would have come by now.
        await _publish(mqtt, device, {"temperature": "1"})
        later = await _next_summary(mqtt, device, seen)
        assert later["data"]["temperature"]["count"] == 1
        assert later["window"]["start"] >= summaries[-1]["window"]["end"]
        assert data_topic(other) not in seen
    finally:
        err = await stop_workload(proc, tmp_path / "aggregator.log")
    assert proc.returncode == 0, err.decode()


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ('{"window": 1}', "broker"),
        ('{"broker": "mqtt://127.0.0.1:1883", "window": -1}', "window"),
        ('{"broker": "mqtt://127.0.0.1:1883", "window": 1, "devices": 3}', "devices"),
        ("not json", "not JSON"),
    ],
)
async def test_bad_config_exits_2_naming_the_field(tmp_path: Path, config: str, needle: str) -> None:
    path = tmp_path / "aggregator.json"
    path.write_text(config)
    proc = await run_workload("aggregator", path)
    try:
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        err = await stop_workload(proc, tmp_path / "aggregator.log")
    assert proc.returncode == EXIT_CONFIG
    assert needle in err.decode()

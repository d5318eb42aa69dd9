"""Twin sync rules (KubeEdge's dtmanager/twin.go): newer wins, stale is ignored, the edge wins a conflict,
edge-local updates are all or nothing, and the MQTT payloads have KubeEdge's shapes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.devices import ModelProperty
from app.errors import ValidationError
from app.resources import JSONObject
from app.twin import (
    BAD_REQUEST_CODE,
    CONFLICT,
    NO_VERSION,
    STALE,
    Twin,
    TwinPatch,
    TwinUpdate,
    TwinValue,
    Version,
    apply_cloud_update,
    apply_edge_update,
    check_sync_version,
    compute_delta,
    delta_payload,
    document,
    get_result_payload,
    parse_update,
    result_payload,
    stamp_desired,
    status_twins,
    twins_from_json,
    twins_to_json,
    version_from_metadata,
)

NOW = 1_700_000_000_000


def _twin(
    expected: str | None, actual: str | None, ev: tuple[int, int] = (0, 0), av: tuple[int, int] = (0, 0)
) -> Twin:
    return Twin(
        expected=None if expected is None else TwinValue(expected, 1),
        actual=None if actual is None else TwinValue(actual, 1),
        expected_version=Version(*ev),
        actual_version=Version(*av),
        type="INT",
    )


def _cloud(name: str, value: str, version: tuple[int, int] | None) -> TwinUpdate:
    v = None if version is None else Version(*version)
    return TwinUpdate("e1", NOW, {name: TwinPatch(expected=value, expected_version=v)})


VERSIONS: list[tuple[str, tuple[int, int], tuple[int, int] | None, str | None]] = [
    ("newer cloud", (1, 0), (2, 0), None),
    ("same version (redelivery)", (2, 1), (2, 1), None),
    ("newer cloud, edge seen", (1, 3), (2, 3), None),
    ("stale cloud", (3, 0), (2, 0), STALE),
    ("edge changed offline", (1, 2), (2, 1), CONFLICT),
    ("stale and conflicting", (3, 2), (2, 1), STALE),
    ("no version", (0, 0), None, NO_VERSION),
]


@pytest.mark.parametrize(
    ("local", "incoming", "why"), [c[1:] for c in VERSIONS], ids=[c[0] for c in VERSIONS]
)
def test_check_sync_version(
    local: tuple[int, int], incoming: tuple[int, int] | None, why: str | None
) -> None:
    assert check_sync_version(Version(*local), None if incoming is None else Version(*incoming)) == why


CLOUD: list[tuple[str, Twin, TwinUpdate, str, str | None]] = [
    # (case, twin before, cloud update, expected value after, rejection reason prefix)
    ("newer wins", _twin("10", "10", (1, 0)), _cloud("sp", "20", (2, 0)), "20", None),
    ("stale ignored", _twin("30", "30", (3, 0)), _cloud("sp", "20", (2, 0)), "30", "expected: stale"),
    (
        "offline edge desired wins",
        _twin("15", "10", (1, 1)),
        _cloud("sp", "20", (2, 0)),
        "15",
        "expected: conflict",
    ),
    ("cloud saw edge change", _twin("15", "10", (1, 1)), _cloud("sp", "20", (2, 1)), "20", None),
    ("no version refused", _twin("10", "10", (1, 0)), _cloud("sp", "20", None), "10", "expected: no version"),
    ("wrong type refused", _twin("10", "10", (1, 0)), _cloud("sp", "hot", (2, 0)), "10", "expected: invalid"),
]


@pytest.mark.parametrize(
    ("before", "update", "after", "why"), [c[1:] for c in CLOUD], ids=[c[0] for c in CLOUD]
)
def test_apply_cloud_update(before: Twin, update: TwinUpdate, after: str, why: str | None) -> None:
    twins, delta, result = apply_cloud_update({"sp": before}, update, now=NOW)
    got = twins["sp"]
    assert got.expected is not None and got.expected.value == after
    if why is None:
        assert result.rejected == {} and result.to_cloud == {}
        assert got.expected_version == update.twin["sp"].expected_version
        assert got.expected == TwinValue(after, NOW)
        assert result.changed == {"sp": got}
        assert delta == ({"sp": after} if after != "10" else {})
    else:
        assert result.rejected["sp"].startswith(why)
        assert got == before  # untouched, versions included
        assert result.to_cloud == {"sp": before}  # the cloud is told the edge's state
        assert result.changed == {}


def test_refused_expected_skips_actual() -> None:
    before = _twin("15", "10", (1, 1), (0, 0))
    update = TwinUpdate(
        "e",
        NOW,
        {
            "sp": TwinPatch(
                expected="20", actual="99", expected_version=Version(2, 0), actual_version=Version(5, 0)
            )
        },
    )
    twins, _, result = apply_cloud_update({"sp": before}, update, now=NOW)
    assert twins["sp"] == before and "sp" in result.rejected


def test_cloud_update_adds_twin_with_type() -> None:
    update = TwinUpdate(
        "e", NOW, {"new": TwinPatch(expected="true", expected_version=Version(1, 0), type="BOOLEAN")}
    )
    twins, delta, result = apply_cloud_update({}, update, now=NOW)
    assert twins["new"] == Twin(
        expected=TwinValue("true", NOW), expected_version=Version(1, 0), type="BOOLEAN"
    )
    assert delta == {"new": "true"} and set(result.changed) == {"new"}


def test_untouched_properties_are_kept() -> None:
    twins = {"a": _twin("1", "1", (1, 0)), "b": _twin("2", "3", (1, 0))}
    new, delta, _ = apply_cloud_update(twins, _cloud("a", "5", (2, 0)), now=NOW)
    assert new["b"] == twins["b"] and delta == {"a": "5", "b": "2"}
    assert twins["a"].expected == TwinValue("1", 1)  # the input is not mutated


EDGE: list[tuple[str, TwinPatch, Twin]] = [
    ("desired set on site", TwinPatch(expected="15"), _twin("15", "10", (1, 1), (0, 4))),
    ("adapter reports actual", TwinPatch(actual="12"), _twin("12", "12", (1, 0), (0, 5))),
    ("both", TwinPatch(expected="13", actual="13"), _twin("13", "13", (1, 1), (0, 5))),
    (
        "versions in the message are ignored",
        TwinPatch(actual="11", actual_version=Version(9, 9)),
        _twin("12", "11", (1, 0), (0, 5)),
    ),
]


@pytest.mark.parametrize(("patch", "after"), [c[1:] for c in EDGE], ids=[c[0] for c in EDGE])
def test_apply_edge_update_bumps_edge_version(patch: TwinPatch, after: Twin) -> None:
    before = {"sp": _twin("12", "10", (1, 0), (0, 4))}
    twins, _, result = apply_edge_update(before, TwinUpdate("e", NOW, {"sp": patch}), now=NOW)
    got = twins["sp"]
    assert (got.expected_version, got.actual_version) == (after.expected_version, after.actual_version)
    assert (
        got.expected is not None and after.expected is not None and got.expected.value == after.expected.value
    )
    assert got.actual is not None and after.actual is not None and got.actual.value == after.actual.value
    assert result.code == 200 and result.changed == {"sp": got} and result.to_cloud == {"sp": got}


PROPS = {
    "sp": ModelProperty("sp", "INT", "ReadWrite", minimum="0", maximum="100"),
    "temp": ModelProperty("temp", "FLOAT", "ReadOnly"),
}
EDGE_BAD: list[tuple[str, dict[str, TwinPatch], str, str]] = [
    (
        "unknown property",
        {"sp": TwinPatch(expected="5"), "nope": TwinPatch(actual="1")},
        "nope",
        "unknown property",
    ),
    ("wrong type", {"sp": TwinPatch(expected="5"), "temp": TwinPatch(actual="warm")}, "temp", "invalid"),
    ("out of range", {"sp": TwinPatch(expected="500")}, "sp", "maximum"),
    ("write to ReadOnly", {"temp": TwinPatch(expected="20")}, "temp", "ReadOnly"),
]


@pytest.mark.parametrize(("twin", "bad", "why"), [c[1:] for c in EDGE_BAD], ids=[c[0] for c in EDGE_BAD])
def test_apply_edge_update_is_all_or_nothing(twin: dict[str, TwinPatch], bad: str, why: str) -> None:
    before = {"sp": _twin("12", "10", (1, 0)), "temp": Twin(actual=TwinValue("20", 1), type="FLOAT")}
    twins, _, result = apply_edge_update(before, TwinUpdate("e", NOW, twin), now=NOW, properties=PROPS)
    assert twins == before
    assert result.code == BAD_REQUEST_CODE and why in result.rejected[bad] and bad in result.reason
    assert result.changed == {} and result.to_cloud == {}
    payload = result_payload(result, event_id="e", timestamp=NOW)
    assert payload["code"] == 400 and "twin" not in payload


def test_reported_value_of_read_only_property_is_accepted() -> None:
    before = {"temp": Twin(type="FLOAT")}
    twins, _, result = apply_edge_update(
        before, TwinUpdate("e", NOW, {"temp": TwinPatch(actual="21.5")}), now=NOW, properties=PROPS
    )
    assert result.code == 200 and twins["temp"].actual == TwinValue("21.5", NOW)


def _device(desired: str | None, observed: Twin | None = None, stamp: JSONObject | None = None) -> JSONObject:
    prop: JSONObject = {"name": "sp"}
    if desired is not None:
        prop["desired"] = {"value": desired, **({"metadata": stamp} if stamp is not None else {})}
    obj: JSONObject = {"spec": {"properties": [prop]}}
    if observed is not None:
        obj["status"] = {"twins": status_twins({"sp": observed})}
    return obj


def _stamp(obj: JSONObject) -> Version:
    version = version_from_metadata(obj["spec"]["properties"][0]["desired"]["metadata"])
    assert version is not None
    return version


def _from_cloud(obj: JSONObject) -> TwinUpdate:
    """What the edge makes of a stamped Device (edgeservice.devicetwin does the same)."""
    desired = obj["spec"]["properties"][0]["desired"]
    patch = TwinPatch(expected=desired["value"], expected_version=version_from_metadata(desired["metadata"]))
    return TwinUpdate("c", NOW, {"sp": patch})


STAMPS: list[tuple[str, JSONObject | None, JSONObject, tuple[int, int]]] = [
    ("created", None, _device("20"), (1, 0)),
    (
        "changed: next cloud counter, the edge counter last reported",
        _device("20", _twin("15", "15", (1, 3)), {"cloudVersion": "1", "edgeVersion": "0"}),
        _device("30"),
        (2, 3),
    ),
    (
        "unchanged value keeps its stamp, whatever the client sent",
        _device("20", _twin("20", "20", (1, 0)), {"cloudVersion": "4", "edgeVersion": "2", "timestamp": "7"}),
        _device("20", None, {"cloudVersion": "99", "edgeVersion": "99"}),
        (4, 2),
    ),
    (
        "re-added after removal: the cloud counter still moves on",
        _device(None, _twin("20", "20", (5, 1))),
        _device("20"),
        (6, 1),
    ),
    (
        "a forged stamp on a new value is replaced",
        _device("20", None, {"cloudVersion": "1", "edgeVersion": "0"}),
        _device("25", None, {"cloudVersion": "50", "edgeVersion": "50"}),
        (2, 0),
    ),
]


@pytest.mark.parametrize(("old", "new", "want"), [c[1:] for c in STAMPS], ids=[c[0] for c in STAMPS])
def test_stamp_desired(old: JSONObject | None, new: JSONObject, want: tuple[int, int]) -> None:
    stamp_desired(new, old, timestamp=NOW)
    assert _stamp(new) == Version(*want)


@pytest.mark.parametrize(
    "bad",
    [{}, {"spec": None}, {"spec": {"properties": "x"}}, {"spec": {"properties": [1, {"desired": 3}]}}],
)
def test_stamp_desired_leaves_malformed_input_to_validation(bad: JSONObject) -> None:
    before = json.dumps(bad)
    stamp_desired(bad, {"spec": {"properties": [{"name": 1}]}, "status": "x"}, timestamp=NOW)
    assert json.dumps(bad) == before


@pytest.mark.parametrize(
    "meta",
    [
        {},
        {"cloudVersion": "1"},
        {"cloudVersion": "-1", "edgeVersion": "0"},
        {"cloudVersion": "\u00b2", "edgeVersion": "0"},
    ],
)
def test_version_from_metadata_refuses_what_is_not_a_counter(meta: dict[str, str]) -> None:
    assert version_from_metadata(meta) is None


def test_offline_conflict_round_trip() -> None:
    """Edge offline: a desired value set on site and the cloud's re-delivery of its older one; the edge's
    wins, the cloud shows it, and the cloud's next change, made having seen it, is applied."""
    cloud = _device("10")
    stamp_desired(cloud, None, timestamp=NOW)
    edge, _, _ = apply_cloud_update({"sp": Twin(type="INT")}, _from_cloud(cloud), now=NOW)
    assert edge["sp"].expected_version == Version(1, 0)
    # On site, while the tunnel is down.
    edge, _, local = apply_edge_update(edge, TwinUpdate("l", NOW, {"sp": TwinPatch(expected="15")}), now=NOW)
    assert edge["sp"].expected_version == Version(1, 1) and local.to_cloud
    # Reconnect: the Device arrives again with the cloud's old stamp; the edge keeps its value.
    edge, delta, result = apply_cloud_update(edge, _from_cloud(cloud), now=NOW + 1)
    assert edge["sp"].expected == TwinValue("15", NOW) and result.rejected["sp"].startswith(
        "expected: conflict"
    )
    assert delta == {"sp": "15"}
    # The edge's report reaches the cloud's status; a change made after it carries the edge's counter.
    cloud["status"] = {"twins": status_twins(edge)}
    changed = _device("30")
    stamp_desired(changed, cloud, timestamp=NOW + 2)
    assert _stamp(changed) == Version(2, 1)
    edge, delta, result = apply_cloud_update(edge, _from_cloud(changed), now=NOW + 2)
    assert result.rejected == {} and edge["sp"].expected == TwinValue("30", NOW + 2) and delta == {"sp": "30"}


def test_a_cloud_change_made_without_seeing_the_edge_change_loses() -> None:
    """KubeEdge's rule: the edge changed the value after the cloud last heard from it, so the cloud's
    concurrent change is refused (edge wins), even though it is newer on the cloud's counter."""
    cloud = _device("10")
    stamp_desired(cloud, None, timestamp=NOW)
    edge, _, _ = apply_cloud_update({"sp": Twin(type="INT")}, _from_cloud(cloud), now=NOW)
    edge, _, _ = apply_edge_update(edge, TwinUpdate("l", NOW, {"sp": TwinPatch(expected="15")}), now=NOW)
    concurrent = _device("20")
    stamp_desired(concurrent, cloud, timestamp=NOW + 1)  # the cloud's status predates the edge's change
    assert _stamp(concurrent) == Version(2, 0)
    edge, _, result = apply_cloud_update(edge, _from_cloud(concurrent), now=NOW + 1)
    assert edge["sp"].expected == TwinValue("15", NOW) and "conflict" in result.rejected["sp"]


def test_status_twins_report_the_expected_version() -> None:
    [entry] = status_twins({"sp": _twin("20", "10", (3, 2))})
    assert version_from_metadata(entry["observedDesired"]["metadata"]) == Version(3, 2)
    assert entry["reported"]["metadata"] == {"timestamp": "1"}


DELTAS: list[tuple[str, dict[str, Twin], dict[str, str]]] = [
    ("expected differs", {"a": _twin("2", "1")}, {"a": "2"}),
    ("in sync", {"a": _twin("2", "2")}, {}),
    ("no actual yet", {"a": _twin("2", None)}, {"a": "2"}),
    ("no expected", {"a": _twin(None, "1")}, {}),
    ("empty expected", {"a": _twin("", "1")}, {}),
    ("several", {"b": _twin("1", "0"), "a": _twin("x", "x"), "c": _twin("3", None)}, {"b": "1", "c": "3"}),
]


@pytest.mark.parametrize(("twins", "delta"), [c[1:] for c in DELTAS], ids=[c[0] for c in DELTAS])
def test_compute_delta(twins: dict[str, Twin], delta: dict[str, str]) -> None:
    assert compute_delta(twins) == delta


def test_delta_payload_shape() -> None:
    twins = {"a": _twin("2", "1", (3, 4)), "b": _twin(None, "1")}
    payload = delta_payload(twins, event_id="d", timestamp=NOW)
    assert payload == {
        "event_id": "d",
        "timestamp": NOW,
        "twin": {
            "a": {
                "expected": {"value": "2", "metadata": {"timestamp": 1}},
                "actual": {"value": "1", "metadata": {"timestamp": 1}},
                "metadata": {"type": "INT"},
            }
        },
        "delta": {"a": "2"},
    }


def test_document_lists_last_and_current_of_changes_only() -> None:
    before = {"a": _twin("1", "1"), "b": _twin("2", "2"), "gone": _twin("x", "x")}
    after = {"a": _twin("5", "1", (0, 1)), "b": _twin("2", "2"), "new": _twin("7", None)}
    doc = document(before, after, event_id="u", timestamp=NOW)
    assert doc["event_id"] == "u" and doc["timestamp"] == NOW
    assert set(doc["twin"]) == {"a", "gone", "new"}
    assert doc["twin"]["a"]["last"]["expected"]["value"] == "1"
    assert doc["twin"]["a"]["current"]["expected"]["value"] == "5"
    assert "expected_version" not in doc["twin"]["a"]["current"]
    assert doc["twin"]["gone"]["current"] is None and doc["twin"]["new"]["last"] is None


def test_result_and_get_payloads() -> None:
    before = {"sp": _twin("12", "10", (1, 0))}
    twins, _, result = apply_edge_update(
        before, TwinUpdate("e", NOW, {"sp": TwinPatch(actual="12")}), now=NOW
    )
    payload = result_payload(result, event_id="e", timestamp=NOW)
    assert payload == {
        "event_id": "e",
        "timestamp": NOW,
        "twin": {
            "sp": {
                "expected": {"value": "12", "metadata": {"timestamp": 1}},
                "actual": {"value": "12", "metadata": {"timestamp": NOW}},
                "metadata": {"type": "INT"},
            }
        },
    }
    assert get_result_payload(twins, event_id="g", timestamp=NOW)["twin"] == payload["twin"]


def test_parse_update_round_trip() -> None:
    raw = {
        "event_id": "abc",
        "timestamp": NOW,
        "twin": {
            "sp": {"expected": {"value": "20"}, "expected_version": {"cloud": 2, "edge": 1}},
            "temp": {
                "actual": {"value": "21.5", "metadata": {"timestamp": NOW}},
                "metadata": {"type": "FLOAT"},
            },
        },
    }
    update = parse_update(raw)
    assert update.twin["sp"] == TwinPatch(expected="20", expected_version=Version(2, 1))
    assert update.twin["temp"] == TwinPatch(actual="21.5", type="FLOAT")
    assert parse_update(json.loads(json.dumps(update.to_json()))) == update


BAD_UPDATES: list[tuple[str, Any, str]] = [
    ("not an object", [], ""),
    ("no twin", {"event_id": "x"}, "twin"),
    ("twin not an object", {"twin": []}, "twin"),
    ("event id a number", {"event_id": 1, "twin": {}}, "event_id"),
    ("negative timestamp", {"timestamp": -1, "twin": {}}, "timestamp"),
    ("bad key", {"twin": {"a b": {}}}, "twin['a b']"),
    ("property not an object", {"twin": {"a": 1}}, "twin.a"),
    ("value a number", {"twin": {"a": {"expected": {"value": 1}}}}, "twin.a.expected.value"),
    ("value missing", {"twin": {"a": {"actual": {}}}}, "twin.a.actual.value"),
    ("value too long", {"twin": {"a": {"actual": {"value": "x" * 513}}}}, "twin.a.actual.value"),
    (
        "bad timestamp",
        {"twin": {"a": {"actual": {"value": "1", "metadata": {"timestamp": "x"}}}}},
        "twin.a.actual.metadata.timestamp",
    ),
    ("version not an object", {"twin": {"a": {"expected_version": 3}}}, "twin.a.expected_version"),
    (
        "version counter a string",
        {"twin": {"a": {"actual_version": {"cloud": "1"}}}},
        "twin.a.actual_version.cloud",
    ),
    ("type not a string", {"twin": {"a": {"metadata": {"type": 1}}}}, "twin.a.metadata.type"),
]


@pytest.mark.parametrize(("payload", "field"), [c[1:] for c in BAD_UPDATES], ids=[c[0] for c in BAD_UPDATES])
def test_parse_update_names_field(payload: Any, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_update(payload)
    assert err.value.field == field


def test_twins_json_round_trip() -> None:
    twins = {"a": _twin("1", "2", (3, 4), (5, 6)), "b": Twin()}
    assert twins_from_json(json.loads(json.dumps(twins_to_json(twins)))) == twins


def test_status_twins() -> None:
    assert status_twins({"b": _twin("2", None), "a": _twin(None, "1")}) == [
        {"propertyName": "a", "reported": {"value": "1", "metadata": {"timestamp": "1"}}},
        {
            "propertyName": "b",
            "observedDesired": {
                "value": "2",
                "metadata": {"timestamp": "1", "cloudVersion": "0", "edgeVersion": "0"},
            },
        },
    ]

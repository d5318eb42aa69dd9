"""Device twin synchronisation rules, as pure functions from twin state and a message to new state.

A device's twin holds, per property, an ``expected`` (desired) and an ``actual`` (reported) value, each a
string with ``metadata.timestamp`` (milliseconds since the epoch), and for each of the two a version
``{cloud, edge}``: two counters, one advanced by the cloud, one by the edge. This is KubeEdge's devicetwin
model (``edge/pkg/devicetwin/dttype/types.go``: ``MsgTwin``, ``TwinValue``, ``TwinVersion``) and the
rules below are those of ``edge/pkg/devicetwin/dtmanager/twin.go`` (``dealVersion``, ``dealTwinCompare``,
``DealDeviceTwin``):

* An edge-local update (MQTT ``$hw/events/device/{id}/twin/update`` from an adapter or a local UI)
  carries no version. It is applied as a whole or not at all (KubeEdge rolls back on any bad property
  and answers code 400), and every value it changes bumps that value's ``edge`` counter. What changed
  is reported to the cloud with its versions (KubeEdge's "edge_updated" sync result).
* A cloud update carries the versions the cloud assigned. It is applied only if it is not older than
  what the edge holds: a lower ``cloud`` counter is a stale message and is ignored. If the edge's
  ``edge`` counter is ahead of the message's, the edge changed the value (while offline, typically)
  after the cloud last heard from it; KubeEdge then refuses the cloud's value ("Not allowed to sync due
  to version conflict") and sends the edge's twin back so the cloud adopts it. So **the edge wins a
  conflict**: a change made on site, which the cloud has not seen, beats a cloud change made without
  seeing it (``dealVersion`` in ``dtmanager/twin.go``). A refused ``expected`` also skips the ``actual``
  of the same property, as ``isSyncAllow`` does there.
* The delta an adapter must act on is every property whose expected value is set and differs from its
  actual value (``BuildDeviceTwinDelta`` in ``dttype/types_helper.go``); a document lists, for each
  property an update changed, its ``last`` and ``current`` state.

The cloud's half is here too, so both ends share one definition of "newer". KubeEdge keeps the versions
in its edge database only; FleetOps carries them in the Device API, in the string ``metadata`` maps of
KubeEdge's ``TwinProperty`` (``cloudVersion``, ``edgeVersion``):

* the API server stamps ``spec.properties[].desired.metadata`` when a desired value changes
  (:func:`stamp_desired`): the next cloud counter, and the edge counter the cloud has last heard of (from
  ``status.twins[].observedDesired.metadata``), i.e. what the user saw when making the change;
* the edge reports its expected versions in ``observedDesired.metadata`` (:func:`status_twins`).

A desired value re-sent unchanged (the Device is delivered again because its status moved, or on
reconnect) therefore carries the same stamp, and once the edge has changed the value on site that stamp
is a conflict: the edge's value stands until someone sets a new desired value having seen it.

Everything is JSON-shaped (``to_json``/``*_from_json``) so the edge can persist twins in SQLite and the
tunnel can carry them. Time is an argument (``now``), never read here, so tests are exact.

Deliberately not done: KubeEdge's twin deletion (``metadata.type: deleted``) and ``optional`` flags
(a twin exists exactly when the Device's spec lists the property), and device attributes (v1beta1 has
none).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, cast

from app.devices import MAX_VALUE_LEN, ModelProperty, check_value
from app.errors import ValidationError
from app.resources import JSONObject

log = logging.getLogger(__name__)

# KubeEdge's twin key pattern (dtcommon.ValidateTwinKey).
_TWIN_KEY = re.compile(r"^[a-zA-Z0-9\-_.,:/@#]{1,128}$")

# Why a property of an update was not applied (``UpdateResult.rejected`` values start with one of these).
STALE = "stale"  # the message's cloud counter is older than the edge's
CONFLICT = "conflict"  # the edge changed the value after the cloud's message was stamped: edge wins
NO_VERSION = "no version"  # a cloud update must carry a version
INVALID = "invalid"  # the value does not fit the property
UNKNOWN = "unknown property"  # the device has no such property

# The metadata keys that carry a version through the Device API (see the module doc), and their values:
# ASCII digits, short enough to stay an exact JSON number anywhere.
CLOUD_VERSION_KEY = "cloudVersion"
EDGE_VERSION_KEY = "edgeVersion"
_COUNTER = re.compile(r"[0-9]{1,15}")

# The variable Edged sets in every container: the URL of the node's MQTT broker (``tcp://HOST:PORT``),
# which workloads use when their config names no broker.
MQTT_URL_ENV = "FLEETOPS_MQTT_URL"

# Result codes of ``twin/update/result``, as KubeEdge's dtcommon (BadRequestCode = 400).
OK_CODE = 200
BAD_REQUEST_CODE = 400


@dataclass(frozen=True, slots=True)
class Version:
    """``{cloud, edge}``: how many times each side has changed one value."""

    cloud: int = 0
    edge: int = 0

    def to_json(self) -> JSONObject:
        return {"cloud": self.cloud, "edge": self.edge}


@dataclass(frozen=True, slots=True)
class TwinValue:
    value: str
    timestamp: int = 0  # milliseconds since the epoch, as KubeEdge's ValueMetadata

    def to_json(self) -> JSONObject:
        return {"value": self.value, "metadata": {"timestamp": self.timestamp}}


@dataclass(frozen=True, slots=True)
class Twin:
    """One property's twin. ``type`` is the model's property type (``INT``...), ``""`` for any string."""

    expected: TwinValue | None = None
    actual: TwinValue | None = None
    expected_version: Version = Version()
    actual_version: Version = Version()
    type: str = ""

    def to_json(self, *, versions: bool = True) -> JSONObject:
        out: JSONObject = {}
        if self.expected is not None:
            out["expected"] = self.expected.to_json()
        if self.actual is not None:
            out["actual"] = self.actual.to_json()
        if self.type:
            out["metadata"] = {"type": self.type}
        if versions:
            out["expected_version"] = self.expected_version.to_json()
            out["actual_version"] = self.actual_version.to_json()
        return out


Twins = Mapping[str, Twin]


@dataclass(frozen=True, slots=True)
class TwinPatch:
    """One property of an update message; ``None`` leaves that part alone."""

    expected: str | None = None
    actual: str | None = None
    expected_version: Version | None = None
    actual_version: Version | None = None
    type: str | None = None


@dataclass(frozen=True, slots=True)
class TwinUpdate:
    """A ``twin/update`` message (from MQTT) or a cloud twin sync (over the tunnel)."""

    event_id: str
    timestamp: int
    twin: Mapping[str, TwinPatch]

    def to_json(self) -> JSONObject:
        twin: JSONObject = {}
        for name, p in self.twin.items():
            entry: JSONObject = {}
            if p.expected is not None:
                entry["expected"] = {"value": p.expected, "metadata": {"timestamp": self.timestamp}}
            if p.actual is not None:
                entry["actual"] = {"value": p.actual, "metadata": {"timestamp": self.timestamp}}
            if p.expected_version is not None:
                entry["expected_version"] = p.expected_version.to_json()
            if p.actual_version is not None:
                entry["actual_version"] = p.actual_version.to_json()
            if p.type:
                entry["metadata"] = {"type": p.type}
            twin[name] = entry
        return {"event_id": self.event_id, "timestamp": self.timestamp, "twin": twin}


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """What one update did: ``changed`` (new state of each property it changed), ``rejected`` (property
    -> reason), ``to_cloud`` (twins, with versions, the edge must report to the cloud), and the
    ``code``/``reason`` of the ``twin/update/result`` answer."""

    changed: Mapping[str, Twin]
    rejected: Mapping[str, str]
    to_cloud: Mapping[str, Twin]
    code: int = OK_CODE
    reason: str = ""


class Applied(NamedTuple):
    twins: dict[str, Twin]
    delta: dict[str, str]
    result: UpdateResult


# Parsing ---------------------------------------------------------------------------------------------------


def _obj(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(path, "must be an object")
    return cast("Mapping[str, Any]", value)


def _int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(path, "must be an integer")
    if value < 0:
        raise ValidationError(path, "must be >= 0")
    return value


def _key(name: Any, path: str) -> str:
    if not isinstance(name, str) or not _TWIN_KEY.match(name):
        raise ValidationError(path, "must be 1-128 characters of letters, digits and - _ . , : / @ #")
    return name


def _version(value: Any, path: str) -> Version | None:
    if value is None:
        return None
    obj = _obj(value, path)
    return Version(_int(obj.get("cloud", 0), f"{path}.cloud"), _int(obj.get("edge", 0), f"{path}.edge"))


def _value(value: Any, path: str) -> TwinValue | None:
    if value is None:
        return None
    obj = _obj(value, path)
    raw = obj.get("value")
    if not isinstance(raw, str):
        raise ValidationError(f"{path}.value", "must be a string")
    if len(raw) > MAX_VALUE_LEN:
        raise ValidationError(f"{path}.value", f"must be at most {MAX_VALUE_LEN} characters")
    meta = obj.get("metadata")
    ts = (
        0
        if meta is None
        else _int(_obj(meta, f"{path}.metadata").get("timestamp", 0), f"{path}.metadata.timestamp")
    )
    return TwinValue(raw, ts)


def _type(value: Any, path: str) -> str | None:
    if value is None:
        return None
    typ = _obj(value, path).get("type")
    if typ is None:
        return None
    if not isinstance(typ, str):
        raise ValidationError(f"{path}.type", "must be a string")
    return typ


def twin_from_json(value: Any, path: str = "") -> Twin:
    """A persisted twin (``Twin.to_json()``) back; raises ValidationError naming the field."""
    obj = _obj(value, path)
    p = f"{path}." if path else ""
    return Twin(
        expected=_value(obj.get("expected"), f"{p}expected"),
        actual=_value(obj.get("actual"), f"{p}actual"),
        expected_version=_version(obj.get("expected_version"), f"{p}expected_version") or Version(),
        actual_version=_version(obj.get("actual_version"), f"{p}actual_version") or Version(),
        type=_type(obj.get("metadata"), f"{p}metadata") or "",
    )


def twins_to_json(twins: Twins) -> JSONObject:
    return {name: t.to_json() for name, t in sorted(twins.items())}


def twins_from_json(value: Any) -> dict[str, Twin]:
    return {_key(k, k): twin_from_json(v, k) for k, v in _obj(value, "").items()}


def parse_update(payload: Any) -> TwinUpdate:
    """A ``twin/update`` payload: ``{event_id, timestamp, twin: {prop: {expected?, actual?, *_version?}}}``.

    Raises ValidationError naming the bad field (``twin.temperature.expected.value``)."""
    obj = _obj(payload, "")
    event_id = obj.get("event_id", "")
    if not isinstance(event_id, str):
        raise ValidationError("event_id", "must be a string")
    timestamp = _int(obj.get("timestamp", 0), "timestamp")
    if "twin" not in obj or obj["twin"] is None:
        raise ValidationError("twin", "Required value")
    patches: dict[str, TwinPatch] = {}
    for name, raw in _obj(obj["twin"], "twin").items():
        path = f"twin.{name}"
        _key(name, f"twin[{name!r}]")
        entry = _obj(raw, path)
        expected = _value(entry.get("expected"), f"{path}.expected")
        actual = _value(entry.get("actual"), f"{path}.actual")
        patches[name] = TwinPatch(
            expected=None if expected is None else expected.value,
            actual=None if actual is None else actual.value,
            expected_version=_version(entry.get("expected_version"), f"{path}.expected_version"),
            actual_version=_version(entry.get("actual_version"), f"{path}.actual_version"),
            type=_type(entry.get("metadata"), f"{path}.metadata"),
        )
    return TwinUpdate(event_id, timestamp, patches)


# The version rule ------------------------------------------------------------------------------------------


def check_sync_version(local: Version, incoming: Version | None) -> str | None:
    """Why a cloud-stamped value may not replace the edge's (``None``: it may).

    KubeEdge's ``dealVersion`` for cloud syncs (``edge/pkg/devicetwin/dtmanager/twin.go``): a missing
    version is refused; an older cloud counter is stale; an edge counter behind the edge's own means the
    edge changed the value since the cloud stamped the message, and the edge's value wins.
    """
    if incoming is None:
        return NO_VERSION
    if local.cloud > incoming.cloud:
        return STALE
    if local.edge > incoming.edge:
        return CONFLICT
    return None


def _type_problem(typ: str, value: str) -> str | None:
    """Type check without a model: the twin's own ``type`` (as KubeEdge's ``ValidateValue``)."""
    if not typ:
        return None
    prop = ModelProperty(name="value", type=cast("Any", typ.upper()), access_mode="ReadWrite")
    try:
        check_value(prop, value)
    except ValidationError as exc:
        return exc.message
    return None


# Edge side -------------------------------------------------------------------------------------------------


def apply_cloud_update(twins: Twins, update: TwinUpdate, *, now: int) -> Applied:
    """Apply a cloud twin sync at the edge; each property is judged on its own (see the module doc)."""
    new = dict(twins)
    changed: dict[str, Twin] = {}
    rejected: dict[str, str] = {}
    to_cloud: dict[str, Twin] = {}
    for name, patch in update.twin.items():
        cur = new.get(name, Twin())
        typ = patch.type if patch.type is not None else cur.type
        twin = replace(cur, type=typ)
        refused: str | None = None
        for part in ("expected", "actual"):
            value = cast("str | None", getattr(patch, part))
            if value is None:
                continue
            problem = check_sync_version(
                cast("Version", getattr(twin, f"{part}_version")),
                cast("Version | None", getattr(patch, f"{part}_version")),
            )
            if problem is None:
                bad = _type_problem(typ, value)
                problem = None if bad is None else f"{INVALID}: {bad}"
            if problem is not None:
                refused = f"{part}: {problem}"
                break
            twin = replace(
                twin,
                **{part: TwinValue(value, now), f"{part}_version": getattr(patch, f"{part}_version")},
            )
        if refused is not None:
            # Refused: the property keeps the edge's state entirely and the cloud is told what it is.
            log.info("twin %s: cloud update %s refused (%s)", name, update.event_id, refused)
            rejected[name] = refused
            if name in twins:
                to_cloud[name] = twins[name]
            continue
        if twin != cur or name not in twins:
            new[name] = twin
            changed[name] = twin
    return Applied(new, compute_delta(new), UpdateResult(changed, rejected, to_cloud))


def apply_edge_update(
    twins: Twins,
    update: TwinUpdate,
    *,
    now: int,
    properties: Mapping[str, ModelProperty] | None = None,
) -> Applied:
    """Apply an edge-local update (MQTT ``twin/update``) all or nothing; versions in it are ignored.

    With ``properties`` (the device model's), expected values must be valid writes (``check_value``) and
    actual values valid readings; without, only the twin's ``type`` is checked."""
    problems: dict[str, str] = {}
    for name, patch in update.twin.items():
        if name not in twins:
            problems[name] = UNKNOWN
            continue
        prop = None if properties is None else properties.get(name)
        for part, value in (("expected", patch.expected), ("actual", patch.actual)):
            if value is None:
                continue
            if prop is not None:
                try:
                    check_value(prop, value, field=f"twin.{name}.{part}", write=part == "expected")
                except ValidationError as exc:
                    problems[name] = f"{INVALID}: {exc.message}"
                    break
            else:
                bad = _type_problem(twins[name].type, value)
                if bad is not None:
                    problems[name] = f"{INVALID}: {bad}"
                    break
    if problems:
        reason = "; ".join(f"{n}: {why}" for n, why in sorted(problems.items()))
        result = UpdateResult({}, problems, {}, BAD_REQUEST_CODE, reason)
        return Applied(dict(twins), compute_delta(twins), result)
    new = dict(twins)
    changed: dict[str, Twin] = {}
    for name, patch in update.twin.items():
        twin = new[name]
        if patch.expected is not None:
            v = twin.expected_version
            twin = replace(
                twin, expected=TwinValue(patch.expected, now), expected_version=Version(v.cloud, v.edge + 1)
            )
        if patch.actual is not None:
            v = twin.actual_version
            twin = replace(
                twin, actual=TwinValue(patch.actual, now), actual_version=Version(v.cloud, v.edge + 1)
            )
        if twin != new[name]:
            new[name] = twin
            changed[name] = twin
    return Applied(new, compute_delta(new), UpdateResult(changed, {}, dict(changed)))


def compute_delta(twins: Twins) -> dict[str, str]:
    """What the adapter must write: each expected value that is set and differs from the actual one."""
    return {
        name: t.expected.value
        for name, t in sorted(twins.items())
        if t.expected is not None
        and t.expected.value != ""
        and (t.actual is None or t.actual.value != t.expected.value)
    }


# Cloud side ------------------------------------------------------------------------------------------------


def version_from_metadata(metadata: Mapping[str, Any]) -> Version | None:
    """The version a ``TwinProperty.metadata`` carries (``None`` when it carries none or a bad one)."""
    cloud, edge = metadata.get(CLOUD_VERSION_KEY), metadata.get(EDGE_VERSION_KEY)
    if not isinstance(cloud, str) or not isinstance(edge, str):
        return None
    if not (_COUNTER.fullmatch(cloud) and _COUNTER.fullmatch(edge)):
        return None
    return Version(int(cloud), int(edge))


def version_metadata(version: Version) -> dict[str, str]:
    return {CLOUD_VERSION_KEY: str(version.cloud), EDGE_VERSION_KEY: str(version.edge)}


def _d(value: Any) -> Mapping[str, Any]:
    return cast("Mapping[str, Any]", value) if isinstance(value, dict) else {}


def _by_name(items: Any, key: str) -> dict[str, Mapping[str, Any]]:
    if not isinstance(items, list):
        return {}
    return {i[key]: i for i in items if isinstance(i, dict) and isinstance(i.get(key), str)}


def stamp_desired(new: JSONObject, old: JSONObject | None, *, timestamp: int) -> None:
    """Stamp the desired values of a Device being written through the API (in place).

    A desired value equal to the old object's keeps the old stamp, whatever metadata the client sent (a
    ``kubectl apply`` that replaced the properties list, an edited copy of an old object). A new or
    changed value gets the next cloud counter and, as its edge counter, the one the edge last reported for
    that property in the old object's status: the edge uses it to tell whether it changed the value on
    site after the user made this change (see :func:`check_sync_version`). Shapes are not validated here;
    malformed input is left for validation to reject."""
    spec = new.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("properties"), list):
        return
    old_props = _by_name(_d(_d(old).get("spec")).get("properties"), "name")
    observed = _by_name(_d(_d(old).get("status")).get("twins"), "propertyName")
    for prop in spec["properties"]:
        desired = _d(prop).get("desired")
        if not isinstance(desired, dict) or not isinstance(desired.get("value"), str):
            continue
        name = prop.get("name")
        meta = dict(_d(desired.get("metadata")))
        before = _d(_d(old_props.get(name)).get("desired"))
        before_meta = _d(before.get("metadata"))
        kept = version_from_metadata(before_meta)
        if kept is not None and before.get("value") == desired["value"]:
            meta.update(version_metadata(kept))
            if "timestamp" in before_meta:
                meta["timestamp"] = before_meta["timestamp"]
        else:
            seen_meta = _d(_d(_d(observed.get(name)).get("observedDesired")).get("metadata"))
            seen = version_from_metadata(seen_meta) or Version()
            cloud = max(kept.cloud if kept else 0, seen.cloud) + 1
            meta.update(version_metadata(Version(cloud, seen.edge)))
            meta["timestamp"] = str(timestamp)
        desired["metadata"] = meta


def status_twins(twins: Twins) -> list[JSONObject]:
    """A Device's ``status.twins``: ``reported`` from actual, ``observedDesired`` from expected (KubeEdge's
    TwinProperty keeps metadata as strings, so the timestamp is one)."""

    def prop(v: TwinValue) -> JSONObject:
        return {"value": v.value, "metadata": {"timestamp": str(v.timestamp)}}

    out: list[JSONObject] = []
    for name, t in sorted(twins.items()):
        entry: JSONObject = {"propertyName": name}
        if t.actual is not None:
            entry["reported"] = prop(t.actual)
        if t.expected is not None:
            observed = prop(t.expected)
            observed["metadata"].update(version_metadata(t.expected_version))
            entry["observedDesired"] = observed
        out.append(entry)
    return out


# MQTT payloads ---------------------------------------------------------------------------------------------


def _view(twins: Twins) -> JSONObject:
    return {name: t.to_json(versions=False) for name, t in sorted(twins.items())}


def result_payload(result: UpdateResult, *, event_id: str, timestamp: int) -> JSONObject:
    """``$hw/events/device/{id}/twin/update/result``: the changed twins, or ``code`` and ``reason``."""
    if result.code != OK_CODE:
        return {"event_id": event_id, "timestamp": timestamp, "code": result.code, "reason": result.reason}
    return {"event_id": event_id, "timestamp": timestamp, "twin": _view(result.changed)}


def delta_payload(twins: Twins, *, event_id: str, timestamp: int) -> JSONObject:
    """``.../twin/update/delta``: every twin with an expected value, and ``delta`` (``compute_delta``).
    Publish it only when ``delta`` is not empty, as KubeEdge does."""
    with_expected = {n: t for n, t in twins.items() if t.expected is not None and t.expected.value != ""}
    return {
        "event_id": event_id,
        "timestamp": timestamp,
        "twin": _view(with_expected),
        "delta": compute_delta(twins),
    }


def get_result_payload(twins: Twins, *, event_id: str, timestamp: int) -> JSONObject:
    """``.../twin/get/result``: the whole twin, without versions."""
    return {"event_id": event_id, "timestamp": timestamp, "twin": _view(twins)}


def document(before: Twins, after: Twins, *, event_id: str, timestamp: int) -> JSONObject:
    """``.../twin/update/document``: ``{prop: {last, current}}`` for every property that changed (``None``
    for a side where the property does not exist); versions are left out, as in KubeEdge."""
    twin: JSONObject = {}
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        twin[name] = {
            "last": None if old is None else old.to_json(versions=False),
            "current": None if new is None else new.to_json(versions=False),
        }
    return {"event_id": event_id, "timestamp": timestamp, "twin": twin}

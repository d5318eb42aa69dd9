"""A Device's twin as the front ends show and edit it: table rows, the check of a desired value, the write.

Shared by the TUI's device screen and the GUI's twin panel, so both show the same rows and refuse the same
values with the same words. :func:`twin_rows` is a pure function of a Device and its DeviceModel;
:func:`validate_desired` runs :func:`app.devices.check_value`, the check the cloud's API and the edge's
DeviceTwin run too, so a value a UI accepts is one they accept; :func:`set_desired` writes it.

A desired value is written as ``kubectl patch --type merge`` would: the Device's ``spec.properties`` list
with the one ``desired.value`` changed (a merge patch replaces a list whole, so the list goes whole), with
the ``resourceVersion`` it was built from, so an edit never overwrites a property changed meanwhile; on a
Conflict it is rebuilt from a fresh read. The API stamps the new value's twin versions (``app.twin``).
:func:`twin_summary` is the one-line "2/3 synced; speed 10->12" of a device list.

Deliberately not done: editing ``BYTES`` values (KubeEdge defines no encoding for them).
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.client import AsyncClient, Conflict
from app.devices import NUMERIC_TYPES, Device, DeviceModel, ModelProperty, check_value
from app.errors import FleetOpsError, ValidationError
from app.resources import DEVICES, JSONObject

logger = logging.getLogger(__name__)

# How often set_desired rebuilds its patch after a Conflict before giving up.
EDIT_RETRIES = 3


class TwinEditError(FleetOpsError):
    """A desired value that cannot be written (the Device has no such property...)."""


@dataclass(frozen=True, slots=True)
class TwinRow:
    """One line of a twin table."""

    name: str
    desired: str
    reported: str
    unit: str
    type: str
    access: str
    range: str
    last_update: str
    numeric: bool
    writable: bool  # ReadWrite in the model and listed in the Device's spec: the desired value can be set

    @property
    def synced(self) -> bool:
        return not self.desired or self.desired == self.reported


def _timestamp(metadata: Mapping[str, str]) -> str:
    """KubeEdge's twin timestamp (epoch milliseconds, a string) as UTC wall-clock time."""
    try:
        ms = int(str(metadata.get("timestamp")))
    except (TypeError, ValueError):
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _range(prop: ModelProperty | None) -> str:
    if prop is None or not (prop.minimum or prop.maximum):
        return ""
    return f"{prop.minimum or '-inf'} .. {prop.maximum or '+inf'}"


def twin_rows(device: Device, model: DeviceModel | None) -> list[TwinRow]:
    """Every property of the Device in its order, then twins the edge reports for properties the spec no
    longer lists. Type, unit, range and access come from the model (``?`` without one)."""
    twins = {t.property_name: t for t in device.status.twins}
    names = [p.name for p in device.properties]
    names += [n for n in twins if n not in names]
    rows = []
    for name in names:
        prop = device.property(name)
        mprop = model.property(name) if model is not None else None
        twin = twins.get(name)
        reported = twin.reported if twin is not None else None
        rows.append(
            TwinRow(
                name=name,
                desired=prop.desired.value if prop is not None and prop.desired is not None else "",
                reported=reported.value if reported is not None else "",
                unit=mprop.unit if mprop else "",
                type=mprop.type if mprop else "?",
                access=mprop.access_mode if mprop else "?",
                range=_range(mprop),
                last_update=_timestamp(reported.metadata) if reported is not None else "",
                numeric=mprop is not None and mprop.type in NUMERIC_TYPES,
                writable=mprop is not None and mprop.writable and prop is not None,
            )
        )
    return rows


def validate_desired(model: DeviceModel | None, device: Device | None, name: str, value: str) -> str | None:
    """Why ``value`` cannot be the desired value of property ``name`` (None when it can)."""
    if device is not None and device.property(name) is None:
        return f"{name!r} is not in the device's spec: it has no desired value"
    prop = model.property(name) if model is not None else None
    if prop is None:
        return f"{name!r} is not in the device's model: the value cannot be checked"
    if prop.type == "BYTES":
        return f"{name!r} is BYTES: editing it is not supported"
    try:
        check_value(prop, value)
    except ValidationError as exc:
        return exc.message
    return None


async def set_desired(client: AsyncClient, namespace: str, name: str, prop: str, value: str) -> JSONObject:
    """Write one desired value (see the module docstring); answers the updated Device. The caller checks
    ``value`` first (:func:`validate_desired`)."""
    for attempt in range(EDIT_RETRIES + 1):
        device = await client.get(DEVICES, name, namespace)
        props = copy.deepcopy((device.get("spec") or {}).get("properties") or [])
        entry = next((p for p in props if isinstance(p, dict) and p.get("name") == prop), None)
        if entry is None:
            raise TwinEditError(f"device {namespace}/{name} has no property {prop!r}")
        desired = entry.get("desired")
        entry["desired"] = {**(desired if isinstance(desired, dict) else {}), "value": value}
        rv = str((device.get("metadata") or {}).get("resourceVersion") or "")
        patch = {"metadata": {"resourceVersion": rv}, "spec": {"properties": props}}
        try:
            return await client.patch(DEVICES, name, patch, namespace, type="merge")
        except Conflict:
            if attempt == EDIT_RETRIES:
                raise
            logger.debug("device %s/%s changed while setting %s; retrying", namespace, name, prop)
    raise AssertionError("unreachable")  # pragma: no cover


def _d(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def twin_summary(obj: JSONObject) -> str:
    """Desired vs reported at a glance: ``2/3 synced; speed 10->12`` (reported -> desired for each
    property that has not caught up), or ``N reported`` for a device with no desired values."""
    desired: dict[str, str] = {}
    for p in _l(_d(obj.get("spec")).get("properties")):
        value = _d(_d(p).get("desired")).get("value")
        if value not in (None, "") and _d(p).get("name"):  # "" is no desired value (KubeEdge's default)
            desired[str(_d(p)["name"])] = str(value)
    reported: dict[str, str] = {}
    for t in _l(_d(obj.get("status")).get("twins")):
        value = _d(_d(t).get("reported")).get("value")
        if value is not None and _d(t).get("propertyName"):
            reported[str(_d(t)["propertyName"])] = str(value)
    if not desired:
        return f"{len(reported)} reported"
    behind = [
        f"{n} {reported.get(n, '?')}->{want}"
        for n, want in sorted(desired.items())
        if reported.get(n) != want
    ]
    summary = f"{len(desired) - len(behind)}/{len(desired)} synced"
    return f"{summary}; {', '.join(behind)}" if behind else summary

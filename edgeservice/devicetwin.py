"""DeviceTwin: the edge's digital twin of each device bound to this node, between the cloud and MQTT.

Flow 2 of DESIGN.md, the edge's half:

* The cloud's Device (from MetaManager, as any other object) sets each property's *expected* value (the
  desired value in its spec). A change becomes a cloud twin update with a new cloud version and goes
  through KubeEdge's version rules (``app.twin``): an expected value changed on site while the cloud was
  away wins over an older cloud value. What the adapter must write is published on
  ``$hw/events/device/{id}/twin/update/delta``.
* The adapter reads the device and publishes *actual* values on ``.../twin/update``; the twin validates
  them against the DeviceModel, answers on ``.../twin/update/result`` and reports ``status.twins`` and the
  device state to the cloud through the persisted outbox (so reports made offline arrive later, once).
* Twins are persisted (``MetaManager.local``) so the edge restarts with what it knew.
* Telemetry summaries on ``$ke/events/device/{id}/data/update`` (the aggregator's windows) go to the cloud's
  history through the outbox.

The MQTT bus starts with the first device, not before: an edge without devices pays nothing for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.devices import Device, DeviceModel, parse_device, parse_device_model
from app.envelope import Message
from app.errors import ValidationError
from app.resources import JSONObject, now_rfc3339
from app.twin import (
    Twin,
    TwinPatch,
    TwinUpdate,
    Version,
    apply_cloud_update,
    apply_edge_update,
    delta_payload,
    get_result_payload,
    parse_update,
    result_payload,
    status_twins,
    twins_from_json,
    twins_to_json,
)
from edgeservice.broker import EmbeddedBroker, ensure_broker
from edgeservice.metamanager import MetaManager

if TYPE_CHECKING:  # the MQTT client is imported when the first device arrives (footprint)
    from edgeservice.eventbus import BusEvent, EventBus

log = logging.getLogger(__name__)


# Outbox rows beyond which telemetry summaries are dropped while offline: about a day of 10 s windows for
# two devices. Twin reports (statuses) are always queued; summaries are the first thing to give up on.
MAX_PENDING_SUMMARIES = 20_000


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Device:
    namespace: str
    name: str
    uid: str
    device: Device
    model: DeviceModel | None
    twins: dict[str, Twin] = field(default_factory=dict)
    state: str = "unknown"


class DeviceTwin:
    name = "devicetwin"

    def __init__(
        self, meta: MetaManager, node: str, emit: Callable[[Message], None], *, mqtt_url: str | None
    ) -> None:
        self.meta = meta
        self.node = node
        self.emit = emit
        self.mqtt_url = mqtt_url
        self.devices: dict[str, _Device] = {}  # by device id (its name, as KubeEdge's topics use)
        self.bus: EventBus | None = None
        self.broker: EmbeddedBroker | None = None
        self._wake = asyncio.Event()
        self._pending_deltas: set[str] = set()

    # -- the cloud's side ---------------------------------------------------------------------------

    def sync(self) -> None:
        """Load every cached device (at start-up, or after the cache was rebuilt)."""
        for obj in self.meta.objects("device"):
            self.device_changed(obj)

    def device_changed(self, obj: JSONObject | None, *, key: str = "") -> None:
        if obj is None:
            name = key.rsplit("/", 1)[-1]
            if self.devices.pop(name, None) is not None:
                self.meta.delete_local(f"twin/{key}")
            return
        try:
            device = parse_device(obj)
        except ValidationError as exc:
            log.warning("device %s is not usable: %s", obj.get("metadata", {}).get("name"), exc)
            return
        meta = obj.get("metadata", {})
        entry = self.devices.get(device.name)
        if entry is None:
            saved = self.meta.local(f"twin/{device.namespace}/device/{device.name}") or {}
            entry = _Device(device.namespace, device.name, str(meta.get("uid", "")), device, None)
            entry.twins = twins_from_json(saved.get("twins", {}))
            entry.state = str(saved.get("state", "unknown"))
            self.devices[device.name] = entry
        entry.device, entry.uid = device, str(meta.get("uid", ""))
        entry.model = self._model(device)
        props = {p.name: p for p in entry.model.properties} if entry.model else {}
        patches: dict[str, TwinPatch] = {}
        for prop in device.properties:
            desired = prop.desired.value if prop.desired is not None else None
            cur = entry.twins.get(prop.name, Twin())
            typ = props[prop.name].type if prop.name in props else ""
            if desired is None or (cur.expected is not None and cur.expected.value == desired):
                if prop.name not in entry.twins:
                    entry.twins[prop.name] = Twin(type=typ)
                continue
            version = Version(cur.expected_version.cloud + 1, cur.expected_version.edge)
            patches[prop.name] = TwinPatch(expected=desired, expected_version=version, type=typ)
        if patches:
            update = TwinUpdate(uuid.uuid4().hex, _now_ms(), patches)
            applied = apply_cloud_update(entry.twins, update, now=_now_ms())
            entry.twins = applied.twins
            if applied.result.to_cloud:
                self._report(entry)
        self._save(entry)
        if any(t.expected is not None for t in entry.twins.values()):
            self._pending_deltas.add(device.name)
        self._wake.set()

    def model_changed(self, namespace: str, name: str) -> None:
        for entry in list(self.devices.values()):
            if entry.namespace == namespace and entry.device.model_ref == name:
                entry.model = self._model(entry.device)

    def _model(self, device: Device) -> DeviceModel | None:
        obj = self.meta.get(f"{device.namespace}/devicemodel/{device.model_ref}")
        if obj is None:
            return None
        try:
            return parse_device_model(obj)
        except ValidationError as exc:
            log.warning("device model %s is not usable: %s", device.model_ref, exc)
            return None

    # -- MQTT's side ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Start the bus once there is a device, then publish deltas as the cloud changes desired values."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if not self.devices:
                    continue
                if self.bus is None:
                    from edgeservice.eventbus import EventBus

                    url, self.broker = await ensure_broker(self.mqtt_url)
                    self.bus = EventBus(url, self.node, self.on_event, on_connect=self._republish)
                    await self.bus.start()
                    log.info("devicetwin: %d device(s), MQTT at %s", len(self.devices), url)
                for name in list(self._pending_deltas):
                    self._pending_deltas.discard(name)
                    await self._publish_delta(name)
        finally:
            if self.bus is not None:
                await self.bus.stop()
            if self.broker is not None:
                await self.broker.stop()

    async def _republish(self) -> None:
        self._pending_deltas.update(self.devices)
        self._wake.set()

    async def _publish_delta(self, name: str) -> None:
        entry = self.devices.get(name)
        if entry is None or self.bus is None or not self.bus.connected:
            return
        payload = delta_payload(entry.twins, event_id=uuid.uuid4().hex, timestamp=_now_ms())
        if payload["delta"]:
            await self.bus.publish_delta(name, payload)

    async def on_event(self, ev: BusEvent) -> None:
        from edgeservice.eventbus import UnknownDeviceError

        entry = self.devices.get(ev.device_id)
        if ev.kind in ("twin_update", "twin_get", "state_update", "data_update") and entry is None:
            raise UnknownDeviceError(ev.device_id)
        assert entry is not None or ev.kind == "membership_get"
        if ev.kind == "twin_update" and entry is not None:
            update = parse_update(ev.payload)
            props = {p.name: p for p in entry.model.properties} if entry.model else None
            applied = apply_edge_update(entry.twins, update, now=_now_ms(), properties=props)
            assert self.bus is not None
            result = result_payload(applied.result, event_id=update.event_id, timestamp=_now_ms())
            await self.bus.publish_result(ev.device_id, result)
            if applied.result.changed:
                entry.twins = applied.twins
                self._save(entry)
                self._report(entry)
        elif ev.kind == "twin_get" and entry is not None:
            assert self.bus is not None
            event_id = str(ev.payload.get("event_id", ""))
            await self.bus.publish_get_result(
                ev.device_id, get_result_payload(entry.twins, event_id=event_id, timestamp=_now_ms())
            )
        elif ev.kind == "data_update" and entry is not None:
            # Telemetry summaries (the aggregator's windows): to the cloud's history, through the outbox, so
            # what was measured while the link was down still arrives.
            data = ev.payload.get("data")
            if self.meta.outbox_depth() >= MAX_PENDING_SUMMARIES:
                log.debug("devicetwin: outbox full, telemetry summary of %s dropped", entry.name)
            elif isinstance(data, dict) and data:
                content = {
                    "uid": entry.uid,
                    "summary": {"window": ev.payload.get("window", {}), "data": data},
                }
                self.emit(Message("update", f"{entry.namespace}/devicedata/{entry.name}", content))
        elif ev.kind == "state_update" and entry is not None:
            state = str(ev.payload.get("state", "")).lower()
            if state in ("online", "offline", "unknown") and state != entry.state:
                entry.state = state
                self._save(entry)
                self._report(entry)

    # -- persistence and reports ---------------------------------------------------------------------

    def _save(self, entry: _Device) -> None:
        key = f"twin/{entry.namespace}/device/{entry.name}"
        self.meta.set_local(key, {"twins": twins_to_json(entry.twins), "state": entry.state})

    def _report(self, entry: _Device) -> None:
        status: JSONObject = {"twins": status_twins(entry.twins), "state": entry.state}
        if entry.state == "online":
            status["lastOnlineTime"] = now_rfc3339()
        content = {"uid": entry.uid, "status": status}
        self.emit(Message("update", f"{entry.namespace}/devicestatus/{entry.name}", content))

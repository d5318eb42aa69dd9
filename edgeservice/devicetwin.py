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
  history through the outbox; an ``event`` they carry (the inference workload's "defect detected on line
  2") becomes a Kubernetes Event on the Device, as does the reason a device went offline.
* A message refused on the way in (malformed JSON, an unknown device, a value of the wrong type, outside
  min/max or written to a ReadOnly property, a data update without data, an unknown state) is answered on
  the ``/result`` topic where KubeEdge has one, counted by category for the metrics, and recorded as a
  Warning Event on the Device (once per device and reason per ``EVENT_INTERVAL``), so the operator sees
  why a value never arrived. The bus and the twin carry on with the next message.

* A desired value from the cloud that its DeviceModel refuses (out of minimum/maximum, of the wrong type, on
  a ReadOnly property) is not published as a delta: the API refuses it when the model exists at the write,
  but the model may come later. It is counted as an ``invalid`` rejection and reported once as an
  ``InvalidDesiredValue`` Warning Event on the Device; the twin keeps the last valid expected value.

The MQTT bus starts with the first device, not before: an edge without devices pays nothing for it. The
broker is the node's own (:class:`edgeservice.broker.NodeBroker`): every device id on it is this node's, and
one it does not hold is refused as ``unknown_device``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.devices import Device, DeviceModel, desired_value_problems, parse_device, parse_device_model
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
    compute_delta,
    delta_payload,
    get_result_payload,
    parse_update,
    result_payload,
    status_twins,
    twins_from_json,
    twins_to_json,
    version_from_metadata,
)
from edgeservice.broker import NodeBroker
from edgeservice.metamanager import MetaManager

if TYPE_CHECKING:  # the MQTT client is imported when the first device arrives (footprint)
    from edgeservice.eventbus import BusEvent, EventBus

log = logging.getLogger(__name__)


# Outbox rows beyond which telemetry summaries are dropped while offline: about a day of 10 s windows for
# two devices. Twin reports (statuses) are always queued; summaries are the first thing to give up on.
MAX_PENDING_SUMMARIES = 20_000
# A rejected MQTT message becomes a Warning Event on its Device, at most once per this many seconds for
# the same device and reason: a misconfigured adapter repeating a bad value every 100 ms must not flood
# the link or the cloud's event store (the metrics still count every rejection).
EVENT_INTERVAL = 10.0
# A device that reports values other than its desired ones is sent the delta again, at most this often.
DELTA_RESEND_S = 2.0
# A workload's event reason: Kubernetes style, CamelCase.
_REASON = re.compile(r"^[A-Z][A-Za-z0-9]{0,127}$")
# Event reasons (Kubernetes style, CamelCase) per rejection category.
_EVENT_REASONS = {"malformed": "MalformedMessage", "invalid": "InvalidTwinUpdate", "unknown_device": ""}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _cloud_has(obj: JSONObject, name: str, twin: Twin) -> bool:
    """Whether the Device as the cloud sent it already shows ``twin``'s expected value and version as
    observed (so a refused re-delivery needs no report: it would change nothing at the cloud)."""
    status = obj.get("status") or {}
    for entry in status.get("twins") or []:
        if isinstance(entry, dict) and entry.get("propertyName") == name:
            observed = entry.get("observedDesired") or {}
            meta = observed.get("metadata") if isinstance(observed, dict) else None
            return (
                twin.expected is not None
                and observed.get("value") == twin.expected.value
                and version_from_metadata(meta if isinstance(meta, dict) else {}) == twin.expected_version
            )
    return False


@dataclass
class _Device:
    namespace: str
    name: str
    uid: str
    device: Device
    model: DeviceModel | None
    twins: dict[str, Twin] = field(default_factory=dict)
    state: str = "unknown"
    # Desired values from the cloud refused against the model, by property (each is reported once).
    refused: dict[str, str] = field(default_factory=dict)


class DeviceTwin:
    name = "devicetwin"

    def __init__(
        self,
        meta: MetaManager,
        node: str,
        emit: Callable[[Message], None],
        *,
        mqtt_url: str | None = None,
        broker: NodeBroker | None = None,
    ) -> None:
        """``broker``: the node's broker, shared with Edged (which advertises it to the pods); without
        one, the twin resolves its own from ``mqtt_url`` and stops it when it ends."""
        self.meta = meta
        self.node = node
        self.emit = emit
        self.devices: dict[str, _Device] = {}  # by device id (its name, as KubeEdge's topics use)
        self.bus: EventBus | None = None
        self._owns_broker = broker is None
        self.broker = broker if broker is not None else NodeBroker(mqtt_url)
        self._wake = asyncio.Event()
        self.bus_started = asyncio.Event()  # set once the bus runs (it starts with the first device)
        self._pending_deltas: set[str] = set()
        self._delta_sent: dict[str, float] = {}  # device -> monotonic time of its last delta
        # Rejected MQTT messages by category (metrics), and when each (device, reason) last made an Event.
        self.rejections: Counter[str] = Counter()
        self._last_event: dict[tuple[str, str], float] = {}

    @property
    def bus_stats(self) -> dict[str, int]:
        """The EventBus's counters (empty until the bus starts with the first device)."""
        return self.bus.stats if self.bus is not None else {}

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
        invalid = (
            {p.name: p.error for p in desired_value_problems(device, entry.model)} if entry.model else {}
        )
        patches: dict[str, TwinPatch] = {}
        for prop in device.properties:
            cur = entry.twins.get(prop.name, Twin())
            typ = props[prop.name].type if prop.name in props else ""
            if prop.name not in entry.twins:
                entry.twins[prop.name] = Twin(type=typ)
            if prop.desired is None:
                entry.refused.pop(prop.name, None)
                continue
            desired = prop.desired.value
            problem = invalid.get(prop.name)
            if problem is not None:
                self._refuse_desired(entry, prop.name, desired, problem)
                continue
            entry.refused.pop(prop.name, None)
            same = cur.expected is not None and cur.expected.value == desired
            version = version_from_metadata(prop.desired.metadata)
            if version is None:
                # Not stamped by our API server (a Device from a plain Kubernetes API): a value that
                # differs from the edge's is taken as a new cloud change; the cloud wins.
                if same:
                    continue
                version = Version(cur.expected_version.cloud + 1, cur.expected_version.edge)
            elif same and version == cur.expected_version:
                continue  # the same desired value, delivered again
            patches[prop.name] = TwinPatch(expected=desired, expected_version=version, type=typ)
        if patches:
            update = TwinUpdate(uuid.uuid4().hex, _now_ms(), patches)
            applied = apply_cloud_update(entry.twins, update, now=_now_ms())
            entry.twins = applied.twins
            if any(not _cloud_has(obj, n, t) for n, t in applied.result.to_cloud.items()):
                self._report(entry)  # refused (the edge's value wins): the cloud must learn the edge's
        self._save(entry)
        if any(t.expected is not None for t in entry.twins.values()):
            self._pending_deltas.add(device.name)
        self._wake.set()

    def _refuse_desired(self, entry: _Device, prop: str, value: str, exc: ValidationError) -> None:
        """A desired value from the cloud that its DeviceModel does not allow (the API checks it too, but
        only when the model existed at the write): not published as a delta, so the adapter never sees
        it; counted as an ``invalid`` rejection and told to the cloud as a Warning Event on the Device,
        once per refused value (a resync delivers the same Device again)."""
        if entry.refused.get(prop) == value:
            return
        entry.refused[prop] = value
        self.rejections["invalid"] += 1
        log.info("devicetwin: desired %s of %s refused: %s", prop, entry.name, exc)
        if self.meta.outbox_depth() >= MAX_PENDING_SUMMARIES:
            return
        content = {
            "uid": entry.uid,
            "type": "Warning",
            "reason": "InvalidDesiredValue",
            "message": f"desired value {value!r} of {prop!r} not applied: {exc.field}: {exc.message}"[:1024],
        }
        self.emit(Message("insert", f"{entry.namespace}/deviceevent/{entry.name}", content))

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

                    url = await self.broker.resolve()
                    self.bus = EventBus(
                        url, self.node, self.on_event, on_connect=self._republish, on_reject=self.on_reject
                    )
                    await self.bus.start()
                    self.bus_started.set()
                    log.info("devicetwin: %d device(s), MQTT at %s", len(self.devices), url)
                for name in list(self._pending_deltas):
                    self._pending_deltas.discard(name)
                    await self._publish_delta(name)
        finally:
            if self.bus is not None:
                await self.bus.stop()
            if self._owns_broker:
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
            self._delta_sent[name] = time.monotonic()
            await self.bus.publish_delta(name, payload)

    def _delta_overdue(self, entry: _Device) -> bool:
        """Whether ``entry`` has desired values its device does not hold and no delta went out for it
        in the last DELTA_RESEND_S."""
        if not compute_delta(entry.twins):
            return False
        return time.monotonic() - self._delta_sent.get(entry.name, -DELTA_RESEND_S) >= DELTA_RESEND_S

    def on_reject(self, kind: str, device_id: str, category: str, reason: str) -> None:
        """A message from MQTT was refused: count it, and tell the cloud with a Warning Event on the
        Device (throttled, see EVENT_INTERVAL). An unknown device id has no Device to carry an Event; it
        is counted and answered on the /result topic only."""
        self.rejections[category] += 1
        entry = self.devices.get(device_id)
        event_reason = _EVENT_REASONS.get(category, "")
        if entry is None or not event_reason:
            return
        now = time.monotonic()
        key = (device_id, reason)
        if now - self._last_event.get(key, -EVENT_INTERVAL) < EVENT_INTERVAL:
            return
        if len(self._last_event) > 1024:  # forget old throttles rather than grow with every reason seen
            self._last_event = {k: t for k, t in self._last_event.items() if now - t < EVENT_INTERVAL}
        self._last_event[key] = now
        if self.meta.outbox_depth() >= MAX_PENDING_SUMMARIES:
            return
        topic = kind.replace("_", "/")
        content = {
            "uid": entry.uid,
            "type": "Warning",
            "reason": event_reason,
            "message": f"rejected {topic} from MQTT: {reason}"[:1024],
        }
        self.emit(Message("insert", f"{entry.namespace}/deviceevent/{entry.name}", content))

    def _record_event(self, entry: _Device, event: JSONObject) -> None:
        """An event a workload reported with its data (the inference workload's "defect detected on line
        2"): a Kubernetes Event on the Device, through the outbox. A malformed one is dropped with a log
        line; the data that came with it is kept."""
        type_, reason, message = event.get("type", "Normal"), event.get("reason"), event.get("message", "")
        if type_ not in ("Normal", "Warning") or not isinstance(reason, str) or not reason.isalnum():
            log.info(
                "devicetwin: event of %s ignored: needs type Normal|Warning and a CamelCase reason",
                entry.name,
            )
            return
        content = {"uid": entry.uid, "type": type_, "reason": reason, "message": str(message)[:1024]}
        self.emit(Message("insert", f"{entry.namespace}/deviceevent/{entry.name}", content))

    async def on_event(self, ev: BusEvent) -> None:
        from edgeservice.eventbus import EventRejected, UnknownDeviceError

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
            if applied.result.code >= 400:
                self.on_reject(ev.kind, ev.device_id, "invalid", applied.result.reason)
            if applied.result.changed:
                entry.twins = applied.twins
                self._save(entry)
                self._report(entry)
                if any(p.expected is not None for p in update.twin.values()):
                    # A desired value set on site (an HMI, a local tool): the adapter must write it,
                    # cloud or no cloud.
                    self._pending_deltas.add(entry.name)
                    self._wake.set()
            if applied.result.code < 400 and self._delta_overdue(entry):
                # The adapter reports a value that is still not the desired one: the delta it should have
                # acted on may have been lost (published while it was reconnecting to a broker that came
                # back without a session for it). As KubeEdge, tell it again; at most every DELTA_RESEND_S.
                self._pending_deltas.add(entry.name)
                self._wake.set()
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
            if not isinstance(data, dict) or not data:
                raise EventRejected(ev.device_id, 'a data update needs a non-empty "data" object')
            if self.meta.outbox_depth() >= MAX_PENDING_SUMMARIES:
                log.debug("devicetwin: outbox full, telemetry summary of %s dropped", entry.name)
            else:
                content = {
                    "uid": entry.uid,
                    "summary": {"window": ev.payload.get("window", {}), "data": data},
                }
                self.emit(Message("update", f"{entry.namespace}/devicedata/{entry.name}", content))
            event = ev.payload.get("event")
            if isinstance(event, dict):
                self._record_event(entry, event)
        elif ev.kind == "state_update" and entry is not None:
            state = str(ev.payload.get("state", "")).lower()
            if state not in ("online", "offline", "unknown"):
                raise EventRejected(ev.device_id, f"state must be online, offline or unknown, not {state!r}")
            if state != entry.state:
                entry.state = state
                self._save(entry)
                self._report(entry)
                reason = ev.payload.get("reason")
                if state == "offline" and isinstance(reason, str) and reason:
                    # Why (an unreachable camera, a file that is not a video): for kubectl describe.
                    self._record_event(
                        entry, {"type": "Warning", "reason": "DeviceOffline", "message": reason[:1024]}
                    )

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

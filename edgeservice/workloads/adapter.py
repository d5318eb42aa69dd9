"""What every protocol adapter shares: config, MQTT, twin reporting and the device's online state.

An adapter is one process Edged runs as a pod's container. Its config file (JSON, later a ConfigMap
volume) holds the MQTT broker URL and the Devices and DeviceModels it serves, in the shapes the API
serves (``devices.kubeedge.io/v1beta1``)::

    {"broker": "mqtt://127.0.0.1:1883", "failureThreshold": 3,
     "devices": [<Device>...], "deviceModels": [<DeviceModel>...]}

``broker`` is optional: by default a workload uses its node's broker, whose URL Edged sets in every
container as ``FLEETOPS_MQTT_URL`` (a broker serves one node; see :mod:`edgeservice.broker`).
:func:`read_config`, which every workload (adapters, aggregator, camera, inference) reads its config
through, fills it in.

A bad config (unreadable, a Device that does not validate or fit its model, a visitor the driver cannot
serve) is logged with the offending JSON path and the process exits with :data:`EXIT_CONFIG` (2), so
Edged reports a crash loop whose log names the field.

Per device, one supervised task (``adapter[{device}]``) polls each property on its ``collectCycle``
(milliseconds, as elsewhere in FleetOps; default 1 s) through the protocol's :class:`Driver`, and
publishes the actual values on ``$hw/events/device/{id}/twin/update`` in KubeEdge's payload shape
(:class:`app.twin.TwinUpdate`) when a value changed or when its ``reportCycle`` (default 10 s) has
passed. Deltas (``.../twin/update/delta``, :func:`app.twin.delta_payload`'s shape) are validated with
:func:`app.devices.check_value`; a valid one is written, read back and reported at once. A refused write
(ReadOnly, out of range, not a number, the device's own refusal) is answered on ``.../twin/update/result``
with ``code`` 400 (invalid) or 500 (the device failed) and a ``reason`` naming the property, the shape
devicetwin answers a bad update with, so a UI sees why instead of waiting for a value that never comes;
nothing is written then. The device's state (``.../state/update``, ``{"state": "online"|"offline"}``)
turns offline after ``failureThreshold`` consecutive failed reads, keeping the last values (nothing is
published for them), and back online by itself at the first read that succeeds.

One MQTT task (``adapter.mqtt``) connects, subscribes to every device's delta topic, and drains the
outgoing queue; it reconnects with jittered exponential back-off. Outgoing messages wait in a bounded
queue while the broker is away (the oldest is dropped when full: the latest value wins), and on every
(re)connect each device republishes its state and all its values, so a restarted broker or devicetwin
converges without a full history.

Decisions are pure functions (:func:`plan_writes`, :func:`report_due`, :func:`next_state`, the
payload builders) so they are tested without I/O; the classes around them only do I/O.

Deliberately not done: MQTT TLS and credentials (the broker is the edge's own, on loopback), a last-will
per device (MQTT allows one will a connection), an ``offline`` report on shutdown (a stopped pod is not
a failed device), ``twin/get`` on start (desired values arrive as deltas from devicetwin), and pushing
readings to ``$ke/events/device/{id}/data/update`` (``pushMethod`` is not modelled).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import json
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import aiomqtt

from app.devices import (
    Device,
    DeviceModel,
    DeviceProperty,
    ModelProperty,
    check_device_against_model,
    check_value,
    parse_device,
    parse_device_model,
)
from app.errors import ValidationError
from app.resources import JSONObject
from app.twin import BAD_REQUEST_CODE, MQTT_URL_ENV, TwinPatch, TwinUpdate
from edgeservice.errors import EdgeError

log = logging.getLogger(__name__)
C = TypeVar("C")  # a workload's parsed config

EXIT_CONFIG = 2  # bad config: the usage-error code argparse uses too
DEFAULT_COLLECT_MS = 1000
DEFAULT_REPORT_MS = 10_000  # an unchanged value is still reported this often, so a late subscriber sees it
DEFAULT_FAILURE_THRESHOLD = 3
DEFAULT_MQTT_PORT = 1883
INTERNAL_ERROR_CODE = 500  # KubeEdge's dtcommon.InternalErrorCode: the device failed the write
ONLINE = "online"
OFFLINE = "offline"
# MQTT reconnect back-off: 0.5 s doubling to 30 s, each wait jittered by +-20% so adapters restarted
# together do not reconnect in lock-step.
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
BACKOFF_JITTER = 0.2
# Outgoing messages kept while the broker is away; state and values are republished on reconnect anyway.
OUTBOX_SIZE = 1000
# A device task that dies unexpectedly is restarted after this long (seconds), and the death logged.
RESTART_DELAY_S = 1.0
QOS = 1  # at least once: the twin tolerates a repeated value


class AdapterError(EdgeError):
    """Root of the adapters' errors."""


class ConfigError(AdapterError):
    """The adapter's config cannot be used; ``field`` is the JSON path in the file, ``path`` the file."""

    def __init__(self, message: str, *, path: str = "", field: str = "") -> None:
        where = ":".join(p for p in (path, field) if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.message = message
        self.path = path
        self.field = field


class DeviceIOError(AdapterError):
    """A read or write of one device failed. ``connection`` tells that the link itself is gone (the
    driver has dropped it and reconnects on the next call), as opposed to one refused request."""

    def __init__(self, message: str, *, device: str = "", prop: str = "", connection: bool = False) -> None:
        super().__init__(f"{device}/{prop}: {message}" if prop else f"{device}: {message}")
        self.message = message
        self.device = device
        self.prop = prop
        self.connection = connection


# Config ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Broker:
    host: str
    port: int = DEFAULT_MQTT_PORT


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """A Device with its model; every property of ``device`` is in ``model`` (checked on load)."""

    device: Device
    model: DeviceModel

    @property
    def id(self) -> str:
        return self.device.name

    def model_property(self, name: str) -> ModelProperty:
        mprop = self.model.property(name)
        assert mprop is not None, "checked by check_device_against_model on load"
        return mprop


@dataclass(frozen=True, slots=True)
class AdapterConfig:
    broker: Broker
    devices: tuple[DeviceConfig, ...]
    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD


def parse_broker(url: str) -> Broker:
    """``mqtt://host:port`` (``tcp://`` too; no scheme means ``host[:port]``)."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise ConfigError(f"{url!r} is not an MQTT URL (mqtt://host:port)", field="broker")
    try:
        port = parts.port or DEFAULT_MQTT_PORT
    except ValueError as exc:
        raise ConfigError(f"{url!r}: bad port", field="broker") from exc
    return Broker(parts.hostname, port)


def _same_protocol(a: str, b: str) -> bool:
    def norm(s: str) -> str:
        return s.lower().replace("-", "")

    return norm(a) == norm(b)


def parse_config(
    obj: Any, protocol: str, validate: Callable[[DeviceConfig, str], None] | None = None
) -> AdapterConfig:
    """Validate the config's JSON for an adapter of ``protocol``; ``validate(device, field)`` is the
    driver's own check of one device (raising ConfigError or ValidationError)."""
    if not isinstance(obj, dict):
        raise ConfigError("the config must be a JSON object")
    broker = obj.get("broker")
    if not isinstance(broker, str) or not broker:
        raise ConfigError(
            f"Required value: the MQTT broker URL (or the node's, in ${MQTT_URL_ENV})", field="broker"
        )
    threshold = obj.get("failureThreshold", DEFAULT_FAILURE_THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise ConfigError("must be an integer >= 1", field="failureThreshold")
    raw_models = obj.get("deviceModels", [])
    raw_devices = obj.get("devices")
    if not isinstance(raw_models, list):
        raise ConfigError("must be a list", field="deviceModels")
    if not isinstance(raw_devices, list) or not raw_devices:
        raise ConfigError("Required value: at least one Device", field="devices")
    models: dict[str, DeviceModel] = {}
    devices: list[DeviceConfig] = []
    try:
        for i, raw in enumerate(raw_models):
            try:
                model = parse_device_model(raw)
            except ValidationError as exc:
                raise ValidationError(f"deviceModels[{i}].{exc.field}", exc.message) from exc
            models[model.name] = model
        for i, raw in enumerate(raw_devices):
            where = f"devices[{i}]"
            device = parse_device(raw, where)
            if not _same_protocol(device.protocol.protocol_name, protocol):
                raise ValidationError(
                    f"{where}.spec.protocol.protocolName",
                    f"{device.protocol.protocol_name!r}: this adapter serves {protocol!r} devices",
                )
            found = models.get(device.model_ref)
            if found is None:
                raise ValidationError(
                    f"{where}.spec.deviceModelRef.name",
                    f"no DeviceModel {device.model_ref!r} in deviceModels",
                )
            check_device_against_model(device, found, where)
            if any(d.id == device.name for d in devices):
                raise ValidationError(f"{where}.metadata.name", f"Duplicate value: {device.name!r}")
            if not device.name:
                raise ValidationError(f"{where}.metadata.name", "Required value")
            cfg = DeviceConfig(device, found)
            if validate is not None:
                validate(cfg, where)
            devices.append(cfg)
    except ValidationError as exc:
        raise ConfigError(exc.message, field=exc.field) from exc
    return AdapterConfig(parse_broker(broker), tuple(devices), threshold)


def read_config(path: Path, parse: Callable[[Any], C]) -> C:
    """A workload's JSON config file, validated by ``parse``; every problem is a ConfigError naming the
    file (and the field). A config without ``broker`` gets the node's broker from ``FLEETOPS_MQTT_URL``,
    which Edged sets in every container, so a workload's config need not know the node's address."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the config: {exc.strerror}", path=str(path)) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not JSON: {exc}", path=str(path)) from exc
    if isinstance(obj, dict) and obj.get("broker") is None and os.environ.get(MQTT_URL_ENV):
        obj["broker"] = os.environ[MQTT_URL_ENV]  # the node's broker, as Edged advertises it
    try:
        return parse(obj)
    except ConfigError as exc:
        raise ConfigError(exc.message, path=str(path), field=exc.field) from exc


def load_config(
    path: Path, protocol: str, validate: Callable[[DeviceConfig, str], None] | None = None
) -> AdapterConfig:
    """Read and validate an adapter's config file; every problem is a ConfigError naming the file."""
    return read_config(path, lambda obj: parse_config(obj, protocol, validate))


def workload_arguments(
    module: str, description: str, argv: Sequence[str] | None, config_help: str
) -> argparse.Namespace:
    """The command line every workload takes (``--config FILE``, ``--log-level``), with logging set up on
    stderr (the pod's log) at that level."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--config", required=True, type=Path, help=config_help)
    parser.add_argument("--log-level", default=os.environ.get("FLEETOPS_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return args


# Topics and payloads ---------------------------------------------------------------------------------------

_PREFIX = "$hw/events/device/"


def twin_update_topic(device_id: str) -> str:
    return f"{_PREFIX}{device_id}/twin/update"


def delta_topic(device_id: str) -> str:
    return f"{_PREFIX}{device_id}/twin/update/delta"


def result_topic(device_id: str) -> str:
    return f"{_PREFIX}{device_id}/twin/update/result"


def state_topic(device_id: str) -> str:
    return f"{_PREFIX}{device_id}/state/update"


def device_of_delta_topic(topic: str) -> str | None:
    suffix = "/twin/update/delta"
    if topic.startswith(_PREFIX) and topic.endswith(suffix):
        return topic[len(_PREFIX) : -len(suffix)] or None
    return None


def now_ms() -> int:
    return int(time.time() * 1000)


def actual_payload(values: Mapping[str, tuple[str, str]], *, timestamp: int) -> JSONObject:
    """``twin/update`` reporting actual values; ``values`` is property -> (value, model type)."""
    patches = {name: TwinPatch(actual=value, type=typ) for name, (value, typ) in values.items()}
    return TwinUpdate("", timestamp, patches).to_json()


def state_payload(state: str, *, timestamp: int) -> JSONObject:
    """``state/update``, as KubeEdge's mappers send it."""
    return {"event_id": "", "timestamp": timestamp, "state": state}


def refusal_payload(refused: Mapping[str, str], *, code: int, event_id: str, timestamp: int) -> JSONObject:
    """``twin/update/result`` for writes that were not done: ``code`` and a ``reason`` naming each."""
    reason = "; ".join(f"{name}: {why}" for name, why in sorted(refused.items()))
    return {"event_id": event_id, "timestamp": timestamp, "code": code, "reason": reason}


def parse_delta(payload: bytes | str) -> tuple[str, dict[str, str]]:
    """``(event_id, {property: desired value})`` from a delta message; ValidationError if malformed."""
    try:
        obj = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError("", f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValidationError("", "must be an object")
    event_id = obj.get("event_id", "")
    delta = obj.get("delta")
    if not isinstance(delta, dict):
        raise ValidationError("delta", "Required value: an object of property -> value")
    out: dict[str, str] = {}
    for name, value in delta.items():
        if not isinstance(value, str):
            raise ValidationError(f"delta.{name}", "must be a string")
        out[str(name)] = value
    return (event_id if isinstance(event_id, str) else ""), out


# Pure decisions --------------------------------------------------------------------------------------------


def plan_writes(cfg: DeviceConfig, delta: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Split a delta into ``(writes, refused)``: refused maps a property to why (unknown, ReadOnly, out of
    range, wrong type), as :func:`app.devices.check_value` says it."""
    writes: dict[str, str] = {}
    refused: dict[str, str] = {}
    for name, value in delta.items():
        mprop = cfg.model.property(name)
        if mprop is None or cfg.device.property(name) is None:
            refused[name] = "unknown property"
            continue
        try:
            check_value(mprop, value)
        except ValidationError as exc:
            refused[name] = exc.message
            continue
        writes[name] = value
    return writes, refused


@dataclass(frozen=True, slots=True)
class Reported:
    value: str
    at: float  # monotonic seconds


def report_due(last: Reported | None, value: str, now: float, report_cycle_s: float) -> bool:
    """Publish a reading when it changed, was never reported, or ``report_cycle_s`` has passed."""
    return last is None or last.value != value or now - last.at >= report_cycle_s


def next_state(current: str, failures: int, threshold: int) -> str:
    """The device state after a read: online once one succeeds (``failures == 0``), offline once
    ``threshold`` consecutive reads failed, unchanged in between."""
    if failures == 0:
        return ONLINE
    if failures >= threshold:
        return OFFLINE
    return current


# Drivers ---------------------------------------------------------------------------------------------------


class Driver(Protocol):
    """One device's connection. Both calls connect lazily and raise DeviceIOError on failure."""

    async def read(self, prop: DeviceProperty, mprop: ModelProperty) -> str: ...

    async def write(self, prop: DeviceProperty, mprop: ModelProperty, value: str) -> None: ...

    async def close(self) -> None: ...


DriverFactory = Callable[[DeviceConfig], Driver]


@dataclass(frozen=True, slots=True)
class AdapterSpec:
    """What a protocol module gives the shared runtime."""

    protocol: str
    driver: DriverFactory
    validate: Callable[[DeviceConfig, str], None] | None = None


# Runtime ---------------------------------------------------------------------------------------------------


class Outbox:
    """Messages waiting for the broker; bounded, dropping the oldest (the latest value wins)."""

    def __init__(self, size: int = OUTBOX_SIZE) -> None:
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(size)

    def put(self, topic: str, payload: JSONObject) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        if self._queue.full():
            dropped, _ = self._queue.get_nowait()
            log.warning("mqtt outbox full: dropped the oldest message (for %s)", dropped)
        self._queue.put_nowait((topic, data))

    async def get(self) -> tuple[str, bytes]:
        return await self._queue.get()


@dataclass
class _PropState:
    prop: DeviceProperty
    mprop: ModelProperty
    collect_s: float
    report_s: float
    due: float = 0.0
    last: Reported | None = None
    value: str | None = field(default=None)


class DeviceWorker:
    """Polls one device, reports its values and state, and applies its deltas."""

    def __init__(
        self,
        cfg: DeviceConfig,
        driver: Driver,
        outbox: Outbox,
        *,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        default_collect_ms: int = DEFAULT_COLLECT_MS,
        default_report_ms: int = DEFAULT_REPORT_MS,
    ) -> None:
        self.cfg = cfg
        self.driver = driver
        self.outbox = outbox
        self.threshold = failure_threshold
        self.deltas: asyncio.Queue[tuple[str, dict[str, str]]] = asyncio.Queue()
        self.state = ""
        self.failures = 0
        self.props = [
            _PropState(
                prop=p,
                mprop=cfg.model_property(p.name),
                collect_s=(p.collect_cycle or default_collect_ms) / 1000,
                report_s=(p.report_cycle or default_report_ms) / 1000,
            )
            for p in cfg.device.properties
        ]

    def resync(self) -> None:
        """Report state and every value again with the next reading (the broker or devicetwin restarted)."""
        self.state = "" if self.state == ONLINE else self.state
        if self.state == OFFLINE:
            self.outbox.put(state_topic(self.cfg.id), state_payload(OFFLINE, timestamp=now_ms()))
        for p in self.props:
            p.last = None

    async def run(self) -> None:
        try:
            while True:
                now = time.monotonic()
                due = [p for p in self.props if p.due <= now]
                if due:
                    await self._collect(due)
                wait = min(p.due for p in self.props) - time.monotonic()
                try:
                    async with asyncio.timeout(max(0.0, wait)):
                        event_id, delta = await self.deltas.get()
                except TimeoutError:
                    continue
                await self._apply(event_id, delta)
        finally:
            await self.driver.close()

    def _set_state(self, failures: int) -> None:
        self.failures = failures
        state = next_state(self.state, failures, self.threshold)
        if state != self.state:
            if state:
                log.info("device %s is %s", self.cfg.id, state)
                self.outbox.put(state_topic(self.cfg.id), state_payload(state, timestamp=now_ms()))
            self.state = state

    async def _read(self, p: _PropState) -> str:
        try:
            value = await self.driver.read(p.prop, p.mprop)
        except DeviceIOError as exc:
            self._set_state(self.failures + 1)
            # Once offline, each retry is logged at DEBUG: the state change already said it at INFO.
            log.log(
                logging.DEBUG if self.state == OFFLINE else logging.WARNING,
                "device %s: read of %s failed (%d in a row): %s",
                self.cfg.id,
                p.prop.name,
                self.failures,
                exc.message,
            )
            raise
        self._set_state(0)
        return value

    async def _collect(self, due: Sequence[_PropState]) -> None:
        report: dict[str, tuple[str, str]] = {}
        for i, p in enumerate(due):
            p.due = time.monotonic() + p.collect_s
            try:
                p.value = await self._read(p)
            except DeviceIOError as exc:
                if exc.connection:  # the link is down: try again next cycle instead of each property now
                    for rest in due[i + 1 :]:
                        rest.due = p.due
                    break
                continue
            now = time.monotonic()
            if report_due(p.last, p.value, now, p.report_s):
                p.last = Reported(p.value, now)
                report[p.prop.name] = (p.value, p.mprop.type)
        self._report(report)

    def _report(self, values: Mapping[str, tuple[str, str]]) -> None:
        if values:
            self.outbox.put(twin_update_topic(self.cfg.id), actual_payload(values, timestamp=now_ms()))

    async def _apply(self, event_id: str, delta: Mapping[str, str]) -> None:
        writes, refused = plan_writes(self.cfg, delta)
        code = BAD_REQUEST_CODE if refused else INTERNAL_ERROR_CODE
        report: dict[str, tuple[str, str]] = {}
        by_name = {p.prop.name: p for p in self.props}
        for name, value in writes.items():
            p = by_name[name]
            try:
                await self.driver.write(p.prop, p.mprop, value)
                log.info("device %s: wrote %s = %s", self.cfg.id, name, value)
                p.value = await self._read(p)
            except DeviceIOError as exc:
                log.warning("device %s: write of %s = %s failed: %s", self.cfg.id, name, value, exc.message)
                refused[name] = f"write failed: {exc.message}"
                continue
            p.last = Reported(p.value, time.monotonic())
            report[name] = (p.value, p.mprop.type)
        self._report(report)
        if refused:
            log.warning("device %s: delta %s refused: %s", self.cfg.id, event_id, refused)
            payload = refusal_payload(refused, code=code, event_id=event_id, timestamp=now_ms())
            self.outbox.put(result_topic(self.cfg.id), payload)


class Adapter:
    """The adapter process' service: one MQTT task and one supervised task per device."""

    def __init__(self, config: AdapterConfig, spec: AdapterSpec) -> None:
        self.config = config
        self.spec = spec
        self.outbox = Outbox()
        self.workers = {
            cfg.id: DeviceWorker(
                cfg, spec.driver(cfg), self.outbox, failure_threshold=config.failure_threshold
            )
            for cfg in config.devices
        }

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._mqtt(), name="adapter.mqtt")
            for device_id, worker in self.workers.items():
                tg.create_task(self._supervise(worker), name=f"adapter[{device_id}]")

    async def _supervise(self, worker: DeviceWorker) -> None:
        while True:
            try:
                await worker.run()
            except Exception:  # a bug in one device's task must not stop the others: log, restart
                log.exception("device %s: task died; restarting in %.1f s", worker.cfg.id, RESTART_DELAY_S)
            await asyncio.sleep(RESTART_DELAY_S)

    async def _mqtt(self) -> None:
        def resync() -> None:
            for worker in self.workers.values():
                worker.resync()

        await mqtt_session(
            self.config.broker,
            f"fleetops-{self.spec.protocol}-{os.getpid()}",
            [delta_topic(device_id) for device_id in self.workers],
            self.outbox,
            self._dispatch,
            on_connect=resync,
        )

    def _dispatch(self, topic: str, payload: Any) -> None:
        device_id = device_of_delta_topic(topic)
        worker = self.workers.get(device_id or "")
        if worker is None:
            log.debug("ignoring a message on %s", topic)
            return
        try:
            event_id, delta = parse_delta(payload if isinstance(payload, bytes | str) else b"")
        except ValidationError as exc:
            log.warning("device %s: malformed delta: %s", device_id, exc)
            return
        worker.deltas.put_nowait((event_id, delta))


# Entry point -----------------------------------------------------------------------------------------------


async def mqtt_session(
    broker: Broker,
    identifier: str,
    topics: Sequence[str],
    outbox: Outbox,
    on_message: Callable[[str, Any], None],
    *,
    on_connect: Callable[[], None] | None = None,
    senders: Sequence[Callable[[aiomqtt.Client], Coroutine[Any, Any, None]]] = (),
) -> None:
    """A workload's MQTT connection, for ever: subscribe to ``topics``, hand each message to
    ``on_message(topic, payload)``, publish what ``outbox`` holds, and reconnect with jittered backoff.
    Each of ``senders`` runs with the client while connected (a camera's frames, published as they come
    rather than queued)."""
    delay = BACKOFF_MIN_S
    while True:
        try:
            # timeout bounds every MQTT operation, disconnect included (aiomqtt's default is 10 s); no Nagle:
            # it costs ~40 ms per publish that follows an unacknowledged packet.
            async with aiomqtt.Client(
                broker.host,
                broker.port,
                identifier=identifier,
                timeout=3,
                socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            ) as client:
                for topic in topics:
                    await client.subscribe(topic, qos=QOS)
                log.info("mqtt connected to %s:%d", broker.host, broker.port)
                delay = BACKOFF_MIN_S
                if on_connect is not None:
                    on_connect()
                tasks = [asyncio.create_task(_publish(client, outbox), name=f"{identifier}.send")]
                tasks += [asyncio.create_task(send(client), name=f"{identifier}.send") for send in senders]
                try:
                    async for message in client.messages:
                        on_message(message.topic.value, message.payload)
                finally:
                    for task in tasks:
                        task.cancel()
                    for task in tasks:
                        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                            await task
        except aiomqtt.MqttError as exc:
            log.warning("mqtt %s:%d: %s; reconnecting in %.1f s", broker.host, broker.port, exc, delay)
        await asyncio.sleep(delay * random.uniform(1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER))
        delay = min(delay * 2, BACKOFF_MAX_S)


async def _publish(client: aiomqtt.Client, outbox: Outbox) -> None:
    while True:
        topic, data = await outbox.get()
        await client.publish(topic, data, qos=QOS)


# Seconds the adapter gives itself to close its connections after SIGTERM. A broker or device that does
# not answer must not hold the pod past its grace period (the kubelet would SIGKILL it anyway).
SHUTDOWN_TIMEOUT_S = 3.0


# Seconds past the shutdown timeout after which a workload still running is ended by its watchdog.
EXIT_GRACE_S = 2.0

EXIT_FAILED = 1  # run() failed or ended without being asked to stop: a restartPolicy OnFailure restarts it


def _exit_now(name: str, after_s: float, code: int) -> None:
    os.write(2, f"{name}: still running {after_s:.1f} s after the stop; exiting with {code}\n".encode())
    os._exit(code)


async def serve_until_signalled(
    run: Callable[[], Coroutine[Any, Any, None]],
    name: str,
    *,
    shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S,
    exit_grace_s: float = EXIT_GRACE_S,
) -> None:
    """Run a workload until SIGTERM/SIGINT, then give it ``shutdown_timeout_s`` to close its connections.
    Meant to be ``asyncio.run``'s coroutine: it does the loop's clean-up itself (the other tasks, async
    generators, the default executor) so that the watchdog below bounds all of it.

    Returns (the process exits 0) only when a signal stopped the workload and ``run()`` had not failed.
    When ``run()`` raised (before the stop or on its way out) or returned by itself, the failure is logged
    and this raises ``SystemExit(EXIT_FAILED)``: the pod's container then ends as failed, not Completed,
    and a ``restartPolicy: OnFailure`` restarts it. A shutdown that overruns its time ends the process with
    the same status (0 after a clean stop, EXIT_FAILED after a failure). A fatal signal (SIGSEGV in a native
    library, SIGABRT) writes every thread's stack to the pod's log."""
    if shutdown_timeout_s <= 0 or exit_grace_s <= 0:
        raise ValueError(
            f"shutdown_timeout_s and exit_grace_s must be > 0, not {shutdown_timeout_s} and {exit_grace_s}"
        )
    faulthandler.enable()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(run(), name=f"{name}.run")
    stopped = asyncio.create_task(stop.wait(), name=f"{name}.stop")
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    # run() ending before any stop is a failure, whether it raised or returned.
    failed = task.done()
    if failed:
        _log_failure(task, name)
    # A last resort that asyncio cannot defeat: whatever hangs on the way out (a task that blocks the loop,
    # or ignores cancellation), the process ends in bounded time, with the status the stop deserves.
    deadline = shutdown_timeout_s + exit_grace_s
    watchdog = threading.Timer(deadline, lambda: _exit_now(name, deadline, EXIT_FAILED if failed else 0))
    watchdog.daemon = True
    watchdog.start()
    try:
        stopped.cancel()
        task.cancel()
        try:
            async with asyncio.timeout(shutdown_timeout_s):
                await asyncio.wait({task, stopped})
                if not failed and not task.cancelled() and task.exception() is not None:
                    failed = True  # it failed on its way out
                    _log_failure(task, name)
                # What asyncio.run would do after us, under the same bound: a library's stray task, an
                # async generator, a thread of the default executor. asyncio.wait, not gather: a gather
                # of a task that ignores cancellation would not give way to the timeout either.
                others = asyncio.all_tasks() - {asyncio.current_task()}
                for other in others:
                    other.cancel()
                if others:
                    await asyncio.wait(others)
                for other in others:
                    if not other.cancelled() and (exc := other.exception()) is not None:
                        log.warning("%s: task %s failed on the way out", name, other.get_name(), exc_info=exc)
                await loop.shutdown_asyncgens()
                await loop.shutdown_default_executor()
        except TimeoutError:
            log.warning("%s did not close within %.1f s; exiting anyway", name, shutdown_timeout_s)
            logging.shutdown()
            os._exit(EXIT_FAILED if failed else 0)
    finally:
        watchdog.cancel()
    if failed:
        raise SystemExit(EXIT_FAILED)


def _log_failure(task: asyncio.Task[None], name: str) -> None:
    exc = None if task.cancelled() else task.exception()
    if exc is None:
        log.error("%s ended by itself, without a stop signal", name)
    else:
        log.error("%s failed: %s", name, exc, exc_info=exc)


def main(spec: AdapterSpec, argv: Sequence[str] | None = None) -> int:
    """``python -m edgeservice.workloads.<protocol> --config FILE``: 0 when stopped by SIGTERM/SIGINT,
    :data:`EXIT_CONFIG` on a bad config."""
    args = workload_arguments(
        f"edgeservice.workloads.{spec.protocol}",
        f"FleetOps {spec.protocol} protocol adapter",
        argv,
        "JSON config file (broker, devices)",
    )
    # The protocol libraries log every failed connection attempt; with a device away for a day that is a
    # line per collect cycle. The adapter reports the transitions itself (online/offline), once each.
    for noisy in ("pymodbus", "asyncua"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    try:
        config = load_config(args.config, spec.protocol, spec.validate)
    except ConfigError as exc:
        log.error("bad config: %s", exc)  # the message is the diagnosis: no traceback
        return EXIT_CONFIG
    log.info(
        "%s adapter: %d device(s), broker %s:%d",
        spec.protocol,
        len(config.devices),
        config.broker.host,
        config.broker.port,
    )
    asyncio.run(serve_until_signalled(Adapter(config, spec).run, "adapter"))
    return 0

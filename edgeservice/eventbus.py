"""EventBus: the edge's MQTT side, where device adapters report readings and receive desired values.

This is KubeEdge's ``eventbus`` module. It subscribes to the topics adapters publish on
(``$hw/events/device/+/twin/update``, ``.../twin/get``, ``.../state/update``,
``$ke/events/device/+/data/update`` and this node's ``$hw/events/node/{node}/membership/get``), turns
each message into a :class:`BusEvent` (device id, kind, JSON object payload) and awaits the injected
handler (the devicetwin module) with it. The broker is this node's own (a broker serves one node, see
:mod:`edgeservice.broker`), so every device on it is this node's: an id devicetwin does not hold is an
adapter configured for a device bound elsewhere, and is refused as ``unknown_device``.
The other way, ``publish_*`` helpers put devicetwin's answers on the matching topics (``twin/update/result``,
``twin/update/delta``, ``twin/update/document``, ``twin/get/result``, ``membership/get/result``); the
payloads themselves are built by :mod:`app.twin`, so this module knows topics, not twin rules.

A bad message never takes the bus down. Malformed JSON, a payload that is not an object, or a handler that
refuses the event (:class:`EventRejected`, :class:`UnknownDeviceError`, or an
:class:`app.errors.ValidationError` from parsing the twin) is counted in ``stats["rejected"]`` and, for
``twin/update`` and ``twin/get``, answered on the ``/result`` topic with ``code`` 400 and a ``reason``, as
KubeEdge's devicetwin does, so the adapter learns why. The ``on_reject`` hook hears of every rejection with
a category (``malformed``, ``unknown_device``, ``invalid``) for metrics, and devicetwin records it as a
Warning Event on the Device, so an operator sees it too. Any other handler exception is logged with its
traceback and counted in ``stats["failed"]``; the next message is handled as usual.

Connection handling follows aiomqtt's recommended pattern: one ``async with Client`` per connection inside
a loop that catches ``MqttError`` and waits a jittered exponential backoff (0.5 s doubling to 30 s) before
reconnecting, then subscribes again. Messages are handled one at a time in arrival order, so a device's
updates are applied in the order it sent them. Twin topics are published and subscribed at QoS 1 (at
least once, as KubeEdge); telemetry (``data/update``, ``state/update``) at QoS 0.

Deliberately not done: persistent MQTT sessions (``clean_session`` is true, and each start uses a fresh
client id), so messages published while the bus is disconnected are not delivered to it; adapters
re-report on their cycle, and ``on_connect`` lets devicetwin republish pending deltas after a reconnect.
Publishing while disconnected waits up to ``timeout`` for the connection and then raises
:class:`BusUnavailableError` rather than queueing: the caller (devicetwin) owns the durable state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, NewType, cast

import aiomqtt

from app.errors import ValidationError
from app.resources import JSONObject
from app.twin import BAD_REQUEST_CODE, UpdateResult, result_payload
from edgeservice.broker import parse_url
from edgeservice.errors import EdgeError

log = logging.getLogger(__name__)

DeviceId = NewType("DeviceId", str)
EventKind = Literal["twin_update", "twin_get", "state_update", "membership_get", "data_update"]
Handler = Callable[["BusEvent"], Awaitable[None]]
# Why a message was rejected, as counted in metrics (a small fixed set: it is a label).
RejectCategory = Literal["malformed", "unknown_device", "invalid"]
# Told of each rejection: (kind, device id, category, reason).
RejectHook = Callable[["EventKind", "DeviceId", RejectCategory, str], None]

QOS_TWIN = 1  # twin traffic must arrive at least once (KubeEdge uses QoS 1 for it)
QOS_TELEMETRY = 0  # readings are re-sent on the adapter's cycle; losing one is harmless
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
# Seconds between MQTT pings: a dead LTE link is noticed within 1.5x this (the broker's rule), which is
# quick enough for an operator and cheap on a metered link.
KEEPALIVE = 15
# Seconds a publish waits for the connection (and its PUBACK) before BusUnavailableError.
PUBLISH_TIMEOUT = 5.0

_HW_DEVICE = "$hw/events/device"
_KE_DEVICE = "$ke/events/device"
# (topic suffix after the device id, kind, subscription QoS)
_DEVICE_TOPICS: tuple[tuple[str, str, EventKind, int], ...] = (
    (_HW_DEVICE, "twin/update", "twin_update", QOS_TWIN),
    (_HW_DEVICE, "twin/get", "twin_get", QOS_TWIN),
    (_HW_DEVICE, "state/update", "state_update", QOS_TWIN),
    (_KE_DEVICE, "data/update", "data_update", QOS_TELEMETRY),
)
# Kinds answered on a ``/result`` topic when rejected, and that topic's suffix.
_RESULT_SUFFIX: dict[EventKind, str] = {
    "twin_update": "twin/update/result",
    "twin_get": "twin/get/result",
}


class EventBusError(EdgeError):
    """Root of the errors of the event bus."""


class BusUnavailableError(EventBusError):
    """A publish could not be done: the bus is not connected, or the broker did not acknowledge."""

    def __init__(self, topic: str, message: str) -> None:
        super().__init__(f"publish to {topic}: {message}")
        self.topic = topic
        self.message = message


class EventRejected(EventBusError):
    """Raised by a handler to refuse an event; ``reason`` goes back to the adapter on ``/result``."""

    def __init__(self, device_id: str, reason: str) -> None:
        super().__init__(f"device {device_id}: {reason}")
        self.device_id = device_id
        self.reason = reason


class UnknownDeviceError(EventRejected):
    """The event names a device this node does not have."""

    def __init__(self, device_id: str) -> None:
        super().__init__(device_id, f"unknown device {device_id!r}")


@dataclass(frozen=True, slots=True)
class BusEvent:
    """One message from an adapter. ``device_id`` is empty for ``membership_get`` (a node topic)."""

    kind: EventKind
    device_id: DeviceId
    payload: JSONObject
    topic: str


def device_topic(device_id: str, suffix: str) -> str:
    """``$hw/events/device/{id}/{suffix}`` (or ``$ke/...`` for ``data/update``)."""
    base = _KE_DEVICE if suffix.startswith("data/") else _HW_DEVICE
    return f"{base}/{device_id}/{suffix}"


def membership_topic(node: str, *, result: bool = False) -> str:
    return f"$hw/events/node/{node}/membership/get" + ("/result" if result else "")


def classify(topic: str, node: str) -> tuple[EventKind, DeviceId] | None:
    """The kind and device id of a topic the bus subscribes to; ``None`` for any other topic."""
    if topic == membership_topic(node):
        return "membership_get", DeviceId("")
    for base, suffix, kind, _ in _DEVICE_TOPICS:
        prefix = base + "/"
        tail = "/" + suffix
        if topic.startswith(prefix) and topic.endswith(tail):
            device = topic[len(prefix) : -len(tail)]
            if device and "/" not in device:
                return kind, DeviceId(device)
    return None


def parse_payload(raw: bytes | bytearray | str) -> JSONObject:
    """The JSON object in a message; raises ValidationError with the reason otherwise."""
    try:
        value: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError("", f"malformed JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValidationError("", "payload must be a JSON object")
    return cast("JSONObject", value)


def backoff_delay(attempt: int) -> float:
    """Full-jitter exponential backoff: a random delay up to 0.5 s * 2**attempt, capped at 30 s."""
    return random.uniform(BACKOFF_BASE / 2, min(BACKOFF_MAX, BACKOFF_BASE * (2**attempt)))


# Twin traffic is small request/response packets: without TCP_NODELAY, Nagle's algorithm holds each publish
# that follows an unacknowledged packet (our PUBACK) until the broker's delayed ACK, ~40 ms per hop.
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


def _now_ms() -> int:
    return int(time.time() * 1000)


class EventBus:
    """The ``eventbus`` service module: ``start()`` connects in the background, ``stop()`` disconnects.

    ``handler`` is awaited with each event; ``on_connect`` (optional) after every (re)connection and
    subscription, so the caller can republish what adapters may have missed."""

    name = "eventbus"

    def __init__(
        self,
        url: str,
        node_name: str,
        handler: Handler,
        *,
        on_connect: Callable[[], Awaitable[None]] | None = None,
        on_reject: RejectHook | None = None,
    ) -> None:
        self.url = url
        self.host, self.port = parse_url(url)
        self.node = node_name
        self.handler = handler
        self.on_connect = on_connect
        self.on_reject = on_reject
        self.stats: dict[str, int] = {
            "received": 0,
            "rejected": 0,
            "published": 0,
            "failed": 0,
            "connects": 0,
        }
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"{self.name}[{self.node}].receive")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Return once the bus is connected and subscribed; TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    def subscriptions(self) -> list[tuple[str, int]]:
        subs = [(f"{base}/+/{suffix}", qos) for base, suffix, _, qos in _DEVICE_TOPICS]
        subs.append((membership_topic(self.node), QOS_TWIN))
        return subs

    # Receiving ---------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while True:
            # A fresh id per connection keeps two buses of the same node (a restart racing its
            # predecessor's stale session) from kicking each other off the broker.
            identifier = f"fleetops-{self.node}-{secrets.token_hex(4)}"
            try:
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    identifier=identifier,
                    clean_session=True,
                    keepalive=KEEPALIVE,
                    timeout=PUBLISH_TIMEOUT,
                    socket_options=NODELAY,
                ) as client:
                    await client.subscribe(self.subscriptions())
                    self._client = client
                    self._connected.set()
                    self.stats["connects"] += 1
                    attempt = 0
                    log.info("eventbus[%s]: connected to %s", self.node, self.url)
                    await self._connected_hook()
                    async for message in client.messages:
                        await self._dispatch(message)
                reason = "message stream ended"
            except aiomqtt.MqttError as exc:
                reason = str(exc)
            finally:
                self._connected.clear()
                self._client = None
            delay = backoff_delay(attempt)
            attempt += 1
            log.warning(
                "eventbus[%s]: connection to %s lost (%s); reconnecting in %.1f s",
                self.node,
                self.url,
                reason,
                delay,
            )
            await asyncio.sleep(delay)

    async def _connected_hook(self) -> None:
        if self.on_connect is None:
            return
        try:
            await self.on_connect()
        except Exception:
            log.exception("eventbus[%s]: on_connect failed", self.node)

    async def _dispatch(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        found = classify(topic, self.node)
        if found is None:
            log.debug("eventbus[%s]: ignoring message on %s", self.node, topic)
            return
        kind, device = found
        self.stats["received"] += 1
        raw = message.payload
        event_id = ""
        try:
            if not isinstance(raw, bytes | bytearray | str):
                raise ValidationError("", "payload must be a JSON object")
            payload = parse_payload(raw)
        except ValidationError as exc:
            await self._reject(kind, device, event_id, "malformed", str(exc))
            return
        eid = payload.get("event_id", "")
        event_id = eid if isinstance(eid, str) else ""
        try:
            await self.handler(BusEvent(kind, device, payload, topic))
        except UnknownDeviceError as exc:
            await self._reject(kind, device, event_id, "unknown_device", exc.reason)
        except EventRejected as exc:
            await self._reject(kind, device, event_id, "invalid", exc.reason)
        except ValidationError as exc:  # the payload's shape (a twin update without "twin", say)
            await self._reject(kind, device, event_id, "malformed", str(exc))
        except Exception:
            self.stats["failed"] += 1
            log.exception("eventbus[%s]: handler failed on %s", self.node, topic)

    async def _reject(
        self, kind: EventKind, device: DeviceId, event_id: str, category: RejectCategory, reason: str
    ) -> None:
        self.stats["rejected"] += 1
        log.info("eventbus[%s]: rejected %s of device %r: %s", self.node, kind, device, reason)
        if self.on_reject is not None:
            try:
                self.on_reject(kind, device, category, reason)
            except Exception:
                log.exception("eventbus[%s]: on_reject failed", self.node)
        suffix = _RESULT_SUFFIX.get(kind)
        if suffix is None:
            return
        result = UpdateResult({}, {}, {}, code=BAD_REQUEST_CODE, reason=reason)
        payload = result_payload(result, event_id=event_id, timestamp=_now_ms())
        try:
            await self._publish(device_topic(device, suffix), payload, QOS_TWIN)
        except BusUnavailableError as exc:
            log.warning("eventbus[%s]: could not answer device %r: %s", self.node, device, exc)

    # Publishing --------------------------------------------------------------------------------------------

    async def publish_result(
        self, device_id: str, payload: JSONObject, *, timeout: float = PUBLISH_TIMEOUT
    ) -> None:
        """``twin/update/result`` (``app.twin.result_payload``)."""
        await self._publish(device_topic(device_id, "twin/update/result"), payload, QOS_TWIN, timeout)

    async def publish_delta(
        self, device_id: str, payload: JSONObject, *, timeout: float = PUBLISH_TIMEOUT
    ) -> None:
        """``twin/update/delta`` (``app.twin.delta_payload``): what the adapter must write."""
        await self._publish(device_topic(device_id, "twin/update/delta"), payload, QOS_TWIN, timeout)

    async def publish_document(
        self, device_id: str, payload: JSONObject, *, timeout: float = PUBLISH_TIMEOUT
    ) -> None:
        """``twin/update/document`` (``app.twin.document``)."""
        await self._publish(device_topic(device_id, "twin/update/document"), payload, QOS_TWIN, timeout)

    async def publish_get_result(
        self, device_id: str, payload: JSONObject, *, timeout: float = PUBLISH_TIMEOUT
    ) -> None:
        """``twin/get/result`` (``app.twin.get_result_payload``)."""
        await self._publish(device_topic(device_id, "twin/get/result"), payload, QOS_TWIN, timeout)

    async def publish_membership(self, payload: JSONObject, *, timeout: float = PUBLISH_TIMEOUT) -> None:
        """``$hw/events/node/{node}/membership/get/result``: this node's devices."""
        await self._publish(membership_topic(self.node, result=True), payload, QOS_TWIN, timeout)

    async def _publish(
        self, topic: str, payload: JSONObject, qos: int, timeout: float = PUBLISH_TIMEOUT
    ) -> None:
        """Publish once connected; for QoS 1, return when the broker has acknowledged it."""
        data = json.dumps(payload, separators=(",", ":"))
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
                client = self._client
                if client is None:  # disconnected between the wake-up and now
                    raise BusUnavailableError(topic, "not connected")
                await client.publish(topic, data, qos=qos)
        except TimeoutError as exc:
            raise BusUnavailableError(topic, f"not done within {timeout} s") from exc
        except aiomqtt.MqttError as exc:
            raise BusUnavailableError(topic, str(exc)) from exc
        self.stats["published"] += 1

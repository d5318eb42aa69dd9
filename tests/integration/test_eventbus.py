"""The edge's EventBus against real brokers: the shared Mosquitto (127.0.0.1:1883) and the embedded one.

Mosquitto is shared with other test runs, so every test uses random device ids and its handler ignores
devices it did not make up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiomqtt
import pytest

from app.twin import BAD_REQUEST_CODE, Twin, TwinValue, delta_payload
from edgeservice.broker import (
    BrokerUrlError,
    EmbeddedBroker,
    NodeBroker,
    ensure_broker,
    parse_url,
    reachable,
)
from edgeservice.eventbus import BusEvent, BusUnavailableError, EventBus, UnknownDeviceError, classify
from tests.proxy import FaultProxy
from tests.services import require_mosquitto

MOSQUITTO = ("127.0.0.1", 1883)
WAIT = 10.0  # seconds any single expected message or reconnect may take before the test fails


@dataclass
class Target:
    kind: str
    host: str
    port: int
    embedded: EmbeddedBroker | None

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"


@pytest.fixture(params=["mosquitto", "embedded"])
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    if request.param == "mosquitto":
        require_mosquitto()
        yield Target("mosquitto", *MOSQUITTO, None)
        return
    broker = EmbeddedBroker()
    await broker.start()
    try:
        yield Target("embedded", broker.host, broker.port, broker)
    finally:
        await broker.stop()


class Recorder:
    """A handler that records events of this test's devices; ``ghost`` devices are unknown."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.ghost = f"{prefix}-ghost"
        self.events: asyncio.Queue[BusEvent] = asyncio.Queue()
        self.rejections: list[tuple[str, str, str]] = []  # (kind, category, reason) of this test's devices

    def rejected(self, kind: str, device: str, category: str, reason: str) -> None:
        if device.startswith(self.prefix):
            self.rejections.append((kind, category, reason))

    async def __call__(self, event: BusEvent) -> None:
        if not event.device_id.startswith(self.prefix):
            return  # another test run's device on the shared broker
        if event.device_id == self.ghost:
            raise UnknownDeviceError(event.device_id)
        await self.events.put(event)

    async def next(self) -> BusEvent:
        async with asyncio.timeout(WAIT):
            return await self.events.get()


@pytest.fixture
def prefix() -> str:
    return f"t{secrets.token_hex(4)}"


async def _started(url: str, recorder: Recorder) -> EventBus:
    bus = EventBus(url, f"node-{recorder.prefix}", recorder, on_reject=recorder.rejected)
    await bus.start()
    try:
        await bus.wait_connected(WAIT)
    except BaseException:
        await bus.stop()
        raise
    return bus


async def _next_message(client: aiomqtt.Client, prefix: str = "") -> aiomqtt.Message:
    """The next message whose device id starts with ``prefix`` (others are other test runs')."""
    async with asyncio.timeout(WAIT):
        async for message in client.messages:
            if message.topic.value.split("/")[3].startswith(prefix):
                return message
    raise AssertionError("message stream ended")


async def _until(cond: Callable[[], bool]) -> None:
    """Poll (no event to await: the bus's reconnect is internal) with a short interval and a deadline."""
    deadline = time.monotonic() + WAIT
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def _update(value: str) -> dict[str, object]:
    return {"event_id": "e1", "timestamp": 1, "twin": {"temp": {"actual": {"value": value}}}}


async def test_twin_update_reaches_handler(target: Target, prefix: str) -> None:
    rec = Recorder(prefix)
    device = f"{prefix}-dev"
    bus = await _started(target.url, rec)
    try:
        async with aiomqtt.Client(target.host, target.port) as adapter:
            await adapter.publish(f"$hw/events/device/{device}/twin/update", json.dumps(_update("21")), qos=1)
            await adapter.publish(f"$ke/events/device/{device}/data/update", b'{"temp": "21"}')
            first, second = await rec.next(), await rec.next()
    finally:
        await bus.stop()
    assert (first.kind, first.device_id, first.payload) == ("twin_update", device, _update("21"))
    assert (second.kind, second.device_id, second.payload) == ("data_update", device, {"temp": "21"})
    assert bus.stats["received"] >= 2


async def test_bad_messages_get_a_result_with_the_reason(target: Target, prefix: str) -> None:
    rec = Recorder(prefix)
    bus = await _started(target.url, rec)
    try:
        async with aiomqtt.Client(target.host, target.port) as adapter:
            await adapter.subscribe("$hw/events/device/+/twin/+/result", qos=1)
            bad = f"$hw/events/device/{prefix}-bad/twin/update"
            await adapter.publish(bad, b"{not json", qos=1)
            result = await _next_message(adapter, prefix)
            assert result.topic.value == bad + "/result"
            body = json.loads(bytes(result.payload))
            assert body["code"] == BAD_REQUEST_CODE
            assert "malformed JSON" in body["reason"]

            await adapter.publish(f"{bad}", b"[1, 2]", qos=1)
            body = json.loads(bytes((await _next_message(adapter, prefix)).payload))
            assert body["reason"] == "payload must be a JSON object"

            get = f"$hw/events/device/{rec.ghost}/twin/get"
            await adapter.publish(get, b'{"event_id": "g1"}', qos=1)
            result = await _next_message(adapter, prefix)
            assert result.topic.value == get + "/result"
            body = json.loads(bytes(result.payload))
            assert body["event_id"] == "g1"
            assert body["reason"] == f"unknown device {rec.ghost!r}"

            # Still alive: a good update after the bad ones is handled.
            await adapter.publish(f"$hw/events/device/{prefix}-ok/twin/update", json.dumps(_update("1")))
            assert (await rec.next()).device_id == f"{prefix}-ok"
    finally:
        await bus.stop()
    assert bus.stats["rejected"] >= 3
    assert bus.stats["failed"] == 0
    # The hook (devicetwin's metrics and Events) heard each rejection with its category.
    assert [(k, c) for k, c, _ in rec.rejections] == [
        ("twin_update", "malformed"),
        ("twin_update", "malformed"),
        ("twin_get", "unknown_device"),
    ]
    assert "malformed JSON" in rec.rejections[0][2]


async def test_delta_reaches_subscriber_at_qos1(target: Target, prefix: str) -> None:
    rec = Recorder(prefix)
    device = f"{prefix}-dev"
    twins = {"temp": Twin(expected=TwinValue("30", 5), actual=TwinValue("21", 4))}
    payload = delta_payload(twins, event_id="d1", timestamp=6)
    bus = await _started(target.url, rec)
    try:
        async with aiomqtt.Client(target.host, target.port) as adapter:
            await adapter.subscribe(f"$hw/events/device/{device}/twin/update/delta", qos=1)
            await bus.publish_delta(device, payload)
            message = await _next_message(adapter, prefix)
    finally:
        await bus.stop()
    assert message.qos == 1
    assert json.loads(bytes(message.payload)) == payload
    assert payload["delta"] == {"temp": "30"}
    assert bus.stats["published"] == 1


async def _cut_and_check(
    bus: EventBus, rec: Recorder, host: str, port: int, cut: Callable[[], Awaitable[None]]
) -> None:
    before = bus.stats["connects"]
    await cut()
    await _until(lambda: bus.stats["connects"] > before and bus.connected)
    async with aiomqtt.Client(host, port) as adapter:
        device = f"{rec.prefix}-after"
        await adapter.publish(f"$hw/events/device/{device}/twin/update", json.dumps(_update("2")), qos=1)
        assert (await rec.next()).device_id == device


async def test_reconnects_after_the_connection_is_cut(target: Target, prefix: str) -> None:
    rec = Recorder(prefix)
    if target.embedded is not None:
        broker = target.embedded
        bus = await _started(broker.url, rec)

        async def restart() -> None:
            await broker.stop()
            await _until(lambda: not bus.connected)
            await broker.start()

        try:
            await _cut_and_check(bus, rec, broker.host, broker.port, restart)
        finally:
            await bus.stop()
        return
    proxy = FaultProxy(target.host, target.port)
    await proxy.start()
    bus = await _started(f"tcp://127.0.0.1:{proxy.port}", rec)

    async def cut() -> None:
        proxy.cut()

    try:
        await _cut_and_check(bus, rec, "127.0.0.1", proxy.port, cut)
    finally:
        await bus.stop()
        await proxy.stop()


async def test_publish_while_disconnected_raises(prefix: str) -> None:
    broker = EmbeddedBroker()
    await broker.start()
    rec = Recorder(prefix)
    bus = await _started(broker.url, rec)
    try:
        await broker.stop()
        await _until(lambda: not bus.connected)
        with pytest.raises(BusUnavailableError) as err:
            await bus.publish_delta(f"{prefix}-dev", {}, timeout=0.2)
        assert err.value.topic == f"$hw/events/device/{prefix}-dev/twin/update/delta"
    finally:
        await bus.stop()
        await broker.stop()


async def test_ensure_broker_falls_back_to_embedded_when_unreachable() -> None:
    dead = EmbeddedBroker()  # a free port with nothing listening: pick one, then stop
    await dead.start()
    await dead.stop()
    url, broker = await ensure_broker(dead.url)
    assert broker is not None
    try:
        # The kernel may hand the dead broker's port out again: what matters is that ours answers.
        assert url == broker.url and broker.running
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.publish("fleetops/probe", b"1", qos=1)
    finally:
        await broker.stop()


async def test_node_broker_is_resolved_once_and_comes_back_on_its_port() -> None:
    told: list[str] = []
    node = NodeBroker(None, on_resolved=told.append)
    first, second = await asyncio.gather(node.resolve(), node.resolve())  # Edged and devicetwin at once
    try:
        assert first == second == told[0] and len(told) == 1
        assert node.embedded is not None and node.url == node.embedded.url == first
        port = node.embedded.port
    finally:
        await node.stop()
    assert not await reachable("127.0.0.1", port)  # stopped: a later resolve() starts it again
    # The edge restarts with the port its last run advertised: pods that kept running find it again.
    again = NodeBroker(None, port=port)
    try:
        assert await again.resolve() == f"tcp://127.0.0.1:{port}"
    finally:
        await again.stop()


_OWNER = """
import asyncio, sys
from edgeservice.broker import EmbeddedBroker

async def main():
    broker = EmbeddedBroker()
    await broker.start()
    print(broker.port, broker._proc.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_killed_owner_takes_its_embedded_broker_with_it() -> None:
    """An edge killed with SIGKILL (its unit keeps pods alive with KillMode=process) must not leave its
    broker holding the node's port: the restarted edge starts it again there."""
    owner = await asyncio.create_subprocess_exec(sys.executable, "-c", _OWNER, stdout=asyncio.subprocess.PIPE)
    child = 0
    try:
        assert owner.stdout is not None
        port, child = map(int, (await asyncio.wait_for(owner.stdout.readline(), 15)).split())
        assert await reachable("127.0.0.1", port)
        owner.kill()
        await owner.wait()
        await _until(lambda: _refused("127.0.0.1", port))
    finally:
        if owner.returncode is None:
            owner.kill()
            await owner.wait()
        with contextlib.suppress(ProcessLookupError):  # what a failure would leave behind
            os.kill(child, signal.SIGKILL)


async def test_a_cancelled_resolve_neither_stops_the_others_nor_leaks_a_broker() -> None:
    node = NodeBroker(None)
    first = asyncio.create_task(node.resolve())
    await asyncio.sleep(0)  # the broker is starting
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    try:
        url = await node.resolve()  # the same start, not a second broker
        assert node.embedded is not None and node.embedded.url == url
        assert await reachable("127.0.0.1", node.embedded.port)
    finally:
        await node.stop()  # the leak check of the conftest sees any mosquitto left


def _refused(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


async def test_node_broker_picks_another_port_when_its_old_one_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        node = NodeBroker("", port=port)
        try:
            url = await node.resolve()
            assert node.embedded is not None and node.embedded.port != port
            assert url == node.embedded.url and await reachable("127.0.0.1", node.embedded.port)
        finally:
            await node.stop()


async def test_ensure_broker_without_url_starts_embedded() -> None:
    url, broker = await ensure_broker(None)
    assert broker is not None
    try:
        assert url.startswith("tcp://127.0.0.1:")
        assert await reachable(broker.host, broker.port)
    finally:
        await broker.stop()


async def test_ensure_broker_uses_reachable_mosquitto() -> None:
    require_mosquitto()
    assert await ensure_broker("tcp://127.0.0.1:1883") == ("tcp://127.0.0.1:1883", None)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("tcp://127.0.0.1:1883", ("127.0.0.1", 1883)),
        ("tcp://broker.local", ("broker.local", 1883)),
        ("mqtt://10.0.0.2:11883", ("10.0.0.2", 11883)),
        ("http://127.0.0.1:1883", None),
        ("tcp://:1883", None),
        ("tcp://host:notaport", None),
        ("tcp://host:1883/path", None),
        ("127.0.0.1:1883", None),
    ],
)
def test_parse_url(url: str, expected: tuple[str, int] | None) -> None:
    if expected is None:
        with pytest.raises(BrokerUrlError):
            parse_url(url)
    else:
        assert parse_url(url) == expected


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("$hw/events/device/d1/twin/update", ("twin_update", "d1")),
        ("$hw/events/device/d1/twin/get", ("twin_get", "d1")),
        ("$hw/events/device/d1/state/update", ("state_update", "d1")),
        ("$ke/events/device/d1/data/update", ("data_update", "d1")),
        ("$hw/events/node/n1/membership/get", ("membership_get", "")),
        ("$hw/events/node/other/membership/get", None),
        ("$hw/events/device/d1/twin/update/result", None),
        ("$hw/events/device//twin/update", None),
        ("$hw/events/device/a/b/twin/update", None),
    ],
)
def test_classify(topic: str, expected: tuple[str, str] | None) -> None:
    assert classify(topic, "n1") == expected

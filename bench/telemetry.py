"""Telemetry: MQTT data messages per second one edge carries into the cloud's store, next to the broker.

Real processes and a real broker: `fleetops cloud`, `fleetops edge --mqtt` and the edge's own Mosquitto
(the embedded one, a child process). One aiomqtt client publishes N window summaries, as the aggregator
does, on ``$ke/events/device/{id}/data/update`` for a Device bound to the edge, as fast as the client
goes; the clock stops when the cloud has stored all N (the hub's ``fleetops_hub_telemetry_summaries_total``
counts summaries written to the store, in one transaction per tunnel frame, before it acknowledges them).
The path: broker, EventBus, DeviceTwin, the edge's SQLite outbox, the tunnel, the hub, the store.

Baseline in the same run, with the same client and payloads: Mosquitto's own publish rate, N messages
published at the same QoS (0, as telemetry) until a second aiomqtt client subscribed to the topic has
received them all. Target: ratio >= 0.5.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt

from app.launcher import LocalCluster
from bench.common import table
from edgeservice.broker import EmbeddedBroker, parse_url

MESSAGES = 5000
QOS = 0  # telemetry is QoS 0 end to end (eventbus.QOS_TELEMETRY)
DEVICES = "/apis/devices.kubeedge.io/v1beta1/namespaces/default"
COUNTER = "fleetops_hub_telemetry_summaries_total"


def _payloads(n: int) -> list[bytes]:
    base = int(time.time() * 1000)
    out = []
    for i in range(n):
        start = base + i * 1000
        flow = 40.0 + (i % 17) * 0.5
        entry = {"min": flow - 1, "max": flow + 1, "mean": flow, "count": 10, "last": flow}
        out.append(
            json.dumps(
                {
                    "event_id": f"w{i}",
                    "timestamp": start + 1000,
                    "window": {"start": start, "end": start + 999},
                    "data": {"flow": entry},
                },
                separators=(",", ":"),
            ).encode()
        )
    return out


async def _baseline(host: str, port: int, payloads: list[bytes]) -> float:
    """Messages per second from the publisher to a subscriber through the broker alone."""
    topic = f"bench/{uuid.uuid4().hex[:8]}/data"
    got = 0
    done = asyncio.Event()
    async with aiomqtt.Client(host, port, identifier=f"bench-sub-{uuid.uuid4().hex[:6]}") as sub:
        await sub.subscribe(topic, qos=QOS)

        async def receive() -> None:
            nonlocal got
            async for _ in sub.messages:
                got += 1
                if got == len(payloads):
                    done.set()
                    return

        receiver = asyncio.create_task(receive())
        try:
            async with aiomqtt.Client(host, port, identifier=f"bench-pub-{uuid.uuid4().hex[:6]}") as pub:
                started = time.perf_counter()
                for data in payloads:
                    await pub.publish(topic, data, qos=QOS)
                await asyncio.wait_for(done.wait(), 60)
                elapsed = time.perf_counter() - started
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
    return len(payloads) / elapsed


async def _stored(session: aiohttp.ClientSession, cluster: LocalCluster) -> float:
    async with session.get(f"{cluster.api}/metrics", ssl=cluster._ssl or True) as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(COUNTER):
            return float(line.split()[-1])
    return 0.0


async def _through_edge(
    cluster: LocalCluster, host: str, port: int, payloads: list[bytes]
) -> tuple[float, int]:
    """Messages per second from the publisher into the cloud's store, and how many arrived."""
    name = f"pump-{uuid.uuid4().hex[:8]}"
    model = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": "flowmeter", "namespace": "default"},
        "spec": {
            "protocol": "modbus",
            "properties": [{"name": "flow", "type": "FLOAT", "accessMode": "ReadOnly"}],
        },
    }
    device = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "deviceModelRef": {"name": "flowmeter"},
            "nodeName": "edge-1",
            "protocol": {"protocolName": "modbus"},
        },
    }
    await cluster.request("POST", f"{DEVICES}/devicemodels", model)
    await cluster.request("POST", f"{DEVICES}/devices", device)
    topic = f"$ke/events/device/{name}/data/update"
    headers = {"Authorization": f"Bearer {cluster.token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        aiomqtt.Client(host, port, identifier=f"bench-pub-{uuid.uuid4().hex[:6]}") as pub,
    ):
        # Wait until the edge's twin serves the device: one probe summary must reach the store.
        probe = json.loads(payloads[0])
        probe["window"] = {"start": 0, "end": 1}
        before = await _stored(session, cluster)
        deadline = time.monotonic() + 60
        while await _stored(session, cluster) <= before:
            if time.monotonic() > deadline:
                raise TimeoutError("the edge never carried a summary of the bench device to the cloud")
            await pub.publish(topic, json.dumps(probe).encode(), qos=QOS)
            await asyncio.sleep(0.2)
        # Probes may still be in flight; let them land before counting from here.
        await asyncio.sleep(1.0)
        before = await _stored(session, cluster)
        want = before + len(payloads)
        started = time.perf_counter()
        for data in payloads:
            await pub.publish(topic, data, qos=QOS)
        stored, last_change, last = before, time.perf_counter(), before
        while stored < want:
            await asyncio.sleep(0.02)
            stored = await _stored(session, cluster)
            now = time.perf_counter()
            if stored != last:
                last, last_change = stored, now
            elif now - last_change > 5:  # nothing more for 5 s: the rest was lost on the way
                break
        elapsed = last_change - started
    arrived = int(last - before)
    return arrived / elapsed, arrived


async def run() -> dict[str, Any]:
    broker = EmbeddedBroker()
    await broker.start()
    try:
        host, port = parse_url(broker.url)
        payloads = _payloads(MESSAGES)
        baseline = await _baseline(host, port, payloads)
        with tempfile.TemporaryDirectory() as d:
            cluster = LocalCluster(Path(d), status_interval=2.0)
            try:
                await cluster.start_cloud()
                await cluster.start_edge("edge-1", None, "--mqtt", f"tcp://{host}:{port}")
                await cluster.wait_ready_nodes(["edge-1"])
                rate, arrived = await _through_edge(cluster, host, port, payloads)
            finally:
                await cluster.stop()
    finally:
        await broker.stop()
    ratio = rate / baseline
    table(
        [
            ("edge -> cloud store (msg/s)", f"{rate:.0f}", f"{arrived}/{MESSAGES} stored"),
            ("Mosquitto publish -> subscriber (msg/s)", f"{baseline:.0f}", "baseline, same client"),
            ("ratio", f"{ratio:.2f}", "target >= 0.5"),
        ]
    )
    return {
        "messages": MESSAGES,
        "stored": arrived,
        "edge_msgs_per_s": rate,
        "broker_msgs_per_s": baseline,
        "ratio": ratio,
    }

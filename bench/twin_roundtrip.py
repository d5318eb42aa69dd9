"""Twin round trip: a desired value set at the cloud API until the cloud sees it read back from the device.

Real processes and a real broker: `fleetops cloud`, `fleetops edge --mqtt` with a mosquitto configured as
the edge's own (``set_tcp_nodelay true``: with the stock config, Nagle + delayed ACK add ~40 ms at each
broker hop, and this benchmark measures ~65 ms instead), the Modbus adapter as a pod, and the pymodbus pump
simulator (in this process). Each of 200 writes PATCHes the Device's desired setpoint (``app.client``, over
one kept-alive HTTPS connection, as the TUI and GUI do) and stops the clock
when a watch event on the Device shows that value *reported* (adapter wrote it, read it back, MQTT,
DeviceTwin, outbox, tunnel, store, watch). Targets: p50 <= 20 ms, p99 <= 50 ms. Baseline in the same run:
a bare Modbus write + read-back of the same register.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
from pymodbus.client import AsyncModbusTcpClient

from app.client import AsyncClient
from app.launcher import LocalCluster
from app.resources import DEVICES as DEVICES_RT
from bench.common import summary, table
from edgeservice.broker import EmbeddedBroker, parse_url
from edgeservice.sim.modbus import HR_SPEED_SETPOINT, ModbusPumpSimulator

WRITES = 200
MQTT = ("127.0.0.1", 1883)
DEVICES = "/apis/devices.kubeedge.io/v1beta1/namespaces/default"
REPO = Path(__file__).resolve().parents[1]


def _model() -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": "pump", "namespace": "default"},
        "spec": {
            "protocol": "modbus",
            "properties": [
                {
                    "name": "setpoint",
                    "type": "INT",
                    "accessMode": "ReadWrite",
                    "minimum": "0",
                    "maximum": "3000",
                }
            ],
        },
    }


def _device(name: str, port: int, desired: str | None) -> dict[str, Any]:
    prop: dict[str, Any] = {
        "name": "setpoint",
        "collectCycle": 1000,
        "reportCycle": 10000,
        "visitors": {
            "protocolName": "modbus",
            "configData": {"register": "HoldingRegister", "offset": HR_SPEED_SETPOINT, "dataType": "uint16"},
        },
    }
    if desired is not None:
        prop["desired"] = {"value": desired}
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "deviceModelRef": {"name": "pump"},
            "nodeName": "edge-1",
            "protocol": {
                "protocolName": "modbus",
                "configData": {"ip": "127.0.0.1", "port": port, "timeout": 500},
            },
            "properties": [prop],
        },
    }


def _reported(dev: dict[str, Any]) -> str | None:
    for twin in dev.get("status", {}).get("twins", []):
        if twin.get("propertyName") == "setpoint" and "reported" in twin:
            return str(twin["reported"]["value"])
    return None


async def _bare(port: int) -> list[float]:
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    samples = []
    try:
        for i in range(WRITES):
            started = time.perf_counter()
            await client.write_register(HR_SPEED_SETPOINT, 1000 + i % 500, device_id=1)
            await client.read_holding_registers(HR_SPEED_SETPOINT, count=1, device_id=1)
            samples.append(time.perf_counter() - started)
    finally:
        client.close()
    return samples


async def run() -> dict[str, Any]:
    broker = EmbeddedBroker()
    await broker.start()
    try:
        return await _run(parse_url(broker.url))
    finally:
        await broker.stop()


async def _run(mqtt: tuple[str, int]) -> dict[str, Any]:
    global MQTT
    MQTT = mqtt
    legs: list[tuple[float, float, float, float]] = []
    sim = ModbusPumpSimulator(port=0)
    sim.model.set_speed_setpoint(0)
    await sim.start()
    try:
        bare = await _bare(sim.port)
        with tempfile.TemporaryDirectory() as d:
            cluster = LocalCluster(Path(d), status_interval=2.0)
            try:
                await cluster.start_cloud()
                await cluster.start_edge("edge-1", None, "--mqtt", f"tcp://{MQTT[0]}:{MQTT[1]}")
                await cluster.wait_ready_nodes(["edge-1"])
                assert cluster._ssl is not None
                samples = await _measure(cluster, cluster._ssl, sim.port, Path(d), legs)
            finally:
                await cluster.stop()
    finally:
        await sim.stop()
    s, b = summary(samples), summary(bare)
    table(
        [
            ("twin round trip p50 (ms)", f"{s['p50'] * 1000:.1f}", "target <= 20"),
            ("twin round trip p99 (ms)", f"{s['p99'] * 1000:.1f}", "target <= 50"),
            ("bare Modbus write+read p50 (ms)", f"{b['p50'] * 1000:.2f}", "baseline"),
        ]
    )
    names = (
        "the PATCH call (API, store)",
        "PATCH sent -> hub -> edge -> delta on MQTT",
        "adapter: write, read back, report",
        "report -> edge -> cloud -> watch",
    )
    parts = {n: summary([leg[i] for leg in legs]) for i, n in enumerate(names)} if legs else {}
    table([(f"  leg: {n}, p50 (ms)", f"{v['p50'] * 1000:.1f}", "") for n, v in parts.items()])
    return {"writes": len(samples), "roundtrip_s": s, "bare_modbus_s": b, "legs_s": parts}


async def _measure(
    cluster: LocalCluster,
    tls: ssl.SSLContext,
    port: int,
    root: Path,
    legs: list[tuple[float, float, float, float]],
) -> list[float]:
    name = f"pump-{uuid.uuid4().hex[:8]}"
    await cluster.request("POST", f"{DEVICES}/devicemodels", _model())
    await cluster.request("POST", f"{DEVICES}/devices", _device(name, port, None))
    config = root / "adapter.json"
    config.write_text(
        json.dumps(
            {
                "broker": f"mqtt://{MQTT[0]}:{MQTT[1]}",
                "devices": [_device(name, port, None)],
                "deviceModels": [_model()],
            }
        )
    )
    command = [sys.executable, "-m", "edgeservice.workloads.modbus", "--config", str(config)]
    adapter = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "adapter", "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "adapter"}},
            "template": {
                "metadata": {"labels": {"app": "adapter"}},
                "spec": {
                    "containers": [
                        {"name": "a", "image": "adapter", "command": command, "workingDir": str(REPO)}
                    ]
                },
            },
        },
    }
    await cluster.request("POST", "/apis/apps/v1/namespaces/default/deployments", adapter)
    first = await cluster.wait_until(
        f"{DEVICES}/devices/{name}", lambda d: _reported(d) is not None, timeout=60
    )
    rv = first["metadata"]["resourceVersion"]
    seen: dict[str, asyncio.Future[float]] = {}
    samples: list[float] = []
    headers = {"Authorization": f"Bearer {cluster.token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        AsyncClient.from_kubeconfig(cluster.kubeconfig) as client,  # a UI's kept-alive connection
    ):

        async def watch() -> None:
            query = f"watch=1&resourceVersion={rv}&fieldSelector=metadata.name%3D{name}"
            url = f"{cluster.api}{DEVICES}/devices?{query}"
            async with session.get(url, ssl=tls, timeout=aiohttp.ClientTimeout(total=None)) as resp:
                async for line in resp.content:
                    value = _reported(json.loads(line)["object"])
                    fut = seen.get(value or "")
                    if fut is not None and not fut.done():
                        fut.set_result(time.perf_counter())

        # A bystander on the broker notes when the delta and the adapter's report pass, to split the trip
        # into its legs: cloud -> edge -> MQTT, the adapter, MQTT -> edge -> cloud -> watch.
        on_mqtt: dict[tuple[str, str], float] = {}

        async def sniff(client: aiomqtt.Client) -> None:
            async for message in client.messages:
                body = json.loads(message.payload) if isinstance(message.payload, bytes) else {}
                twin = body.get("twin", {}).get("setpoint", {})
                if str(message.topic).endswith("/delta"):
                    key = ("delta", str(body.get("delta", {}).get("setpoint")))
                else:
                    key = ("actual", str(twin.get("actual", {}).get("value")))
                on_mqtt.setdefault(key, time.perf_counter())

        async with aiomqtt.Client(*MQTT, identifier=f"bench-sniff-{uuid.uuid4().hex[:6]}") as sniffer:
            await sniffer.subscribe(f"$hw/events/device/{name}/twin/update/delta")
            await sniffer.subscribe(f"$hw/events/device/{name}/twin/update")
            tasks = [asyncio.create_task(watch()), asyncio.create_task(sniff(sniffer))]
            try:
                loop = asyncio.get_running_loop()
                for i in range(WRITES):
                    value = str(2000 + i)  # never a value the baseline left in the register
                    seen[value] = loop.create_future()
                    patch = {"spec": {"properties": _device(name, port, value)["spec"]["properties"]}}
                    started = time.perf_counter()
                    await client.patch(DEVICES_RT, name, patch, "default")
                    answered = time.perf_counter()
                    done = await asyncio.wait_for(seen[value], 30)
                    samples.append(done - started)
                    delta, actual = on_mqtt.get(("delta", value)), on_mqtt.get(("actual", value))
                    if delta is not None and actual is not None:
                        legs.append((answered - started, delta - started, actual - delta, done - actual))
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    return samples

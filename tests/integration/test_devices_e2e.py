"""Flow 2 end to end: a desired value set at the cloud API reaches a (simulated) pump through the tunnel,
the edge's DeviceTwin, MQTT and a Modbus adapter pod, and the value read back is reported at the cloud."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from pymodbus.client import AsyncModbusTcpClient

from app.launcher import LocalCluster, tail
from edgeservice.sim.modbus import HR_SPEED_SETPOINT, ModbusPumpSimulator

pytestmark = pytest.mark.slow

MQTT = ("127.0.0.1", 1883)
DEVICES = "/apis/devices.kubeedge.io/v1beta1/namespaces/default"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"


def _broker_up() -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(MQTT) == 0


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    if not _broker_up():
        if os.environ.get("CI") == "true":
            pytest.fail("Mosquitto is required in CI at 127.0.0.1:1883 but is not reachable")
        pytest.skip("no MQTT broker at 127.0.0.1:1883 (Mosquitto)")
    c = LocalCluster(
        tmp_path, node_grace_period=5.0, status_interval=0.5, ping_interval=1.0, restart_backoff=0.2
    )
    await c.start_cloud()
    try:
        yield c
    finally:
        await c.stop()
        for proc in [c.cloud, *c.edges.values()]:
            if proc is not None:
                print(f"--- {proc.name} ---\n{tail(proc.log_path, 40)}")


def model() -> dict[str, Any]:
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
                },
                {"name": "speed", "type": "INT", "accessMode": "ReadOnly"},
            ],
        },
    }


def device(name: str, port: int, desired: str | None) -> dict[str, Any]:
    setpoint: dict[str, Any] = {
        "name": "setpoint",
        "collectCycle": 200,
        "reportCycle": 1000,
        "visitors": {
            "protocolName": "modbus",
            "configData": {"register": "HoldingRegister", "offset": HR_SPEED_SETPOINT, "dataType": "uint16"},
        },
    }
    if desired is not None:
        setpoint["desired"] = {"value": desired}
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "deviceModelRef": {"name": "pump"},
            "nodeName": "edge-1",
            "protocol": {
                "protocolName": "modbus",
                "configData": {"ip": "127.0.0.1", "port": port, "slaveID": 1, "timeout": 500},
            },
            "properties": [
                setpoint,
                {
                    "name": "speed",
                    "collectCycle": 200,
                    "reportCycle": 1000,
                    "visitors": {
                        "protocolName": "modbus",
                        "configData": {"register": "InputRegister", "offset": 4, "dataType": "uint16"},
                    },
                },
            ],
        },
    }


def observed_desired(dev: dict[str, Any], prop: str) -> str | None:
    for twin in dev.get("status", {}).get("twins", []):
        if twin.get("propertyName") == prop and "observedDesired" in twin:
            return str(twin["observedDesired"]["value"])
    return None


def reported(dev: dict[str, Any], prop: str) -> str | None:
    for twin in dev.get("status", {}).get("twins", []):
        if twin.get("propertyName") == prop and "reported" in twin:
            return str(twin["reported"]["value"])
    return None


async def holding(port: int) -> int:
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    try:
        rr = await client.read_holding_registers(HR_SPEED_SETPOINT, count=1, device_id=1)
        return int(rr.registers[0])
    finally:
        client.close()


def workload(app: str, module: str, config: Path) -> dict[str, Any]:
    """A Deployment running one of our workload modules on edge-1, its config file named as a ConfigMap
    volume would be."""
    command = [sys.executable, "-m", module, "--config", str(config)]
    container = {
        "name": app,
        "image": f"fleetops/{app}:dev",
        "command": command,
        "workingDir": str(Path(__file__).resolve().parents[2]),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"terminationGracePeriodSeconds": 5, "containers": [container]},
            },
        },
    }


async def deploy_adapter(cluster: LocalCluster, tmp_path: Path, name: str, port: int) -> None:
    """Run the Modbus adapter for device ``name`` as a pod on edge-1."""
    config = tmp_path / "adapter.json"
    config.write_text(
        json.dumps(
            {
                "broker": f"mqtt://{MQTT[0]}:{MQTT[1]}",
                "devices": [device(name, port, None)],
                "deviceModels": [model()],
            }
        )
    )
    adapter = workload("modbus-adapter", "edgeservice.workloads.modbus", config)
    await cluster.request("POST", DEPLOYMENTS, adapter)


async def start_pump(cluster: LocalCluster, tmp_path: Path, sim: ModbusPumpSimulator) -> str:
    """edge-1 with the shared Mosquitto, the pump's Device and its adapter, reading; returns the name."""
    await cluster.start_edge("edge-1", None, "--mqtt", f"tcp://{MQTT[0]}:{MQTT[1]}")
    await cluster.wait_ready_nodes(["edge-1"])
    name = f"pump-{uuid.uuid4().hex[:8]}"  # Mosquitto is shared: a topic of our own
    await cluster.request("POST", f"{DEVICES}/devicemodels", model())
    await cluster.request("POST", f"{DEVICES}/devices", device(name, sim.port, None))
    await deploy_adapter(cluster, tmp_path, name, sim.port)
    await cluster.wait_until(
        f"{DEVICES}/devices/{name}",
        lambda d: reported(d, "setpoint") is not None and d.get("status", {}).get("state") == "online",
        timeout=60,
        what="the pump's setpoint reported at the cloud",
    )
    return name


async def test_desired_value_reaches_the_pump_and_the_reading_comes_back(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    sim = ModbusPumpSimulator(port=0)
    sim.model.set_speed_setpoint(0)
    await sim.start()
    try:
        name = await start_pump(cluster, tmp_path, sim)
        assert reported(await cluster.request("GET", f"{DEVICES}/devices/{name}"), "setpoint") == "0"

        # The operator sets a desired value at the cloud; the pump gets it and the cloud sees it read back.
        wanted = device(name, sim.port, "1500")
        patch = {"spec": {"properties": wanted["spec"]["properties"]}}
        await cluster.request(
            "PATCH", f"{DEVICES}/devices/{name}", patch, content_type="application/merge-patch+json"
        )
        await cluster.wait_until(
            f"{DEVICES}/devices/{name}",
            lambda d: reported(d, "setpoint") == "1500",
            timeout=60,
            what="the new setpoint read back and reported",
        )
        assert await holding(sim.port) == 1500

        # The aggregator pod sends window summaries, not every sample; the cloud keeps a history to chart.
        agg_config = tmp_path / "aggregator.json"
        agg_config.write_text(
            json.dumps({"broker": f"mqtt://{MQTT[0]}:{MQTT[1]}", "window": 0.5, "devices": [name]})
        )
        aggregator = workload("aggregator", "edgeservice.workloads.aggregator", agg_config)
        await cluster.request("POST", DEPLOYMENTS, aggregator)
        history = await cluster.wait_until(
            f"{DEVICES}/devices/{name}/history?property=setpoint",
            lambda h: len(h.get("series", {}).get("setpoint", [])) >= 2,
            timeout=60,
            what="telemetry windows in the cloud's history",
        )
        point = history["series"]["setpoint"][-1]
        assert (
            point["count"] >= 1
            and point["min"] <= point["mean"] <= point["max"]
            and point["end"] > point["start"]
        )

        # The pump stops answering: offline at the cloud with its last values kept. It comes back on the
        # same address and is online again by itself.
        port = sim.port
        await sim.stop()
        offline = await cluster.wait_until(
            f"{DEVICES}/devices/{name}",
            lambda d: d.get("status", {}).get("state") == "offline",
            timeout=60,
            what="the silent pump reported offline",
        )
        assert reported(offline, "setpoint") == "1500"
        sim = ModbusPumpSimulator(port=port)
        sim.model.set_speed_setpoint(1500)
        await sim.start()
        await cluster.wait_until(
            f"{DEVICES}/devices/{name}",
            lambda d: d.get("status", {}).get("state") == "online",
            timeout=60,
            what="the pump back online",
        )
    finally:
        await sim.stop()


async def device_events(cluster: LocalCluster, name: str) -> dict[str, str]:
    """The Events about Device ``name``: reason -> message."""
    events = await cluster.request("GET", "/api/v1/namespaces/default/events")
    return {
        e["reason"]: e["message"]
        for e in events["items"]
        if e["involvedObject"].get("kind") == "Device" and e["involvedObject"].get("name") == name
    }


async def edge_metrics(cluster: LocalCluster) -> str:
    local = json.loads((cluster.root / "edge-1" / "endpoints.json").read_text())["localApi"]
    async with aiohttp.ClientSession() as session, session.get(local + "/metrics") as resp:
        return await resp.text()


def rejected(metrics: str, reason: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(f'fleetops_edge_mqtt_messages_rejected_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no rejected count for {reason} in the edge's metrics")


async def test_bad_mqtt_input_is_answered_recorded_as_device_events_and_counted(
    cluster: LocalCluster,
) -> None:
    await cluster.start_edge("edge-1", None, "--mqtt", f"tcp://{MQTT[0]}:{MQTT[1]}")
    await cluster.wait_ready_nodes(["edge-1"])
    name = f"pump-{uuid.uuid4().hex[:8]}"
    await cluster.request("POST", f"{DEVICES}/devicemodels", model())
    await cluster.request("POST", f"{DEVICES}/devices", device(name, 1, None))
    twin = f"$hw/events/device/{name}/twin/update"

    def update(prop: str, part: str, value: str) -> bytes:
        return json.dumps(
            {"event_id": f"{prop}-{part}-{value}", "twin": {prop: {part: {"value": value}}}}
        ).encode()

    async with aiomqtt.Client(*MQTT) as hmi:
        await hmi.subscribe(f"{twin}/result", qos=1)
        # A good reading first: once it is reported at the cloud, the edge's twin knows the device and
        # its bus is subscribed (until then a message is not delivered: repeat it, as an adapter would).
        async with asyncio.timeout(30):
            while reported(await cluster.request("GET", f"{DEVICES}/devices/{name}"), "speed") != "10":
                await hmi.publish(twin, update("speed", "actual", "10"), qos=1)
                await asyncio.sleep(0.3)
        answers: dict[str, str] = {}
        bad = {
            "wrong type": update("setpoint", "actual", "fast"),
            "out of range": update("setpoint", "expected", "5000"),
            "read only": update("speed", "expected", "5"),
            "malformed": b"{not json",
        }
        for what, payload in bad.items():
            await hmi.publish(twin, payload, qos=1)
            async with asyncio.timeout(10):
                async for message in hmi.messages:
                    body = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                    if body.get("code") == 400:
                        answers[what] = body["reason"]
                        break
        # A data update without data and an unknown state: no /result topic, but still refused.
        await hmi.publish(f"$ke/events/device/{name}/data/update", b'{"window": {}}')
        await hmi.publish(f"$hw/events/device/{name}/state/update", b'{"state": "sleepy"}', qos=1)
    assert "setpoint" in answers["wrong type"] and "INT" in answers["wrong type"]
    assert "5000" in answers["out of range"] and "3000" in answers["out of range"]
    assert "ReadOnly" in answers["read only"]
    assert "malformed JSON" in answers["malformed"]

    # The operator sees why at the cloud: Warning Events on the Device.
    async with asyncio.timeout(30):
        while not {"InvalidTwinUpdate", "MalformedMessage"} <= set(
            events := await device_events(cluster, name)
        ):
            await asyncio.sleep(0.2)
    assert "rejected twin/update" in events["InvalidTwinUpdate"]
    # Metrics count every rejection, by category; the device's state and values are untouched.
    metrics = await edge_metrics(cluster)
    assert rejected(metrics, "invalid") >= 5  # wrong type, out of range, read only, no data, bad state
    assert rejected(metrics, "malformed") >= 1
    dev = await cluster.request("GET", f"{DEVICES}/devices/{name}")
    assert reported(dev, "speed") == "10" and reported(dev, "setpoint") is None


async def test_twin_changed_on_site_while_the_cloud_is_away_reconciles_on_reconnect(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    sim = ModbusPumpSimulator(port=0)
    sim.model.set_speed_setpoint(0)
    await sim.start()
    try:
        name = await start_pump(cluster, tmp_path, sim)
        wanted = device(name, sim.port, "1500")
        patch = {"spec": {"properties": wanted["spec"]["properties"]}}
        await cluster.request(
            "PATCH", f"{DEVICES}/devices/{name}", patch, content_type="application/merge-patch+json"
        )
        await cluster.wait_until(
            f"{DEVICES}/devices/{name}", lambda d: reported(d, "setpoint") == "1500", timeout=60
        )

        # The cloud goes away. On site, an HMI sets a new desired value through the edge's MQTT; the edge
        # alone gets it written to the pump and read back.
        assert cluster.cloud is not None
        await cluster.cloud.kill()
        async with aiomqtt.Client(*MQTT) as hmi:
            body = {"event_id": "hmi-1", "twin": {"setpoint": {"expected": {"value": "2200"}}}}
            await hmi.publish(f"$hw/events/device/{name}/twin/update", json.dumps(body), qos=1)
        async with asyncio.timeout(30):
            while await holding(sim.port) != 2200:
                await asyncio.sleep(0.1)

        # The cloud comes back: the edge's newer on-site value wins by the version rules, and the cloud
        # shows it as the device's observed desired value and its reading.
        await cluster.start_cloud()
        dev = await cluster.wait_until(
            f"{DEVICES}/devices/{name}",
            lambda d: reported(d, "setpoint") == "2200" and observed_desired(d, "setpoint") == "2200",
            timeout=60,
            what="the on-site value reconciled at the cloud",
        )
        assert dev["status"]["state"] == "online"
        assert await holding(sim.port) == 2200  # the cloud's older 1500 did not overwrite it
    finally:
        await sim.stop()

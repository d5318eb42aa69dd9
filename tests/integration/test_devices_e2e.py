"""Flow 2 end to end: a desired value set at the cloud API reaches a (simulated) pump through the tunnel,
the edge's DeviceTwin, MQTT and a Modbus adapter pod, and the value read back is reported at the cloud."""

from __future__ import annotations

import json
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from app.launcher import LocalCluster, tail
from edgeservice.sim.modbus import HR_SPEED_SETPOINT, ModbusPumpSimulator

pytestmark = pytest.mark.slow

MQTT = ("127.0.0.1", 1883)
DEVICES = "/apis/devices.kubeedge.io/v1beta1/namespaces/default"


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


async def test_desired_value_reaches_the_pump_and_the_reading_comes_back(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    sim = ModbusPumpSimulator(port=0)
    sim.model.set_speed_setpoint(0)
    await sim.start()
    try:
        await cluster.start_edge("edge-1", None, "--mqtt", f"tcp://{MQTT[0]}:{MQTT[1]}")
        await cluster.wait_ready_nodes(["edge-1"])
        name = f"pump-{uuid.uuid4().hex[:8]}"  # Mosquitto is shared: a topic of our own
        await cluster.request("POST", f"{DEVICES}/devicemodels", model())
        await cluster.request("POST", f"{DEVICES}/devices", device(name, sim.port, None))

        # The adapter runs as a pod on the node; its config names the device, as a ConfigMap would.
        config = tmp_path / "adapter.json"
        config.write_text(
            json.dumps(
                {
                    "broker": f"mqtt://{MQTT[0]}:{MQTT[1]}",
                    "devices": [device(name, sim.port, None)],
                    "deviceModels": [model()],
                }
            )
        )
        adapter = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "modbus-adapter", "namespace": "default"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "modbus-adapter"}},
                "template": {
                    "metadata": {"labels": {"app": "modbus-adapter"}},
                    "spec": {
                        "terminationGracePeriodSeconds": 5,
                        "containers": [
                            {
                                "name": "adapter",
                                "image": "fleetops/modbus-adapter:dev",
                                "command": [
                                    sys.executable,
                                    "-m",
                                    "edgeservice.workloads.modbus",
                                    "--config",
                                    str(config),
                                ],
                                "workingDir": str(Path(__file__).resolve().parents[2]),
                            }
                        ],
                    },
                },
            },
        }
        await cluster.request("POST", "/apis/apps/v1/namespaces/default/deployments", adapter)

        # The reading arrives at the cloud, with the device online.
        await cluster.wait_until(
            f"{DEVICES}/devices/{name}",
            lambda d: reported(d, "setpoint") == "0" and d.get("status", {}).get("state") == "online",
            timeout=60,
            what="the pump's setpoint reported at the cloud",
        )

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
        aggregator = json.loads(json.dumps(adapter).replace("modbus-adapter", "aggregator"))
        aggregator["spec"]["template"]["spec"]["containers"][0]["command"] = [
            sys.executable,
            "-m",
            "edgeservice.workloads.aggregator",
            "--config",
            str(agg_config),
        ]
        await cluster.request("POST", "/apis/apps/v1/namespaces/default/deployments", aggregator)
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
    finally:
        await sim.stop()

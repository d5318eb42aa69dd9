"""Flow 2 end to end: a desired value set at the cloud API reaches a (simulated) pump through the tunnel,
the edge's DeviceTwin, MQTT and a Modbus adapter pod, and the value read back is reported at the cloud."""

from __future__ import annotations

import asyncio
import copy
import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from pymodbus.client import AsyncModbusTcpClient

from app.launcher import LaunchError, LocalCluster, tail
from edgeservice.sim.modbus import HR_SPEED_SETPOINT, ModbusPumpSimulator
from tests.integration import test_kubectl as kube
from tests.services import require_mosquitto

pytestmark = pytest.mark.slow

MQTT = ("127.0.0.1", 1883)
DEVICES = "/apis/devices.kubeedge.io/v1beta1/namespaces/default"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"


# The real kubectl against a served API (TLS, a throwaway certificate): see test_kubectl.
kubectl = kube.kubectl


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    require_mosquitto()
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


async def deploy_adapter(
    cluster: LocalCluster, tmp_path: Path, name: str, port: int, *, own_broker: bool = False
) -> None:
    """Run the Modbus adapter for device ``name`` as a pod on edge-1: on the shared Mosquitto, or with
    ``own_broker`` on the one edge-1 advertises (its config names no broker)."""
    config = tmp_path / "adapter.json"
    cfg: dict[str, Any] = {"devices": [device(name, port, None)], "deviceModels": [model()]}
    if not own_broker:
        cfg["broker"] = f"mqtt://{MQTT[0]}:{MQTT[1]}"
    config.write_text(json.dumps(cfg))
    adapter = workload("modbus-adapter", "edgeservice.workloads.modbus", config)
    await cluster.request("POST", DEPLOYMENTS, adapter)


async def start_pump(
    cluster: LocalCluster, tmp_path: Path, sim: ModbusPumpSimulator, *, own_broker: bool = False
) -> str:
    """edge-1 with the shared Mosquitto (or, with ``own_broker``, started without --mqtt: its embedded
    broker, which the adapter finds in FLEETOPS_MQTT_URL), the pump's Device and its adapter, reading;
    returns the device's name."""
    await cluster.start_edge(
        "edge-1", None, *(() if own_broker else ("--mqtt", f"tcp://{MQTT[0]}:{MQTT[1]}"))
    )
    await cluster.wait_ready_nodes(["edge-1"])
    name = f"pump-{uuid.uuid4().hex[:8]}"  # Mosquitto may be shared: a topic of our own
    await cluster.request("POST", f"{DEVICES}/devicemodels", model())
    await cluster.request("POST", f"{DEVICES}/devices", device(name, sim.port, None))
    await deploy_adapter(cluster, tmp_path, name, sim.port, own_broker=own_broker)
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
        # An edge without --mqtt and an adapter whose config names no broker: the edge's own broker.
        name = await start_pump(cluster, tmp_path, sim, own_broker=True)
        assert reported(await cluster.request("GET", f"{DEVICES}/devices/{name}"), "setpoint") == "0"
        assert edge_broker(cluster, "edge-1")[1] != MQTT[1]

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
            json.dumps({"window": 0.5, "devices": [name]})  # the node's broker, as the adapter
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


async def device_events(cluster: LocalCluster, name: str) -> list[tuple[str, str]]:
    """The Events about Device ``name``: (reason, message) each."""
    events = await cluster.request("GET", "/api/v1/namespaces/default/events")
    return [
        (e["reason"], e["message"])
        for e in events["items"]
        if e["involvedObject"].get("kind") == "Device" and e["involvedObject"].get("name") == name
    ]


def edge_broker(cluster: LocalCluster, node: str) -> tuple[str, int]:
    """The MQTT broker edge ``node`` advertises in its endpoints.json (its own: a broker serves one node)."""
    url = json.loads((cluster.root / node / "endpoints.json").read_text())["mqtt"]
    host, port = str(url).removeprefix("tcp://").rsplit(":", 1)
    return host, int(port)


async def wait_edge_broker(cluster: LocalCluster, node: str) -> tuple[str, int]:
    async with asyncio.timeout(30):
        while True:
            try:
                return edge_broker(cluster, node)
            except (OSError, KeyError, ValueError):
                await asyncio.sleep(0.1)  # advertised once the edge's first device or pod needs it


async def edge_metrics(cluster: LocalCluster, node: str = "edge-1") -> str:
    local = json.loads((cluster.root / node / "endpoints.json").read_text())["localApi"]
    async with aiohttp.ClientSession() as session, session.get(local + "/metrics") as resp:
        return await resp.text()


def rejected(metrics: str, reason: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(f'fleetops_edge_mqtt_messages_rejected_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no rejected count for {reason} in the edge's metrics")


def update(prop: str, part: str, value: str) -> bytes:
    return json.dumps(
        {"event_id": f"{prop}-{part}-{value}", "twin": {prop: {part: {"value": value}}}}
    ).encode()


async def report_speed(cluster: LocalCluster, client: aiomqtt.Client, name: str, value: str) -> None:
    """Publish a reading of ``name`` until the cloud shows it: until the edge's twin knows the device and
    its bus is subscribed, a message is not delivered (an adapter repeats it on its cycle too)."""
    async with asyncio.timeout(30):
        while reported(await cluster.request("GET", f"{DEVICES}/devices/{name}"), "speed") != value:
            await client.publish(
                f"$hw/events/device/{name}/twin/update", update("speed", "actual", value), qos=1
            )
            await asyncio.sleep(0.3)


async def test_bad_mqtt_input_is_answered_recorded_as_device_events_and_counted(
    cluster: LocalCluster,
) -> None:
    await cluster.start_edge("edge-1")  # a fresh edge on its own broker: every count below is its own
    await cluster.wait_ready_nodes(["edge-1"])
    name = f"pump-{uuid.uuid4().hex[:8]}"
    await cluster.request("POST", f"{DEVICES}/devicemodels", model())
    await cluster.request("POST", f"{DEVICES}/devices", device(name, 1, None))
    twin = f"$hw/events/device/{name}/twin/update"
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"

    # Bad desired values set at the cloud are refused there, naming the field; nothing is stored.
    before = await cluster.request("GET", f"{DEVICES}/devices/{name}")
    for index, value, why in (
        (0, "5000", "Invalid value: 5000 is above the maximum 3000"),
        (0, "fast", "Invalid value: 'fast' is not a valid INT"),
        (1, "5", "Invalid value: property 'speed' is ReadOnly"),
    ):
        props = copy.deepcopy(before["spec"]["properties"])
        props[index]["desired"] = {"value": value}
        with pytest.raises(LaunchError) as err:
            await cluster.request(
                "PATCH",
                f"{DEVICES}/devices/{name}",
                {"spec": {"properties": props}},
                content_type="application/merge-patch+json",
            )
        assert str(err.value).endswith(
            f'HTTP 422: Device.devices.kubeedge.io "{name}" is invalid: '
            f"spec.properties[{index}].desired.value: {why}"
        ), err.value
    after = await cluster.request("GET", f"{DEVICES}/devices/{name}")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    async with aiomqtt.Client(*await wait_edge_broker(cluster, "edge-1")) as hmi:
        await hmi.subscribe(f"{twin}/result", qos=1)
        await hmi.subscribe(f"$hw/events/device/{ghost}/twin/update/result", qos=1)
        await report_speed(cluster, hmi, name, "10")
        answers: dict[str, str] = {}
        bad = {
            "wrong type": (twin, update("setpoint", "actual", "fast")),
            "out of range": (twin, update("setpoint", "expected", "5000")),
            "read only": (twin, update("speed", "expected", "5")),
            "malformed": (twin, b"{not json"),
            "unknown device": (f"$hw/events/device/{ghost}/twin/update", update("speed", "actual", "1")),
        }
        for what, (topic, payload) in bad.items():
            await hmi.publish(topic, payload, qos=1)
            async with asyncio.timeout(10):
                async for message in hmi.messages:
                    body = json.loads(bytes(message.payload))
                    if body.get("code") == 400:
                        answers[what] = body["reason"]
                        assert message.topic.value == f"{topic}/result", what
                        break
        # A data update without data and an unknown state: no /result topic, but still refused.
        await hmi.publish(f"$ke/events/device/{name}/data/update", b'{"window": {}}', qos=1)
        await hmi.publish(f"$hw/events/device/{name}/state/update", b'{"state": "sleepy"}', qos=1)
    assert "setpoint" in answers["wrong type"] and "INT" in answers["wrong type"]
    assert "5000" in answers["out of range"] and "3000" in answers["out of range"]
    assert "ReadOnly" in answers["read only"]
    assert "malformed JSON" in answers["malformed"]
    assert answers["unknown device"] == f"unknown device {ghost!r}"

    # The operator sees why at the cloud: one Warning Event on the Device per refused message, each with
    # its own reason (the unknown device has no Device to carry one).
    expected = [
        ("InvalidTwinUpdate", f"rejected twin/update from MQTT: {answers['wrong type']}"),
        ("InvalidTwinUpdate", f"rejected twin/update from MQTT: {answers['out of range']}"),
        ("InvalidTwinUpdate", f"rejected twin/update from MQTT: {answers['read only']}"),
        ("MalformedMessage", f"rejected twin/update from MQTT: {answers['malformed']}"),
        (
            "InvalidTwinUpdate",
            'rejected data/update from MQTT: a data update needs a non-empty "data" object',
        ),
        (
            "InvalidTwinUpdate",
            "rejected state/update from MQTT: state must be online, offline or unknown, not 'sleepy'",
        ),
    ]
    async with asyncio.timeout(30):
        while len(events := await device_events(cluster, name)) < len(expected):
            await asyncio.sleep(0.2)
    assert sorted(events) == sorted(expected)
    assert await device_events(cluster, ghost) == []
    # Metrics count every rejection, by category, exactly; the device's state and values are untouched.
    metrics = await edge_metrics(cluster)
    assert rejected(metrics, "invalid") == 5  # wrong type, out of range, read only, no data, bad state
    assert rejected(metrics, "malformed") == 1
    assert rejected(metrics, "unknown_device") == 1
    dev = await cluster.request("GET", f"{DEVICES}/devices/{name}")
    assert reported(dev, "speed") == "10" and reported(dev, "setpoint") is None


async def test_edges_each_on_their_own_broker_do_not_refuse_each_others_devices(
    cluster: LocalCluster,
) -> None:
    """A broker serves one node: two edges without --mqtt get a broker each, so neither sees (and refuses
    as an unknown device) the other's device traffic."""
    await cluster.start_edge("edge-1")
    await cluster.start_edge("edge-2")
    await cluster.wait_ready_nodes(["edge-1", "edge-2"])
    await cluster.request("POST", f"{DEVICES}/devicemodels", model())
    names = {node: f"pump-{uuid.uuid4().hex[:8]}" for node in ("edge-1", "edge-2")}
    for node, name in names.items():
        dev = device(name, 1, None)
        dev["spec"]["nodeName"] = node
        await cluster.request("POST", f"{DEVICES}/devices", dev)
    brokers = {node: await wait_edge_broker(cluster, node) for node in names}
    assert brokers["edge-1"] != brokers["edge-2"]
    for node, name in names.items():
        async with aiomqtt.Client(*brokers[node]) as adapter:
            await report_speed(cluster, adapter, name, "7")
    for node in names:
        metrics = await edge_metrics(cluster, node)
        assert [rejected(metrics, r) for r in ("unknown_device", "invalid", "malformed")] == [0, 0, 0], node


DEVICE_YAML = """\
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {name: pump}
spec:
  protocol: modbus
  properties:
  - {name: setpoint, type: INT, accessMode: ReadWrite, minimum: "0", maximum: "3000"}
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {name: pump-1}
spec:
  deviceModelRef: {name: pump}
  nodeName: edge-1
  protocol:
    protocolName: modbus
    configData: {ip: 127.0.0.1, port: 5020, slaveID: 1}
  properties:
  - name: setpoint
    desired: {value: "DESIRED"}
    visitors:
      protocolName: modbus
      configData: {register: HoldingRegister, offset: 0, dataType: uint16}
"""


@pytest.mark.kubectl
async def test_kubectl_apply_device_yaml_and_get_devices(kubectl: kube.Kubectl) -> None:
    path = kubectl.manifest("device.yaml", DEVICE_YAML.replace("DESIRED", "1200"))
    _, out, _ = await kubectl.run("apply", "-f", path)
    assert out.splitlines() == [
        "devicemodel.devices.kubeedge.io/pump created",
        "device.devices.kubeedge.io/pump-1 created",
    ]
    _, out, _ = await kubectl.run("get", "devices")
    header, row = kube._table(out)
    assert header == ["NAME", "MODEL", "NODE", "PROTOCOL", "STATE", "AGE"]
    assert row[:5] == ["pump-1", "pump", "edge-1", "modbus", "<unknown>"] and row[5].endswith("s"), row
    _, out, _ = await kubectl.run("get", "devicemodels")
    assert kube._table(out)[0][:2] == ["NAME", "PROTOCOL"] and kube._table(out)[1][:2] == ["pump", "modbus"]

    # A new desired value is a patch; an unchanged file changes nothing.
    kubectl.manifest("device.yaml", DEVICE_YAML.replace("DESIRED", "1500"))
    _, out, _ = await kubectl.run("apply", "-f", path)
    assert out.splitlines() == [
        "devicemodel.devices.kubeedge.io/pump unchanged",
        "device.devices.kubeedge.io/pump-1 configured",
    ]
    _, out, _ = await kubectl.run(
        "get", "device", "pump-1", "-o", "jsonpath={.spec.properties[0].desired.value}"
    )
    assert out == "1500"

    # A desired value the model does not allow is refused, naming the field, and nothing changes.
    kubectl.manifest("device.yaml", DEVICE_YAML.replace("DESIRED", "5000"))
    rc, _, err = await kubectl.run("apply", "-f", path, check=False)
    assert rc == 1
    assert err == (
        'The Device "pump-1" is invalid: spec.properties[0].desired.value: '
        "Invalid value: 5000 is above the maximum 3000\n"
    ), err  # kubectl's rendering of the 422 Status's details, as for the apiserver's
    _, out, _ = await kubectl.run(
        "get", "device", "pump-1", "-o", "jsonpath={.spec.properties[0].desired.value}"
    )
    assert out == "1500"


async def test_a_restarted_edge_brings_its_broker_back_where_its_pods_expect_it(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """The edge is killed (its unit keeps pods running: KillMode=process); its embedded broker dies with
    it. The restarted edge brings the broker back on the advertised port, so the adapter pod that kept
    running, with that address in FLEETOPS_MQTT_URL, carries desired values again without a restart."""
    sim = ModbusPumpSimulator(port=0)
    sim.model.set_speed_setpoint(0)
    await sim.start()
    try:
        name = await start_pump(cluster, tmp_path, sim, own_broker=True)
        before = edge_broker(cluster, "edge-1")
        pods = "/api/v1/namespaces/default/pods"
        [adapter] = (await cluster.request("GET", f"{pods}?labelSelector=app=modbus-adapter"))["items"]

        await cluster.edges["edge-1"].kill()
        await cluster.start_edge("edge-1")

        wanted = device(name, sim.port, "900")
        patch = {"spec": {"properties": wanted["spec"]["properties"]}}
        await cluster.request(
            "PATCH", f"{DEVICES}/devices/{name}", patch, content_type="application/merge-patch+json"
        )
        await cluster.wait_until(
            f"{DEVICES}/devices/{name}",
            lambda d: reported(d, "setpoint") == "900",
            timeout=60,
            what="the setpoint written by the adapter that kept running, and read back",
        )
        assert await holding(sim.port) == 900
        assert edge_broker(cluster, "edge-1") == before
        after = await cluster.request("GET", f"{pods}/{adapter['metadata']['name']}")
        assert after["metadata"]["uid"] == adapter["metadata"]["uid"]  # the same pod, adopted
        assert after["status"]["containerStatuses"][0]["restartCount"] == 0
    finally:
        await sim.stop()

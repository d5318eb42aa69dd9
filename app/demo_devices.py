"""The demo's devices: a Modbus pump on edge-1 and an OPC UA line on edge-2, each simulated, each read by an
adapter pod, each a Device at the cloud whose desired values reach the (simulated) machine; an aggregator pod
on each of those nodes sends 10 s summaries of the readings to the cloud's history. On edge-3, a camera over
line 2's conveyor (the built-in synthetic one) with its camera pod, and an inference pod running the shipped
defect classifier on the camera's frames: "defect detected on line 2" Events, and an overlay stream.

Everything runs as the product runs it: ``fleetops sim`` processes stand in for the PLCs, the adapters are
pods scheduled by the cloud, and each edge carries its devices' MQTT on its own broker (a broker serves one
node, as in KubeEdge): the edges run without ``--mqtt``, so each starts its embedded mosquitto, and the
workloads' configs name no broker, so each uses the one its edge advertises in ``FLEETOPS_MQTT_URL``. The
register map and node ids are the simulators' (``edgeservice/sim``).
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from app.launcher import LocalCluster, Proc

DEVICES = "/apis/devices.kubeedge.io/v1beta1/namespaces/default"
FLEETOPS = [sys.executable, "-m", "app.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prop(name: str, protocol: str, config: dict[str, Any], desired: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "collectCycle": 1000,
        "reportCycle": 5000,
        "visitors": {"protocolName": protocol, "configData": config},
    }
    if desired is not None:
        out["desired"] = {"value": desired}
    return out


def models() -> list[dict[str, Any]]:
    def model(name: str, protocol: str, props: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "DeviceModel",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"protocol": protocol, "properties": props},
        }

    return [
        model(
            "pump",
            "modbus",
            [
                {
                    "name": "setpoint",
                    "type": "INT",
                    "accessMode": "ReadWrite",
                    "minimum": "0",
                    "maximum": "3000",
                    "unit": "rpm",
                },
                {"name": "running", "type": "BOOLEAN", "accessMode": "ReadWrite"},
                {"name": "speed", "type": "INT", "accessMode": "ReadOnly", "unit": "rpm"},
                {"name": "flow", "type": "FLOAT", "accessMode": "ReadOnly", "unit": "l/min"},
            ],
        ),
        model(
            "line",
            "opcua",
            [
                {
                    "name": "speed",
                    "type": "DOUBLE",
                    "accessMode": "ReadWrite",
                    "minimum": "0",
                    "maximum": "1800",
                },
                {"name": "temperature", "type": "DOUBLE", "accessMode": "ReadOnly", "unit": "C"},
            ],
        ),
    ]


def devices(modbus_port: int, opcua_port: int) -> list[dict[str, Any]]:
    def device(
        name: str, model: str, node: str, protocol: str, *, conn: dict[str, Any], props: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "deviceModelRef": {"name": model},
                "nodeName": node,
                "protocol": {"protocolName": protocol, "configData": conn},
                "properties": props,
            },
        }

    mb = {"register": "HoldingRegister", "dataType": "uint16"}
    return [
        device(
            "pump-1",
            "pump",
            "edge-1",
            "modbus",
            conn={"ip": "127.0.0.1", "port": modbus_port, "slaveID": 1, "timeout": 500},
            props=[
                _prop("setpoint", "modbus", {**mb, "offset": 0}),
                _prop("running", "modbus", {"register": "CoilRegister", "offset": 0}),
                _prop("speed", "modbus", {"register": "InputRegister", "offset": 4, "dataType": "uint16"}),
                _prop(
                    "flow",
                    "modbus",
                    {"register": "InputRegister", "offset": 0, "scale": 0.1, "dataType": "uint16"},
                ),
            ],
        ),
        device(
            "line-1",
            "line",
            "edge-2",
            "opcua",
            conn={"url": f"opc.tcp://127.0.0.1:{opcua_port}/fleetops/"},
            props=[
                _prop("speed", "opcua", {"nodeID": "ns=2;s=Line1.Speed"}),
                _prop("temperature", "opcua", {"nodeID": "ns=2;s=Line1.Temperature"}),
            ],
        ),
    ]


def workload(name: str, module: str, node: str, config: Path) -> dict[str, Any]:
    """A Deployment of one of FleetOps' workload modules on ``node``, reading ``config``."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": name.rsplit("-", 1)[-1],
                            "image": f"fleetops/{name}:0.1",
                            "command": [sys.executable, "-m", module, "--config", str(config)],
                            # A workload that exits on a bad config says why in its status.
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                        }
                    ],
                },
            },
        },
    }


def adapter(protocol: str, node: str, config: Path) -> dict[str, Any]:
    return workload(f"{protocol}-adapter", f"edgeservice.workloads.{protocol}", node, config)


def brokers_available() -> bool:
    """Whether the edges can start their embedded brokers (mosquitto is installed); without them the device
    part of the demo cannot run here."""
    return bool(shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists())


async def start_devices(cluster: LocalCluster, root: Path) -> list[Proc]:
    """Simulators, models, devices and adapter pods; returns the simulator processes to stop later."""
    modbus_port, opcua_port = free_port(), free_port()
    sims = [
        Proc(
            "sim-modbus",
            [*FLEETOPS, "sim", "modbus", "--port", str(modbus_port)],
            root / "logs" / "sim-modbus.log",
        ),
        Proc(
            "sim-opcua",
            [*FLEETOPS, "sim", "opcua", "--port", str(opcua_port)],
            root / "logs" / "sim-opcua.log",
        ),
    ]
    for sim in sims:
        await sim.start()
    for model in models():
        await cluster.request("POST", f"{DEVICES}/devicemodels", model)
    devs = devices(modbus_port, opcua_port)
    for dev in devs:
        await cluster.request("POST", f"{DEVICES}/devices", dev)
    (root / "adapters").mkdir(exist_ok=True)
    for protocol, node, dev, model in (
        ("modbus", "edge-1", devs[0], models()[0]),
        ("opcua", "edge-2", devs[1], models()[1]),
    ):
        config = root / "adapters" / f"{protocol}.json"
        config.write_text(json.dumps({"devices": [dev], "deviceModels": [model]}))
        await cluster.request(
            "POST", "/apis/apps/v1/namespaces/default/deployments", adapter(protocol, node, config)
        )
        # The node's aggregator: 10 s window summaries to the cloud's history (what the UIs chart).
        config = root / "adapters" / f"aggregator-{node}.json"
        config.write_text(json.dumps({"window": 10.0}))
        await cluster.request(
            "POST",
            "/apis/apps/v1/namespaces/default/deployments",
            workload(f"{node}-aggregator", "edgeservice.workloads.aggregator", node, config),
        )
    return sims


CAMERA = "line2-camera"
REPO = Path(__file__).resolve().parents[1]


def camera_objects() -> tuple[dict[str, Any], dict[str, Any]]:
    """The camera's DeviceModel and Device (640x480 at 15 fps, the synthetic conveyor)."""
    model = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": "camera", "namespace": "default"},
        "spec": {"protocol": "camera", "properties": []},
    }
    device = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": CAMERA, "namespace": "default", "labels": {"line": "2"}},
        "spec": {
            "deviceModelRef": {"name": "camera"},
            "nodeName": "edge-3",
            "protocol": {
                "protocolName": "camera",
                "configData": {
                    "url": "synthetic://conveyor?seed=7&defect_rate=0.2",
                    "fps": 15,
                    "width": 640,
                    "height": 480,
                    "jpegQuality": 80,
                },
            },
        },
    }
    return model, device


def inference_config() -> dict[str, Any]:
    """The shipped defect classifier on the camera's frames (assets/models/defect_classifier.md)."""
    return {
        "device": CAMERA,
        "source": f"camera://{CAMERA}",
        "reportInterval": 5.0,
        "inference": {
            "model": str(REPO / "assets" / "models" / "defect_classifier.onnx"),
            "task": "classification",
            "preprocess": {
                "crop": [288, 208, 64, 64],
                "resize": [32, 32],
                "interpolation": "area",
                "color": "gray",
                "scale": 1 / 255,
                "layout": "flat",
            },
            "postprocess": {"output": "probabilities", "labels": ["ok", "defect", "empty"]},
            "rules": [
                {
                    "label": "defect",
                    "minScore": 0.8,
                    "reason": "DefectDetected",
                    "message": "defect detected on line 2",
                    "type": "Warning",
                    "cooldown": 2.0,
                }
            ],
        },
    }


async def start_camera(cluster: LocalCluster, root: Path) -> None:
    """The camera Device on edge-3 with its camera pod and an inference pod on its frames."""
    model, device = camera_objects()
    await cluster.request("POST", f"{DEVICES}/devicemodels", model)
    await cluster.request("POST", f"{DEVICES}/devices", device)
    workloads = root / "adapters"
    workloads.mkdir(exist_ok=True)
    camera_config = workloads / "camera.json"
    camera_config.write_text(json.dumps({"devices": [device]}))
    inference = workloads / "inference.json"
    inference.write_text(json.dumps(inference_config()))
    for name, module, config in (
        ("line2-camera", "edgeservice.workloads.camera", camera_config),
        ("line2-inference", "edgeservice.workloads.inference", inference),
    ):
        await cluster.request(
            "POST",
            "/apis/apps/v1/namespaces/default/deployments",
            workload(name, module, "edge-3", config),
        )

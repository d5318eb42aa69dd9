"""``fleetops demo``: the whole pipeline on this machine, on the embedded default (SQLite).

One cloud, three edges (two on site "a", one on site "b"), and a sample Deployment bound to site "a";
it waits until the pods run, shows them through kubectl when it is installed, prints how to look around,
and keeps running until Ctrl-C. ``--check`` stops once everything is up (for CI and smoke tests).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from app import demo_devices
from app.launcher import LaunchError, LocalCluster, Proc

NODES = {"edge-1": {"site": "a"}, "edge-2": {"site": "a"}, "edge-3": {"site": "b"}}


def _say(text: str) -> None:
    # A reader that went away (`make demo | tee log`, Ctrl-C ends tee first) must not cut the shutdown
    # short and leave the cloud, the edges and their pods running.
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def _manifest() -> dict[str, Any]:
    path = Path(__file__).resolve().parent.parent / "assets" / "manifests" / "demo-deployment.yaml"
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def _kubectl(kubeconfig: Path, *args: str) -> None:
    if shutil.which("kubectl") is None:
        return
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    _say(f"$ kubectl --kubeconfig {kubeconfig} {' '.join(args)}")
    _say((out.stdout or out.stderr).rstrip())


async def run_demo(root: Path, *, check: bool) -> int:
    cluster = LocalCluster(
        root, node_grace_period=15.0, status_interval=3.0, ping_interval=5.0, restart_backoff=2.0
    )
    stop = asyncio.Event()
    helpers: list[Proc] = []  # simulators, stopped after the edges
    with_devices = demo_devices.brokers_available()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        _say(f"Starting the cloud (state in {cluster.cloud_dir}) ...")
        await cluster.start_cloud()
        _say(f"  API {cluster.api}   hub {cluster.hub}")
        # No --mqtt: each edge runs its own broker (a broker serves one node) and tells its pods where.
        for name, labels in NODES.items():
            await cluster.start_edge(name, labels)
        _say(f"Starting {len(NODES)} edge nodes ...")
        await cluster.wait_ready_nodes(list(NODES))
        deploy = _manifest()
        name = deploy["metadata"]["name"]
        _say(f"Applying Deployment {name} (replicas {deploy['spec']['replicas']}, nodeSelector site=a) ...")
        await cluster.request("POST", "/apis/apps/v1/namespaces/default/deployments", deploy)
        await cluster.wait_until(
            f"/apis/apps/v1/namespaces/default/deployments/{name}",
            lambda d: d.get("status", {}).get("readyReplicas", 0) == d["spec"]["replicas"],
            timeout=60,
            what="the Deployment's pods to be ready",
        )
        if not with_devices:
            _say("Devices skipped: no mosquitto installed for the edges' MQTT brokers.")
        else:
            _say("Starting a Modbus pump and an OPC UA line (simulated), their adapters and Devices ...")
            helpers += await demo_devices.start_devices(cluster, root)
            _say("Starting line 2's camera (synthetic conveyor) and the defect classifier on its frames ...")
            await demo_devices.start_camera(cluster, root)
            await cluster.wait_until(
                f"{demo_devices.DEVICES}/devices",
                lambda lst: all(d.get("status", {}).get("state") == "online" for d in lst["items"]),
                timeout=90,
                what="the devices to be online",
            )
            _say("Setting pump-1's desired setpoint to 1200 rpm at the cloud ...")
            pump = (await cluster.request("GET", f"{demo_devices.DEVICES}/devices/pump-1"))["spec"][
                "properties"
            ]
            for prop in pump:
                if prop["name"] == "setpoint":
                    prop["desired"] = {"value": "1200"}
                if prop["name"] == "running":
                    prop["desired"] = {"value": "true"}
            await cluster.request(
                "PATCH",
                f"{demo_devices.DEVICES}/devices/pump-1",
                {"spec": {"properties": pump}},
                content_type="application/merge-patch+json",
            )
            await cluster.wait_until(
                f"{demo_devices.DEVICES}/devices/pump-1",
                lambda d: any(
                    t.get("propertyName") == "setpoint" and t.get("reported", {}).get("value") == "1200"
                    for t in d.get("status", {}).get("twins", [])
                ),
                timeout=60,
                what="the pump to report the new setpoint",
            )
        _kubectl(cluster.kubeconfig, "get", "nodes", "-o", "wide")
        _kubectl(cluster.kubeconfig, "get", "deploy,pods", "-o", "wide")
        if with_devices:
            _kubectl(cluster.kubeconfig, "get", "devices,devicemodels")
        _say("")
        _say("FleetOps demo is running.")
        _say(f"  kubeconfig:  {cluster.kubeconfig}")
        _say(f"  try:         kubectl --kubeconfig {cluster.kubeconfig} get nodes,pods -o wide")
        fleetops = Path(sys.executable).with_name("fleetops")
        _say(f"               {fleetops} tui --kubeconfig {cluster.kubeconfig}")
        if with_devices:
            _say(f"               kubectl --kubeconfig {cluster.kubeconfig} get device pump-1 -o yaml")
            _say(
                f"               kubectl --kubeconfig {cluster.kubeconfig} get events --field-selector "
                f"involvedObject.name={demo_devices.CAMERA}"
            )
            _say(
                f"  camera:      kubectl --kubeconfig {cluster.kubeconfig} proxy, then open "
                f"http://127.0.0.1:8001{demo_devices.DEVICES}/devices/{demo_devices.CAMERA}/stream?overlay=1"
            )
        for name in NODES:
            with contextlib.suppress(OSError, ValueError, KeyError):
                endpoints = json.loads((root / name / "endpoints.json").read_text())
                _say(f"  {name} local API (works offline): {endpoints['localApi']}/api/v1/pods")
                if "mqtt" in endpoints:
                    _say(f"  {name} MQTT broker (this node's own): {endpoints['mqtt']}")
        _say(f"  logs:        {root / 'logs'}  (pod output under {root}/edge-*/pods/)")
        _say("  stop:        Ctrl-C (stops the edges, their pods and the cloud)")
        if not check:
            await stop.wait()
        return 0
    except LaunchError as exc:
        _say(f"demo failed: {exc}")
        return 1
    finally:
        _say("Stopping ...")
        await cluster.stop()
        for helper in helpers:
            await helper.stop()


class DemoCommand:
    name = "demo"
    help = "run a cloud, three edges and a sample Deployment on this machine"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data-dir", type=Path, default=Path("demo-data"), help="wiped at start")
        parser.add_argument("--check", action="store_true", help="exit once everything is up")

    def run(self, args: argparse.Namespace) -> int:
        root = args.data_dir.resolve()
        marker = root / ".fleetops-demo"
        if root.exists() and any(root.iterdir()):
            if not marker.exists():
                sys.stderr.write(
                    f"fleetops demo: {root} is not empty and is not a demo directory; not wiping it\n"
                )
                return 2
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        marker.touch()
        return asyncio.run(run_demo(root, check=args.check))


demo_command = DemoCommand()

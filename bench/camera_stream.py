"""Camera stream: 640x480 at 30 fps from the synthetic camera through edge, tunnel and cloud to a client.

Real processes: ``fleetops cloud``, ``fleetops edge`` with its own mosquitto, the camera workload as a pod
(``edgeservice.workloads.camera``, ``synthetic://conveyor``, JPEG quality 80), and ``app.client``'s
``camera_frames`` (a WebSocket on the Device's stream subresource) in this process. For ``SECONDS`` the
client takes every frame it can; reported: the fps it achieved, the glass-to-glass latency (the capture
timestamp the camera stamps on each frame, to the moment the client has the whole frame: same machine, same
clock), and the CPU the whole path costs (the camera pod, the edge, the cloud and the client's receiving,
from /proc), per second of video. Targets: >= 29 fps, p95 <= 100 ms.

Baseline in the same run: what it takes just to make those frames, the bare OpenCV loop: render the same
synthetic conveyor frame and ``cv2.imencode`` it at the same quality, paced to 30 fps, and its CPU.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import cv2
import psutil

from app import synthetic
from app.client import AsyncClient
from app.launcher import LocalCluster
from bench.common import percentile, table
from edgeservice.broker import EmbeddedBroker

FPS = 30
WIDTH, HEIGHT = 640, 480
QUALITY = 80
SECONDS = 10.0
DEVICES = "/apis/devices.kubeedge.io/v1beta1/namespaces/default"


def _camera(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "deviceModelRef": {"name": "camera"},
            "nodeName": "edge-1",
            "protocol": {
                "protocolName": "camera",
                "configData": {
                    "url": "synthetic://conveyor?seed=1",
                    "fps": FPS,
                    "width": WIDTH,
                    "height": HEIGHT,
                    "jpegQuality": QUALITY,
                },
            },
        },
    }


def _deployment(config: Path) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "camera", "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "camera"}},
            "template": {
                "metadata": {"labels": {"app": "camera"}},
                "spec": {
                    "containers": [
                        {
                            "name": "camera",
                            "image": "fleetops/camera:bench",
                            "command": [
                                sys.executable,
                                "-m",
                                "edgeservice.workloads.camera",
                                "--config",
                                str(config),
                            ],
                        }
                    ]
                },
            },
        },
    }


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _baseline() -> tuple[float, float, float]:
    """(fps, CPU seconds per second, mean JPEG bytes): render + encode at FPS for SECONDS / 2."""
    source = synthetic.ConveyorSource(seed=1, fps=FPS, width=WIDTH, height=HEIGHT)
    n, size = 0, 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    deadline = t0
    while time.perf_counter() - t0 < SECONDS / 2:
        frame, _ = source.read()
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
        assert ok
        n, size = n + 1, size + len(jpeg)
        deadline += 1 / FPS
        pause = deadline - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    wall = time.perf_counter() - t0
    return n / wall, (time.process_time() - cpu0) / wall, size / max(1, n)


def _pipeline_processes(cluster: LocalCluster) -> list[psutil.Process]:
    procs = [psutil.Process(p.pid) for p in (cluster.cloud, *cluster.edges.values()) if p is not None]
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info.get("cmdline") or []
        if "edgeservice.workloads.camera" in cmd and any(str(cluster.root) in c for c in cmd):
            procs.append(p)
    return procs


async def run() -> dict[str, Any]:
    base_fps, base_cpu, base_bytes = await asyncio.to_thread(_baseline)
    broker = EmbeddedBroker()
    await broker.start()
    try:
        with tempfile.TemporaryDirectory() as d:
            cluster = LocalCluster(Path(d), status_interval=2.0)
            try:
                await cluster.start_cloud()
                await cluster.start_edge("edge-1", None, "--mqtt", broker.url)
                await cluster.wait_ready_nodes(["edge-1"])
                model = {
                    "apiVersion": "devices.kubeedge.io/v1beta1",
                    "kind": "DeviceModel",
                    "metadata": {"name": "camera", "namespace": "default"},
                    "spec": {"protocol": "camera", "properties": []},
                }
                await cluster.request("POST", f"{DEVICES}/devicemodels", model)
                name = f"cam-{uuid.uuid4().hex[:6]}"
                camera = _camera(name)
                await cluster.request("POST", f"{DEVICES}/devices", camera)
                config = Path(d) / "camera.json"
                config.write_text(json.dumps({"broker": broker.url, "devices": [camera]}))
                await cluster.request(
                    "POST", "/apis/apps/v1/namespaces/default/deployments", _deployment(config)
                )
                await cluster.wait_until(
                    f"{DEVICES}/devices/{name}",
                    lambda dev: dev.get("status", {}).get("state") == "online",
                    timeout=60,
                    what="the camera online",
                )
                procs = _pipeline_processes(cluster)
                latencies: list[float] = []
                sizes: list[int] = []
                async with (
                    AsyncClient.from_kubeconfig(cluster.kubeconfig) as client,
                    client.camera_frames(name) as frames,
                ):
                    for _ in range(FPS):  # warm up: the stream opens, the buffers settle
                        await anext(frames)
                    cpu0, me0, t0 = _cpu(procs), time.process_time(), time.perf_counter()
                    async for frame in frames:
                        latencies.append(time.time() * 1000 - frame.timestamp_ms)
                        sizes.append(len(frame.jpeg))
                        if time.perf_counter() - t0 >= SECONDS:
                            break
                    wall = time.perf_counter() - t0
                    cpu = (_cpu(procs) - cpu0 + time.process_time() - me0) / wall
            finally:
                await cluster.stop()
    finally:
        await broker.stop()
    fps = len(latencies) / wall
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    table(
        [
            ("achieved fps at the client", f"{fps:.1f}", f"target >= 29 ({FPS} fps camera)"),
            ("glass-to-glass latency p50 (ms)", f"{p50:.1f}", ""),
            ("glass-to-glass latency p95 (ms)", f"{p95:.1f}", "target <= 100"),
            ("CPU, whole path (cores)", f"{cpu:.2f}", "camera pod + edge + cloud + client"),
            ("bare render + JPEG encode: fps", f"{base_fps:.1f}", "baseline, same frames"),
            ("bare render + JPEG encode: CPU (cores)", f"{base_cpu:.2f}", "baseline"),
            (
                "mean frame size (KB)",
                f"{sum(sizes) / len(sizes) / 1024:.1f}",
                f"bare: {base_bytes / 1024:.1f}",
            ),
        ]
    )
    return {
        "fps": fps,
        "latency_ms": {"p50": p50, "p95": p95, "max": max(latencies)},
        "cpu_cores": cpu,
        "baseline": {"fps": base_fps, "cpu_cores": base_cpu},
        "frames": len(latencies),
        "seconds": wall,
    }

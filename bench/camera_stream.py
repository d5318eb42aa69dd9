"""Camera stream: 640x480 at 30 fps from the synthetic camera through edge, tunnel and cloud to a client.

Real processes: ``fleetops cloud``, ``fleetops edge`` with a mosquitto, the camera workload as a pod
(``edgeservice.workloads.camera``, ``synthetic://conveyor``, JPEG quality 80), and ``app.client``'s
``camera_frames`` (a WebSocket on the Device's stream subresource) in this process. For ``SECONDS`` the
client takes every frame it can; reported: the fps it achieved, the glass-to-glass latency (the capture
timestamp the camera stamps on each frame, to the moment the client has the whole frame: same machine, same
clock), and the CPU the whole path costs (the camera pod, the edge, the mosquitto the bench starts for
the edge, the cloud and the client's receiving, from /proc), per second of video. Targets: >= 29 fps,
p95 <= 100 ms.

Baselines in the same run, each paced to 30 fps for ``SECONDS / 2``, with their CPU:

* bare OpenCV capture + JPEG encode: the synthetic conveyor's frames are written once to a video file
  (Motion JPEG in AVI at quality 95, what a USB camera delivers, in a temporary directory), then
  ``cv2.VideoCapture`` reads them back and ``cv2.imencode`` encodes each at the stream's quality;
* render + JPEG encode: what the camera pod itself does per frame with the synthetic source (render the
  conveyor, ``cv2.imencode``), i.e. the part of the path's CPU that is not streaming.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
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


def _paced(next_frame: Callable[[], np.ndarray]) -> tuple[float, float, float]:
    """(fps, CPU seconds per second, mean JPEG bytes) of ``next_frame`` + JPEG encode, paced to FPS for
    SECONDS / 2 (this thread's CPU: OpenCV's decode and encode run in it)."""
    n, size = 0, 0
    cpu0, t0 = time.thread_time(), time.perf_counter()
    deadline = t0
    while time.perf_counter() - t0 < SECONDS / 2:
        frame = next_frame()
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
        assert ok
        n, size = n + 1, size + len(jpeg)
        deadline += 1 / FPS
        pause = deadline - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    wall = time.perf_counter() - t0
    return n / wall, (time.thread_time() - cpu0) / wall, size / max(1, n)


def _render_baseline() -> tuple[float, float, float]:
    """Render the synthetic conveyor + encode, as the camera pod does."""
    source = synthetic.ConveyorSource(seed=1, fps=FPS, width=WIDTH, height=HEIGHT)
    return _paced(lambda: source.read()[0])


def _capture_baseline(directory: Path) -> tuple[float, float, float]:
    """Bare ``cv2.VideoCapture`` read + encode of the same frames, from a video file written first."""
    source = synthetic.ConveyorSource(seed=1, fps=FPS, width=WIDTH, height=HEIGHT)
    video = directory / "conveyor.avi"
    frames = int(FPS * SECONDS / 2) + FPS  # the whole run from the file, no rewinding
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened(), "OpenCV cannot write Motion JPEG"
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
    for _ in range(frames):
        writer.write(source.read()[0])
    writer.release()
    capture = cv2.VideoCapture(str(video))
    assert capture.isOpened(), f"OpenCV cannot read back {video}"

    def read() -> np.ndarray:
        ok, frame = capture.read()
        assert ok, "the baseline's video ended early"
        return np.asarray(frame)

    try:
        return _paced(read)
    finally:
        capture.release()


def _pipeline_processes(cluster: LocalCluster) -> list[psutil.Process]:
    """The cloud, the edge, the camera pod, and every mosquitto the bench or the edge started."""
    procs = [psutil.Process(p.pid) for p in (cluster.cloud, *cluster.edges.values()) if p is not None]
    procs += [p for p in psutil.Process().children(recursive=True) if "mosquitto" in p.name()]
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info.get("cmdline") or []
        if "edgeservice.workloads.camera" in cmd and any(str(cluster.root) in c for c in cmd):
            procs.append(p)
    return procs


async def run() -> dict[str, Any]:
    render_fps, render_cpu, base_bytes = await asyncio.to_thread(_render_baseline)
    broker = EmbeddedBroker()
    await broker.start()
    try:
        with tempfile.TemporaryDirectory() as d:
            base_fps, base_cpu, capture_bytes = await asyncio.to_thread(_capture_baseline, Path(d))
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
            ("CPU, whole path (cores)", f"{cpu:.2f}", "camera pod + edge + mosquitto + cloud + client"),
            ("bare VideoCapture + JPEG encode: fps", f"{base_fps:.1f}", "baseline, same frames (MJPG file)"),
            ("bare VideoCapture + JPEG encode: CPU (cores)", f"{base_cpu:.2f}", "baseline"),
            ("bare render + JPEG encode: fps", f"{render_fps:.1f}", "the camera pod's own work"),
            ("bare render + JPEG encode: CPU (cores)", f"{render_cpu:.2f}", ""),
            (
                "mean frame size (KB)",
                f"{sum(sizes) / len(sizes) / 1024:.1f}",
                f"bare: {base_bytes / 1024:.1f} rendered, {capture_bytes / 1024:.1f} captured",
            ),
        ]
    )
    return {
        "fps": fps,
        "latency_ms": {"p50": p50, "p95": p95, "max": max(latencies)},
        "cpu_cores": cpu,
        "baseline": {"fps": base_fps, "cpu_cores": base_cpu, "source": "VideoCapture (MJPG file)"},
        "render_baseline": {"fps": render_fps, "cpu_cores": render_cpu},
        "frames": len(latencies),
        "seconds": wall,
    }

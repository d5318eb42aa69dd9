"""GUI camera wall: CPU of a 4-camera wall at 30 fps (process CPU time over wall time), fed by a synthetic
feed and by a real cluster's camera streams, next to the CPU of bare ``cv2.imdecode`` of the same frames.

Runs offscreen. Both cases show the real page (``gui.views.cameras.CameraPage``: streams on the I/O loop,
decoding in the decode pool, painting on the UI thread) with the same four cameras in the same window:

* synthetic: fed by ``gui.camera.SyntheticFeed`` with 90 pre-rendered 640x480 JPEG frames per camera
  (quality 80), so rendering the synthetic conveyor is not counted: what is measured is pacing the feed,
  decoding, scaling to the tile and painting;
* live: fed by the network, as the GUI is in use. A real ``app.launcher.LocalCluster`` (``fleetops
  cloud`` and ``fleetops edge``, the edge on a mosquitto of its own that the bench starts), four camera
  Devices (``synthetic://conveyor``, 640x480 at 30 fps, JPEG quality 80) each served by a camera
  workload pod; the page is connected through a GUI ``Session`` opened on the cluster's kubeconfig, so
  every frame comes over the cloud's WebSocket into ``app.client.AsyncClient.camera_frames`` on the
  GUI's I/O thread. The session's table watches are not started (the page is given the four cameras, as
  in the synthetic case), so the difference between the two GUI figures is the network receive path.
  Latency is capture at the camera to the picture on the UI thread, for every picture painted; frames
  lost counts the camera's sequence numbers that were never painted (dropped anywhere on the way, the
  wall's own newest-wins drops included). The cluster's CPU (cloud, edge, camera pods, mosquitto, with
  their children) is reported for context. On a small machine the cluster competes with the GUI for
  the cores, which shows in the painted frame rate.

The baselines decode the very same JPEG bytes at 4 x 30 frames a second in one thread, paced the same
way: once bare (``cv2.imdecode`` at full size) and once with the resize to the tile's size the wall must
do anyway. CPU figures are percent of one core.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from bench.common import percentile, table

CAMERAS = 4
FPS = 30.0
WIDTH, HEIGHT = 640, 480
QUALITY = 80
WARMUP_S = 2.0
MEASURE_S = 10.0
LIVE_TIMEOUT_S = 90.0  # for the cluster's cameras to come online and every tile to show frames
WINDOW = (1000, 780)  # a 2x2 wall of ~490x360 tiles
DEVICES = "/apis/devices.kubeedge.io/v1beta1/namespaces/default"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"


def _paced(frames: list[bytes], work: Any, seconds: float) -> tuple[float, int]:
    """Run ``work(jpeg)`` for CAMERAS x FPS frames a second for ``seconds``; (CPU share, frames done)."""
    period = 1.0 / (FPS * CAMERAS)
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    due, n = start_wall, 0
    while time.perf_counter() - start_wall < seconds:
        work(frames[n % len(frames)])
        n += 1
        due += period
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    wall = time.perf_counter() - start_wall
    return (time.process_time() - start_cpu) / wall, n


def _run_loop(seconds: float) -> None:
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def _run_until(done: Callable[[], bool], signal: Any, timeout: float, what: Callable[[], str]) -> None:
    """Run the Qt event loop until ``done()`` holds, checked on each emission of ``signal``; after
    ``timeout`` seconds, an error that says what it waited for (``what()``, at that moment)."""
    from PySide6.QtCore import QEventLoop, QTimer

    if done():
        return
    loop = QEventLoop()
    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(loop.quit)

    def check(*_args: object) -> None:
        if done():
            loop.quit()

    signal.connect(check)
    timer.start(int(timeout * 1000))
    try:
        loop.exec()
    finally:
        timer.stop()
        signal.disconnect(check)
    if not done():
        raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what()}")


def _measure_wall(
    page: Any, settle: Callable[[], None], others: Callable[[], float] | None = None
) -> dict[str, Any]:
    """Show ``page`` (a CameraPage), call ``settle()`` (returns once frames flow), warm up, then measure for
    MEASURE_S: this process's CPU, pictures painted per tile per second, the latency of every picture
    painted, the wall's drops and the camera frames never painted; with ``others`` (CPU seconds of other
    processes so far), their CPU over the same window too."""
    page.resize(*WINDOW)
    page.show()
    settle()
    _run_loop(WARMUP_S)
    tiles = page.tiles
    latencies: list[float] = []
    counted = {t: tile.stats.frames for t, tile in tiles.items()}

    def record(tile_id: str) -> None:  # connected after the page's own slot: the picture is taken
        tile = tiles.get(tile_id)
        if tile is not None and tile.stats.frames != counted[tile_id]:
            counted[tile_id] = tile.stats.frames
            latencies.append(tile.stats.latency_ms or 0.0)

    frames0 = dict(counted)
    seq0 = {t: tile.picture.seq for t, tile in tiles.items() if tile.picture is not None}
    dropped0 = sum(page.wall.dropped(t) for t in tiles)
    page.wall.picture.connect(record)
    others0 = others() if others is not None else 0.0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    _run_loop(MEASURE_S)
    wall = time.perf_counter() - wall0
    cpu = (time.process_time() - cpu0) / wall
    others_cpu = (others() - others0) / wall if others is not None else None
    page.wall.picture.disconnect(record)
    painted = {t: tile.stats.frames - frames0[t] for t, tile in tiles.items()}
    lost = sum(
        tile.picture.seq - seq0[t] - painted[t]
        for t, tile in tiles.items()
        if t in seq0 and tile.picture is not None
    )
    fps_each = sorted(n / wall for n in painted.values())
    tile_size = next(iter(tiles.values())).size()
    return {
        "cpu_percent": cpu * 100,
        "seconds": wall,
        "tile": [tile_size.width(), tile_size.height()],
        "shown_fps_min": fps_each[0],
        "shown_fps_mean": sum(fps_each) / len(fps_each),
        "source_fps": [tile.stats.source_fps for tile in tiles.values()],
        "latency_ms_last": [tile.stats.latency_ms or 0.0 for tile in tiles.values()],
        "latency_ms": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "max": max(latencies),
        }
        if latencies
        else None,
        "frames_dropped": sum(page.wall.dropped(t) for t in tiles) - dropped0,
        "frames_lost": lost,
        "others_cpu_percent": others_cpu * 100 if others_cpu is not None else None,
    }


def _close_page(page: Any, session: Any) -> None:
    page.hide()
    page.close_streams()
    session.close()
    session.wait_closed()
    page.deleteLater()
    session.deleteLater()
    _run_loop(0.05)  # the deferred deletes, before the interpreter's own teardown


def _settings() -> Any:
    from PySide6.QtCore import QSettings

    from gui.settings import Settings

    return Settings(QSettings(os.devnull, QSettings.Format.IniFormat))


def _synthetic_wall() -> tuple[dict[str, Any], list[bytes]]:
    from gui.bridge import AsyncBridge
    from gui.camera import CameraRef, SyntheticFeed
    from gui.fleet import StaticSource
    from gui.session import Session
    from gui.views.cameras import CameraPage

    feed = SyntheticFeed(fps=FPS, width=WIDTH, height=HEIGHT, quality=QUALITY, prerender=90)
    cameras = [CameraRef("default", f"cam-{i}", f"edge-{i}") for i in range(CAMERAS)]
    for c in cameras:  # render before measuring
        feed.frames_for(c.name, False)
    bridge = AsyncBridge()
    bridge.start()
    try:
        session = Session(bridge, StaticSource({}))
        page = CameraPage(session, _settings(), feed=feed, cameras=cameras)
        try:
            result = _measure_wall(page, lambda: None)
        finally:
            _close_page(page, session)
    finally:
        bridge.stop()
    del result["others_cpu_percent"]
    return result, feed.frames_for("cam-0", False)


def _camera_device(name: str) -> dict[str, Any]:
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
                    "url": f"synthetic://conveyor?seed={name.rsplit('-', 1)[-1]}",
                    "fps": FPS,
                    "width": WIDTH,
                    "height": HEIGHT,
                    "jpegQuality": QUALITY,
                },
            },
        },
    }


def _camera_pod(app: str, config: Path) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
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
                    ],
                },
            },
        },
    }


def _cluster_processes(cluster: Any) -> list[Any]:
    """The cloud, the edge, the mosquitto this process started, the camera pods, and their children."""
    import psutil

    roots = [psutil.Process(p.pid) for p in (cluster.cloud, *cluster.edges.values()) if p is not None]
    roots += [p for p in psutil.Process().children() if p.name() == "mosquitto"]
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info.get("cmdline") or []
        if "edgeservice.workloads.camera" in cmd and any(str(cluster.root) in c for c in cmd):
            roots.append(p)
    found: dict[int, Any] = {}
    for root in roots:
        for p in [root, *root.children(recursive=True)]:
            found.setdefault(p.pid, p)
    return list(found.values())


def _cpu_seconds(procs: list[Any]) -> float:
    import psutil

    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:  # gone: its time so far is lost, which only under-counts
            continue
        total += t.user + t.system
    return total


async def _live_wall() -> dict[str, Any]:
    from app.launcher import LocalCluster
    from edgeservice.broker import EmbeddedBroker
    from gui.bridge import AsyncBridge
    from gui.camera import CameraRef
    from gui.session import Session
    from gui.target import Target
    from gui.views.cameras import CameraPage

    broker = EmbeddedBroker()
    await broker.start()
    try:
        with tempfile.TemporaryDirectory(prefix="fleetops-bench-") as d:
            root = Path(d)
            cluster = LocalCluster(root)
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
                names = [f"cam-{i}" for i in range(CAMERAS)]
                for name in names:
                    device = _camera_device(name)
                    await cluster.request("POST", f"{DEVICES}/devices", device)
                    config = root / f"{name}.json"
                    config.write_text(json.dumps({"broker": broker.url, "devices": [device]}))
                    await cluster.request("POST", DEPLOYMENTS, _camera_pod(name, config))
                for name in names:
                    await cluster.wait_until(
                        f"{DEVICES}/devices/{name}",
                        lambda dev: dev.get("status", {}).get("state") == "online",
                        timeout=LIVE_TIMEOUT_S,
                        what=f"camera {name} online",
                    )
                procs = _cluster_processes(cluster)
                cameras = [CameraRef("default", name, "edge-1") for name in names]
                bridge = AsyncBridge()
                bridge.start()
                try:
                    session = Session.open(bridge, Target(kubeconfig=str(cluster.kubeconfig)))
                    page = CameraPage(session, _settings(), cameras=cameras)

                    def settle() -> None:
                        _run_until(
                            lambda: all(t.stats.frames > 0 for t in page.tiles.values()),
                            page.wall.picture,
                            LIVE_TIMEOUT_S,
                            lambda: (
                                "frames on every tile; "
                                + ", ".join(f"{i}: {t.status}" for i, t in page.tiles.items())
                            ),
                        )

                    try:
                        result = _measure_wall(page, settle, lambda: _cpu_seconds(procs))
                    finally:
                        _close_page(page, session)
                finally:
                    bridge.stop()
                result["cluster_cpu_percent"] = result.pop("others_cpu_percent")
                result["cluster_processes"] = len(procs)
            finally:
                await cluster.stop()
    finally:
        await broker.stop()
    return result


async def run() -> dict[str, Any]:
    import cv2
    import numpy as np
    from PySide6.QtWidgets import QApplication

    import gui  # noqa: F401  (applies the Qt workaround before the first Qt call)

    _app = QApplication.instance() or QApplication([])  # kept alive for the run

    synthetic, jpegs = _synthetic_wall()
    size = tuple(synthetic["tile"])

    def bare(jpeg: bytes) -> None:
        cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)

    def decode_and_fit(jpeg: bytes) -> None:
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError("not a JPEG")
        scale = min(size[0] / img.shape[1], size[1] / img.shape[0], 1.0)
        cv2.resize(
            img, (round(img.shape[1] * scale), round(img.shape[0] * scale)), interpolation=cv2.INTER_LINEAR
        )

    bare_cpu, bare_n = _paced(jpegs, bare, MEASURE_S / 2)
    fit_cpu, _ = _paced(jpegs, decode_and_fit, MEASURE_S / 2)
    live = await _live_wall()

    def ms(values: list[float]) -> str:
        return " ".join(f"{v:.0f}" for v in values) + " ms"

    result = {
        "cameras": CAMERAS,
        "fps_target": FPS,
        "tile": list(size),
        "wall_cpu_percent": synthetic["cpu_percent"],
        "shown_fps_min": synthetic["shown_fps_min"],
        "shown_fps_mean": synthetic["shown_fps_mean"],
        "latency_ms_last": synthetic["latency_ms_last"],
        "frames_dropped": synthetic["frames_dropped"],
        "bare_imdecode_cpu_percent": bare_cpu * 100,
        "bare_imdecode_frames_per_s": bare_n / (MEASURE_S / 2),
        "imdecode_resize_cpu_percent": fit_cpu * 100,
        "live": live,
    }
    latency = live["latency_ms"] or {"p50": float("nan"), "p95": float("nan")}
    table(
        [
            (
                f"{CAMERAS}-camera wall at {FPS:.0f} fps, synthetic feed: process CPU",
                f"{synthetic['cpu_percent']:.0f} %",
                f"tiles {size[0]}x{size[1]}",
            ),
            (
                "  frames painted per tile per s (min / mean)",
                f"{synthetic['shown_fps_min']:.1f} / {synthetic['shown_fps_mean']:.1f}",
                "",
            ),
            ("  latency capture -> UI (last, per tile)", ms(synthetic["latency_ms_last"]), ""),
            ("  frames dropped (newest wins)", f"{synthetic['frames_dropped']}", ""),
            (
                f"{CAMERAS}-camera wall at {FPS:.0f} fps, live cluster: GUI process CPU",
                f"{live['cpu_percent']:.0f} %",
                f"tiles {live['tile'][0]}x{live['tile'][1]}, {WIDTH}x{HEIGHT} frames over the network",
            ),
            (
                "  frames painted per tile per s (min / mean)",
                f"{live['shown_fps_min']:.1f} / {live['shown_fps_mean']:.1f}",
                "cameras' own fps: " + " ".join(f"{v:.1f}" for v in live["source_fps"]),
            ),
            (
                "  latency capture -> UI (p50 / p95)",
                f"{latency['p50']:.0f} / {latency['p95']:.0f} ms",
                "last per tile: " + ms(live["latency_ms_last"]),
            ),
            ("  frames dropped by the wall (newest wins)", f"{live['frames_dropped']}", ""),
            ("  camera frames never painted", f"{live['frames_lost']}", "dropped anywhere on the way"),
            (
                "  cloud + edge + camera pods + mosquitto CPU",
                f"{live['cluster_cpu_percent']:.0f} %",
                f"context: {live['cluster_processes']} processes",
            ),
            (f"bare cv2.imdecode, {CAMERAS * FPS:.0f} frames/s", f"{bare_cpu * 100:.0f} %", "baseline"),
            ("cv2.imdecode + resize to the tile", f"{fit_cpu * 100:.0f} %", "baseline"),
        ]
    )
    return result

"""GUI camera wall: CPU of a 4-camera wall at 30 fps (process CPU time over wall time), next to the CPU of
bare ``cv2.imdecode`` of the same frames at the same rate, measured in the same run.

Runs offscreen. The wall is the real page (``gui.views.cameras.CameraPage``: streams on the I/O loop,
decoding in the decode pool, painting on the UI thread) fed by ``gui.camera.SyntheticFeed`` with 90
pre-rendered 640x480 JPEG frames per camera (quality 80), so rendering the synthetic conveyor is not
counted: what is measured is pacing the feed, decoding, scaling to the tile and painting. The baselines
decode the very same JPEG bytes at 4 x 30 frames a second in one thread, paced the same way: once bare
(``cv2.imdecode`` at full size) and once with the resize to the tile's size the wall must do anyway.
CPU figures are percent of one core.
"""

from __future__ import annotations

import os
import time
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from bench.common import table

CAMERAS = 4
FPS = 30.0
WARMUP_S = 2.0
MEASURE_S = 10.0
WINDOW = (1000, 780)  # a 2x2 wall of ~490x360 tiles


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


async def run() -> dict[str, Any]:
    import cv2
    import numpy as np
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    import gui  # noqa: F401  (applies the Qt workaround before the first Qt call)
    from gui.bridge import AsyncBridge
    from gui.camera import CameraRef, SyntheticFeed
    from gui.fleet import StaticSource
    from gui.session import Session
    from gui.settings import Settings

    _app = QApplication.instance() or QApplication([])  # kept alive for the run

    def run_loop(seconds: float) -> None:
        loop = QEventLoop()
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        loop.exec()

    from PySide6.QtCore import QSettings

    settings = Settings(QSettings(os.devnull, QSettings.Format.IniFormat))
    feed = SyntheticFeed(fps=FPS, width=640, height=480, quality=80, prerender=90)
    cameras = [CameraRef("default", f"cam-{i}", f"edge-{i}") for i in range(CAMERAS)]
    for c in cameras:  # render before measuring
        feed.frames_for(c.name, False)

    from gui.views.cameras import CameraPage

    bridge = AsyncBridge()
    bridge.start()
    try:
        session = Session(bridge, StaticSource({}))
        page = CameraPage(session, settings, feed=feed, cameras=cameras)
        page.resize(*WINDOW)
        page.show()
        run_loop(WARMUP_S)
        frames_before = {t: tile.stats.frames for t, tile in page.tiles.items()}
        wall0, cpu0 = time.perf_counter(), time.process_time()
        run_loop(MEASURE_S)
        wall = time.perf_counter() - wall0
        wall_cpu = (time.process_time() - cpu0) / wall
        shown = {t: (tile.stats.frames - frames_before[t]) / wall for t, tile in page.tiles.items()}
        latency = [tile.stats.latency_ms or 0.0 for tile in page.tiles.values()]
        tile_size = next(iter(page.tiles.values())).size()
        dropped = sum(page.wall.dropped(t) for t in page.tiles)
        page.hide()
        page.close_streams()
        session.close()
        page.deleteLater()
        session.deleteLater()
        run_loop(0.05)  # the deferred deletes, before the interpreter's own teardown
    finally:
        bridge.stop()

    jpegs = feed.frames_for("cam-0", False)
    size = (tile_size.width(), tile_size.height())

    def bare(jpeg: bytes) -> None:
        cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)

    def decode_and_fit(jpeg: bytes) -> None:
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        scale = min(size[0] / img.shape[1], size[1] / img.shape[0], 1.0)
        cv2.resize(
            img, (round(img.shape[1] * scale), round(img.shape[0] * scale)), interpolation=cv2.INTER_LINEAR
        )

    bare_cpu, bare_n = _paced(jpegs, bare, MEASURE_S / 2)
    fit_cpu, _ = _paced(jpegs, decode_and_fit, MEASURE_S / 2)

    fps_each = sorted(shown.values())
    result = {
        "cameras": CAMERAS,
        "fps_target": FPS,
        "tile": list(size),
        "wall_cpu_percent": wall_cpu * 100,
        "shown_fps_min": fps_each[0],
        "shown_fps_mean": sum(fps_each) / len(fps_each),
        "latency_ms_last": latency,
        "frames_dropped": dropped,
        "bare_imdecode_cpu_percent": bare_cpu * 100,
        "bare_imdecode_frames_per_s": bare_n / (MEASURE_S / 2),
        "imdecode_resize_cpu_percent": fit_cpu * 100,
    }
    table(
        [
            (
                f"{CAMERAS}-camera wall at {FPS:.0f} fps: process CPU",
                f"{wall_cpu * 100:.0f} %",
                f"tiles {size[0]}x{size[1]}",
            ),
            (
                "  frames painted per tile per s (min / mean)",
                f"{fps_each[0]:.1f} / {result['shown_fps_mean']:.1f}",
                "",
            ),
            ("  latency capture -> UI (last, per tile)", " ".join(f"{v:.0f}" for v in latency) + " ms", ""),
            ("  frames dropped (newest wins)", f"{dropped}", ""),
            (f"bare cv2.imdecode, {CAMERAS * FPS:.0f} frames/s", f"{bare_cpu * 100:.0f} %", "baseline"),
            ("cv2.imdecode + resize to the tile", f"{fit_cpu * 100:.0f} %", "baseline"),
        ]
    )
    return result

"""The camera screen: half-block rendering of a frame, and the live screen against a real cloud, edge and
camera workload (the synthetic conveyor), with the overlay toggle and the reason shown when it fails."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from textual.app import App
from textual.screen import Screen
from textual.widgets import Static

from app.client import AsyncClient
from app.launcher import LocalCluster, tail
from app.resources import DEVICEMODELS, DEVICES
from tests.services import require_mosquitto
from tests.tui.test_device_screen import until
from tui.camera import UPPER_HALF, CameraScreen, HalfBlockImage, cells

MQTT = ("127.0.0.1", 1883)
REPO = Path(__file__).resolve().parents[2]


def _jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return data.tobytes()


def test_cells_keep_the_aspect_and_put_two_pixels_in_each_cell() -> None:
    image = np.zeros((480, 640, 3), np.uint8)
    image[:240] = (0, 0, 255)  # BGR: the top half red, the bottom half black
    pixels = cells(_jpeg(image), cols=80, rows=24)
    assert pixels is not None
    assert pixels.shape == (48, 64, 3)  # 48 pixel rows (24 cells), width kept at 4:3
    assert tuple(pixels[0, 0]) == pytest.approx((248, 0, 0), abs=8)  # RGB now, quantised
    assert tuple(pixels[-1, 0]) == (0, 0, 0)
    assert cells(b"not a jpeg", 80, 24) is None


async def test_the_widget_draws_upper_half_blocks_in_both_colours() -> None:
    class One(App[None]):
        def compose(self):  # type: ignore[no-untyped-def]
            yield HalfBlockImage(id="picture")

    app = One()
    async with app.run_test(size=(20, 5)) as pilot:
        widget = app.query_one(HalfBlockImage)
        pixels = np.zeros((4, 10, 3), np.uint8)
        pixels[0] = (200, 0, 0)
        pixels[1] = (0, 0, 200)
        widget.show(pixels)
        await pilot.pause()
        line = widget.render_line(0)
        text = "".join(s.text for s in line)
        assert UPPER_HALF * 10 in text
        drawn = [s for s in line if s.text.startswith(UPPER_HALF)]
        assert drawn[0].style is not None and drawn[0].style.color is not None
        assert drawn[0].style.color.triplet == (200, 0, 0)
        assert drawn[0].style.bgcolor is not None and drawn[0].style.bgcolor.triplet == (0, 0, 200)


class Host(App[None]):
    def __init__(self, screen: Screen[None]) -> None:
        super().__init__()
        self._first = screen

    def on_mount(self) -> None:
        self.push_screen(self._first)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    require_mosquitto()
    c = LocalCluster(tmp_path, status_interval=0.5, ping_interval=1.0, restart_backoff=0.2)
    await c.start_cloud()
    try:
        await c.start_edge("edge-1", None, "--mqtt", f"tcp://{MQTT[0]}:{MQTT[1]}")
        await c.wait_ready_nodes(["edge-1"])
        yield c
    finally:
        await c.stop()
        for proc in [c.cloud, *c.edges.values()]:
            if proc is not None:
                print(f"--- {proc.name} ---\n{tail(proc.log_path, 30)}")


@pytest.mark.slow
async def test_live_camera_then_overlay_without_inference_says_why(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    name = f"cam-{uuid.uuid4().hex[:6]}"
    device = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "deviceModelRef": {"name": "camera"},
            "nodeName": "edge-1",
            "protocol": {
                "protocolName": "camera",
                "configData": {"url": "synthetic://conveyor", "fps": 10, "width": 320, "height": 240},
            },
        },
    }
    model = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": "camera", "namespace": "default"},
        "spec": {"protocol": "camera", "properties": []},
    }
    await cluster.request(
        "POST", f"/apis/{DEVICEMODELS.group}/v1beta1/namespaces/default/devicemodels", model
    )
    await cluster.request("POST", f"/apis/{DEVICES.group}/v1beta1/namespaces/default/devices", device)
    config = tmp_path / "camera.json"
    config.write_text(json.dumps({"broker": f"mqtt://{MQTT[0]}:{MQTT[1]}", "devices": [device]}))
    command = [sys.executable, "-m", "edgeservice.workloads.camera", "--config", str(config)]
    deployment = {
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
                        {"name": "camera", "image": "x", "command": command, "workingDir": str(REPO)}
                    ]
                },
            },
        },
    }
    await cluster.request("POST", "/apis/apps/v1/namespaces/default/deployments", deployment)
    async with AsyncClient.from_kubeconfig(cluster.kubeconfig) as client:
        screen = CameraScreen(client, "default", name)
        app = Host(screen)
        async with app.run_test(size=(100, 40)) as pilot:
            await until(pilot, lambda: screen.frames_drawn >= 3, "three frames drawn", timeout=60)
            stats = str(screen.query_one("#stats", Static).render())
            assert "fps" in stats and "latency" in stats and "320x240" in stats
            picture = screen.query_one("#picture", HalfBlockImage)
            assert picture.pixels is not None and picture.pixels.shape[1] <= 100
            # No inference workload runs: the overlay stream is refused, and the screen says why.
            await pilot.press("o")
            await until(pilot, lambda: "sent no frame" in screen.error, "the overlay refused", timeout=30)
            message = str(screen.query_one("#message", Static).render())
            assert "retrying" in message and "inference" in message
            await pilot.press("o")  # back to the camera: pictures again
            drawn = screen.frames_drawn
            await until(pilot, lambda: screen.frames_drawn > drawn and not screen.error, "frames again")

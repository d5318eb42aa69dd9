"""Cameras end to end: a camera workload pod on a real edge, frames through the tunnel to real clients.

The cloud, the edge and the workloads are real processes; MQTT is the shared Mosquitto (random device
names keep parallel runs apart). The camera is the built-in synthetic conveyor, so no hardware is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import aiomqtt
import cv2
import numpy as np
import pytest
import websockets

from app.camera import LEASE_TTL_S, CameraFrame, decode_frame, frame_topic
from app.client import ApiError, AsyncClient, NotFound
from app.launcher import LocalCluster, tail
from app.resources import EVENTS, PODS
from cloudservice.cameras import LINGER_S
from tests.services import require_mosquitto

pytestmark = pytest.mark.slow

MQTT = ("127.0.0.1", 1883)
DEVICES = "/apis/devices.kubeedge.io/v1beta1/namespaces/default"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
REPO = Path(__file__).resolve().parents[2]
WAIT = 30.0


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    require_mosquitto()
    c = LocalCluster(
        tmp_path, node_grace_period=5.0, status_interval=0.5, ping_interval=1.0, restart_backoff=0.2
    )
    await c.start_cloud()
    try:
        await c.start_edge("edge-1", None, "--mqtt", f"tcp://{MQTT[0]}:{MQTT[1]}")
        await c.wait_ready_nodes(["edge-1"])
        await c.request(
            "POST",
            f"{DEVICES}/devicemodels",
            {
                "apiVersion": "devices.kubeedge.io/v1beta1",
                "kind": "DeviceModel",
                "metadata": {"name": "camera", "namespace": "default"},
                "spec": {"protocol": "camera", "properties": []},
            },
        )
        yield c
    finally:
        await c.stop()
        for proc in [c.cloud, *c.edges.values()]:
            if proc is not None:
                print(f"--- {proc.name} ---\n{tail(proc.log_path, 40)}")


@pytest.fixture
async def client(cluster: LocalCluster) -> AsyncIterator[AsyncClient]:
    async with AsyncClient.from_kubeconfig(cluster.kubeconfig) as c:
        yield c


def camera(name: str, url: str = "synthetic://conveyor?seed=3&defect_rate=0.6") -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "deviceModelRef": {"name": "camera"},
            "nodeName": "edge-1",
            "protocol": {
                "protocolName": "camera",
                "configData": {"url": url, "fps": 20, "width": 320, "height": 240, "jpegQuality": 70},
            },
        },
    }


def pod_of(app: str, module: str, config: Path) -> dict[str, Any]:
    container = {
        "name": app,
        "image": f"fleetops/{app}:dev",
        "command": [sys.executable, "-m", module, "--config", str(config)],
        "workingDir": str(REPO),
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


async def start_camera(cluster: LocalCluster, tmp_path: Path, dev: dict[str, Any]) -> str:
    """The Device and its camera workload pod; returns the device name once it is online."""
    name = str(dev["metadata"]["name"])
    await cluster.request("POST", f"{DEVICES}/devices", dev)
    config = tmp_path / f"{name}.json"
    config.write_text(json.dumps({"broker": f"mqtt://{MQTT[0]}:{MQTT[1]}", "devices": [dev]}))
    await cluster.request("POST", DEPLOYMENTS, pod_of(f"cam-{name}", "edgeservice.workloads.camera", config))
    return name


async def wait_state(cluster: LocalCluster, name: str, state: str) -> dict[str, Any]:
    device: dict[str, Any] = await cluster.wait_until(
        f"{DEVICES}/devices/{name}",
        lambda d: d.get("status", {}).get("state") == state,
        timeout=60,
        what=f"camera {name} {state}",
    )
    return device


async def metric(cluster: LocalCluster, name: str, **labels: str) -> float:
    headers = {"Authorization": f"Bearer {cluster.token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as s,
        s.get(f"{cluster.api}/metrics", ssl=cluster._ssl or True) as resp,
    ):
        text = await resp.text()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + ("{" + want + "}" if want else " ")) or (
            want and line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items())
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def wait_log(client: AsyncClient, app: str, needle: str) -> None:
    """Follow the pod's log (through the cloud and the tunnel) until ``needle`` shows up."""
    pods = await client.list(PODS, "default", label_selector=f"app={app}")
    name = pods.items[0]["metadata"]["name"]
    async with asyncio.timeout(WAIT):
        async with client.logs(name, follow=True) as lines:
            async for line in lines:
                if needle in line:
                    return


def image(jpeg: bytes) -> np.ndarray:
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None, "not a JPEG"
    return decoded


async def test_viewers_share_one_edge_stream_and_frames_stop_when_nobody_watches(
    cluster: LocalCluster, client: AsyncClient, tmp_path: Path
) -> None:
    name = await start_camera(cluster, tmp_path, camera(f"cam-{uuid.uuid4().hex[:6]}"))
    await wait_state(cluster, name, "online")
    opened_before = await metric(cluster, "fleetops_hub_streams_opened_total")

    async with client.camera_frames(name) as a, client.camera_frames(name) as b:
        got_a = [await anext(a) for _ in range(5)]
        got_b = [await anext(b) for _ in range(5)]
        # The same camera through a plain GET: MJPEG a browser can show.
        headers = {"Authorization": f"Bearer {cluster.token}"}
        async with (
            aiohttp.ClientSession(headers=headers) as s,
            s.get(f"{cluster.api}{DEVICES}/devices/{name}/stream", ssl=cluster._ssl or True) as resp,
        ):
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("multipart/x-mixed-replace; boundary=")
            reader = aiohttp.MultipartReader.from_response(resp)
            part = await reader.next()
            assert isinstance(part, aiohttp.BodyPartReader) and part.headers["Content-Type"] == "image/jpeg"
            assert int(part.headers["X-Frame-Timestamp"]) > 0
            assert float(part.headers["X-Frame-Fps"]) > 0
            assert float(part.headers["X-Frame-Bytes-Per-Second"]) > 0
            jpeg = await part.read()
            assert image(bytes(jpeg)).shape == (240, 320, 3)
            labels = {"device": name, "variant": "frame"}
            assert await metric(cluster, "fleetops_camera_stream_viewers", **labels) == 3
            # What the stream achieves, while it streams.
            assert await metric(cluster, "fleetops_camera_stream_fps", **labels) > 0
            assert await metric(cluster, "fleetops_camera_stream_bytes_per_second", **labels) > 0
    for frames in (got_a, got_b):
        assert [f.seq for f in frames] == sorted({f.seq for f in frames})  # in order, no repeats
        for f in frames:
            assert (f.width, f.height) == (320, 240) and image(f.jpeg).shape == (240, 320, 3)
    assert got_a[-1].fps > 0 and got_a[-1].bytes_per_s > 0
    # Three viewers, one stream through the tunnel.
    assert await metric(cluster, "fleetops_hub_streams_opened_total") == opened_before + 1
    # Nobody watches any more: the edge releases its lease, the camera stops encoding.
    await wait_log(client, f"cam-{name}", "nobody watches; stream stopped")


async def test_frames_flow_only_while_someone_watches(
    cluster: LocalCluster, client: AsyncClient, tmp_path: Path
) -> None:
    """Nothing crosses the camera's MQTT topic or the tunnel with no viewer; frames start with the first
    viewer and stop once the last one has left (the cloud keeps the edge stream LINGER_S for a viewer who
    comes back; the edge's lease then expires or is released)."""
    name = await start_camera(cluster, tmp_path, camera(f"cam-{uuid.uuid4().hex[:6]}"))
    await wait_state(cluster, name, "online")
    async with aiomqtt.Client(*MQTT, identifier=f"test-{uuid.uuid4().hex[:8]}") as mqtt:
        await mqtt.subscribe(frame_topic(name), qos=0)

        async def quiet_for(seconds: float) -> int:
            """Frames published until none came for ``seconds`` (at most a minute)."""
            n = 0
            async with asyncio.timeout(60):
                while True:
                    try:
                        async with asyncio.timeout(seconds):
                            await anext(aiter(mqtt.messages))
                    except TimeoutError:
                        return n
                    n += 1

        cloud_frames = await metric(cluster, "fleetops_camera_frames_total")
        # Nobody watches: the camera captures (it is online) but publishes nothing, for 2 s = 40 frames.
        assert await quiet_for(2.0) == 0
        assert await metric(cluster, "fleetops_camera_frames_total") == cloud_frames
        async with client.camera_frames(name) as frames:
            got = [await anext(frames) for _ in range(10)]
        left = time.monotonic()
        assert len({f.seq for f in got}) == 10
        # The last viewer left: frames stop within the linger and a lease's life (plus one quiet second).
        await quiet_for(1.0)
        assert time.monotonic() - left < LINGER_S + LEASE_TTL_S + 1.0 + 2.0
        stopped = await metric(cluster, "fleetops_camera_frames_total")
        assert stopped >= cloud_frames + 10
        assert await quiet_for(1.0) == 0
        assert await metric(cluster, "fleetops_camera_frames_total") == stopped


async def test_a_slow_viewer_skips_frames_and_does_not_slow_the_others(
    cluster: LocalCluster, client: AsyncClient, tmp_path: Path
) -> None:
    """Two viewers of one camera: one takes every frame, one only five a second over a small receive
    window. The slow one is skipped frames at the cloud (once the buffers on its way are full, it gets
    the newest frame whenever it takes one); the fast one still gets every frame, live."""
    dev = camera(f"cam-{uuid.uuid4().hex[:6]}")
    # ~50 KB frames: the buffers on the slow viewer's way (kernel and TLS, both ends) hold about ten.
    dev["spec"]["protocol"]["configData"].update(width=1280, height=960, jpegQuality=95)
    name = await start_camera(cluster, tmp_path, dev)
    await wait_state(cluster, name, "online")
    host, port = cluster.api.removeprefix("https://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # before connecting: the window
    sock.connect((host, int(port)))
    sock.setblocking(False)
    fast: list[tuple[int, float]] = []  # (seq, age in s)
    slow: list[int] = []

    async def watch_fast(stop: asyncio.Event) -> None:
        async with client.camera_frames(name) as frames:
            async for frame in frames:
                fast.append((frame.seq, time.time() - frame.timestamp_ms / 1000))
                if stop.is_set():
                    return

    stop = asyncio.Event()
    async with websockets.connect(
        f"wss://{host}:{port}{DEVICES}/devices/{name}/stream",
        sock=sock,
        ssl=cluster._ssl,
        additional_headers={"Authorization": f"Bearer {cluster.token}"},
        max_size=8 * 1024 * 1024,
        max_queue=1,
    ) as ws:
        fast_task = asyncio.create_task(watch_fast(stop))
        for _ in range(40):  # 8 s at five frames a second, of a 20 fps stream
            slow.append(decode_frame(cast("bytes", await ws.recv())).seq)
            await asyncio.sleep(0.2)  # the slow viewer under test
        stop.set()
        await fast_task
    gaps = [b - a for a, b in itertools.pairwise(slow)]
    assert max(gaps) > 1, gaps  # the slow viewer was skipped frames, not queued them
    assert await metric(cluster, "fleetops_camera_frames_skipped_total") > 0
    fast_gaps = [b[0] - a[0] for a, b in itertools.pairwise(fast)]
    assert len(fast) > 100 and sum(g > 1 for g in fast_gaps) < len(fast) / 10, fast_gaps
    ages = sorted(age for _, age in fast)
    assert ages[int(len(ages) * 0.95)] < 0.25, ages[-10:]  # live, whatever the slow one does


async def test_overlay_frames_and_defect_events_from_the_inference_workload(
    cluster: LocalCluster, client: AsyncClient, tmp_path: Path
) -> None:
    name = await start_camera(cluster, tmp_path, camera(f"cam-{uuid.uuid4().hex[:6]}"))
    await wait_state(cluster, name, "online")
    config = tmp_path / "inference.json"
    crop = [128, 88, 64, 64]  # the synthetic conveyor's inspection window, scaled to 320x240
    config.write_text(
        json.dumps(
            {
                "broker": f"mqtt://{MQTT[0]}:{MQTT[1]}",
                "device": name,
                "source": f"camera://{name}",
                "reportInterval": 1.0,
                "inference": {
                    "model": "assets/models/defect_classifier.onnx",
                    "task": "classification",
                    "preprocess": {
                        "crop": crop,
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
                            "minScore": 0.5,
                            "reason": "DefectDetected",
                            "message": "defect detected on {device}",
                            "cooldown": 0.5,
                        }
                    ],
                },
            }
        )
    )
    await cluster.request("POST", DEPLOYMENTS, pod_of("inference", "edgeservice.workloads.inference", config))
    # The overlay of a frame and the same frame plain (the overlay's timestamp is its camera frame's).
    plain: dict[int, CameraFrame] = {}

    async def watch_plain() -> None:
        async with client.camera_frames(name) as frames:
            async for frame in frames:
                plain[frame.timestamp_ms] = frame

    watcher = asyncio.create_task(watch_plain())
    try:
        async with asyncio.timeout(60), client.camera_frames(name, overlay=True) as frames:
            async for overlay in frames:
                if overlay.timestamp_ms in plain:
                    break
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    drawn, bare = image(overlay.jpeg), image(plain[overlay.timestamp_ms].jpeg)
    assert drawn.shape == bare.shape == (240, 320, 3)
    # JPEG at two qualities differs by a few levels; the results drawn (a coloured window, a label) by far
    # more, on thousands of pixels.
    changed = int((np.abs(drawn.astype(np.int16) - bare).max(axis=2) > 60).sum())
    assert changed > 500, changed
    # The same through MJPEG (?overlay=1), with the producer's figures in each part.
    headers = {"Authorization": f"Bearer {cluster.token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as s,
        s.get(
            f"{cluster.api}{DEVICES}/devices/{name}/stream",
            params={"overlay": "1"},
            ssl=cluster._ssl or True,
        ) as resp,
    ):
        assert resp.status == 200
        reader = aiohttp.MultipartReader.from_response(resp)
        part = await reader.next()
        assert isinstance(part, aiohttp.BodyPartReader) and part.headers["Content-Type"] == "image/jpeg"
        assert float(part.headers["X-Frame-Fps"]) > 0
        assert float(part.headers["X-Frame-Bytes-Per-Second"]) > 0
        mjpeg = image(bytes(await part.read()))
    assert mjpeg.shape == (240, 320, 3)

    async def defect_event() -> dict[str, Any]:
        while True:
            events = await client.list(EVENTS, "default", field_selector=f"involvedObject.name={name}")
            for ev in events.items:
                if ev.get("reason") == "DefectDetected":
                    return ev
            await asyncio.sleep(0.5)

    async with asyncio.timeout(60):
        event = await defect_event()
    assert event["type"] == "Warning" and event["involvedObject"]["kind"] == "Device"
    assert "defect" in event["message"]


async def test_stream_errors_say_why(cluster: LocalCluster, client: AsyncClient, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        async with client.camera_frames("no-such-camera") as frames:
            await anext(frames)
    # A camera whose workload is not running: refused with the reason, after the edge waited for a frame.
    idle = f"cam-{uuid.uuid4().hex[:6]}"
    await cluster.request("POST", f"{DEVICES}/devices", camera(idle))
    with pytest.raises(ApiError) as err:
        async with client.camera_frames(idle) as frames:
            await anext(frames)
    assert err.value.code == 503 and "sent no frame" in str(err.value), err.value
    # The same through MJPEG: a Status, before any frame.
    headers = {"Authorization": f"Bearer {cluster.token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as s,
        s.get(f"{cluster.api}{DEVICES}/devices/{idle}/stream", ssl=cluster._ssl or True) as resp,
    ):
        status = await resp.json()
    assert resp.status == 503 and status["kind"] == "Status" and "camera workload" in status["message"]
    # Bad settings never reach an edge.
    bad = camera("cam-bad")
    bad["spec"]["protocol"]["configData"]["fps"] = 0
    with pytest.raises(Exception, match=r"spec\.protocol\.configData\.fps"):
        await cluster.request("POST", f"{DEVICES}/devices", bad)
    with pytest.raises(Exception, match=r"spec\.protocol\.configData\.url.*only synthetic source"):
        await cluster.request("POST", f"{DEVICES}/devices", camera("cam-bad", "synthetic://belt"))


async def test_an_unreachable_source_is_offline_with_the_reason_and_comes_back(
    cluster: LocalCluster, client: AsyncClient, tmp_path: Path
) -> None:
    video = tmp_path / "line2.mp4"
    video.write_text("not a video\n")
    name = await start_camera(cluster, tmp_path, camera(f"cam-{uuid.uuid4().hex[:6]}", str(video)))
    await wait_state(cluster, name, "offline")

    async def offline_event() -> dict[str, Any]:
        while True:
            events = await client.list(EVENTS, "default", field_selector=f"involvedObject.name={name}")
            for ev in events.items:
                if ev.get("reason") == "DeviceOffline":
                    return ev
            await asyncio.sleep(0.5)

    async with asyncio.timeout(WAIT):
        event = await offline_event()
    assert "not a video" in event["message"]
    # Once the file is a video the camera comes online by itself, and streams.
    writer = cv2.VideoWriter(str(tmp_path / "tmp.mp4"), cv2.VideoWriter.fourcc(*"mp4v"), 10, (320, 240))
    for i in range(20):
        writer.write(np.full((240, 320, 3), i * 10, np.uint8))
    writer.release()
    (tmp_path / "tmp.mp4").replace(video)
    await wait_state(cluster, name, "online")
    async with asyncio.timeout(WAIT), client.camera_frames(name) as frames:
        frame = await anext(frames)
    assert image(frame.jpeg).shape == (240, 320, 3)


async def test_an_inference_pod_whose_model_is_missing_says_why_in_its_status_and_events(
    cluster: LocalCluster, client: AsyncClient, tmp_path: Path
) -> None:
    """The workload exits 2 with "bad model: ...: no such file"; Edged restarts it with back-off. With
    terminationMessagePolicy FallbackToLogsOnError the reason is the pod's lastState.terminated.message;
    whatever the policy, the BackOff event carries it, so `kubectl describe pod` says why."""
    model = tmp_path / "missing.onnx"
    config = tmp_path / "inference.json"
    config.write_text(
        json.dumps(
            {
                "broker": f"mqtt://{MQTT[0]}:{MQTT[1]}",
                "device": f"cam-{uuid.uuid4().hex[:6]}",
                "source": "synthetic://conveyor",
                "inference": {
                    "model": str(model),
                    "task": "classification",
                    "postprocess": {"output": "probabilities", "labels": ["ok", "defect", "empty"]},
                },
            }
        )
    )
    deployment = pod_of("bad-model", "edgeservice.workloads.inference", config)
    containers = deployment["spec"]["template"]["spec"]["containers"]
    containers[0]["terminationMessagePolicy"] = "FallbackToLogsOnError"
    containers.append({**containers[0], "name": "plain", "terminationMessagePolicy": "File"})
    await cluster.request("POST", DEPLOYMENTS, deployment)
    reason = f"bad model: model {model}: no such file"

    def terminated(pods: dict[str, Any]) -> bool:
        for pod in pods.get("items", []):
            for cs in pod.get("status", {}).get("containerStatuses", []):
                if cs["name"] == "bad-model":
                    message = cs.get("lastState", {}).get("terminated", {}).get("message", "")
                    return reason in message and cs["lastState"]["terminated"]["exitCode"] == 2
        return False

    pods = await cluster.wait_until(
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dbad-model", terminated, what="the exit's reason"
    )
    pod = pods["items"][0]["metadata"]["name"]

    async def backoff_events() -> dict[str, str]:
        while True:
            events = await client.list(EVENTS, "default", field_selector=f"involvedObject.name={pod}")
            found = {
                container: ev["message"]
                for ev in events.items
                if ev.get("reason") == "BackOff"
                for container in ("bad-model", "plain")
                if f"failed container {container} in pod" in ev.get("message", "")
            }
            if len(found) == 2:
                return found
            await asyncio.sleep(0.2)

    async with asyncio.timeout(WAIT):
        found = await backoff_events()
    for container, message in found.items():
        assert f"Back-off restarting failed container {container} in pod {pod}: " in message, message
        assert message.endswith(reason), message  # the log line's reason, without its time stamp

"""The inference workload as a real process against a real Mosquitto: results and events on the device's
data topic (camera and telemetry modes), a bad model exits 2 with the reason, a bad source is reported
and retried while the process keeps running; network sources (an HTTP MJPEG camera served here) play, and
time out instead of hanging when the camera is unreachable, silent or frozen."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import cv2
import numpy as np
import pytest
from aiohttp import web

from app import synthetic
from app.inference import Pipeline, Result
from cloudservice.history import parse_point, parse_window
from edgeservice.workloads import capture
from edgeservice.workloads.adapter import EXIT_CONFIG, state_topic, twin_update_topic
from edgeservice.workloads.aggregator import data_topic
from edgeservice.workloads.capture import FrameSlot, FrameSource, SourceError, capture_loop
from edgeservice.workloads.inference import (
    FrameResult,
    InferenceWorkload,
    parse_config,
    readings_of,
)
from tests.services import require_mosquitto
from tests.workloads import run_workload, stop_workload

BROKER = ("127.0.0.1", 1883)
TIMEOUT = 30.0
REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "assets" / "models"

DEFECT_INFERENCE: dict[str, Any] = {
    "model": "assets/models/defect_classifier.onnx",
    "task": "classification",
    "preprocess": {
        "crop": list(synthetic.ConveyorSource().roi),
        "resize": [32, 32],
        "interpolation": "area",
        "color": "gray",
        "scale": 1 / 255,
        "layout": "flat",
    },
    "postprocess": {"output": "probabilities", "labels": list(synthetic.CROP_LABELS)},
    "rules": [
        {
            "label": "defect",
            "minScore": 0.8,
            "reason": "DefectDetected",
            "message": "defect detected on {device}",
            "cooldown": 0.5,
        }
    ],
}
PUMP_INFERENCE: dict[str, Any] = {
    "model": "assets/models/pump_anomaly.onnx",
    "task": "anomaly",
    "features": list(synthetic.PUMP_FEATURES),
    "postprocess": {"output": "probabilities", "scoreIndex": 1, "threshold": 0.5},
    "rules": [
        {"label": "anomaly", "minScore": 0.5, "reason": "PumpAnomaly", "message": "anomaly on {device}"}
    ],
}


# --- pure parts --------------------------------------------------------------------------------------------


def _config(**overrides: Any) -> dict[str, Any]:
    return {
        "broker": "mqtt://127.0.0.1:1883",
        "device": "cam-1",
        "source": "synthetic://conveyor",
        "inference": DEFECT_INFERENCE,
        **overrides,
    }


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"broker": ""}, "broker"),
        ({"device": "a/b"}, "device"),
        ({"device": None}, "device"),
        ({"source": ""}, "source"),
        ({"source": "synthetic://belt"}, "source"),
        ({"source": "synthetic://conveyor?speed=3"}, "source"),
        ({"source": "synthetic://conveyor?seed=x"}, "source"),
        ({"fps": 0}, "fps"),
        ({"reportInterval": 0}, "reportInterval"),
        ({"inference": None}, "inference"),
        ({"inference": {**DEFECT_INFERENCE, "task": "ocr"}}, "inference.task"),
        ({"inference": {**DEFECT_INFERENCE, "rules": [{"label": "defect"}]}}, "inference.rules[0].reason"),
        ({"source": "telemetry"}, "inference.features"),
    ],
)
def test_config_errors_name_the_field(overrides: dict[str, Any], field: str) -> None:
    from edgeservice.workloads.adapter import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config(_config(**overrides))
    assert info.value.field == field


def test_config_resolves_the_shipped_model_and_camera_index(tmp_path: Path) -> None:
    cfg = parse_config(_config(source=0, fps=10), tmp_path)
    assert cfg.source == "0" and cfg.fps == 10.0 and cfg.report_s == 1.0
    assert cfg.inference.model == MODELS / "defect_classifier.onnx"  # found under the installation's root
    assert not cfg.telemetry


def test_frame_slot_keeps_only_the_latest() -> None:
    slot = FrameSlot()
    assert slot.take(0.0) is None
    for i in range(3):
        slot.put(np.full((1, 1, 3), i, np.uint8), i)
    item = slot.take(0.0)
    assert item is not None and item[1] == 2 and int(item[0][0, 0, 0]) == 2
    assert slot.dropped == 2 and slot.take(0.0) is None


def test_readings_of_takes_the_numbers_of_a_twin_update() -> None:
    payload = json.dumps(
        {
            "timestamp": 5,
            "twin": {
                "flow": {"actual": {"value": "12.5", "metadata": {"timestamp": 9}}},
                "running": {"actual": {"value": "true"}},
            },
        }
    )
    assert readings_of(payload) == {"flow": 12.5}


async def test_workload_window_and_events_without_mqtt() -> None:
    """One result counts in the window; a firing rule queues an event message at once; the flush queues
    a summary in the aggregator's shape (what DeviceTwin forwards to the cloud's history)."""
    cfg = parse_config(_config(device="cam-9", reportInterval=0.5))
    workload = InferenceWorkload(cfg, Pipeline(cfg.inference))
    workload.on_result(FrameResult([Result("ok", 0.99, (288, 208, 64, 64))], 1000, 0.002))
    workload.on_result(FrameResult([Result("defect", 0.95, (288, 208, 64, 64))], 1033, 0.003))
    topic, data = await workload.outbox.get()
    event = json.loads(data)
    assert topic == data_topic("cam-9")
    assert event["event"] == {
        "type": "Warning",
        "reason": "DefectDetected",
        "message": "defect detected on cam-9",
        "label": "defect",
        "score": 0.95,
    }
    assert event["window"] == {"start": 1033, "end": 1033}
    assert event["data"] == {"defect": {"min": 0.95, "max": 0.95, "mean": 0.95, "count": 1, "last": 0.95}}
    assert event["inference"]["results"] == [{"label": "defect", "score": 0.95, "box": [288, 208, 64, 64]}]
    workload.on_result(FrameResult([Result("defect", 0.97, None)], 1066, 0.002))  # within the cooldown
    assert workload.flush() is True
    topic, data = await workload.outbox.get()
    summary = json.loads(data)
    assert "event" not in summary and workload.outbox._queue.empty()
    assert set(summary["data"]) == {"ok", "defect", "inference_ms", "inference_fps"}
    assert summary["data"]["defect"]["count"] == 2 and summary["data"]["defect"]["max"] == 0.97
    assert summary["data"]["inference_ms"]["count"] == 3
    assert summary["inference"]["frames"] == 3 and summary["inference"]["dropped"] == 0
    assert summary["inference"]["model"] == "defect_classifier.onnx"
    assert workload.flush() is False  # nothing new: no message
    # Both messages are valid telemetry summaries for the cloud's history, entry by entry.
    for msg in (event, summary):
        window = parse_window(msg)
        assert window is not None
        assert all(parse_point(*window, entry) is not None for entry in msg["data"].values())


# --- the process against Mosquitto -------------------------------------------------------------------------


@pytest.fixture
async def mqtt() -> AsyncIterator[aiomqtt.Client]:
    require_mosquitto()
    async with aiomqtt.Client(*BROKER, identifier=f"test-{uuid.uuid4().hex[:8]}") as client:
        yield client


def _write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "inference.json"
    path.write_text(json.dumps(config))
    return path


async def _next(client: aiomqtt.Client, topic: str, want: Any = None) -> dict[str, Any]:
    """The next message on ``topic`` (for which ``want(message)`` holds, when given)."""
    async with asyncio.timeout(TIMEOUT):
        async for message in client.messages:
            if message.topic.value != topic:
                continue
            assert isinstance(message.payload, bytes)
            obj: dict[str, Any] = json.loads(message.payload)
            if want is None or want(obj):
                return obj
    raise AssertionError("unreachable")


async def test_camera_mode_publishes_results_and_a_defect_event(mqtt: aiomqtt.Client, tmp_path: Path) -> None:
    device = f"cam-{uuid.uuid4().hex[:8]}"
    config = _write(
        tmp_path,
        {
            "broker": f"mqtt://{BROKER[0]}:{BROKER[1]}",
            "device": device,
            "source": "synthetic://conveyor?seed=3&defect_rate=0.6",
            "fps": 30,
            "reportInterval": 0.5,
            "inference": DEFECT_INFERENCE,
        },
    )
    await mqtt.subscribe(data_topic(device), qos=1)
    proc = await run_workload("inference", config)
    try:
        summary = await _next(mqtt, data_topic(device), lambda m: "event" not in m)
        info = summary["inference"]
        assert info["model"] == "defect_classifier.onnx" and info["task"] == "classification"
        assert info["frames"] >= 1 and info["fps"] > 0 and info["dropped"] >= 0
        assert summary["window"]["start"] < summary["window"]["end"] <= summary["timestamp"]
        data = summary["data"]
        assert data["inference_fps"]["last"] == info["fps"]
        assert data["inference_ms"]["count"] == info["frames"]
        (result,) = info["results"]
        assert (
            result["label"] in synthetic.CROP_LABELS
            and result["box"] == DEFECT_INFERENCE["preprocess"]["crop"]
        )

        event_msg = await _next(mqtt, data_topic(device), lambda m: "event" in m)
        event = event_msg["event"]
        assert event["reason"] == "DefectDetected" and event["type"] == "Warning"
        assert event["message"] == f"defect detected on {device}"
        assert event["label"] == "defect" and event["score"] >= 0.8
        assert event_msg["data"]["defect"]["count"] == 1
        assert event_msg["inference"]["results"][0]["label"] == "defect"
    finally:
        err = await stop_workload(proc, tmp_path / "inference.log")
    assert proc.returncode == 0, err.decode()
    assert b"DefectDetected" in err


def _twin_update(values: dict[str, float]) -> bytes:
    ts = int(time.time() * 1000)
    twin = {k: {"actual": {"value": f"{v:.4f}", "metadata": {"timestamp": ts}}} for k, v in values.items()}
    return json.dumps({"event_id": uuid.uuid4().hex, "timestamp": ts, "twin": twin}).encode()


async def test_telemetry_mode_scores_readings_and_flags_an_anomaly(
    mqtt: aiomqtt.Client, tmp_path: Path
) -> None:
    device = f"pump-{uuid.uuid4().hex[:8]}"
    config = _write(
        tmp_path,
        {
            "broker": f"mqtt://{BROKER[0]}:{BROKER[1]}",
            "device": device,
            "source": "telemetry",
            "reportInterval": 0.2,
            "inference": PUMP_INFERENCE,
        },
    )
    data = synthetic.pump_telemetry(5, 4000, 0.2)
    normal = dict(zip(synthetic.PUMP_FEATURES, data.readings[~data.anomalous][100].tolist(), strict=True))
    # the last reading of an episode: the anomaly at its most developed
    last = int(np.flatnonzero(data.anomalous & ~np.roll(data.anomalous, -1))[0])
    anomalous = dict(zip(synthetic.PUMP_FEATURES, data.readings[last].tolist(), strict=True))
    await mqtt.subscribe(data_topic(device), qos=1)
    proc = await run_workload("inference", config)
    try:
        # Until the workload has subscribed, updates are lost: repeat the normal reading until a summary.
        async def feed() -> None:
            while True:
                await mqtt.publish(twin_update_topic(device), _twin_update(normal), qos=1)
                await asyncio.sleep(0.1)

        feeder = asyncio.create_task(feed(), name="test.feed")
        try:
            summary = await _next(mqtt, data_topic(device))
        finally:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
        assert summary["inference"]["results"][0]["label"] == "normal"
        assert "normal" in summary["data"] and "event" not in summary

        await mqtt.publish(twin_update_topic(device), _twin_update(anomalous), qos=1)
        event_msg = await _next(mqtt, data_topic(device), lambda m: "event" in m)
        assert event_msg["event"]["reason"] == "PumpAnomaly"
        assert event_msg["event"]["message"] == f"anomaly on {device}"
        assert event_msg["inference"]["results"][0]["label"] == "anomaly"
    finally:
        err = await stop_workload(proc, tmp_path / "inference.log")
    assert proc.returncode == 0, err.decode()


@pytest.mark.parametrize(
    ("inference", "needle"),
    [
        ({**DEFECT_INFERENCE, "model": "no/such/model.onnx"}, b"no such file"),
        (
            {**DEFECT_INFERENCE, "preprocess": {**DEFECT_INFERENCE["preprocess"], "resize": [64, 64]}},
            b"has shape [?, 1024]",
        ),
        ({**DEFECT_INFERENCE, "task": "ocr"}, b"inference.task"),
    ],
)
async def test_a_bad_model_exits_2_with_the_reason(
    tmp_path: Path, inference: dict[str, Any], needle: bytes
) -> None:
    config = _write(tmp_path, _config(inference=inference))
    proc = await run_workload("inference", config)
    try:
        await asyncio.wait_for(proc.wait(), TIMEOUT)
    finally:
        err = await stop_workload(proc, tmp_path / "inference.log")
    assert proc.returncode == EXIT_CONFIG, err.decode()
    assert needle in err, err.decode()


def _write_video(path: Path, frames: int = 60) -> None:
    """A real mp4 of the conveyor, written by OpenCV."""
    source = synthetic.ConveyorSource(seed=11, defect_rate=0.5)
    tmp = path.with_suffix(".tmp.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), 30, (source.width, source.height))
    assert writer.isOpened()
    for _ in range(frames):
        writer.write(source.read()[0])
    writer.release()
    tmp.replace(path)  # at once: the workload never opens a half-written file


def test_a_video_file_source_plays_in_a_loop(tmp_path: Path) -> None:
    video = tmp_path / "belt.mp4"
    _write_video(video, frames=5)
    source = FrameSource(str(video), fps=None)
    source.open()
    try:
        assert source.pace == pytest.approx(1 / 30)
        frames = [source.read() for _ in range(12)]  # past the end: it starts again
        assert all(f.shape == (480, 640, 3) for f in frames)
    finally:
        source.close()
    for bad, reason in (
        (tmp_path / "none.mp4", "no such video file"),
        (tmp_path / "inference.log", "not a video"),
    ):
        bad_source = FrameSource(str(bad), fps=None)
        if bad.name == "inference.log":
            bad.write_text("text")
        with pytest.raises(SourceError, match=reason):
            bad_source.open()


async def test_a_file_that_is_not_a_video_is_reported_and_retried(
    mqtt: aiomqtt.Client, tmp_path: Path
) -> None:
    device = f"cam-{uuid.uuid4().hex[:8]}"
    video = tmp_path / "line2.mp4"
    video.write_text("this is a text file, not a video\n")
    config = _write(
        tmp_path,
        {
            "broker": f"mqtt://{BROKER[0]}:{BROKER[1]}",
            "device": device,
            "source": str(video),
            "reportInterval": 0.3,
            "inference": DEFECT_INFERENCE,
        },
    )
    await mqtt.subscribe(state_topic(device), qos=1)
    await mqtt.subscribe(data_topic(device), qos=1)
    proc = await run_workload("inference", config)
    log = tmp_path / "inference.log"
    try:
        state = await _next(mqtt, state_topic(device))
        assert state["state"] == "offline"
        assert "not a video" in state["reason"], state
        # It retries (the log says so) and stays up ...
        deadline = time.monotonic() + TIMEOUT
        while b"retrying in" not in log.read_bytes():
            assert time.monotonic() < deadline, log.read_text()
            assert proc.returncode is None
            await asyncio.sleep(0.1)
        assert proc.returncode is None
        # ... so once the file is a video, it comes online and infers with no restart.
        _write_video(video)
        await _next(mqtt, state_topic(device), lambda m: m["state"] == "online")
        summary = await _next(mqtt, data_topic(device), lambda m: "event" not in m)
        assert summary["inference"]["frames"] >= 1
    finally:
        err = await stop_workload(proc, log)
    assert proc.returncode == 0, err.decode()
    assert str(video).encode() in err and b"not a video" in err


# --- network sources: timeouts, retries, and an HTTP MJPEG camera that plays -------------------------------


def _free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MjpegCamera:
    """An HTTP camera on 127.0.0.1: ``/video`` is ``multipart/x-mixed-replace`` JPEGs of 160x120 frames whose
    grey level is the frame's number times 10, at 20 fps. Once ``pause`` is set it keeps the connection
    open and sends nothing more, as a camera that froze does."""

    def __init__(self) -> None:
        self.pause = asyncio.Event()
        self._closing = asyncio.Event()
        self.sent = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _video(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame"})
        await response.prepare(request)
        while not self.pause.is_set():
            ok, jpeg = cv2.imencode(".jpg", np.full((120, 160, 3), (self.sent * 10) % 250, np.uint8))
            assert ok
            data = jpeg.tobytes()
            head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            await response.write(head + data + b"\r\n")
            self.sent += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.pause.wait(), 0.05)
        await self._closing.wait()  # frozen: connected, silent, until the server is stopped
        return response

    async def __aenter__(self) -> MjpegCamera:
        app = web.Application()
        app.router.add_get("/video", self._video)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/video"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        self._closing.set()
        await self._runner.cleanup()


async def test_an_http_mjpeg_camera_plays_and_a_frozen_one_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture, "STALL_S", 1.0)
    monkeypatch.setattr(capture, "READ_TIMEOUT_S", 1.0)
    async with MjpegCamera() as camera:
        source = FrameSource(camera.url, fps=None)
        await asyncio.to_thread(source.open)
        try:
            assert source.pace == 0.0  # a live source paces itself
            frames = [await asyncio.to_thread(source.read) for _ in range(5)]
            assert all(f.shape == (120, 160, 3) for f in frames)
            levels = [int(f[60, 80, 0]) for f in frames]
            assert levels == sorted(levels) and levels[-1] > levels[0], levels  # live frames, in order
            camera.pause.set()
            started = time.monotonic()
            with pytest.raises(SourceError, match=r"no frame for \d+ s: the camera or stream is gone"):
                while True:  # the frames already buffered, then a read that waits for the timeout
                    await asyncio.to_thread(source.read)
            assert time.monotonic() - started < 10  # FFmpeg's read timeout, not a hang
        finally:
            source.close()


async def test_an_unreachable_or_silent_stream_is_offline_with_the_reason_and_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(capture, "OPEN_TIMEOUT_S", 1.0)
    # A closed port: refused at once; the capture loop reports it and tries again (1 s back-off).
    reports: list[tuple[str, str]] = []
    retried = threading.Event()

    def report(state: str, reason: str) -> None:
        reports.append((state, reason))
        if len(reports) >= 2:
            retried.set()

    stop = threading.Event()
    url = f"http://127.0.0.1:{_free_port()}/video"
    loop = threading.Thread(
        target=capture_loop, args=(FrameSource(url, 10.0), lambda f, ts: None, stop, report)
    )
    loop.start()
    try:
        assert await asyncio.to_thread(retried.wait, TIMEOUT), reports
    finally:
        stop.set()
        await asyncio.to_thread(loop.join, TIMEOUT)
    assert not loop.is_alive()
    assert reports[:2] == [("offline", reports[0][1])] * 2 and "cannot open the stream" in reports[0][1]

    # A server that accepts the connection and never answers: given up after the open timeout.
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        source = FrameSource(f"http://127.0.0.1:{port}/video", None)
        started = time.monotonic()
        with pytest.raises(SourceError, match=r"no answer in 1 s"):
            await asyncio.to_thread(source.open)
        assert time.monotonic() - started < 5

"""The inference workload: an ONNX model on a camera's frames or a device's telemetry, results over MQTT.

One process Edged runs as a pod's container (``python -m edgeservice.workloads.inference --config FILE``).
Its config file (JSON) names the broker, the device the results are about, the source, and the model
with its pre- and postprocessing (the ``inference`` object, :func:`app.inference.parse_config`)::

    {"broker": "mqtt://127.0.0.1:1883", "device": "camera-1",
     "source": "synthetic://conveyor?seed=1&defect_rate=0.3",   # | "/path/video.mp4" | "0" | "rtsp://..."
                                                                #   | "telemetry"
     "fps": 30, "reportInterval": 1.0,
     "inference": {"model": "assets/models/defect_classifier.onnx", "task": "classification", ...}}

Sources. ``synthetic://conveyor`` is :class:`app.synthetic.ConveyorSource` (query parameters ``seed``,
``defect_rate``, ``width``, ``height``), paced to ``fps``; a file is played in a loop at ``fps`` (default:
the file's own rate); a camera index or a stream URL goes to ``cv2.VideoCapture`` and is paced by the
device. ``camera://NAME`` takes the frames of the camera workload serving that Device (it holds a lease
on them, see ``app.camera``), so the results belong to the very frames viewers see; the camera workload
owns that device's state then. ``telemetry`` subscribes to ``$hw/events/device/{device}/twin/update``
(what the protocol adapters publish) and scores the device's latest readings (the model's ``features``)
at each update.

Overlay. While a lease of the ``overlay`` variant is active on ``$ke/events/device/{device}/stream/watch``
(the edge holds one for each ``?overlay=1`` viewer), each inferred frame is drawn with its results
(``app.inference.draw_overlay``: boxes, or the classification on the inspection window) and published as
a frame record on ``.../stream/overlay``, the newest one first.

Latest frame wins. A capture thread keeps only the newest frame in a :class:`FrameSlot`; the inference
thread takes the newest one when it is free, so a slow model skips frames (counted as ``dropped``) and
never works through a backlog of stale ones. Both are threads, not asyncio tasks, because OpenCV's
capture and onnxruntime's run block (and release the GIL while they do). The inference thread adds each
result to the reporting window under a lock and evaluates the rules itself; only an event crosses to the
asyncio loop (``call_soon_threadsafe``), so a frame costs the loop nothing and a model at hundreds of
frames per second does not keep it awake.

Output, on ``$ke/events/device/{device}/data/update`` (QoS 1), every ``reportInterval`` seconds that had
results, in the aggregator's summary shape so that DeviceTwin carries it to the cloud's history as is::

    {"event_id": "<uuid>", "timestamp": <ms>, "window": {"start": <ms>, "end": <ms>},
     "data": {"inference_fps": {"min", "max", "mean", "count", "last"},   # frames inferred per second
              "inference_ms": {...},                                     # per-frame latency
              "<label>": {...}},                                         # scores of each label reported
     "inference": {"model": "defect_classifier.onnx", "task": "classification", "source": "...",
                   "fps": 29.9, "frames": 30, "dropped": 0, "results": [{"label", "score", "box"}],
                   "frameTimestamp": <ms>}}

and at once, whenever a rule fires, one message of the same shape whose window is the instant of the
frame, ``data`` holds the firing result's score, and an ``event`` says what to tell people::

    "event": {"type": "Warning", "reason": "DefectDetected", "message": "defect detected on camera-1",
              "label": "defect", "score": 0.97}

Bad input. A config that does not parse, or a model that does not load or whose input does not match the
config, is logged with the reason and the process exits with :data:`EXIT_CONFIG` (2), so Edged shows a
crash loop that says why: its last log line ("bad model: ...") is the reason of the pod's BackOff event,
and, with ``terminationMessagePolicy: FallbackToLogsOnError``, the container's
``lastState.terminated.message`` (Edged runs processes, which have no ``/dev/termination-log`` to write the
File policy's message to). A source that cannot be opened or stops giving frames (an unreachable
camera, a file that is not a video) is logged with the reason, reported as the device's state
(``$hw/events/device/{device}/state/update``: ``{"state": "offline", "reason": ...}``) and retried with
jittered exponential back-off (1 s to 30 s); the first frame after that reports ``online``.

Deliberately not done: sharing one capture with the camera workload (each opens its own source), batching
frames, GPU execution providers, and publishing every frame's results (a summary per interval and an
immediate message per event keep the link's load independent of the frame rate).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import aiomqtt
import cv2
import numpy as np

from app.camera import (
    LEASE_RENEW_S,
    CameraFrame,
    Leases,
    RateMeter,
    decode_frame,
    encode_frame,
    frame_topic,
    lease_payload,
    parse_lease,
    watch_topic,
)
from app.errors import ValidationError
from app.inference import (
    Event,
    InferenceConfig,
    InferenceConfigError,
    InferenceError,
    ModelLoadError,
    Pipeline,
    Result,
    draw_overlay,
    evaluate_rules,
)
from app.inference import (
    parse_config as parse_inference,
)
from app.resources import JSONObject
from edgeservice.workloads.adapter import (
    EXIT_CONFIG,
    ONLINE,
    Broker,
    ConfigError,
    Outbox,
    mqtt_session,
    now_ms,
    parse_broker,
    read_config,
    serve_until_signalled,
    state_topic,
    twin_update_topic,
    workload_arguments,
)
from edgeservice.workloads.aggregator import Window, data_topic, samples_of
from edgeservice.workloads.capture import FrameSlot, FrameSource, capture_loop, check_source

log = logging.getLogger(__name__)

TELEMETRY: Final = "telemetry"
CAMERA_SOURCE: Final = "camera://"
# Seconds without a frame from the camera (camera:// source) before the workload says so in its log.
CAMERA_SILENCE_S: Final = 5.0
OVERLAY_JPEG_QUALITY: Final = 80
DEFAULT_REPORT_S: Final = 1.0
MIN_REPORT_S: Final = 0.05
# How long the inference thread waits for a frame before checking whether it should stop.
TAKE_TIMEOUT_S: Final = 0.2


# Config ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    broker: Broker
    device: str
    source: str
    fps: float | None  # None: the source's own rate
    report_s: float
    inference: InferenceConfig

    @property
    def telemetry(self) -> bool:
        return self.source == TELEMETRY

    @property
    def camera(self) -> str | None:
        """The camera Device whose frames are the source (``camera://NAME``), else None."""
        return self.source.removeprefix(CAMERA_SOURCE) if self.source.startswith(CAMERA_SOURCE) else None


def _resolve_model(config: InferenceConfig, config_dir: Path | None) -> InferenceConfig:
    """A relative model path is looked up in the working directory, next to the config file, then in the
    installation's root (where ``assets/models`` lives in a checkout), and kept as given if in none."""
    path = config.model
    if path.is_absolute():
        return config
    roots = [Path.cwd(), *([config_dir] if config_dir else []), Path(__file__).resolve().parents[2]]
    for root in roots:
        if (root / path).is_file():
            return replace(config, model=root / path)
    return config


def parse_config(obj: Any, config_dir: Path | None = None) -> WorkloadConfig:
    """Validate the workload config's JSON; every problem is a ConfigError naming the field."""
    if not isinstance(obj, dict):
        raise ConfigError("the config must be a JSON object")
    broker = obj.get("broker")
    if not isinstance(broker, str) or not broker:
        raise ConfigError("Required value: an MQTT URL (mqtt://host:port)", field="broker")
    device = obj.get("device")
    if not isinstance(device, str) or not device or "/" in device or "+" in device or "#" in device:
        raise ConfigError("Required value: the device name the results are about", field="device")
    source = obj.get("source")
    if isinstance(source, int) and not isinstance(source, bool):
        source = str(source)
    if not isinstance(source, str) or not source:
        raise ConfigError(
            "Required value: synthetic://conveyor, a video file, a camera index, a URL or telemetry",
            field="source",
        )
    if source.startswith("synthetic://"):
        check_source(source)
    if source.startswith(CAMERA_SOURCE):
        camera = source.removeprefix(CAMERA_SOURCE)
        if not camera or any(c in camera for c in "/+#"):
            raise ConfigError(f"{source!r}: camera://NAME names a camera Device on this node", field="source")
    fps = obj.get("fps")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, int | float) or not fps > 0):
        raise ConfigError(f"must be a positive number of frames per second, not {fps!r}", field="fps")
    report = obj.get("reportInterval", DEFAULT_REPORT_S)
    if isinstance(report, bool) or not isinstance(report, int | float) or not report >= MIN_REPORT_S:
        raise ConfigError(
            f"must be a number of seconds >= {MIN_REPORT_S}, not {report!r}", field="reportInterval"
        )
    try:
        inference = parse_inference(obj.get("inference"))
    except InferenceConfigError as exc:
        where = f"inference.{exc.field}" if exc.field else "inference"
        raise ConfigError(exc.message, field=where) from exc
    if source == TELEMETRY and not inference.features:
        raise ConfigError(
            "Required value: the readings the model takes, in order (telemetry source)",
            field="inference.features",
        )
    return WorkloadConfig(
        broker=parse_broker(broker),
        device=device,
        source=source,
        fps=None if fps is None else float(fps),
        report_s=float(report),
        inference=_resolve_model(inference, config_dir),
    )


def load_config(path: Path) -> WorkloadConfig:
    """Read and validate the config file; every problem is a ConfigError naming the file."""
    return read_config(path, lambda obj: parse_config(obj, path.parent))


# Sources ---------------------------------------------------------------------------------------------------


# Results and reports ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrameResult:
    """One input's outcome: its results, when it was captured (ms) and how long inference took (s)."""

    results: list[Result]
    frame_ts: int
    seconds: float


@dataclass(slots=True)
class Report:
    """The current reporting window: running figures per series (the aggregator's :class:`Window`),
    frames counted, and the latest results."""

    start: int = field(default_factory=now_ms)
    window: Window = field(default_factory=Window)
    frames: int = 0
    latest: FrameResult | None = None

    def add(self, fr: FrameResult) -> None:
        self.frames += 1
        self.latest = fr
        self.window.add("inference_ms", fr.seconds * 1000, fr.frame_ts)
        for r in fr.results:
            self.window.add(r.label, r.score, fr.frame_ts)


def inference_info(config: WorkloadConfig, fr: FrameResult | None, **extra: Any) -> JSONObject:
    info: JSONObject = {
        "model": config.inference.model.name,
        "task": config.inference.task,
        "source": config.source,
        **extra,
    }
    if fr is not None:
        info["results"] = [r.to_json() for r in fr.results]
        info["frameTimestamp"] = fr.frame_ts
    return info


def summary_message(
    config: WorkloadConfig, report: Report, *, end: int, dropped: int, event_id: str
) -> JSONObject:
    """The periodic ``data/update`` message for ``report`` (see the module docs)."""
    seconds = max(1e-3, (end - report.start) / 1000)
    fps = round(report.frames / seconds, 2)
    data: JSONObject = dict(report.window.summary())
    data["inference_fps"] = {"min": fps, "max": fps, "mean": fps, "count": 1, "last": fps}
    return {
        "event_id": event_id,
        "timestamp": end,
        "window": {"start": report.start, "end": end},
        "data": data,
        "inference": inference_info(config, report.latest, fps=fps, frames=report.frames, dropped=dropped),
    }


def event_message(config: WorkloadConfig, fr: FrameResult, event: Event, *, event_id: str) -> JSONObject:
    """The immediate ``data/update`` message of a fired rule (see the module docs)."""
    point = {"min": event.score, "max": event.score, "mean": event.score, "count": 1, "last": event.score}
    return {
        "event_id": event_id,
        "timestamp": now_ms(),
        "window": {"start": fr.frame_ts, "end": fr.frame_ts},
        "data": {event.label: point},
        "inference": inference_info(config, fr),
        "event": event.to_json(),
    }


def source_state_message(state: str, reason: str) -> JSONObject:
    """``state/update`` for the device, with the reason when it is offline."""
    payload: JSONObject = {"event_id": "", "timestamp": now_ms(), "state": state}
    if reason:
        payload["reason"] = reason
    return payload


def readings_of(payload: bytes | str) -> dict[str, float]:
    """The numeric actual values of a twin/update message, by property (the newest of each)."""
    latest: dict[str, tuple[int, float]] = {}
    for s in samples_of(payload):
        if s.prop not in latest or s.ts >= latest[s.prop][0]:
            latest[s.prop] = (s.ts, s.value)
    return {prop: value for prop, (_, value) in latest.items()}


# Runtime ---------------------------------------------------------------------------------------------------


class InferenceLoop:
    """The per-input work the inference thread does (and the benchmark measures): run the pipeline on
    one frame, then hand the result to ``deliver``."""

    def __init__(
        self,
        pipeline: Pipeline,
        deliver: Callable[[FrameResult], None],
        *,
        on_frame: Callable[[np.ndarray, FrameResult], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.deliver = deliver
        self.on_frame = on_frame
        self._last_error = ""

    def _warn_once(self, problem: str) -> None:
        if problem != self._last_error:  # once per distinct problem, not once per frame
            log.warning("%s", problem)
            self._last_error = problem

    def process(self, frame: np.ndarray | bytes, frame_ts: int) -> None:
        """One input: a decoded frame, or a camera's JPEG (``camera://`` sources), decoded here, in the
        inference thread, so the loop that received it never pays for it."""
        if isinstance(frame, bytes):
            decoded = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR)
            if decoded is None:
                self._warn_once("a camera frame is not a JPEG OpenCV can decode; skipped")
                return
            frame = decoded
        started = time.perf_counter()
        try:
            results = self.pipeline.infer(frame)
        except InferenceError as exc:
            self._warn_once(f"inference failed: {exc}")
            return
        fr = FrameResult(results, frame_ts, time.perf_counter() - started)
        self.deliver(fr)
        if self.on_frame is not None:
            self.on_frame(frame, fr)

    def run(self, slot: FrameSlot, stop: threading.Event) -> None:
        while not stop.is_set():
            item = slot.take(TAKE_TIMEOUT_S)
            if item is not None:
                self.process(*item)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class InferenceWorkload:
    """The process's service: MQTT, the reporting window, and (camera mode) the capture and inference
    threads."""

    def __init__(self, config: WorkloadConfig, pipeline: Pipeline) -> None:
        self.config = config
        self.pipeline = pipeline
        self.outbox = Outbox()
        self.report = Report()
        self.slot = FrameSlot()
        self.last_fired: dict[int, float] = {}
        self.state = ""
        self.state_reason = ""
        self.readings: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # the window and the rules' cooldowns, shared with the inference thread
        self._reported_dropped = 0
        # The overlay stream (see on_frame) and, for a camera:// source, the frames received.
        self.overlay_leases = Leases()
        self.overlay_watched = threading.Event()
        self._overlay: bytes | None = None
        self._overlay_ready = asyncio.Event()
        self._overlay_meter = RateMeter()
        self._overlay_seq = 0
        self.frames_received = 0
        self._last_frame = 0.0
        self._silence_logged = False

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        stop = threading.Event()
        threads: list[threading.Thread] = []
        if not self.config.telemetry:
            infer = InferenceLoop(self.pipeline, self.on_result, on_frame=self.on_frame)
            threads.append(
                threading.Thread(
                    target=infer.run, args=(self.slot, stop), name="inference.infer", daemon=True
                )
            )
            if self.config.camera is None:  # our own capture; camera:// frames come over MQTT
                source = FrameSource(self.config.source, self.config.fps)
                threads.append(
                    threading.Thread(
                        target=capture_loop,
                        args=(source, self.slot.put, stop, self._state_threadsafe),
                        name="inference.capture",
                        daemon=True,
                    )
                )
            for t in threads:
                t.start()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._mqtt(), name="inference.mqtt")
                tg.create_task(self._tick(), name="inference.report")
                tg.create_task(self._expire_leases(), name="inference.leases")
        finally:
            stop.set()
            for t in threads:  # both wake within TAKE_TIMEOUT_S or one frame; a hung capture is left behind
                await asyncio.to_thread(t.join, 2.0)

    # The overlay stream: the frames inferred, with the results drawn, while someone watches --------------

    def on_frame(self, frame: np.ndarray, fr: FrameResult) -> None:
        """After each inferred frame (inference thread): draw and encode it if an overlay is watched."""
        if not self.overlay_watched.is_set():
            return
        region = self.config.inference.preprocess.crop
        fps, _ = self._overlay_meter.rates(time.monotonic())
        image = draw_overlay(frame, fr.results, fps=fps or None, region=region)
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, OVERLAY_JPEG_QUALITY])
        if not ok or self._loop is None:
            return
        data = jpeg.tobytes()
        fps, bps = self._overlay_meter.add(time.monotonic(), len(data))
        self._overlay_seq += 1
        h, w = image.shape[:2]
        record = encode_frame(CameraFrame(data, self._overlay_seq, fr.frame_ts, w, h, fps, bps))
        self._loop.call_soon_threadsafe(self._offer_overlay, record)

    def _offer_overlay(self, record: bytes) -> None:
        self._overlay = record
        self._overlay_ready.set()

    def on_lease(self, payload: bytes | str) -> None:
        try:
            consumer, variant, ttl = parse_lease(payload)
        except ValidationError as exc:
            log.warning("device %s: lease ignored: %s", self.config.device, exc)
            return
        if variant == "overlay":
            self.overlay_leases.renew(consumer, ttl, time.monotonic())
            self._check_leases()

    def _check_leases(self) -> None:
        if self.overlay_leases.active(time.monotonic()):
            if not self.overlay_watched.is_set():
                log.info("device %s: overlay stream on", self.config.device)
                self.overlay_watched.set()
        elif self.overlay_watched.is_set():
            log.info("device %s: nobody watches the overlay; stream off", self.config.device)
            self.overlay_watched.clear()

    async def _expire_leases(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self._check_leases()
            if self.config.camera is not None and self.frames_received:
                silent = time.monotonic() - self._last_frame
                if silent > CAMERA_SILENCE_S and not self._silence_logged:
                    log.warning("camera %s: no frame for %.0f s", self.config.camera, silent)
                    self._silence_logged = True

    async def _send_overlay(self, client: aiomqtt.Client) -> None:
        topic = frame_topic(self.config.device, "overlay")
        while True:
            await self._overlay_ready.wait()
            self._overlay_ready.clear()
            record, self._overlay = self._overlay, None
            if record is not None:
                await client.publish(topic, record, qos=0)

    async def _hold_camera(self, client: aiomqtt.Client) -> None:
        """camera:// source: keep a lease on the camera's frames for as long as we run."""
        assert self.config.camera is not None
        consumer = f"inference-{os.getpid()}"
        while True:
            await client.publish(watch_topic(self.config.camera), lease_payload(consumer, "frame"), qos=0)
            await asyncio.sleep(LEASE_RENEW_S)

    def on_camera_frame(self, payload: bytes) -> None:
        """A record from the camera (camera:// source): its JPEG into the slot, decoded when taken."""
        try:
            frame = decode_frame(payload)
        except ValidationError as exc:
            log.debug("camera %s: not a frame record: %s", self.config.camera, exc)
            return
        self.frames_received += 1
        self._last_frame = time.monotonic()
        if self._silence_logged:
            log.info("camera %s: frames again", self.config.camera)
            self._silence_logged = False
        self.slot.put(frame.jpeg, frame.timestamp_ms)

    # Results, from the inference thread or the MQTT callback --------------------------------------------

    def _state_threadsafe(self, state: str, reason: str) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.set_state, state, reason)

    def on_result(self, fr: FrameResult) -> None:
        """Count one input's results in the window and publish an event for each rule they fire. Called by
        the inference thread (camera) or the loop (telemetry): the window is shared under a lock, and only
        the rare event crosses to the loop, so a frame costs no loop wake-up."""
        with self._lock:
            self.report.add(fr)
            events = evaluate_rules(
                self.config.inference.rules,
                fr.results,
                device=self.config.device,
                now=time.monotonic(),
                last_fired=self.last_fired,
            )
        for event in events:
            log.info("device %s: %s: %s", self.config.device, event.reason, event.message)
            msg = event_message(self.config, fr, event, event_id=str(uuid.uuid4()))
            self._put_threadsafe(data_topic(self.config.device), msg)

    def _put_threadsafe(self, topic: str, payload: JSONObject) -> None:
        loop = self._loop
        if loop is None or _on_loop(loop):
            self.outbox.put(topic, payload)
        else:
            loop.call_soon_threadsafe(self.outbox.put, topic, payload)

    def set_state(self, state: str, reason: str) -> None:
        if state == self.state:
            return
        self.state, self.state_reason = state, reason
        if state == ONLINE:
            log.info("source %s is online", self.config.source)
        self.outbox.put(state_topic(self.config.device), source_state_message(state, reason))

    def flush(self) -> bool:
        """Close the reporting window: queue its summary if it had results. Returns whether it did."""
        end = now_ms()
        with self._lock:
            report, self.report = self.report, Report(start=end)
        if report.frames == 0:
            return False
        dropped = self.slot.dropped - self._reported_dropped
        self._reported_dropped = self.slot.dropped
        msg = summary_message(self.config, report, end=end, dropped=dropped, event_id=str(uuid.uuid4()))
        self.outbox.put(data_topic(self.config.device), msg)
        return True

    async def _tick(self) -> None:
        deadline = time.monotonic() + self.config.report_s
        while True:
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            self.flush()
            deadline += self.config.report_s
            if deadline < time.monotonic():
                deadline = time.monotonic() + self.config.report_s

    # Telemetry mode ----------------------------------------------------------------------------------------

    def on_readings(self, payload: bytes | str) -> None:
        """A twin/update of the device: score the latest readings once every feature has a value."""
        self.readings.update(readings_of(payload))
        missing = [f for f in self.config.inference.features if f not in self.readings]
        if missing:
            log.debug("device %s: waiting for %s", self.config.device, ", ".join(missing))
            return
        started = time.perf_counter()
        try:
            results = self.pipeline.infer_features(self.readings)
        except InferenceError as exc:
            log.warning("device %s: inference failed: %s", self.config.device, exc)
            return
        self.on_result(FrameResult(results, now_ms(), time.perf_counter() - started))

    async def _mqtt(self) -> None:
        own = twin_update_topic(self.config.device)
        watch = watch_topic(self.config.device)
        camera = frame_topic(self.config.camera) if self.config.camera is not None else None
        topics = [watch]
        if self.config.telemetry:
            topics.append(own)
        if camera is not None:
            topics.append(camera)

        def on_message(topic: str, payload: Any) -> None:
            if not isinstance(payload, bytes | str):
                return
            if topic == own:
                self.on_readings(payload)
            elif topic == watch:
                self.on_lease(payload)
            elif topic == camera and isinstance(payload, bytes):
                self.on_camera_frame(payload)

        def on_connect() -> None:
            if self.state:  # the broker restarted: tell the device's state again
                self.outbox.put(
                    state_topic(self.config.device), source_state_message(self.state, self.state_reason)
                )

        senders = [self._send_overlay]
        if self.config.camera is not None:
            senders.append(self._hold_camera)
        await mqtt_session(
            self.config.broker,
            f"fleetops-inference-{os.getpid()}",
            topics,
            self.outbox,
            on_message,
            on_connect=on_connect,
            senders=senders,
        )


# Entry point -----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edgeservice.workloads.inference --config FILE``: 0 when stopped by SIGTERM/SIGINT,
    :data:`EXIT_CONFIG` on a bad config or a model that cannot be used."""
    args = workload_arguments(
        "edgeservice.workloads.inference",
        "FleetOps ONNX inference workload",
        argv,
        "JSON config file (broker, source, model)",
    )
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        log.error("bad config: %s", exc)  # the message is the diagnosis: no traceback
        return EXIT_CONFIG
    try:
        pipeline = Pipeline(config.inference)
    except ModelLoadError as exc:
        log.error("bad model: %s", exc)
        return EXIT_CONFIG
    log.info(
        "inference: %s (%s) on %s for device %s, broker %s:%d",
        config.inference.model.name,
        config.inference.task,
        config.source,
        config.device,
        config.broker.host,
        config.broker.port,
    )
    asyncio.run(serve_until_signalled(InferenceWorkload(config, pipeline).run, "inference"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

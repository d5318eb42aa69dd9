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
device. ``telemetry`` subscribes to ``$hw/events/device/{device}/twin/update`` (what the protocol
adapters publish) and scores the device's latest readings (the model's ``features``) at each update.

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
crash loop whose log says why. A source that cannot be opened or stops giving frames (an unreachable
camera, a file that is not a video) is logged with the reason, reported as the device's state
(``$hw/events/device/{device}/state/update``: ``{"state": "offline", "reason": ...}``) and retried with
jittered exponential back-off (1 s to 30 s); the first frame after that reports ``online``.

Deliberately not done: sharing one capture with the camera workload (each opens its own source), batching
frames, GPU execution providers, and publishing every frame's results (a summary per interval and an
immediate message per event keep the link's load independent of the frame rate).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from app import synthetic
from app.inference import (
    Event,
    InferenceConfig,
    InferenceConfigError,
    InferenceError,
    ModelLoadError,
    Pipeline,
    Result,
    evaluate_rules,
)
from app.inference import (
    parse_config as parse_inference,
)
from app.resources import JSONObject
from edgeservice.workloads.adapter import (
    EXIT_CONFIG,
    OFFLINE,
    ONLINE,
    Broker,
    ConfigError,
    Outbox,
    mqtt_session,
    now_ms,
    parse_broker,
    serve_until_signalled,
    state_topic,
    twin_update_topic,
)
from edgeservice.workloads.aggregator import Window, data_topic, samples_of

log = logging.getLogger(__name__)

TELEMETRY: Final = "telemetry"
SYNTHETIC_CONVEYOR: Final = "synthetic://conveyor"
DEFAULT_FPS: Final = 30.0
DEFAULT_REPORT_S: Final = 1.0
MIN_REPORT_S: Final = 0.05
# Source retry back-off: 1 s doubling to 30 s, +-20% jitter (a camera that is away for a day costs one
# attempt every half minute, and cameras restarted together do not come back in lock-step).
RETRY_MIN_S: Final = 1.0
RETRY_MAX_S: Final = 30.0
RETRY_JITTER: Final = 0.2
# Consecutive failed reads after which a live source is reopened (a USB camera unplugged, an RTSP server
# gone): a single failed grab is common on a busy network stream and is not worth a reconnect.
READ_FAILURES_TO_REOPEN: Final = 30
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
        _synthetic_params(source)  # validates
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
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the config: {exc.strerror}", path=str(path)) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not JSON: {exc}", path=str(path)) from exc
    try:
        return parse_config(obj, path.parent)
    except ConfigError as exc:
        raise ConfigError(exc.message, path=str(path), field=exc.field) from exc


# Sources ---------------------------------------------------------------------------------------------------


class SourceError(InferenceError):
    """A source cannot be opened or read; ``reason`` says why in words an operator can act on."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def _synthetic_params(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if f"{parts.scheme}://{parts.netloc}{parts.path}" != SYNTHETIC_CONVEYOR:
        raise ConfigError(f"{url!r}: the only synthetic source is {SYNTHETIC_CONVEYOR}", field="source")
    known = {"seed": int, "defect_rate": float, "width": int, "height": int}
    params: dict[str, Any] = {}
    for key, values in parse_qs(parts.query).items():
        if key not in known:
            raise ConfigError(f"unknown parameter {key!r}: use {', '.join(known)}", field="source")
        try:
            params[key] = known[key](values[-1])
        except ValueError as exc:
            raise ConfigError(f"{key}={values[-1]!r} is not a number", field="source") from exc
    return params


class FrameSource:
    """Frames from one configured source. :meth:`open` and :meth:`read` raise SourceError; :meth:`pace`
    is how long to wait between frames (0: the device paces itself)."""

    def __init__(self, url: str, fps: float | None) -> None:
        self.url = url
        self.fps = fps
        self._synthetic: synthetic.ConveyorSource | None = None
        self._capture: Any = None
        self._file = False
        self._failures = 0
        self.pace = 0.0

    def open(self) -> None:
        self.close()
        if self.url.startswith("synthetic://"):
            fps = self.fps or DEFAULT_FPS
            self._synthetic = synthetic.ConveyorSource(fps=fps, **_synthetic_params(self.url))
            self.pace = 1.0 / fps
            return
        target: int | str = int(self.url) if self.url.isdigit() else self.url
        self._file = isinstance(target, str) and "://" not in target
        if self._file and not Path(self.url).is_file():
            raise SourceError(self.url, "no such video file")
        cap = cv2.VideoCapture(target)
        if not cap.isOpened():
            cap.release()
            what = "not a video file OpenCV can read" if self._file else "cannot open the camera or stream"
            raise SourceError(self.url, what)
        ok, _ = cap.read()
        if not ok:
            cap.release()
            raise SourceError(
                self.url, "opened, but gives no frames" + (" (not a video?)" if self._file else "")
            )
        if self._file:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            own = cap.get(cv2.CAP_PROP_FPS)
            rate = self.fps or (own if own and 0 < own <= 240 else DEFAULT_FPS)
            self.pace = 1.0 / rate
        else:
            self.pace = 1.0 / self.fps if self.fps else 0.0
        self._capture = cap
        self._failures = 0

    def read(self) -> np.ndarray:
        if self._synthetic is not None:
            frame, _truth = self._synthetic.read()
            return frame
        if self._capture is None:
            raise SourceError(self.url, "not open")
        ok, frame = self._capture.read()
        if ok:
            self._failures = 0
            return np.asarray(frame)
        if self._file:  # the end of the file: play it again
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._capture.read()
            if ok:
                return np.asarray(frame)
            raise SourceError(self.url, "the video file stopped giving frames")
        self._failures += 1
        if self._failures >= READ_FAILURES_TO_REOPEN:
            raise SourceError(self.url, f"no frame in {self._failures} reads: the camera or stream is gone")
        return np.empty((0, 0, 3), np.uint8)  # one failed grab: try again

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        self._synthetic = None


class FrameSlot:
    """The newest frame and nothing else: :meth:`put` replaces an untaken frame (counting it dropped),
    :meth:`take` waits for a frame newer than the last one taken."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._ts = 0
        self.dropped = 0

    def put(self, frame: np.ndarray, ts: int) -> None:
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame, self._ts = frame, ts
            self._cond.notify()

    def take(self, timeout: float) -> tuple[np.ndarray, int] | None:
        with self._cond:
            if self._frame is None and not self._cond.wait_for(lambda: self._frame is not None, timeout):
                return None
            assert self._frame is not None
            frame, self._frame = self._frame, None
            return frame, self._ts


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

    def __init__(self, pipeline: Pipeline, deliver: Callable[[FrameResult], None]) -> None:
        self.pipeline = pipeline
        self.deliver = deliver
        self._last_error = ""

    def process(self, frame: np.ndarray, frame_ts: int) -> None:
        started = time.perf_counter()
        try:
            results = self.pipeline.infer(frame)
        except InferenceError as exc:
            if str(exc) != self._last_error:  # once per distinct problem, not once per frame
                log.warning("inference failed: %s", exc)
                self._last_error = str(exc)
            return
        self.deliver(FrameResult(results, frame_ts, time.perf_counter() - started))

    def run(self, slot: FrameSlot, stop: threading.Event) -> None:
        while not stop.is_set():
            item = slot.take(TAKE_TIMEOUT_S)
            if item is not None:
                self.process(*item)


def capture_loop(
    source: FrameSource,
    slot: FrameSlot,
    stop: threading.Event,
    report_state: Callable[[str, str], None],
) -> None:
    """Open ``source`` and put its frames into ``slot`` until ``stop``; on failure report the state with
    the reason and retry with back-off."""
    delay = RETRY_MIN_S
    while not stop.is_set():
        try:
            source.open()
            report_state(ONLINE, "")
            delay = RETRY_MIN_S
            deadline = time.monotonic()
            while not stop.is_set():
                frame = source.read()
                if frame.size:
                    slot.put(frame, now_ms())
                if source.pace:
                    deadline += source.pace
                    wait = deadline - time.monotonic()
                    if wait > 0:
                        stop.wait(wait)
                    elif wait < -1.0:  # fell a second behind (a stall): restart the clock, do not burst
                        deadline = time.monotonic()
        except SourceError as exc:
            report_state(OFFLINE, exc.reason)
            wait = delay * random.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)
            log.warning("source %s: %s; retrying in %.1f s", exc.source, exc.reason, wait)
            stop.wait(wait)
            delay = min(delay * 2, RETRY_MAX_S)
        except Exception:  # an OpenCV surprise must not kill the thread silently: log, back off, retry
            log.exception("source %s: capture failed; retrying in %.1f s", source.url, delay)
            report_state(OFFLINE, "capture failed (see the pod's log)")
            stop.wait(delay)
            delay = min(delay * 2, RETRY_MAX_S)
        finally:
            source.close()


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

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        stop = threading.Event()
        threads: list[threading.Thread] = []
        if not self.config.telemetry:
            source = FrameSource(self.config.source, self.config.fps)
            infer = InferenceLoop(self.pipeline, self.on_result)
            threads = [
                threading.Thread(
                    target=capture_loop,
                    args=(source, self.slot, stop, self._state_threadsafe),
                    name="inference.capture",
                    daemon=True,
                ),
                threading.Thread(
                    target=infer.run, args=(self.slot, stop), name="inference.infer", daemon=True
                ),
            ]
            for t in threads:
                t.start()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._mqtt(), name="inference.mqtt")
                tg.create_task(self._tick(), name="inference.report")
        finally:
            stop.set()
            for t in threads:  # both wake within TAKE_TIMEOUT_S or one frame; a hung capture is left behind
                await asyncio.to_thread(t.join, 2.0)

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
        topics: list[str] = []
        own = twin_update_topic(self.config.device)
        if self.config.telemetry:
            topics = [own]

        def on_message(topic: str, payload: Any) -> None:
            if topic == own and isinstance(payload, bytes | str):
                self.on_readings(payload)

        def on_connect() -> None:
            if self.state:  # the broker restarted: tell the device's state again
                self.outbox.put(
                    state_topic(self.config.device), source_state_message(self.state, self.state_reason)
                )

        await mqtt_session(
            self.config.broker,
            f"fleetops-inference-{os.getpid()}",
            topics,
            self.outbox,
            on_message,
            on_connect=on_connect,
        )


# Entry point -----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edgeservice.workloads.inference --config FILE``: 0 when stopped by SIGTERM/SIGINT,
    :data:`EXIT_CONFIG` on a bad config or a model that cannot be used."""
    parser = argparse.ArgumentParser(
        prog="python -m edgeservice.workloads.inference", description="FleetOps ONNX inference workload"
    )
    parser.add_argument("--config", required=True, type=Path, help="JSON config file (broker, source, model)")
    parser.add_argument("--log-level", default=os.environ.get("FLEETOPS_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
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

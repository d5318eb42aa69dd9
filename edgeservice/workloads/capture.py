"""Frame capture shared by the camera and inference workloads: sources, the latest-frame slot, the loop.

A source is ``synthetic://conveyor[?seed=&defect_rate=&width=&height=]``
(:class:`app.synthetic.ConveyorSource`, paced to the configured fps), a video file (played in a loop at
the configured fps, default the file's own rate), a camera index (``"0"``: V4L2) or a stream URL
(``rtsp://``, ``http://``), the last two read with ``cv2.VideoCapture`` and paced by the device.

A stream URL is opened with OpenCV's FFmpeg backend and its open and read timeouts
(``CAP_PROP_OPEN_TIMEOUT_MSEC``, ``CAP_PROP_READ_TIMEOUT_MSEC``): without them an unreachable RTSP server or
an HTTP camera that accepts and then says nothing blocks the capture thread in FFmpeg for minutes, and the
device stays ``online`` with no frames. A live source that gives no frame for :data:`STALL_S` is reopened.

Capture runs in a thread (:func:`capture_loop`), not an asyncio task, because OpenCV's reads block (and
release the GIL while they do). A source that cannot be opened or stops giving frames raises
:class:`SourceError` with a reason an operator can act on; the loop reports it (``offline`` with the reason)
and retries with jittered exponential back-off (1 s to 30 s); the first frame after that reports ``online``.

:class:`FrameSlot` holds the newest frame and nothing else, so a consumer slower than the source skips
frames (counted as ``dropped``) and never works through a backlog of stale ones.

Deliberately not done: hardware decode, camera controls (exposure, focus), audio.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np

from app import synthetic
from app.camera import SYNTHETIC_SCHEME, parse_synthetic_url
from app.errors import ValidationError
from edgeservice.errors import EdgeError
from edgeservice.workloads.adapter import OFFLINE, ONLINE, ConfigError, now_ms

log = logging.getLogger(__name__)

DEFAULT_FPS: Final = 30.0
# Source retry back-off: 1 s doubling to 30 s, +-20% jitter (a camera that is away for a day costs one
# attempt every half minute, and cameras restarted together do not come back in lock-step).
RETRY_MIN_S: Final = 1.0
RETRY_MAX_S: Final = 30.0
RETRY_JITTER: Final = 0.2
# Consecutive failed reads after which a live source is reopened (a USB camera unplugged, an RTSP server
# gone): a single failed grab is common on a busy network stream and is not worth a reconnect.
READ_FAILURES_TO_REOPEN: Final = 30
# Stream URLs (FFmpeg): how long connecting may take, and how long one read may wait for data. An RTSP
# server on a flaky LTE link can take seconds to answer DESCRIBE/SETUP; a camera that sent nothing for 5 s
# at any sane frame rate is gone.
OPEN_TIMEOUT_S: Final = 10.0
READ_TIMEOUT_S: Final = 5.0
# A live source (camera index or URL) with no frame for this long is reported and reopened, however its
# failed reads came (one slow timeout, or many fast failed grabs).
STALL_S: Final = READ_TIMEOUT_S


def check_source(url: str) -> None:
    """Validate a source string as far as can be done without opening it (ConfigError on ``source``)."""
    if url.startswith(SYNTHETIC_SCHEME):
        _synthetic_params(url)


def is_stream_url(url: str) -> bool:
    """Whether ``url`` is a network stream (``rtsp://``, ``http://``...) rather than a file or an index."""
    return "://" in url and not url.startswith(SYNTHETIC_SCHEME)


def open_capture(target: int | str) -> Any:
    """``cv2.VideoCapture`` of a camera index, a file, or a stream URL with FFmpeg's timeouts."""
    if isinstance(target, str) and is_stream_url(target):
        timeouts = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            round(OPEN_TIMEOUT_S * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            round(READ_TIMEOUT_S * 1000),
        ]
        return cv2.VideoCapture(target, cv2.CAP_FFMPEG, timeouts)
    return cv2.VideoCapture(target)


class SourceError(EdgeError):
    """A source cannot be opened or read; ``reason`` says why in words an operator can act on."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def _synthetic_params(url: str) -> dict[str, Any]:
    """The conveyor's arguments (app.camera.parse_synthetic_url), as a ConfigError on ``source``."""
    try:
        return dict(parse_synthetic_url(url, "source"))
    except ValidationError as exc:
        raise ConfigError(exc.message, field="source") from exc


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
        self._last_frame = 0.0  # monotonic time of the last frame read (live sources)
        self.pace = 0.0

    def open(self) -> None:
        self.close()
        if self.url.startswith(SYNTHETIC_SCHEME):
            fps = self.fps or DEFAULT_FPS
            self._synthetic = synthetic.ConveyorSource(fps=fps, **_synthetic_params(self.url))
            self.pace = 1.0 / fps
            return
        target: int | str = int(self.url) if self.url.isdigit() else self.url
        self._file = isinstance(target, str) and "://" not in target
        if self._file and not Path(self.url).is_file():
            raise SourceError(self.url, "no such video file")
        stream = isinstance(target, str) and is_stream_url(target)
        cap = open_capture(target)
        if not cap.isOpened():
            cap.release()
            if self._file:
                what = "not a video file OpenCV can read"
            elif stream:
                what = f"cannot open the stream (unreachable, refused, or no answer in {OPEN_TIMEOUT_S:g} s)"
            else:
                what = "cannot open the camera"
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
        self._last_frame = time.monotonic()

    def read(self) -> np.ndarray:
        if self._synthetic is not None:
            frame, _truth = self._synthetic.read()
            return frame
        if self._capture is None:
            raise SourceError(self.url, "not open")
        ok, frame = self._capture.read()
        if ok:
            self._failures = 0
            self._last_frame = time.monotonic()
            return np.asarray(frame)
        if self._file:  # the end of the file: play it again
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._capture.read()
            if ok:
                return np.asarray(frame)
            raise SourceError(self.url, "the video file stopped giving frames")
        self._failures += 1
        silent = time.monotonic() - self._last_frame
        if self._failures >= READ_FAILURES_TO_REOPEN or silent >= STALL_S:
            raise SourceError(self.url, f"no frame for {silent:.0f} s: the camera or stream is gone")
        return np.empty((0, 0, 3), np.uint8)  # one failed grab: try again

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        self._synthetic = None


class FrameSlot:
    """The newest frame and nothing else: :meth:`put` replaces an untaken frame (counting it dropped),
    :meth:`take` waits for a frame newer than the last one taken. A frame is an image, or a JPEG still to
    be decoded (by whoever takes it)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: np.ndarray | bytes | None = None
        self._ts = 0
        self.dropped = 0

    def put(self, frame: np.ndarray | bytes, ts: int) -> None:
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame, self._ts = frame, ts
            self._cond.notify()

    def take(self, timeout: float) -> tuple[np.ndarray | bytes, int] | None:
        with self._cond:
            if self._frame is None and not self._cond.wait_for(lambda: self._frame is not None, timeout):
                return None
            assert self._frame is not None
            frame, self._frame = self._frame, None
            return frame, self._ts


def capture_loop(
    source: FrameSource,
    deliver: Callable[[np.ndarray, int], None],
    stop: threading.Event,
    report_state: Callable[[str, str], None],
) -> None:
    """Open ``source`` and hand each frame with its capture time (ms) to ``deliver`` until ``stop``; on
    failure report the state with the reason and retry with back-off."""
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
                    deliver(frame, now_ms())
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

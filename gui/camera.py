"""The camera wall's plumbing: frame feeds, decoding off the UI thread, newest frame wins at every step.

A feed is anything with ``camera_frames(name, namespace, *, overlay=False)`` answering an async iterator
of frames (:class:`FrameFeed`, :class:`Frame`): ``app.client.AsyncClient`` is one (a WebSocket on the
Device's ``/stream`` subresource), :class:`SyntheticFeed` is another (the synthetic conveyor, for tests,
benchmarks and demos without an edge). The wall is written against the protocol only.

Per tile, frames flow through three hands, and none of them ever queues video (DESIGN.md, flow 3):

1. the stream task on the I/O loop receives a frame and offers it to the tile: it replaces the tile's
   pending frame (an older one not yet decoded is dropped and counted);
2. a decode thread (a pool of :data:`DECODE_WORKERS`, shared by the tiles; one decode in flight per tile)
   takes the pending frame, decodes the JPEG with OpenCV at the size the tile is painted (JPEG's own
   1/2, 1/4, 1/8 scaled decoding when the tile is that much smaller, then a bilinear resize), wraps the
   pixels in a ``QImage`` (BGR888: no colour conversion) and stores it as the tile's newest picture;
3. the UI thread is woken once per picture at most (a picture that arrives before the previous one was
   painted replaces it) and paints it.

OpenCV releases the GIL while it decodes and scales, so the pool runs truly in parallel with the UI.
A tile that is hidden (the wall enlarged to another tile) drops its frames before decoding, and the whole
wall closes its streams while it is not on screen, so nothing flows without a viewer.

Each tile shows its frame rate (pictures painted per second, and the producer's own figure) and its
latency: the time from capture at the edge (``timestamp_ms``) to the picture reaching the UI thread. The
two clocks are different machines': the figure includes their skew (NTP keeps it to milliseconds).

Deliberately not done: hardware decoding, and H.264 (the streams are JPEG per frame, see app/camera.py).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from app.client import Backoff, ClientError
from app.synthetic import ConveyorSource
from gui.bridge import AsyncBridge, Job
from gui.errors import describe_error

logger = logging.getLogger(__name__)

DECODE_WORKERS = 2  # decode threads for the whole wall: JPEG decoding is ~2-5 ms a frame at 640x480
FPS_WINDOW_S = 2.0  # painted-frames-per-second is counted over this window
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


class Frame(Protocol):
    """One camera frame as a feed yields it (``app.client.CameraFrame`` has these fields)."""

    @property
    def jpeg(self) -> bytes: ...

    @property
    def timestamp_ms(self) -> int: ...

    @property
    def seq(self) -> int: ...

    @property
    def fps(self) -> float: ...

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...


class FrameFeed(Protocol):
    """Where a camera's frames come from."""

    def camera_frames(
        self, name: str, namespace: str = "", *, overlay: bool = False
    ) -> AsyncIterator[Frame]: ...


@dataclass(frozen=True, slots=True)
class CameraRef:
    """A camera Device to show."""

    namespace: str
    name: str
    node: str = ""

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"


# -- the synthetic feed -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyntheticFrame:
    jpeg: bytes
    seq: int
    timestamp_ms: int
    width: int
    height: int
    fps: float


class SyntheticFeed:
    """The synthetic conveyor (``app.synthetic.ConveyorSource``) as JPEG frames paced at ``fps``; with
    ``overlay`` the ground truth is drawn on them as an inference overlay would be (boxes, red for
    defects). ``prerender`` encodes that many frames once and loops them, so a benchmark measures the
    wall and not the renderer; otherwise each frame is rendered in a worker thread as it is due."""

    def __init__(
        self,
        *,
        fps: float = 30.0,
        width: int = 640,
        height: int = 480,
        quality: int = 80,
        prerender: int | None = None,
        seed: int = 0,
    ) -> None:
        self.fps = fps
        self.width, self.height = width, height
        self.quality = quality
        self.prerender = prerender
        self.seed = seed
        self._cache: dict[tuple[str, bool], list[bytes]] = {}
        self._lock = threading.Lock()
        self.opened: list[tuple[str, str, bool]] = []  # (namespace, name, overlay) per stream opened

    def render(self, source: ConveyorSource, overlay: bool) -> bytes:
        img, truth = source.read()
        if overlay:
            for part in truth.parts:
                x, y, w, h = part.box
                colour = (40, 40, 230) if part.part.defective else (60, 200, 60)
                cv2.rectangle(img, (x, y), (x + w, y + h), colour, 2)
                label = part.part.defect or "ok"
                cv2.putText(img, label, (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RuntimeError("cv2.imencode failed")
        return buf.tobytes()

    def frames_for(self, name: str, overlay: bool) -> list[bytes]:
        """The pre-rendered frames of camera ``name`` (rendered on first use)."""
        with self._lock:
            cached = self._cache.get((name, overlay))
            if cached is None:
                source = self._source(name)
                cached = [self.render(source, overlay) for _ in range(self.prerender or 1)]
                self._cache[(name, overlay)] = cached
            return cached

    def _source(self, name: str) -> ConveyorSource:
        seed = self.seed + sum(name.encode())  # each camera its own belt
        return ConveyorSource(self.width, self.height, fps=self.fps, seed=seed)

    def camera_frames(self, name: str, namespace: str = "", *, overlay: bool = False) -> AsyncIterator[Frame]:
        self.opened.append((namespace, name, overlay))
        return self._frames(name, overlay)

    async def _frames(self, name: str, overlay: bool) -> AsyncIterator[Frame]:
        period = 1.0 / self.fps
        frames = await asyncio.to_thread(self.frames_for, name, overlay) if self.prerender else None
        source = self._source(name) if frames is None else None
        due = time.monotonic()
        seq = 0
        while True:
            if frames is not None:
                jpeg = frames[seq % len(frames)]
            else:
                assert source is not None
                jpeg = await asyncio.to_thread(self.render, source, overlay)
            yield SyntheticFrame(jpeg, seq, int(time.time() * 1000), self.width, self.height, self.fps)
            seq += 1
            due += period
            delay = due - time.monotonic()
            if delay < -period:  # fell behind (a slow machine): do not burst to catch up
                due = time.monotonic()
            await asyncio.sleep(max(0.0, delay))


# -- decoding ---------------------------------------------------------------------------------------------


def decode(
    jpeg: bytes, size: tuple[int, int], full: tuple[int, int] = (0, 0)
) -> npt.NDArray[np.uint8] | None:
    """The JPEG as BGR pixels fitting in ``size`` (aspect kept; never enlarged), or None if it is not a
    JPEG. ``full`` is the frame's size when known: it picks JPEG's scaled decoding (1/2, 1/4, 1/8)."""
    width, height = size
    buf = np.frombuffer(jpeg, np.uint8)
    flag = cv2.IMREAD_COLOR
    fw, fh = full
    if fw > 0 and fh > 0 and width > 0 and height > 0:
        for factor, reduced in _REDUCED:
            if fw // factor >= width and fh // factor >= height:
                flag = reduced
                break
    img = cv2.imdecode(buf, flag)
    if img is None:
        return None
    h, w = img.shape[:2]
    if width > 0 and height > 0 and (w > width or h > height):
        scale = min(width / w, height / h)
        # After JPEG's own 1/2..1/8 scaling what is left is a mild shrink, where bilinear looks the same
        # as INTER_AREA at a seventh of its cost (INTER_AREA is exact but slow for non-integer ratios).
        interpolation = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR
        size_out = (max(1, round(w * scale)), max(1, round(h * scale)))
        img = cv2.resize(img, size_out, interpolation=interpolation)
    return np.ascontiguousarray(img)


def to_qimage(pixels: npt.NDArray[np.uint8]) -> QImage:
    """A QImage over ``pixels`` (BGR, no copy: keep ``pixels`` alive as long as the image)."""
    h, w = pixels.shape[:2]
    return QImage(pixels.data, w, h, int(pixels.strides[0]), QImage.Format.Format_BGR888)


@dataclass(frozen=True, slots=True)
class Picture:
    """A decoded frame, ready to paint; ``pixels`` owns the memory ``image`` shows."""

    image: QImage
    pixels: npt.NDArray[np.uint8] = field(repr=False)
    seq: int
    timestamp_ms: int
    source_fps: float
    frame_size: tuple[int, int]
    decoded_at: float  # epoch seconds


@dataclass(slots=True)
class TileStats:
    """What a tile says about itself: painted fps, latency, the producer's fps, frames painted."""

    shown: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=240))
    latency_ms: float | None = None
    source_fps: float = 0.0
    frames: int = 0
    frame_size: tuple[int, int] = (0, 0)

    def record(self, picture: Picture, now: float) -> None:
        self.shown.append(now)
        self.frames += 1
        self.latency_ms = max(0.0, now * 1000.0 - picture.timestamp_ms)
        self.source_fps = picture.source_fps
        self.frame_size = picture.frame_size

    def fps(self, now: float) -> float:
        recent = [t for t in self.shown if now - t <= FPS_WINDOW_S]
        if len(recent) < 2:
            return 0.0
        span = recent[-1] - recent[0]
        return (len(recent) - 1) / span if span > 0 else 0.0


class _Tile:
    """One camera's state shared by the I/O thread, a decode thread and the UI thread (under ``lock``)."""

    def __init__(self, ref: CameraRef, overlay: bool) -> None:
        self.ref = ref
        self.overlay = overlay
        self.lock = threading.Lock()
        self.pending: Frame | None = None
        self.busy = False
        self.size = (320, 240)
        self.visible = True
        self.picture: Picture | None = None
        self.notified = False
        self.dropped = 0
        self.job: Job[None] | None = None
        self.status = "connecting"


class CameraWall(QObject):
    """The streams and decoders of a wall of tiles (see the module docstring).

    ``picture(tile_id)``: a new picture waits in :meth:`take`. ``status(tile_id, text)``: the tile's
    state in words ("connecting", "live", "no signal: <reason>; retrying")."""

    picture = Signal(str)
    status = Signal(str, str)

    def __init__(
        self,
        bridge: AsyncBridge,
        feed: FrameFeed | None,
        parent: QObject | None = None,
        *,
        workers: int = DECODE_WORKERS,
    ) -> None:
        super().__init__(parent)
        self._bridge = bridge
        self._feed = feed
        self._tiles: dict[str, _Tile] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="fleetops-gui-decode")
        self._active = True
        self._closed = False
        self.decode_threads: set[str] = set()  # names of the threads that decoded (tests check it)

    @property
    def feed(self) -> FrameFeed | None:
        return self._feed

    def ref(self, tile_id: str) -> CameraRef:
        return self._tiles[tile_id].ref

    def tile_status(self, tile_id: str) -> str:
        return self._tiles[tile_id].status

    def overlay(self, tile_id: str) -> bool:
        return self._tiles[tile_id].overlay

    # -- what is shown --------------------------------------------------------------------------------

    def set_cameras(self, cameras: Iterable[CameraRef], *, overlay: bool = False) -> None:
        """Show exactly ``cameras`` (in order): new ones start streaming, gone ones stop."""
        wanted = {c.id: c for c in cameras}
        for tile_id in [t for t in self._tiles if t not in wanted]:
            self._stop(self._tiles.pop(tile_id))
        tiles = {}
        for tile_id, ref in wanted.items():
            tile = self._tiles.get(tile_id) or _Tile(ref, overlay)
            tiles[tile_id] = tile
            if tile.job is None and self._active:
                self._start(tile)
        self._tiles = tiles

    def set_overlay(self, tile_id: str, overlay: bool) -> None:
        """Ask for the inference overlay variant of a tile's stream (reopens it)."""
        tile = self._tiles[tile_id]
        if tile.overlay == overlay:
            return
        tile.overlay = overlay
        if tile.job is not None:
            self._stop(tile)
            self._start(tile)

    def set_size(self, tile_id: str, width: int, height: int) -> None:
        """The size the tile is painted at: frames are decoded to fit it."""
        tile = self._tiles.get(tile_id)
        if tile is not None:
            with tile.lock:
                tile.size = (max(1, width), max(1, height))

    def set_visible(self, tile_id: str, visible: bool) -> None:
        tile = self._tiles.get(tile_id)
        if tile is not None:
            with tile.lock:
                tile.visible = visible

    def set_active(self, active: bool) -> None:
        """Open the streams (the wall is on screen) or close them all (it is not)."""
        if active == self._active or self._closed:
            return
        self._active = active
        for tile in self._tiles.values():
            if active:
                self._start(tile)
            else:
                self._stop(tile)
                tile.status = "paused"

    def take(self, tile_id: str) -> Picture | None:
        """The tile's newest picture, once (UI thread)."""
        tile = self._tiles.get(tile_id)
        if tile is None:
            return None
        with tile.lock:
            picture, tile.picture = tile.picture, None
            tile.notified = False
        return picture

    def dropped(self, tile_id: str) -> int:
        tile = self._tiles[tile_id]
        with tile.lock:
            return tile.dropped

    def close(self) -> None:
        """Stop every stream and the decode threads (waits for a decode in progress)."""
        if self._closed:
            return
        self._closed = True
        for tile in self._tiles.values():
            self._stop(tile)
        self._tiles.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- streams (I/O thread) -------------------------------------------------------------------------

    def _start(self, tile: _Tile) -> None:
        if self._feed is None:
            self._set_status(tile, "no stream: this connection cannot stream cameras")
            return
        tile.status = "connecting"
        tile.job = self._bridge.submit(
            self._stream(self._feed, tile, tile.overlay), name=f"gui.camera[{tile.ref.id}]", owner=self
        )

    def _stop(self, tile: _Tile) -> None:
        if tile.job is not None:
            tile.job.cancel()
            tile.job = None
        with tile.lock:
            tile.pending = None

    def _set_status(self, tile: _Tile, text: str) -> None:
        tile.status = text
        self.status.emit(tile.ref.id, text)

    def _post_status(self, tile: _Tile, text: str) -> None:
        self._bridge.post(lambda: self._set_status(tile, text) if tile.job is not None else None, owner=self)

    async def _stream(self, feed: FrameFeed, tile: _Tile, overlay: bool) -> None:
        backoff = Backoff(initial=1.0, maximum=10.0)
        while True:
            frames = feed.camera_frames(tile.ref.name, tile.ref.namespace, overlay=overlay)
            live = False
            reason = "the stream ended"
            try:
                async for frame in frames:
                    if not live:
                        live = True
                        backoff.reset()
                        self._post_status(tile, "live")
                    self._offer(tile, frame)
            except ClientError as exc:
                reason = describe_error(exc)
            except Exception as exc:  # a feed bug: logged, and the stream reopened like any other failure
                logger.exception("camera %s: the stream failed", tile.ref.id)
                reason = str(exc) or type(exc).__name__
            finally:
                close: Any = getattr(frames, "aclose", None)
                if close is not None:
                    await close()
            delay = backoff.next_delay()
            logger.info("camera %s: %s; reopening in %.1fs", tile.ref.id, reason, delay)
            self._post_status(tile, f"no signal: {reason}; retrying")
            await asyncio.sleep(delay)

    def _offer(self, tile: _Tile, frame: Frame) -> None:
        with tile.lock:
            if not tile.visible:
                tile.dropped += 1
                return
            if tile.pending is not None:
                tile.dropped += 1
            tile.pending = frame
            if tile.busy:
                return
            tile.busy = True
        try:
            self._pool.submit(self._decode_loop, tile)
        except RuntimeError:  # the pool is shut down: the wall is closing
            with tile.lock:
                tile.busy = False

    # -- decoding (pool threads) ----------------------------------------------------------------------

    def _decode_loop(self, tile: _Tile) -> None:
        self.decode_threads.add(threading.current_thread().name)
        while True:
            with tile.lock:
                frame, tile.pending = tile.pending, None
                if frame is None:
                    tile.busy = False
                    return
                size = tile.size
            try:
                pixels = decode(frame.jpeg, size, (frame.width, frame.height))
            except cv2.error:
                logger.exception("camera %s: frame %d cannot be decoded", tile.ref.id, frame.seq)
                pixels = None
            if pixels is None:
                continue
            picture = Picture(
                to_qimage(pixels),
                pixels,
                frame.seq,
                frame.timestamp_ms,
                frame.fps,
                (frame.width, frame.height),
                time.time(),
            )
            with tile.lock:
                tile.picture = picture
                notify = not tile.notified
                tile.notified = True
            if notify:
                self._bridge.post(functools.partial(self.picture.emit, tile.ref.id), owner=self)

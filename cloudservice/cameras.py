"""Camera streams at the cloud: one edge stream per camera and variant, fanned out to every viewer.

A viewer (an MJPEG response, a WebSocket) asks :meth:`CameraStreams.watch` for a camera. The first one
opens a tunnel stream to the camera's node (``ns/camera/name``, credit window 2: see
``edgeservice.camerastream``); later ones join it. A pump task takes each frame off the tunnel as soon as
it arrives (so the edge always has credit and never waits on a viewer), keeps it as the feed's newest
frame, and wakes every viewer. Each viewer then writes the newest frame it has not written yet; a viewer
whose connection is slow simply skips the frames that arrived while it was writing (counted in
``skipped``), so one slow client never slows the edge, the tunnel or the other viewers, and nothing ever
queues video. When the last viewer leaves, the edge stream is closed after :data:`LINGER_S` seconds
(a page reload or a wall switching layout does not tear it down and reopen it).

Figures kept per feed, for ``/metrics`` and the stream itself: frames and bytes received, the fps and
bytes/s achieved over the last second, the viewers and their skipped frames.

Deliberately not done: recording, a frame cache for late joiners beyond the newest frame, and limits on
viewers per camera (the fan-out costs one write per viewer per frame, nothing more).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from app.camera import CameraFrame, RateMeter, decode_frame
from app.errors import ValidationError
from app.resources import JSONObject
from cloudservice.streams import CloudStream, StreamClosed

log = logging.getLogger(__name__)

# Seconds an unwatched edge stream stays open for the next viewer.
LINGER_S = 2.0
# Frames in flight between the edge and the cloud per stream: the newest and the one behind it.
VIDEO_WINDOW = 2

# Opens one tunnel stream and waits until the node accepts it: (node, resource, params) -> stream. The API
# binds ``cloudservice.api.podlogs.open_accepted`` to the hub, so refusals arrive as Status errors.
OpenStream = Callable[[str, str, JSONObject], Awaitable[CloudStream]]


@dataclass(frozen=True, slots=True)
class FeedKey:
    namespace: str
    name: str
    overlay: bool

    @property
    def variant(self) -> str:
        return "overlay" if self.overlay else "frame"


@dataclass(eq=False)
class Viewer:
    """One client of a feed: woken by each new frame, it writes the newest one it has not written."""

    feed: Feed
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    last_seq: int = -1
    sent: int = 0

    async def frames(self) -> AsyncIterator[CameraFrame]:
        """The feed's frames as this viewer can take them; ends (StreamClosed) with the edge stream."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            feed = self.feed
            if feed.error is not None:
                raise feed.error
            frame = feed.latest
            if frame is None or feed.received == self.last_seq:
                continue
            if self.last_seq >= 0:
                feed.skipped += feed.received - self.last_seq - 1
            self.last_seq = feed.received
            self.sent += 1
            yield frame


@dataclass(eq=False)
class Feed:
    key: FeedKey
    node: str
    stream: CloudStream
    viewers: set[Viewer] = field(default_factory=set)
    latest: CameraFrame | None = None
    error: StreamClosed | None = None
    received: int = 0  # frames taken off the tunnel
    bytes: int = 0
    malformed: int = 0
    skipped: int = 0  # frames some viewer did not get because it was still writing an older one
    pump: asyncio.Task[None] | None = None
    closer: asyncio.TimerHandle | None = None
    meter: RateMeter = field(default_factory=RateMeter)

    def rates(self, now: float) -> tuple[float, float]:
        """(frames/s, bytes/s) received over the last second."""
        return self.meter.rates(now)

    def take(self, item: JSONObject, now: float) -> None:
        raw = item.get("b64")
        try:
            if not isinstance(raw, str):
                raise ValidationError("b64", "Required value: the frame record, base64")
            frame = decode_frame(base64.b64decode(raw, validate=True))
        except (ValidationError, binascii.Error) as exc:
            self.malformed += 1
            log.warning("camera %s/%s: bad frame from node %s: %s", *self.key_parts, self.node, exc)
            return
        self.latest = frame
        self.received += 1
        self.bytes += len(frame.jpeg)
        self.meter.add(now, len(frame.jpeg))
        for viewer in self.viewers:
            viewer.wake.set()

    @property
    def key_parts(self) -> tuple[str, str]:
        return self.key.namespace, self.key.name

    def end(self, error: StreamClosed) -> None:
        self.error = error
        for viewer in self.viewers:
            viewer.wake.set()


class CameraStreams:
    """The cloud's live camera feeds, by camera and variant."""

    def __init__(self) -> None:
        self.feeds: dict[FeedKey, Feed] = {}
        self._opening: dict[FeedKey, asyncio.Future[Feed]] = {}
        self.stats = {"opened": 0, "frames": 0, "bytes": 0, "skipped": 0, "malformed": 0}

    @contextlib.asynccontextmanager
    async def watch(self, key: FeedKey, node: str, open_stream: OpenStream) -> AsyncIterator[Viewer]:
        """Join (or open) the feed of ``key`` for the duration of the block."""
        feed = await self._feed(key, node, open_stream)
        viewer = Viewer(feed)
        feed.viewers.add(viewer)
        if feed.closer is not None:
            feed.closer.cancel()
            feed.closer = None
        if feed.latest is not None:
            viewer.wake.set()  # a joiner starts with the newest frame, not the next one
        try:
            yield viewer
        finally:
            feed.viewers.discard(viewer)
            if not feed.viewers and self.feeds.get(key) is feed:
                loop = asyncio.get_running_loop()
                feed.closer = loop.call_later(LINGER_S, self._close_idle, feed)

    async def _feed(self, key: FeedKey, node: str, open_stream: OpenStream) -> Feed:
        feed = self.feeds.get(key)
        if feed is not None and feed.error is None:
            return feed
        pending = self._opening.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Feed] = asyncio.get_running_loop().create_future()
        self._opening[key] = future
        try:
            stream = await open_stream(node, f"{key.namespace}/camera/{key.name}", self._params(key))
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # marked as retrieved: the waiters each get it raised
            raise
        finally:
            self._opening.pop(key, None)
        feed = Feed(key, node, stream)
        feed.pump = asyncio.create_task(self._pump(feed), name=f"camera[{key.namespace}/{key.name}].pump")
        self.feeds[key] = feed
        self.stats["opened"] += 1
        future.set_result(feed)
        return feed

    @staticmethod
    def _params(key: FeedKey) -> JSONObject:
        return {"overlay": key.overlay, "window": VIDEO_WINDOW}

    async def _pump(self, feed: Feed) -> None:
        try:
            async for item in feed.stream.items():
                before = feed.malformed
                feed.take(item, time.monotonic())
                if feed.malformed == before:
                    self.stats["frames"] += 1
                    self.stats["bytes"] += len(feed.latest.jpeg) if feed.latest else 0
                else:
                    self.stats["malformed"] += 1
            feed.end(StreamClosed(f"the camera stream from node {feed.node} ended"))
        except StreamClosed as exc:
            feed.end(exc)
        finally:
            if self.feeds.get(feed.key) is feed:
                del self.feeds[feed.key]
            self.stats["skipped"] += feed.skipped

    def _close_idle(self, feed: Feed) -> None:
        feed.closer = None
        if not feed.viewers:
            if self.feeds.get(feed.key) is feed:
                del self.feeds[feed.key]
            asyncio.get_running_loop().create_task(self._shut(feed), name="camera.close")

    @staticmethod
    async def _shut(feed: Feed) -> None:
        await feed.stream.aclose()
        if feed.pump is not None:
            feed.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed.pump

    async def close(self) -> None:
        """Shutting down: end every feed (viewers get StreamClosed)."""
        feeds = list(self.feeds.values())
        self.feeds.clear()
        for feed in feeds:
            if feed.closer is not None:
                feed.closer.cancel()
            feed.end(StreamClosed("the cloud is shutting down"))
            await self._shut(feed)

"""The cloud's camera fan-out (cloudservice.cameras) over a CloudStream fed by hand: one edge stream per
camera and variant, the newest frame for every viewer, skipped frames counted, the stream closed after the
last viewer leaves, and an opening failure given to everyone who waited for it."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app import streams
from app.camera import CameraFrame, encode_frame
from app.envelope import GROUP_STREAM, Message
from cloudservice import cameras
from cloudservice.cameras import CameraStreams, FeedKey
from cloudservice.streams import CloudStream, StreamClosed

JPEG = b"\xff\xd8" + b"j" * 50 + b"\xff\xd9"
KEY = FeedKey("default", "cam", overlay=False)


class Edge:
    """Stands in for the hub and the node: counts opens, hands out streams it can feed."""

    def __init__(self) -> None:
        self.opened: list[tuple[str, str, dict[str, Any]]] = []
        self.sent: list[Message] = []
        self.streams: list[CloudStream] = []
        self.fail: Exception | None = None
        self.gate = asyncio.Event()
        self.gate.set()

    async def open(self, node: str, resource: str, params: dict[str, Any]) -> CloudStream:
        self.opened.append((node, resource, params))
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        stream = CloudStream(f"s{len(self.streams)}", self.sent.append, on_close=lambda sid: None, window=2)
        stream.on_message(Message("response", streams.stream_resource(stream.sid), {}, group=GROUP_STREAM))
        self.streams.append(stream)
        return stream

    def frame(self, seq: int, stream: int = -1) -> None:
        record = encode_frame(CameraFrame(JPEG, seq, 1000 + seq, 4, 3, 30.0, 1e4))
        s = self.streams[stream]
        s.on_message(streams.item(s.sid, {"b64": base64.b64encode(record).decode()}))


@pytest.fixture
async def feeds() -> AsyncIterator[CameraStreams]:
    f = CameraStreams()
    yield f
    await f.close()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_viewers_share_one_stream_and_each_gets_the_newest_frame(feeds: CameraStreams) -> None:
    edge = Edge()
    async with feeds.watch(KEY, "edge-1", edge.open) as a, feeds.watch(KEY, "edge-1", edge.open) as b:
        assert len(edge.opened) == 1 and edge.opened[0][1] == "default/camera/cam"
        assert edge.opened[0][2] == {"overlay": False, "window": cameras.VIDEO_WINDOW}
        frames_a, frames_b = a.frames(), b.frames()
        edge.frame(1)
        await settle()
        assert (await anext(frames_a)).seq == 1
        # b is slow: three frames arrive before it takes one; it gets the newest, two are skipped.
        edge.frame(2)
        edge.frame(3)
        await settle()
        assert (await anext(frames_b)).seq == 3
        assert (await anext(frames_a)).seq == 3
        assert feeds.feeds[KEY].skipped == 1  # a missed 2; b joined late, which is no skip
        assert len(feeds.feeds[KEY].viewers) == 2


async def test_a_joiner_starts_with_the_newest_frame(feeds: CameraStreams) -> None:
    edge = Edge()
    async with feeds.watch(KEY, "edge-1", edge.open) as first:
        edge.frame(7)
        await settle()
        assert (await anext(first.frames())).seq == 7
        async with feeds.watch(KEY, "edge-1", edge.open) as late:
            assert (await anext(late.frames())).seq == 7


async def test_the_stream_closes_after_the_last_viewer_and_its_linger(
    monkeypatch: pytest.MonkeyPatch, feeds: CameraStreams
) -> None:
    monkeypatch.setattr(cameras, "LINGER_S", 0.01)
    edge = Edge()
    async with feeds.watch(KEY, "edge-1", edge.open):
        pass
    assert KEY in feeds.feeds  # lingering
    async with feeds.watch(KEY, "edge-1", edge.open):  # a reload: the same stream again
        assert len(edge.opened) == 1
    await asyncio.sleep(0.05)
    assert KEY not in feeds.feeds
    assert any(m.operation == "delete" for m in edge.sent), "the edge was told to stop"


async def test_an_opening_failure_reaches_every_waiter_and_the_next_try_opens_again(
    feeds: CameraStreams,
) -> None:
    edge = Edge()
    edge.gate.clear()
    edge.fail = StreamClosed("node edge-1 is offline")

    async def watcher() -> None:
        async with feeds.watch(KEY, "edge-1", edge.open):
            pass

    tasks = [asyncio.create_task(watcher()) for _ in range(3)]
    await settle()
    edge.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, StreamClosed) for r in results) and len(edge.opened) == 1
    edge.fail = None
    async with feeds.watch(KEY, "edge-1", edge.open) as viewer:
        edge.frame(1)
        await settle()
        assert (await anext(viewer.frames())).seq == 1
    assert len(edge.opened) == 2


async def test_a_bad_frame_is_counted_and_skipped_and_the_end_reaches_the_viewers(
    feeds: CameraStreams,
) -> None:
    edge = Edge()
    async with feeds.watch(KEY, "edge-1", edge.open) as viewer:
        frames = viewer.frames()
        s = edge.streams[0]
        s.on_message(streams.item(s.sid, {"b64": "not base64!"}))
        s.on_message(streams.item(s.sid, {"b64": base64.b64encode(b"no header").decode()}))
        edge.frame(5)
        await settle()
        assert (await anext(frames)).seq == 5
        assert feeds.stats["malformed"] == 2
        s.lost("node edge-1 disconnected")
        with pytest.raises(StreamClosed, match="disconnected"):
            await anext(frames)

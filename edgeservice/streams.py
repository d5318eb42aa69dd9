"""The edge's end of tunnel streams (see app.streams): producers that the cloud opens and paces.

Each opened stream runs one producer task, named ``edge[{node}].stream[{kind}]``, that writes through a
:class:`StreamSink`. ``sink.send`` waits while the stream has no credit left, so a producer reading a log
file only reads as fast as the far end consumes. Every producer is cancelled when the cloud closes its
stream or when the connection carrying it goes away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from app import streams
from app.envelope import Message
from app.errors import FleetOpsError
from app.resources import JSONObject

log = logging.getLogger(__name__)


class StreamRejected(FleetOpsError):
    """A producer refuses to start; becomes the Kubernetes Status the cloud's client sees."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


class StreamSink:
    def __init__(
        self, sid: str, send: Callable[[Message], None], source: str, window: int = streams.WINDOW
    ) -> None:
        self.sid = sid
        self.emit = send
        self._source = source
        self._credit = window
        self._wake = asyncio.Event()
        self.accepted = False
        # What the cloud sends into the stream (exec's stdin and resizes), in order.
        self.inbox: asyncio.Queue[JSONObject] = asyncio.Queue()

    def accept(self, open_msg: Message) -> None:
        """Tell the cloud the stream is open (its HTTP client gets its 200 now)."""
        if not self.accepted:
            self.accepted = True
            self.emit(streams.accepted(open_msg, self._source))

    async def send(self, text: str) -> None:
        for start in range(0, len(text), streams.CHUNK):
            while self._credit <= 0:
                self._wake.clear()
                await self._wake.wait()
            self._credit -= 1
            self.emit(streams.data(self.sid, text[start : start + streams.CHUNK], self._source))

    async def send_item(self, content: JSONObject) -> None:
        """One chunk of any shape (exec's channel data), paced by credit like ``send``."""
        await self.wait_credit()
        self._credit -= 1
        self.emit(streams.item(self.sid, content, self._source))

    async def wait_credit(self) -> None:
        """Return once a chunk may be sent (a video producer waits here, then sends its newest frame)."""
        while self._credit <= 0:
            self._wake.clear()
            await self._wake.wait()

    def grant(self, n: int) -> None:
        self._credit += n
        self._wake.set()


# A producer: (namespace, name, params, sink, open message) -> runs until done; raises StreamRejected
# before accepting to refuse the stream.
Producer = Callable[[str, str, JSONObject, StreamSink, Message], Awaitable[JSONObject | None]]


class EdgeStreams:
    def __init__(self, node: str, producers: dict[str, Producer]) -> None:
        self.node = node
        self.producers = producers
        self._tasks: dict[str, tuple[asyncio.Task[None], StreamSink]] = {}

    def on_message(self, msg: Message, send: Callable[[Message], None]) -> None:
        sid = streams.stream_id(msg)
        if msg.operation == "query":
            self._open(msg, send)
        elif msg.operation == "patch":
            entry = self._tasks.get(sid)
            n = msg.content.get("credit", 0) if isinstance(msg.content, dict) else 0
            if entry is not None and isinstance(n, int) and n > 0:
                entry[1].grant(n)
        elif msg.operation == "update":
            entry = self._tasks.get(sid)
            if entry is not None and isinstance(msg.content, dict):
                entry[1].inbox.put_nowait(msg.content)
        elif msg.operation == "delete":
            entry = self._tasks.pop(sid, None)
            if entry is not None:
                entry[0].cancel()

    def _open(self, msg: Message, send: Callable[[Message], None]) -> None:
        parts = msg.resource.split("/")
        kind = parts[1] if len(parts) == 3 else ""
        producer = self.producers.get(kind)
        if producer is None:
            send(streams.refused(msg, 404, "NotFound", f"this node cannot stream {kind!r}", self.node))
            return
        sink = StreamSink(msg.msg_id, send, self.node, streams.window_of(msg.content))
        task = asyncio.create_task(self._run(producer, sink, msg), name=f"edge[{self.node}].stream[{kind}]")
        self._tasks[msg.msg_id] = (task, sink)

    async def _run(self, producer: Producer, sink: StreamSink, msg: Message) -> None:
        namespace, _, name = msg.resource.split("/")
        params = msg.content if isinstance(msg.content, dict) else {}
        error = ""
        result: JSONObject = {}
        try:
            result = await producer(namespace, name, params, sink, msg) or {}
        except StreamRejected as exc:
            sink.emit(streams.refused(msg, exc.code, exc.reason, exc.message, self.node))
            sink.accepted = True  # answered: no close message follows a refusal
        except asyncio.CancelledError:
            self._tasks.pop(msg.msg_id, None)
            raise
        except Exception as exc:
            log.exception("stream %s for %s/%s failed", msg.resource, namespace, name)
            error = f"the node failed to stream: {exc}"
            if not sink.accepted:
                sink.emit(streams.refused(msg, 500, "InternalError", error, self.node))
                sink.accepted = True
                error = ""
        finally:
            if self._tasks.pop(msg.msg_id, None) is not None and sink.accepted:
                sink.emit(streams.close(msg.msg_id, error, self.node, **result))

    async def close_all(self) -> None:
        """The connection is gone: every stream on it ends."""
        tasks = [t for t, _ in self._tasks.values()]
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

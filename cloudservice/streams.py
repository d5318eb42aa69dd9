"""The cloud's end of a tunnel stream (see app.streams): what an API handler reads a pod's log from."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from app import streams
from app.envelope import Message
from cloudservice.errors import CloudError

log = logging.getLogger(__name__)

# Seconds the edge has to accept or refuse a stream before the API gives up on it.
ACCEPT_TIMEOUT = 10.0


class NodeOffline(CloudError):
    """The node has no tunnel connection: nothing can be streamed from it now."""

    def __init__(self, node: str) -> None:
        super().__init__(f"node {node} is offline (no tunnel connection to the cloud)")
        self.node = node


class StreamRefused(CloudError):
    """The edge refused to open the stream; carries the Kubernetes Status fields it sent."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


class StreamClosed(CloudError):
    """The stream ended abnormally (the node disconnected, or the edge reported an error)."""


_END = object()


class CloudStream:
    def __init__(
        self,
        sid: str,
        send: Callable[[Message], None],
        *,
        on_close: Callable[[str], None],
        window: int = streams.WINDOW,
    ) -> None:
        self.sid = sid
        self._send = send
        self._on_close = on_close
        self._window = window
        self._accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._chunks: asyncio.Queue[Any] = asyncio.Queue()
        self._consumed = 0
        self.closed = False
        self.result: dict[str, Any] = {}

    # -- fed by the hub's reader ----------------------------------------------------------------

    def on_message(self, msg: Message) -> None:
        content = msg.content if isinstance(msg.content, dict) else {}
        if msg.operation == "response" and not self._accepted.done():
            self._accepted.set_result(None)
        elif msg.operation == "error":
            exc = StreamRefused(
                int(content.get("code", 500)),
                str(content.get("reason", "InternalError")),
                str(content.get("message", "")),
            )
            if not self._accepted.done():
                self._accepted.set_exception(exc)
            self._finish(StreamClosed(exc.message))
        elif msg.operation == "update":
            if self._chunks.qsize() >= 2 * self._window:
                # More than the credit we granted: a broken or hostile edge. Bounded memory wins.
                log.warning("stream %s: the node sent past its credit; ending the stream", self.sid)
                self._send(streams.close(self.sid, "credit exceeded"))
                self._finish(StreamClosed("the node sent more than it was allowed to"))
                return
            self._chunks.put_nowait(content)
        elif msg.operation == "delete":
            self.result = content
            error = str(content.get("error") or "")
            self._finish(StreamClosed(error) if error else None)

    def lost(self, why: str) -> None:
        """The node's connection is gone: end the stream with an error."""
        if not self._accepted.done():
            self._accepted.set_exception(StreamClosed(why))
        self._finish(StreamClosed(why))

    def _finish(self, error: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self._chunks.put_nowait(error if error is not None else _END)
            self._on_close(self.sid)

    # -- used by the API handler -----------------------------------------------------------------

    async def wait_accepted(self, timeout: float = ACCEPT_TIMEOUT) -> None:
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._accepted)
        except TimeoutError:
            await self.aclose()
            raise StreamClosed(f"the node did not answer within {timeout:.0f}s") from None

    async def chunks(self) -> AsyncIterator[str]:
        """The stream's text, chunk by chunk (log streams)."""
        async for item in self.items():
            yield str(item.get("data", ""))

    async def items(self) -> AsyncIterator[dict[str, Any]]:
        """The stream's chunks as sent; granting the edge more credit as each is taken."""
        while True:
            item = await self._chunks.get()
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            self._consumed += 1
            # Credit back in batches of half the window (every chunk, for a window of 1 or 2).
            if self._consumed >= max(1, self._window // 2) and not self.closed:
                self._send(streams.credit(self.sid, self._consumed))
                self._consumed = 0
            yield item

    def send_input(self, content: dict[str, Any]) -> None:
        """Client -> edge (exec stdin, resize). Not credit-paced: a person types slower than any link."""
        if not self.closed:
            self._send(streams.item(self.sid, content))

    async def aclose(self) -> None:
        """The client went away (or the handler is done): tell the edge to stop producing."""
        if not self.closed:
            self.closed = True
            self._send(streams.close(self.sid))
            self._on_close(self.sid)
        if not self._accepted.done():
            self._accepted.cancel()

"""One connection's live state (:class:`Session`); where to connect is ``gui.target.Target``.

A Session is one connection: the client, the :class:`~gui.fleet.CloudSource` of its watches and the
:class:`~gui.fleet.Fleet` of live tables, plus the camera feed (the client itself once it can stream
cameras). Switching servers closes one Session and opens another; the window rebuilds its pages on it.

Closing never blocks the UI thread: :meth:`Session.close` stops the watches and hands the closing of the
client's sockets to the I/O loop, where a server that does not answer delays nothing but that task. Only
where waiting is the point (the window closing, just before the process stops the I/O loop and would
cancel the close half-way) does anyone wait, with :meth:`Session.wait_closed`, bounded by
:data:`CLOSE_TIMEOUT`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time

from PySide6.QtCore import QObject

from app.client import AsyncClient
from gui.bridge import AsyncBridge, BridgeStopped, Job
from gui.camera import FrameFeed
from gui.fleet import CloudSource, Fleet, Source
from gui.target import Target

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0  # the longest a closing window waits for sessions' sockets to close


__all__ = ["CLOSE_TIMEOUT", "Session", "Target", "wait_all"]


class Session(QObject):
    """One connection's client, watches and tables. :meth:`close` releases everything it opened."""

    def __init__(
        self,
        bridge: AsyncBridge,
        source: Source,
        *,
        target: Target | None = None,
        camera_feed: FrameFeed | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.source = source
        self.target = target
        self.fleet = Fleet(bridge, source, self)
        client = source.client
        # The cloud's client streams cameras itself (AsyncClient.camera_frames: a WebSocket on the
        # Device's stream subresource); tests and demos pass another feed.
        self.camera_feed: FrameFeed | None = camera_feed if camera_feed is not None else client
        self._closed = False
        self._closing: Job[None] | None = None

    @classmethod
    def open(cls, bridge: AsyncBridge, target: Target, parent: QObject | None = None) -> Session:
        client = target.client()
        return cls(bridge, CloudSource(client, client.server), target=target, parent=parent)

    @property
    def client(self) -> AsyncClient | None:
        return self.source.client

    @property
    def description(self) -> str:
        return self.source.description

    def start(self) -> None:
        self.fleet.start()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called and the client's sockets are closed (or closing failed)."""
        return self._closed and (self._closing is None or self._closing.done())

    def close(self) -> Job[None] | None:
        """Stop the watches and start closing the client's sockets on the I/O thread; returns at once (the
        job that closes them, None when the I/O loop is no longer running). Idempotent."""
        if self._closed:
            return self._closing
        self._closed = True
        self.fleet.stop()
        try:
            self._closing = self.bridge.submit(self._aclose(), name="gui.session.close")
        except BridgeStopped:
            self._closing = None
        return self._closing

    async def _aclose(self) -> None:
        try:
            await self.source.aclose()
        except Exception:
            logger.exception("closing the connection to %s failed", self.description)

    def wait_closed(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Block until :meth:`close` has finished, at most ``timeout`` seconds; False when it had not.
        Blocks the calling thread: only for a window that is closing for good, and tests."""
        return wait_all([self], timeout)


def wait_all(sessions: list[Session], timeout: float = CLOSE_TIMEOUT) -> bool:
    """Wait for every closed session's sockets to close, ``timeout`` seconds for all together; False (and
    a warning naming them) when some had not."""
    deadline = time.monotonic() + timeout
    late: list[str] = []
    for session in sessions:
        job = session._closing
        if job is None or job.done():
            continue
        try:
            job.result(max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            late.append(session.description)
        except concurrent.futures.CancelledError:
            pass
    if late:
        logger.warning("gave up waiting %.0fs for the connections to %s to close", timeout, ", ".join(late))
    return not late

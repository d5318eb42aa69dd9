"""One connection's live state (:class:`Session`); where to connect is ``gui.target.Target``.

A Session is one connection: the client, the :class:`~gui.fleet.CloudSource` of its watches and the
:class:`~gui.fleet.Fleet` of live tables, plus the camera feed (the client itself once it can stream
cameras). Switching servers closes one Session and opens another; the window rebuilds its pages on it.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject

from app.client import AsyncClient
from gui.bridge import AsyncBridge, BridgeStopped
from gui.camera import FrameFeed
from gui.fleet import CloudSource, Fleet, Source
from gui.target import Target

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0  # seconds the UI waits for a session's sockets to close


__all__ = ["CLOSE_TIMEOUT", "Session", "Target"]


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

    def close(self) -> None:
        """Stop the watches and close the client's sockets (waits up to :data:`CLOSE_TIMEOUT`)."""
        if self._closed:
            return
        self._closed = True
        self.fleet.stop()
        try:
            self.bridge.submit(self.source.aclose(), name="gui.session.close").result(CLOSE_TIMEOUT)
        except BridgeStopped:
            pass
        except Exception:
            logger.exception("closing the connection to %s failed", self.description)

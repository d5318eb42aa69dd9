"""A pod's log, followed: the stream is read on the I/O thread, lines reach the UI through a Mailbox.

``follow`` opens ``GET .../pods/NAME/log?follow=true&tailLines=500`` and keeps it open; each line is put
in a bounded :class:`~gui.bridge.Mailbox` (the newest :data:`MAX_LINES` are kept if the UI falls behind),
and the UI appends what it drains in one go, so a chatty pod costs one repaint per UI turn. Following
another pod (or :meth:`LogFollower.stop`) cancels the stream; state changes (following, ended, failed
with the server's reason) are a signal the log pane shows inline.

Deliberately not done: reopening by itself when the stream ends (a container that exited has nothing
more to say; the pane offers a reopen button), previous logs and timestamps.
"""

from __future__ import annotations

import logging
from typing import Literal

from PySide6.QtCore import QObject, Signal

from app.client import AsyncClient, ClientError
from gui.bridge import AsyncBridge, Job, Mailbox
from gui.errors import describe_error

logger = logging.getLogger(__name__)

MAX_LINES = 10_000  # lines kept by the pane and by the mailbox
TAIL_LINES = 500  # lines of history asked for when a stream opens

LogState = Literal["idle", "opening", "following", "ended", "failed"]


class LogFollower(QObject):
    """Follows one pod's log at a time; ``lines`` carries new lines, ``state_changed`` (state, reason)."""

    lines = Signal(list)
    state_changed = Signal(str, str)

    def __init__(
        self, bridge: AsyncBridge, client: AsyncClient | None, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self._bridge = bridge
        self._client = client
        self._job: Job[None] | None = None
        self._mailbox: Mailbox[str] | None = None
        self._generation = 0
        self.state: LogState = "idle"
        self.target: tuple[str, str] | None = None

    def follow(self, namespace: str, name: str, container: str | None = None) -> None:
        self.stop()
        if self._client is None:
            self._set_state(self._generation, "failed", "logs need a connection to the cloud")
            return
        self._generation += 1
        generation = self._generation
        self.target = (namespace, name)
        mailbox: Mailbox[str] = Mailbox(
            self._bridge, lambda: self._drain(mailbox), owner=self, maxlen=MAX_LINES
        )
        self._mailbox = mailbox
        self._set_state(generation, "opening", "")
        self._job = self._bridge.submit(
            self._read(self._client, namespace, name, container, mailbox, generation),
            name=f"gui.logs[{namespace}/{name}]",
            owner=self,
        )

    def stop(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self._job = None
        self._mailbox = None
        self.target = None
        self.state = "idle"

    def _drain(self, mailbox: Mailbox[str]) -> None:
        if mailbox is not self._mailbox:
            return  # a stream we stopped following
        lines = mailbox.drain()
        if lines:
            self.lines.emit(lines)

    def _set_state(self, generation: int, state: LogState, reason: str) -> None:
        if generation != self._generation:
            return
        self.state = state
        self.state_changed.emit(state, reason)

    async def _read(  # noqa: PLR0917 (one private call site, in order)
        self,
        client: AsyncClient,
        namespace: str,
        name: str,
        container: str | None,
        mailbox: Mailbox[str],
        generation: int,
    ) -> None:
        def post(state: LogState, reason: str = "") -> None:
            self._bridge.post(lambda: self._set_state(generation, state, reason), owner=self)

        try:
            async with client.logs(
                name, namespace, container=container, follow=True, tail_lines=TAIL_LINES
            ) as s:
                post("following")
                async for line in s:
                    mailbox.put(line)
        except ClientError as exc:
            logger.info("log of %s/%s: %s", namespace, name, exc)
            post("failed", describe_error(exc))
            return
        post("ended", "the stream ended: the container exited or the cloud closed it")

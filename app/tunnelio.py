"""The asyncio shell around :class:`app.tunnel.Channel`: feeds it frames from a WebSocket connection and
writes out what it produces. Used by both the cloud hub and the edge hub, so the two ends cannot drift.

The runner owns two loops for one connection: the reader (frames in, events handed to the application in
order, one batch at a time so the application can make a batch durable with one commit) and the writer
(woken by :meth:`ChannelRunner.kick` whenever something was queued, and by the channel's own resend
deadline). The runner returns when the connection closes, for whatever reason; reconnecting is the
caller's business.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

from app.tunnel import Channel, Event

log = logging.getLogger(__name__)

EventHandler = Callable[[list[Event]], Awaitable[None]]


class ChannelRunner:
    def __init__(self, ws: Connection, channel: Channel, handle: EventHandler, *, name: str) -> None:
        self.ws = ws
        self.channel = channel
        self.handle = handle
        self.name = name
        self._wake = asyncio.Event()

    def kick(self) -> None:
        """Something was queued on the channel: let the writer send it."""
        self._wake.set()

    async def run(self) -> None:
        """Until the connection closes or either loop fails; a failure is raised to the caller, which
        closes the connection (a writer that died must not leave a connection that only answers pings)."""
        reader = asyncio.create_task(self._reader(), name=f"{self.name}.receive")
        writer = asyncio.create_task(self._writer(), name=f"{self.name}.send")
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    async def _reader(self) -> None:
        try:
            async for frame in self.ws:
                self.channel.receive_data(frame)
                # Drain whatever else has already arrived so one commit covers the whole batch.
                events = self.channel.events_received()
                if events:
                    await self.handle(events)
                self.kick()
        except ConnectionClosed:
            pass

    async def _writer(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._wake.clear()
                next_due = self.channel.tick(loop.time())
                frames = self.channel.data_to_send()
                if frames:
                    for frame in frames:
                        await self.ws.send(frame)
                    continue
                timeout = None if next_due is None else max(0.0, next_due - loop.time())
                try:
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        except ConnectionClosed:
            pass

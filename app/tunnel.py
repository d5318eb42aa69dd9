"""The cloud-edge tunnel protocol, without I/O.

Like ``websockets.protocol``, this module never touches a socket or a clock of its own: the asyncio layer
(``cloudservice.hub`` on one side, ``edgeservice.core`` on the other) feeds it the frames it receives
with :meth:`Channel.receive_data`, takes what must go out with :meth:`Channel.data_to_send`, reads what
happened with :meth:`Channel.events_received`, and calls :meth:`Channel.tick` with the current monotonic
time so that resends happen. Tests drive two channels against each other and assert on messages.

Delivery (DESIGN.md, "Wire conventions"):

* A reliable message is queued under a key, normally the object's ``namespace/type/name``. While a message
  for a key waits unsent, a newer one for the same key replaces it: the receiver only ever needs the newest
  state of an object, never every intermediate one. Keys of ``None`` are never coalesced (the edge's
  outbox, where every status change must arrive).
* At most ``window`` reliable messages are in flight, and at most one per key, so that two versions of
  one object can never overtake each other even when one of them is resent.
* The receiver makes a message durable, then acknowledges it with a ``response`` whose ``parent_msg_id``
  is the message's id. Unacknowledged messages are resent after ``resend_after`` seconds, doubling up to
  ``resend_max``. Receivers are idempotent (by resourceVersion on the edge, by outbox sequence in the
  cloud), so a resend is always safe.
* A frame that is not an envelope, an unknown operation or an oversized frame is rejected alone: the
  channel answers with an ``error`` message, reports a :class:`FrameRejected` event for the log and carries
  on. The connection is not torn down for one bad frame.

What is deliberately not here: authentication (the hub checks the node's token or certificate before a
channel exists), the resync diff (the hub computes it from the store and the edge's inventory), and any
notion of the WebSocket framing itself, which the ``websockets`` library owns.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from app.envelope import GROUP_HUB, Message, decode_batch, encode_batch, from_dict
from app.errors import ProtocolError

log = logging.getLogger(__name__)

# 4 MiB: room for the largest object the API accepts (3 MiB, the apiserver's own request limit) plus the
# envelope; anything larger is a bug or an attack, and must not stall what is queued behind it.
DEFAULT_MAX_FRAME: Final = 4 << 20
DEFAULT_WINDOW: Final = 256
DEFAULT_RESEND_AFTER: Final = 5.0
DEFAULT_RESEND_MAX: Final = 60.0


@dataclass(frozen=True, slots=True)
class Delivered:
    """A message for the application. When ``message.sync`` is set, the application must call
    :meth:`Channel.ack` once the effect is durable."""

    message: Message


@dataclass(frozen=True, slots=True)
class Acked:
    """The peer acknowledged one of our reliable messages; ``reply`` is its response (or error)."""

    message: Message
    reply: Message


@dataclass(frozen=True, slots=True)
class Replied:
    """A ``response`` or ``error`` to a non-reliable request of ours (e.g. the hello)."""

    message: Message


@dataclass(frozen=True, slots=True)
class FrameRejected:
    """A frame we could not accept; already answered with an error message."""

    reason: str
    excerpt: str


Event = Delivered | Acked | Replied | FrameRejected


@dataclass(slots=True)
class _InFlight:
    key: str | None
    message: Message
    sent_at: float | None  # None until the first tick after sending: the channel has no clock of its own
    interval: float


class Channel:
    """One end of a tunnel connection. ``local`` is the ``route.source`` stamped on what we send."""

    def __init__(
        self,
        local: str,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        window: int = DEFAULT_WINDOW,
        resend_after: float = DEFAULT_RESEND_AFTER,
        resend_max: float = DEFAULT_RESEND_MAX,
    ) -> None:
        self.local = local
        self.max_frame = max_frame
        self.window = window
        self.resend_after = resend_after
        self.resend_max = resend_max
        self._queue: OrderedDict[object, tuple[str | None, Message]] = OrderedDict()
        self._unkeyed = 0
        self._inflight: dict[str, _InFlight] = {}
        self._unstamped: list[_InFlight] = []
        self._next_due: float | None = None
        self._inflight_keys: set[str] = set()
        self._out: list[str] = []
        self._events: list[Event] = []
        self.stats = {"sent": 0, "received": 0, "resent": 0, "rejected": 0, "coalesced": 0}

    # -- sending ---------------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Send a message that needs no acknowledgement (heartbeats, replies, acks)."""
        message.source = message.source or self.local
        self._emit(message)

    def send_reliable(self, message: Message, key: str | None) -> None:
        """Queue a message that the peer must acknowledge; see the module docstring for ``key``."""
        message.source = message.source or self.local
        message.sync = True
        if key is None:
            self._unkeyed += 1
            self._queue[("", self._unkeyed)] = (None, message)
        else:
            if key in self._queue:
                self.stats["coalesced"] += 1
                # Keep the queue position of the first write so no object starves behind a busy one.
            self._queue[key] = (key, message)
        self._pump()

    def ack(self, message: Message, content: Any = None) -> None:
        """Acknowledge a reliable message the application has made durable; ``content`` may tell the
        sender something about the result (the cloud returns the new resourceVersion of a status write)."""
        if message.sync:
            self._emit(message.reply("response", content, source=self.local))

    def reject(self, message: Message, reason: str) -> None:
        """Answer a message with an error; a reliable one counts as handled and will not be resent."""
        self._emit(message.reply("error", {"reason": reason}, source=self.local))

    def _emit(self, message: Message) -> None:
        self._out.append(message.encode())
        self.stats["sent"] += 1

    def _pump(self) -> None:
        """Move queued messages into flight, oldest first, skipping keys that already have one in flight.
        Stops at the first free window slot exhausted, so the cost is proportional to what is sent plus
        the blocked keys at the head of the queue, never to the queue's length."""
        if not self._queue or len(self._inflight) >= self.window:
            return
        taken: list[object] = []
        for qkey, (key, message) in self._queue.items():
            if len(self._inflight) >= self.window:
                break
            if key is not None and key in self._inflight_keys:
                continue
            taken.append(qkey)
            flight = _InFlight(key, message, None, self.resend_after)
            self._inflight[message.msg_id] = flight
            self._unstamped.append(flight)
            if key is not None:
                self._inflight_keys.add(key)
            self._emit(message)
        for qkey in taken:
            del self._queue[qkey]

    # -- receiving -------------------------------------------------------------------------------

    def receive_data(self, frame: str | bytes) -> None:
        try:
            items = decode_batch(frame, max_size=self.max_frame)
        except ProtocolError as exc:
            self._reject_frame(str(exc), frame)
            return
        for item in items:
            try:
                message = from_dict(item)
            except ProtocolError as exc:
                self._reject_frame(str(exc), frame)
                continue
            self._receive(message)

    def _reject_frame(self, reason: str, frame: str | bytes) -> None:
        self.stats["rejected"] += 1
        excerpt = frame[:120] if isinstance(frame, str) else frame[:120].decode("utf-8", "replace")
        self._events.append(FrameRejected(reason, excerpt))
        self._emit(Message("error", "", {"reason": reason}, source=self.local, group=GROUP_HUB))

    def _receive(self, message: Message) -> None:
        self.stats["received"] += 1
        if message.operation in ("response", "error") and message.parent_msg_id:
            flight = self._inflight.pop(message.parent_msg_id, None)
            if flight is not None:
                if flight.key is not None:
                    self._inflight_keys.discard(flight.key)
                if message.operation == "error":
                    log.warning(
                        "peer rejected %s %s: %s",
                        flight.message.operation,
                        flight.message.resource,
                        message.content,
                    )
                self._events.append(Acked(flight.message, message))
                self._pump()
                return
            self._events.append(Replied(message))
            return
        self._events.append(Delivered(message))

    def events_received(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[str]:
        """Frames to write, in order. What is ready is batched into as few frames as fit half the frame
        limit (the peer's limit is the same as ours), so a burst costs one WebSocket message, not one per
        envelope; a single envelope goes out as a plain object."""
        out, self._out = self._out, []
        if len(out) <= 1:
            return out
        frames: list[str] = []
        chunk: list[str] = []
        size = 0
        budget = self.max_frame // 2
        for encoded in out:
            if chunk and size + len(encoded) + 1 > budget:
                frames.append(encode_batch(chunk))
                chunk, size = [], 0
            chunk.append(encoded)
            size += len(encoded) + 1
        frames.append(encode_batch(chunk))
        return frames

    # -- time ------------------------------------------------------------------------------------

    def tick(self, now: float) -> float | None:
        """Resend what is overdue; returns the next time tick should be called (None: nothing waits).

        Cheap when nothing is due: messages sent since the last tick are stamped, and the in-flight set is
        only scanned once the earliest deadline has passed (an ack may have made that deadline stale, which
        costs one early scan, never a missed resend)."""
        for flight in self._unstamped:
            if flight.sent_at is None:
                flight.sent_at = now
                due = now + flight.interval
                self._next_due = due if self._next_due is None else min(self._next_due, due)
        self._unstamped.clear()
        if not self._inflight:
            self._next_due = None
            return None
        if self._next_due is not None and now < self._next_due:
            return self._next_due
        next_due: float | None = None
        for flight in self._inflight.values():
            if flight.sent_at is None:
                flight.sent_at = now
            due = flight.sent_at + flight.interval
            if due <= now:
                flight.sent_at = now
                flight.interval = min(flight.interval * 2, self.resend_max)
                self.stats["resent"] += 1
                self._emit(flight.message)
                due = now + flight.interval
            next_due = due if next_due is None else min(next_due, due)
        self._next_due = next_due
        return next_due

    # -- introspection ---------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        return len(self._inflight)


def hello(node: str, content: dict[str, Any]) -> Message:
    """The first message an edge sends on a new connection: its inventory and outbox position."""
    return Message("query", f"/node/{node}", content, source=node, group=GROUP_HUB)


def is_hello(message: Message) -> bool:
    return (
        message.group == GROUP_HUB and message.operation == "query" and message.resource.startswith("/node/")
    )

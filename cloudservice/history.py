"""The cloud's bounded telemetry history: the window summaries edges send, kept per device property.

Edges do not stream raw readings to the cloud. Their aggregator folds the readings of each device property
over a window and the device twin sends one summary per window through the outbox::

    {"window": {"start": ms, "end": ms}, "data": {prop: {"min", "max", "mean", "count", "last"}}}

:class:`History` keeps, per ``(namespace, device, property)``, a ring of the most recent ``max_points``
points ``{"start", "end", "min", "max", "mean", "count", "last"}`` in arrival order, which is what the UIs
chart. A point whose ``end`` is not newer than the last kept point of its property is dropped as stale:
after a reconnect an edge flushes its outbox, and the cloud may already hold some of those windows.

Validation is per property: one malformed entry (a missing or non-numeric field, ``min > max``, a count
below one, a window that ends before it starts) is rejected and counted, and the summary's other properties
are still kept. :meth:`History.add` returns an :class:`AddResult` with how many points were kept, how many
were stale and how many were rejected, so the caller (the hub) can log or count them.

Persistence. With a store, every kept point is also written to the store's telemetry table
(:meth:`~cloudservice.store.base.Store.write_telemetry`), one transaction per :meth:`History.add_many`
call (the hub calls it once per tunnel frame, so a burst of summaries costs one commit, not one each),
before the hub acknowledges the messages: a summary the edge saw acknowledged survives a cloud restart.
Each property's rows are pruned to about ``max_points`` as the ring turns over. The rings in memory are a
cache of the store, loaded per device on first use (:meth:`History.load`) and evicted least recently used
beyond ``max_devices``, so the cloud's memory does not grow with the fleet. If a write fails, the devices
it touched are evicted (reloaded from the store next time) and the error propagates: the hub then does
not acknowledge, and the edge sends the summaries again.

Memory. Each kept point is a slotted :class:`Point` plus its number objects: about 290 bytes on CPython
3.11 (an 88-byte object, three 28-byte ints for the window and count, four 24-byte floats, an 8-byte deque
slot; measured with tracemalloc). With the default 1000 points, a property costs about 300 KB at most
and a device with 8 properties about 2.4 MB. The points per property are bounded by ``max_points``, the
properties per device by ``max_properties`` (a runaway edge cannot grow one device without limit), and
the devices held in memory by ``max_devices`` when there is a store (without one, the history is only in
memory and nothing is evicted: the caller calls :meth:`History.forget` when a Device is deleted).

Deliberately not done: downsampling of old points into coarser windows, and locking (it is used from the
one asyncio loop of the cloud service; the awaits are only store reads and writes).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from app.resources import JSONObject
from cloudservice.store.base import Point, Store, TelemetryPoint

logger = logging.getLogger(__name__)

# A point per window: with 10 s windows, 1000 points are the last ~2.8 hours, enough for a trend chart.
DEFAULT_MAX_POINTS = 1000
# Properties one device may have in the history; a real device model has a handful to a few dozen.
DEFAULT_MAX_PROPERTIES = 256
# Devices whose rings stay in memory when there is a store to reload them from (about 2.4 MB each at most
# with 8 full properties; charts look at a few at a time).
DEFAULT_MAX_DEVICES = 256
# Property names longer than a Kubernetes name (253) are a bug on the edge, not a property.
_MAX_PROPERTY_NAME = 253


@dataclass(frozen=True, slots=True)
class AddResult:
    """What :meth:`History.add` did with a summary: points ``kept``, ``stale`` ones dropped (their window
    did not end after the last kept one: a resend), and malformed entries ``rejected``."""

    kept: int = 0
    stale: int = 0
    rejected: int = 0


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[float]:
    # bool is an int subclass but never a reading; NaN and infinities are not valid JSON numbers.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_window(summary: Any) -> tuple[int, int] | None:
    """The summary's ``(start, end)`` in ms, or None when the window is missing or malformed."""
    window = summary.get("window") if isinstance(summary, dict) else None
    if not isinstance(window, dict):
        return None
    start, end = window.get("start"), window.get("end")
    if not (_is_int(start) and _is_int(end)) or start < 0 or end < start:
        return None
    return start, end


def parse_point(start: int, end: int, entry: Any) -> Point | None:
    """One property's entry as a :class:`Point`, or None when it is malformed."""
    if not isinstance(entry, dict):
        return None
    lo, hi, mean, last, count = (entry.get(k) for k in ("min", "max", "mean", "last", "count"))
    if not (_is_number(lo) and _is_number(hi) and _is_number(mean) and _is_number(last)):
        return None
    if not _is_int(count) or count < 1 or lo > hi:
        return None
    return Point(start=start, end=end, min=lo, max=hi, mean=mean, count=count, last=last)


_Series = tuple[str, str, str]  # (namespace, device, property)


class History:
    """Bounded telemetry history per ``(namespace, device, property)``, kept in the store when one is
    given; see the module docs."""

    def __init__(
        self,
        max_points: int = DEFAULT_MAX_POINTS,
        *,
        store: Store | None = None,
        max_properties: int = DEFAULT_MAX_PROPERTIES,
        max_devices: int = DEFAULT_MAX_DEVICES,
    ) -> None:
        if max_points < 1:
            raise ValueError(f"max_points must be at least 1, not {max_points}")
        if max_properties < 1:
            raise ValueError(f"max_properties must be at least 1, not {max_properties}")
        if max_devices < 1:
            raise ValueError(f"max_devices must be at least 1, not {max_devices}")
        self.store = store
        self.max_points = max_points
        self.max_properties = max_properties
        self.max_devices = max_devices
        # A property's rows are pruned in the store once this many points went in since the last prune.
        self._prune_every = max(1, max_points // 10)
        self._devices: OrderedDict[tuple[str, str], dict[str, deque[Point]]] = OrderedDict()
        self._unsaved: list[TelemetryPoint] = []
        self._since_prune: dict[_Series, int] = {}

    # -- the store ------------------------------------------------------------------------------------

    async def load(self, namespace: str, device: str) -> None:
        """Make sure the device's points are in memory (read from the store on first use)."""
        key = (namespace, device)
        if key in self._devices:
            self._devices.move_to_end(key)
            return
        if self.store is None:
            return
        props: dict[str, deque[Point]] = {}
        for p in await self.store.telemetry(namespace, device):
            ring = props.get(p.property)
            if ring is None:
                ring = props[p.property] = deque(maxlen=self.max_points)
            ring.append(p.point)
        if key in self._devices:  # loaded by someone else while we awaited
            return
        self._devices[key] = props
        while len(self._devices) > self.max_devices:
            evicted, _ = self._devices.popitem(last=False)
            self._drop_counters(evicted)

    async def add_many(self, summaries: Sequence[tuple[str, str, JSONObject]]) -> list[AddResult]:
        """Add ``(namespace, device, summary)`` triples and persist what was kept in one transaction."""
        for namespace, device in dict.fromkeys((ns, dev) for ns, dev, _ in summaries):
            await self.load(namespace, device)
        results = [self.add(ns, dev, summary) for ns, dev, summary in summaries]
        await self.flush()
        return results

    async def flush(self) -> None:
        """Write the points kept since the last flush, and prune the properties that are due."""
        if self.store is None:
            self._unsaved.clear()
            return
        points, self._unsaved = self._unsaved, []
        due = [s for s, n in self._since_prune.items() if n >= self._prune_every]
        if not points and not due:
            return
        try:
            await self.store.write_telemetry(points, prune=due, keep=self.max_points)
        except Exception:
            # What is in memory is no longer what is stored: reload those devices next time.
            for key in {(p.namespace, p.device) for p in points}:
                self._devices.pop(key, None)
                self._drop_counters(key)
            raise
        for series in due:
            self._since_prune[series] = 0

    def _drop_counters(self, key: tuple[str, str]) -> None:
        for series in [s for s in self._since_prune if s[:2] == key]:
            del self._since_prune[series]

    # -- in memory ------------------------------------------------------------------------------------

    def add(self, namespace: str, device: str, summary: JSONObject) -> AddResult:
        """Keep the summary's points (in memory; :meth:`flush` persists them, :meth:`add_many` does
        both). A summary without a valid window is rejected whole (counted once per property entry, or
        once when ``data`` is not an object); otherwise each property is judged alone."""
        data = summary.get("data") if isinstance(summary, dict) else None
        window = parse_window(summary)
        if not isinstance(data, dict) or window is None:
            rejected = len(data) if isinstance(data, dict) and data else 1
            logger.warning(
                "history: rejected a summary with no valid window or data from device %s/%s",
                namespace,
                device,
            )
            return AddResult(rejected=rejected)
        start, end = window
        props = self._devices.get((namespace, device))
        kept = stale = rejected = 0
        for name, entry in data.items():
            point = parse_point(start, end, entry)
            if point is None or not isinstance(name, str) or not 0 < len(name) <= _MAX_PROPERTY_NAME:
                rejected += 1
                continue
            ring = props.get(name) if props is not None else None
            if ring is None:
                if props is not None and len(props) >= self.max_properties:
                    rejected += 1
                    continue
                if props is None:
                    props = self._devices[(namespace, device)] = {}
                ring = props[name] = deque(maxlen=self.max_points)
            if ring and ring[-1].end >= end:
                stale += 1
                continue
            ring.append(point)
            kept += 1
            if self.store is not None:
                self._unsaved.append(TelemetryPoint(namespace, device, name, point))
                if len(ring) == self.max_points:
                    series = (namespace, device, name)
                    self._since_prune[series] = self._since_prune.get(series, 0) + 1
        if rejected:
            logger.warning(
                "history: rejected %d malformed entries (or properties beyond %d) from device %s/%s",
                rejected,
                self.max_properties,
                namespace,
                device,
            )
        if stale:
            logger.debug("history: dropped %d stale points from device %s/%s", stale, namespace, device)
        return AddResult(kept=kept, stale=stale, rejected=rejected)

    def known(self, namespace: str, device: str) -> bool:
        """True when at least one point of the device is kept (in memory: :meth:`load` it first)."""
        return bool(self._devices.get((namespace, device)))

    def series(
        self, namespace: str, device: str, prop: str | None = None, since_ms: int | None = None
    ) -> dict[str, list[JSONObject]]:
        """The kept points per property, oldest first, properties sorted by name (:meth:`load` first).

        ``prop`` keeps only that property (an unknown one gives an empty mapping); ``since_ms`` keeps only
        points whose window ended after it, so a chart that polls with the last ``end`` it has gets only
        what is new. A property with no point left after the filter is still listed, with an empty list.
        """
        props = self._devices.get((namespace, device), {})
        names = sorted(props) if prop is None else ([prop] if prop in props else [])
        out: dict[str, list[JSONObject]] = {}
        for name in names:
            ring = props[name]
            if since_ms is None:
                points = list(ring)
            else:
                # Ends increase along the ring, so walk back from the newest and stop at the first old one.
                points = []
                for point in reversed(ring):
                    if point.end <= since_ms:
                        break
                    points.append(point)
                points.reverse()
            out[name] = [p.to_json() for p in points]
        return out

    async def forget(self, namespace: str, device: str) -> None:
        """Drop everything kept for the device (call when the Device is deleted). Unknown devices are fine."""
        self._devices.pop((namespace, device), None)
        self._drop_counters((namespace, device))
        self._unsaved = [p for p in self._unsaved if (p.namespace, p.device) != (namespace, device)]
        if self.store is not None:
            await self.store.forget_telemetry(namespace, device)

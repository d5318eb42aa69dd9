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

Memory. Each kept point is a slotted :class:`Point` plus its number objects: about 290 bytes on CPython
3.11 (an 88-byte object, three 28-byte ints for the window and count, four 24-byte floats, an 8-byte deque
slot; measured with tracemalloc). With the default 1000 points, a property costs about 300 KB at most
and a device with 8 properties about 2.4 MB. The points per property are bounded by ``max_points``, the
properties per device by ``max_properties`` (a runaway edge cannot grow one device without limit); the
number of devices is bounded by the store's Devices, provided the caller calls :meth:`History.forget`
when one is deleted.

Deliberately not done: persistence (the history lives in memory only, so a cloud restart starts empty;
storing it is a later step), downsampling of old points into coarser windows, and locking (it is used from
the one asyncio loop of the cloud service, and no method awaits).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, TypeGuard

from app.resources import JSONObject

logger = logging.getLogger(__name__)

# A point per window: with 10 s windows, 1000 points are the last ~2.8 hours, enough for a trend chart.
DEFAULT_MAX_POINTS = 1000
# Properties one device may have in the history; a real device model has a handful to a few dozen.
DEFAULT_MAX_PROPERTIES = 256
# Property names longer than a Kubernetes name (253) are a bug on the edge, not a property.
_MAX_PROPERTY_NAME = 253


@dataclass(frozen=True, slots=True)
class Point:
    """One window summary of one property. Times are epoch milliseconds; ``last`` is the window's last
    reading."""

    start: int
    end: int
    min: float
    max: float
    mean: float
    count: int
    last: float

    def to_json(self) -> JSONObject:
        return {
            "start": self.start,
            "end": self.end,
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "count": self.count,
            "last": self.last,
        }


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


class History:
    """Bounded in-memory telemetry history per ``(namespace, device, property)``; see the module docs."""

    def __init__(
        self, max_points: int = DEFAULT_MAX_POINTS, *, max_properties: int = DEFAULT_MAX_PROPERTIES
    ) -> None:
        if max_points < 1:
            raise ValueError(f"max_points must be at least 1, not {max_points}")
        if max_properties < 1:
            raise ValueError(f"max_properties must be at least 1, not {max_properties}")
        self.max_points = max_points
        self.max_properties = max_properties
        self._devices: dict[tuple[str, str], dict[str, deque[Point]]] = {}

    def add(self, namespace: str, device: str, summary: JSONObject) -> AddResult:
        """Keep the summary's points. A summary without a valid window is rejected whole (counted once per
        property entry, or once when ``data`` is not an object); otherwise each property is judged alone."""
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
        """True when at least one point of the device is kept."""
        return (namespace, device) in self._devices

    def series(
        self, namespace: str, device: str, prop: str | None = None, since_ms: int | None = None
    ) -> dict[str, list[JSONObject]]:
        """The kept points per property, oldest first, properties sorted by name.

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

    def forget(self, namespace: str, device: str) -> None:
        """Drop everything kept for the device (call when the Device is deleted). Unknown devices are fine."""
        self._devices.pop((namespace, device), None)

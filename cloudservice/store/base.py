"""The store contract every backend implements (SQLite embedded, PostgreSQL, later a real Kubernetes).

Semantics follow etcd as the Kubernetes API server uses it:

* One monotonic ``resourceVersion`` counter per store (etcd's revision). Every create, update and delete
  takes the next value; an object's ``metadata.resourceVersion`` is the revision of its last write, as a
  decimal string. A list carries the store revision at the time of the read.
* Writes are compare-and-swap on resourceVersion when the caller passes one (``Conflict`` otherwise).
* Every write produces a :class:`WatchEvent`; ``watch(since=N)`` replays events after revision N from the
  event log and then streams new ones, or raises ``Gone`` when N is older than the log keeps.
* ``cursor`` lets a caller make a write idempotent across crashes: the edge's outbox sequence number is
  stored in the same transaction as the status it carries, and a write whose sequence is not newer than
  the stored cursor is skipped (returns None). This is how "exactly once as far as the store can tell" is
  kept without a distributed transaction.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from app.resources import JSONObject, ResourceType

EventType = Literal["ADDED", "MODIFIED", "DELETED"]


class WatchEvent:
    """One change. ``object`` is the caller's own copy, decoded from ``raw`` (the stored JSON text) the
    first time it is read: a watcher that only relays the event (the API's plain watch) never pays for
    decoding it, which is what keeps fan-out to many watchers cheap."""

    __slots__ = ("_object", "raw", "resource", "revision", "type")

    def __init__(
        self,
        type: EventType,  # Kubernetes' field name
        resource: ResourceType,
        object: JSONObject | None = None,  # Kubernetes' field name
        revision: int = 0,
        *,
        raw: str = "",
    ) -> None:
        if object is None and not raw:
            raise ValueError("a WatchEvent needs an object or its raw JSON")
        self.type = type
        self.resource = resource
        self._object = object
        self.revision = revision
        self.raw = raw

    @property
    def object(self) -> JSONObject:
        if self._object is None:
            decoded: JSONObject = json.loads(self.raw)
            self._object = decoded
        return self._object

    def __repr__(self) -> str:
        return f"WatchEvent({self.type} {self.resource.plural} rev={self.revision})"


@dataclass(frozen=True, slots=True)
class Cursor:
    """An idempotency cursor written atomically with an object: ``name`` (e.g. ``edge-outbox/node-1``)
    must be strictly below ``value`` for the write to happen."""

    name: str
    value: int


class Watch(Protocol):
    """An event stream; ``aclose()`` ends it and frees its buffer (always call it, e.g. in ``finally``)."""

    def __aiter__(self) -> Watch: ...

    async def __anext__(self) -> WatchEvent: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Point:
    """One window summary of one device property. Times are epoch milliseconds; ``last`` is the window's
    last reading."""

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
class TelemetryPoint:
    """A :class:`Point` with the series it belongs to, as the telemetry history stores it. Not a
    Kubernetes object: it takes no revision and makes no watch event."""

    namespace: str
    device: str
    property: str
    point: Point


# A read-modify-write function: gets the current object (a deep copy), returns the new one, or None
# to leave it unchanged.
UpdateFn = Callable[[JSONObject], JSONObject | None]


class Store(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def revision(self) -> int:
        """The current store revision."""
        ...

    async def create(self, rt: ResourceType, obj: JSONObject) -> JSONObject:
        """Insert; fills uid, creationTimestamp, resourceVersion (and generation=1). AlreadyExists."""
        ...

    async def get(self, rt: ResourceType, namespace: str, name: str) -> JSONObject:
        """NotFound when absent. ``namespace`` is "" for cluster-scoped kinds."""
        ...

    async def list(self, rt: ResourceType, namespace: str | None = None) -> tuple[list[JSONObject], int]:
        """All objects of a kind (in one namespace, or all when None) and the revision of the read.
        Selectors are applied by the caller."""
        ...

    async def update(
        self, rt: ResourceType, obj: JSONObject, *, cursor: Cursor | None = None
    ) -> JSONObject | None:
        """Replace. If obj carries metadata.resourceVersion it must match (Conflict). uid and
        creationTimestamp are kept from the stored object. Returns None only when a cursor skipped it."""
        ...

    async def guaranteed_update(
        self, rt: ResourceType, namespace: str, name: str, fn: UpdateFn, *, cursor: Cursor | None = None
    ) -> JSONObject | None:
        """Read, apply fn, write with CAS, retrying on Conflict. Returns the stored object, the unchanged
        object when fn returned None, or None when the cursor skipped the write. NotFound when absent."""
        ...

    async def delete(
        self, rt: ResourceType, namespace: str, name: str, *, resource_version: str | None = None
    ) -> JSONObject:
        """Remove and return the last state (with the delete's revision as resourceVersion)."""
        ...

    async def read_cursor(self, name: str) -> int:
        """The stored value of a cursor, 0 when never written."""
        ...

    async def write_telemetry(
        self,
        points: Sequence[TelemetryPoint],
        *,
        prune: Sequence[tuple[str, str, str]] = (),
        keep: int = 0,
    ) -> None:
        """Append telemetry points in one transaction; for each ``(namespace, device, property)`` in
        ``prune``, keep only its ``keep`` newest points (by window end)."""
        ...

    async def telemetry(self, namespace: str, device: str) -> builtins.list[TelemetryPoint]:
        """Every kept point of a device, ordered by property, then window end."""
        ...

    async def forget_telemetry(self, namespace: str, device: str) -> None:
        """Drop every point of a device (it was deleted)."""
        ...

    def watch(self, rt: ResourceType | None, namespace: str | None = None, since: int | None = None) -> Watch:
        """Events after revision ``since`` (None: from now). ``rt`` None watches every kind (the
        controllers' informer). Raises Gone at the first iteration when ``since`` is too old."""
        ...

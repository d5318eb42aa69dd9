"""Live data for the whole window: one watch per kind feeding one table model per kind.

The pipeline, thread by thread:

* I/O thread (``gui.bridge``): one feed task per kind drains its :class:`Source`'s event stream (for the
  cloud, an ``app.client.Reflector``: list, watch, back off and relist by itself) and projects every object
  to a :class:`~gui.rows.Row` there, so the UI thread never sees JSON. Rows go into the kind's
  :class:`ChangeBuffer`, coalesced by key: a pod modified five times between two UI ticks is one change.
  A RESYNC replaces the buffer's content (what came before it is moot) and arrives ready to swap in:
  pre-sorted in the table's current order, keyed, counted (:class:`Resync`). That work runs in slices
  that step aside for the UI thread (``gui.bridge.UI_FIRST``: the two threads share one GIL).
* UI thread: :class:`Fleet` drains the buffers on a 10 Hz tick (a person cannot read a list that changes
  faster; a burst of 10,000 events costs one redraw per tick) with a time budget of 5 ms per turn of the
  event loop: a repaint of a full table costs ~8 ms on top, so a turn stays near 15 ms (60 Hz) and a
  larger backlog is worked off in further turns: a burst never freezes the window, it lands over a few
  frames (10,000 changes in well under a second). The Fleet also keeps what the overview counts (pods per
  phase, nodes per readiness, devices per state) up to date change by change, the pods-per-node column,
  and the node link changes it has seen (Ready -> Unknown is the cloud noticing a lost edge).

Memory: after a RESYNC of more than :data:`FREEZE_ABOVE` objects the collector's generations are frozen
(a full collection over 100,000 pods' objects is ~0.5 s of stall), and the rows a RESYNC replaced are
freed on the I/O thread in slices rather than all at once on the UI thread.

The connection state shown in the status bar is polled from the source on the tick (the reflectors
record it as they retry); a change is a signal.

Deliberately not done: watching one namespace only (the control room sees the fleet; filters narrow it)
and pausing the watches of hidden tables (the overview needs every kind anyway).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import heapq
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, Self

from PySide6.QtCore import QObject, QTimer, Signal

from app.client import AsyncClient, ClientError, Reflectors, WatchEvent
from app.query import Filter
from app.resources import JSONObject
from gui.bridge import UI_FIRST, AsyncBridge, BridgeStopped, Job
from gui.errors import describe_error
from gui.rows import KINDS, RESOURCES, SPECS, Key, Kind, Row, TableSpec, sort_key, with_pods
from gui.tablemodel import ResourceTableModel

logger = logging.getLogger(__name__)

TICK_MS = 100  # the UI tick: buffers drained, connection polled (10 Hz)
BUDGET_S = 0.005  # UI-thread time one turn may spend applying changes before yielding to painting
CHUNK = 32  # changes applied between two looks at the clock
AGE_EVERY = 10  # ticks between refreshes of the age columns (once a second)
RETRY_AFTER_FAILURE_S = 10.0  # a watch refused for good (401, 403) is tried again after this long
PROJECT_SLICE = 500  # objects projected between two steps aside for the UI thread (~3 ms of work)
SORT_SLICE = 2000  # rows sorted between two steps aside for the UI thread (~2 ms of work)
FILTER_SLICE = 2000  # rows filtered between two steps aside (a label selector: ~2 ms of work)
# After a RESYNC this large is applied, what exists moves to the collector's permanent generation (see
# Fleet._apply): a full collection over 100,000 pods' objects takes ~0.5 s and would stall the window.
FREEZE_ABOVE = 20_000
LINK_CHANGES_KEPT = 200

# offline: no server to talk to (the kubeconfig could not be used); the reason says why.
ConnState = Literal["connecting", "connected", "reconnecting", "unreachable", "failed", "offline"]


@dataclass(frozen=True, slots=True)
class Connection:
    """The link to the cloud as the status bar shows it: state and the reason when not connected."""

    state: ConnState
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "connected"


class EventStream(Protocol):
    def __aiter__(self) -> Self: ...

    async def __anext__(self) -> WatchEvent: ...

    async def aclose(self) -> None: ...


class Source(Protocol):
    """Where the tables' objects come from. ``client`` is the cloud's AsyncClient when there is one (the
    detail pane, the twin panel, the deploy page need it). ``connection`` may be called from any thread."""

    @property
    def description(self) -> str: ...

    @property
    def client(self) -> AsyncClient | None: ...

    def events(self, kind: Kind) -> EventStream: ...

    def connection(self) -> Connection: ...

    async def aclose(self) -> None: ...


class CloudSource:
    """The cloud through :class:`~app.client.AsyncClient`: one Reflector per kind, all namespaces."""

    def __init__(self, client: AsyncClient, description: str = "") -> None:
        self._client = client
        self._description = description or client.server
        self._reflectors = Reflectors(client)

    @property
    def description(self) -> str:
        return self._description

    @property
    def client(self) -> AsyncClient:
        return self._client

    def events(self, kind: Kind) -> EventStream:
        return self._reflectors.watch(kind, RESOURCES[kind])

    def connection(self) -> Connection:
        state, error = self._reflectors.state()
        return Connection(state, describe_error(error) if error is not None else "")

    async def aclose(self) -> None:
        await self._reflectors.aclose()
        await self._client.aclose()


class StaticSource:
    """Fixed objects, for tests, screenshots and benchmarks: each kind yields one RESYNC, then whatever
    :meth:`push` sends (from any thread). ``client`` is None: pages that need the cloud say so."""

    client: AsyncClient | None = None

    def __init__(
        self,
        objects: Mapping[Kind, Sequence[JSONObject]],
        *,
        description: str = "static",
        connection: Connection | None = None,
    ) -> None:
        self._description = description
        self.objects = {k: list(objects.get(k, ())) for k in KINDS}
        self.state = connection or Connection("connected")
        self._queues: dict[Kind, asyncio.Queue[WatchEvent]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def description(self) -> str:
        return self._description

    def events(self, kind: Kind) -> EventStream:
        self._loop = asyncio.get_running_loop()
        q: asyncio.Queue[WatchEvent] = asyncio.Queue()
        q.put_nowait(WatchEvent("RESYNC", {}, tuple(self.objects[kind])))
        self._queues[kind] = q
        return _QueueStream(q)

    def push(self, kind: Kind, *events: WatchEvent) -> None:
        """Send watch events to ``kind``'s feed (thread-safe)."""
        loop, q = self._loop, self._queues.get(kind)
        if loop is None or q is None:
            raise RuntimeError(f"the {kind} feed has not started")
        for ev in events:
            loop.call_soon_threadsafe(q.put_nowait, ev)

    def connection(self) -> Connection:
        return self.state

    async def aclose(self) -> None:
        return None


class _QueueStream:
    def __init__(self, q: asyncio.Queue[WatchEvent]) -> None:
        self._q = q

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> WatchEvent:
        return await self._q.get()

    async def aclose(self) -> None:
        return None


# -- the buffer between the threads -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resync:
    """A RESYNC made ready for the UI on the I/O thread: the rows sorted by ``sorted_by``, the same rows
    by key, and the counts the overview needs, so that the UI thread only swaps them in."""

    rows: list[Row]
    sorted_by: int
    by_key: dict[Key, Row]
    groups: Counter[str]
    per_node: Counter[str]


@dataclass(frozen=True, slots=True)
class Batch:
    """What the UI takes from a buffer: a RESYNC, or changes."""

    resync: Resync | None = None
    changes: Sequence[tuple[Key, Row | None]] = ()


async def _release(rows: dict[Key, Row]) -> None:
    """Drop ``rows`` (the only reference left) in slices, handing the GIL over between them."""
    while rows:
        for key in list(itertools.islice(rows, PROJECT_SLICE)):
            del rows[key]
        UI_FIRST.step_aside()
        await asyncio.sleep(0)


def _merge_runs(runs: list[list[Row]], key: Callable[[Row], Any]) -> list[Row]:
    """Sorted runs merged into one list, stepping aside for the UI thread between chunks."""
    if len(runs) <= 1:
        return runs[0] if runs else []
    rows: list[Row] = []
    merged = heapq.merge(*runs, key=key)
    while chunk := list(itertools.islice(merged, PROJECT_SLICE * 4)):
        rows.extend(chunk)
        UI_FIRST.step_aside()
    return rows


async def _sort_in_slices(rows: list[Row], key: Callable[[Row], Any]) -> list[Row]:
    """``sorted(rows, key=key)`` on the I/O thread, in slices that step aside for the UI thread (one
    ``list.sort`` of 100,000 rows holds the GIL for tens of milliseconds at a time)."""
    runs = []
    for i in range(0, len(rows), SORT_SLICE):
        runs.append(sorted(rows[i : i + SORT_SLICE], key=key))
        UI_FIRST.step_aside()
        await asyncio.sleep(0)
    return _merge_runs(runs, key)


async def _filter_in_slices(rows: list[Row], flt: Filter) -> list[Row]:
    """``flt.apply(rows)`` on the I/O thread, in slices that step aside for the UI thread."""
    kept: list[Row] = []
    for i in range(0, len(rows), FILTER_SLICE):
        kept.extend(flt.apply(rows[i : i + FILTER_SLICE]))
        UI_FIRST.step_aside()
        await asyncio.sleep(0)
    return kept


def prepare_resync(rows: list[Row], sorted_by: int) -> Resync:
    """The :class:`Resync` of ``rows`` (already sorted): runs on the I/O thread."""
    return Resync(
        rows,
        sorted_by,
        {r.key: r for r in rows},
        Counter(r.group for r in rows),
        Counter(r.node for r in rows if r.node),
    )


class ChangeBuffer:
    """One kind's rows on their way from the I/O thread to the UI thread, coalesced by key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._resync: Resync | None = None
        self._pending: dict[Key, Row | None] = {}

    def push_resync(self, resync: Resync) -> None:
        with self._lock:
            self._resync = resync
            self._pending.clear()

    def push(self, key: Key, row: Row | None) -> None:
        with self._lock:
            self._pending[key] = row

    def take(self, n: int) -> Batch | None:
        """The RESYNC if one is waiting, else up to ``n`` changes, oldest first; None when empty."""
        with self._lock:
            if self._resync is not None:
                resync, self._resync = self._resync, None
                return Batch(resync)
            if not self._pending:
                return None
            keys = list(itertools.islice(self._pending, n))
            return Batch(changes=[(k, self._pending.pop(k)) for k in keys])

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending) + (len(self._resync.rows) if self._resync is not None else 0)


# -- the fleet --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkChange:
    """A node's link seen changing: ``lost`` (Ready became Unknown/NotReady) or restored, and when."""

    at: float  # epoch seconds: the condition's transition time, or when the change was seen
    node: str
    lost: bool
    state: str  # the new readiness: Ready, NotReady, Unknown
    reason: str = ""


def _ready_reason(row: Row) -> str:
    status = row.raw.get("status")
    for c in (status.get("conditions") if isinstance(status, dict) else None) or []:
        if isinstance(c, dict) and c.get("type") == "Ready":
            return str(c.get("message") or c.get("reason") or "")
    return ""


class Fleet(QObject):
    """Every kind's table model, kept live from a :class:`Source` (see the module docstring)."""

    connection_changed = Signal(object)  # Connection
    updated = Signal(object)  # frozenset[Kind]: kinds that changed in this turn

    def __init__(self, bridge: AsyncBridge, source: Source, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.source = source
        self.models: dict[Kind, ResourceTableModel] = {k: ResourceTableModel(SPECS[k], self) for k in KINDS}
        for model in self.models.values():
            model.sorter = self._sort_elsewhere
            model.filterer = self._filter_elsewhere
        self.groups: dict[Kind, Counter[str]] = {k: Counter() for k in KINDS}
        self.pods_per_node: Counter[str] = Counter()
        self.link_changes: collections.deque[LinkChange] = collections.deque(maxlen=LINK_CHANGES_KEPT)
        self.connection = source.connection()
        self.last_update = 0.0  # epoch seconds of the last change applied
        self._buffers = {k: ChangeBuffer() for k in KINDS}
        self._dirty_nodes: set[str] = set()
        self._jobs: list[Job[None]] = []
        self._ticks = 0
        self._timer = QTimer(self)
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self._tick)
        self._pumping = False

    @property
    def client(self) -> AsyncClient | None:
        return self.source.client

    def start(self) -> None:
        for kind in KINDS:
            self._jobs.append(self.bridge.submit(self._feed(kind), name=f"gui.feed[{kind}]", owner=self))
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        for job in self._jobs:
            job.cancel()
        self._jobs.clear()

    def pending(self) -> int:
        """Changes received and not yet applied (for tests and the benchmark)."""
        return sum(len(b) for b in self._buffers.values())

    def loaded(self, kind: Kind) -> bool:
        return self.models[kind].loaded

    # -- I/O thread -----------------------------------------------------------------------------------

    async def _feed(self, kind: Kind) -> None:
        spec, buffer = SPECS[kind], self._buffers[kind]
        burst = 0
        while True:
            stream = self.source.events(kind)
            try:
                async for ev in stream:
                    try:
                        if ev.type == "RESYNC":
                            # Pre-sorted in the table's current order (an int read across threads;
                            # if it changes meanwhile, the UI sorts again).
                            column = self.models[kind].table.sort_column
                            buffer.push_resync(await self._prepare(spec, ev.items, column))
                        elif ev.type == "DELETED":
                            row = spec.project(ev.object)
                            buffer.push(row.key, None)
                        elif ev.type in ("ADDED", "MODIFIED"):
                            row = spec.project(ev.object)
                            buffer.push(row.key, row)
                            burst += 1
                            if burst % PROJECT_SLICE == 0:
                                UI_FIRST.step_aside()
                    except Exception:  # a projection bug must not end the feed: skip the object
                        logger.exception("cannot show a %s %s event", kind, ev.type)
            except ClientError as exc:
                logger.warning(
                    "the %s watch stopped: %s; retrying in %.0fs", kind, exc, RETRY_AFTER_FAILURE_S
                )
            finally:
                await stream.aclose()
            await asyncio.sleep(RETRY_AFTER_FAILURE_S)

    @staticmethod
    async def _prepare(spec: TableSpec, items: Sequence[JSONObject], column: int) -> Resync:
        """A RESYNC's objects projected, sorted, keyed and counted in slices, stepping aside for the UI
        thread between them (``gui.bridge.UI_FIRST``); the sorted slices are merged with ``heapq.merge``,
        which can be interrupted, unlike one ``list.sort`` of 100,000 rows whose merge phase holds the
        GIL for tens of milliseconds."""
        if len(items) >= FREEZE_ABOVE:
            gc.freeze()  # the decoded list is long-lived: collections during the projection skip it
        key = sort_key(spec, column)
        runs: list[list[Row]] = []
        for i in range(0, len(items), PROJECT_SLICE):
            run = [spec.project(o) for o in items[i : i + PROJECT_SLICE]]
            run.sort(key=key)
            runs.append(run)
            UI_FIRST.step_aside()
            await asyncio.sleep(0)  # and let the other feeds and streams run
        rows = _merge_runs(runs, key)
        by_key: dict[Key, Row] = {}
        groups: Counter[str] = Counter()
        per_node: Counter[str] = Counter()
        for i in range(0, len(rows), PROJECT_SLICE * 4):
            part = rows[i : i + PROJECT_SLICE * 4]
            by_key.update((r.key, r) for r in part)
            groups.update(r.group for r in part)
            per_node.update(r.node for r in part if r.node)
            UI_FIRST.step_aside()
        return Resync(rows, column, by_key, groups, per_node)

    # -- UI thread ------------------------------------------------------------------------------------

    def _sort_elsewhere(self, model: ResourceTableModel, column: int, descending: bool) -> None:
        """A large table's new sort order (and its filter's rows in it), prepared on the I/O thread
        (see ``gui.tablemodel``)."""
        ticket, rows = model.table.snapshot()
        key, flt = sort_key(model.spec, column), model.table.filter

        async def prepare() -> tuple[list[Row], list[Row]]:
            ordered = await _sort_in_slices(rows, key)
            return ordered, (await _filter_in_slices(ordered, flt) if not flt.empty else [])

        try:
            self.bridge.submit(
                prepare(),
                on_result=lambda out: model.finish_sort(ticket, column, descending, out[0], (flt, out[1])),
                owner=model,
                name=f"gui.sort[{model.spec.title}]",
            )
        except BridgeStopped:  # no I/O thread (closing): sort here, as a small table would
            model.finish_sort(ticket, column, descending, sorted(rows, key=key))

    def _filter_elsewhere(self, model: ResourceTableModel, flt: Filter) -> None:
        """A large table's filter, applied on the I/O thread (see ``gui.tablemodel``)."""
        ticket, rows = model.table.snapshot()
        try:
            self.bridge.submit(
                _filter_in_slices(rows, flt),
                on_result=lambda kept: model.finish_filter(ticket, flt, kept),
                owner=model,
                name=f"gui.filter[{model.spec.title}]",
            )
        except BridgeStopped:
            model.finish_filter(ticket, flt, flt.apply(rows))

    def _tick(self) -> None:
        self._ticks += 1
        if self._ticks % AGE_EVERY == 0:
            now = time.time()
            for model in self.models.values():
                model.tick_ages(now)
        conn = self.source.connection()
        if conn != self.connection:
            before, self.connection = self.connection, conn
            logger.info("connection %s -> %s %s", before.state, conn.state, conn.reason)
            self.connection_changed.emit(conn)
        if not self._pumping:
            self.pump()

    def pump(self, budget: float = BUDGET_S) -> None:
        """Apply buffered changes for up to ``budget`` seconds; schedule another turn if some are left."""
        with UI_FIRST:
            self._pump(budget)

    def _pump(self, budget: float) -> None:
        deadline = time.perf_counter() + budget
        changed: set[Kind] = set()
        out_of_time = False
        # Start with a different kind each turn, so a backlog of one kind cannot starve the others.
        start = self._ticks % len(KINDS)
        for kind in KINDS[start:] + KINDS[:start]:
            buffer = self._buffers[kind]
            while not out_of_time:
                batch = buffer.take(CHUNK)
                if batch is None:
                    break
                self._apply(kind, batch)
                changed.add(kind)
                out_of_time = time.perf_counter() > deadline
            if out_of_time:
                break
        more = out_of_time and self.pending() > 0
        if self._dirty_nodes:
            self._refresh_node_pods()
            changed.add("nodes")
        if changed:
            self.last_update = time.time()
            self.updated.emit(frozenset(changed))
        self._pumping = more
        if more:
            QTimer.singleShot(0, self._continue)

    def _continue(self) -> None:
        self.pump()

    def _apply(self, kind: Kind, batch: Batch) -> None:
        model = self.models[kind]
        if batch.resync is not None:
            resync = batch.resync
            rows, by_key = resync.rows, resync.by_key
            if kind == "nodes":
                before = model.table.rows
                rows = [with_pods(r, self.pods_per_node[r.name]) for r in rows]
                by_key = {r.key: r for r in rows}
                for r in rows:
                    self._note_link(before.get(r.key), r)
            self.groups[kind] = resync.groups
            if kind == "pods":
                self._dirty_nodes.update(self.pods_per_node)
                self.pods_per_node = resync.per_node
                self._dirty_nodes.update(self.pods_per_node)
            previous = model.reset(rows, presorted=resync.sorted_by == model.table.sort_column, by_key=by_key)
            self._bury(previous)
            if len(rows) >= FREEZE_ABOVE:
                # O(1). Objects freed later are still freed (reference counting); only reference cycles
                # among them would linger, and rows and JSON objects have none.
                gc.freeze()
            return
        changes = list(batch.changes)
        table = model.table
        groups = self.groups[kind]
        for i, (key, new) in enumerate(changes):
            old = table.rows.get(key)
            if old is not None:
                groups[old.group] -= 1
            if new is not None:
                groups[new.group] += 1
            if kind == "pods":
                if old is not None and old.node:
                    self.pods_per_node[old.node] -= 1
                    self._dirty_nodes.add(old.node)
                if new is not None and new.node:
                    self.pods_per_node[new.node] += 1
                    self._dirty_nodes.add(new.node)
            elif kind == "nodes" and new is not None:
                counted = with_pods(new, self.pods_per_node[new.name])
                changes[i] = (key, counted)
                self._note_link(old, counted)
        model.apply(changes)

    def _bury(self, rows: dict[Key, Row]) -> None:
        """Free the rows a RESYNC replaced on the I/O thread, a slice at a time: dropping 100,000 rows
        and the JSON objects only they hold at once is ~100 ms of deallocation with the GIL held."""
        if len(rows) < FREEZE_ABOVE or not self.bridge.running:
            return
        self.bridge.submit(_release(rows), name="gui.release")

    def _refresh_node_pods(self) -> None:
        model = self.models["nodes"]
        changes: list[tuple[Key, Row | None]] = []
        for name in self._dirty_nodes:
            row = model.get(("", name))
            if row is not None:
                fresh = with_pods(row, self.pods_per_node[name])
                if fresh is not row:
                    changes.append((row.key, fresh))
        self._dirty_nodes.clear()
        model.apply(changes)

    def _note_link(self, old: Row | None, new: Row) -> None:
        if old is None or old.group == new.group:
            return
        at = new.since if new.since > 0 else time.time()
        lost = new.group != "Ready"
        self.link_changes.appendleft(
            LinkChange(at, new.name, lost, new.group, _ready_reason(new) if lost else "")
        )

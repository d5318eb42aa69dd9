"""The tables' data, without Qt: rows projected from objects, the filter, and a sorted, filtered index.

* One :class:`Row` per object, projected once (on the I/O thread, see ``gui.fleet``) by the kind's
  ``project_*`` function: display cells, a sortable value per column, the lower-cased text the filter
  searches, labels, and what the overview counts (``group``). Pods are projected flat, without the typed
  views of ``app.clientmodels``: a relist of 100,000 pods projects every one, and the flat code is several
  times faster. Age columns keep the epoch time and are formatted when painted, so time passing never
  re-projects a row.
* :func:`parse_filter`: a case-insensitive regex (a plain word is a substring test) plus an optional
  ``-l k=v,k2!=v,k3,!k4`` label selector, the same language as the TUI's filter.
* :class:`RowIndex`: every row in sort order (``order``) and the rows the filter keeps (``visible``), kept
  sorted under changes by bisection, so one MODIFIED pod among 100,000 costs a binary search, not a sort.
  A change that keeps its row's place is replaced in place (one ``changed`` range for a whole batch); a
  row that moves, appears or goes is removed and inserted at its new place, each step announced through
  :class:`IndexHooks` *before and after* the list changes, which is what ``QAbstractItemModel``'s
  ``beginInsertRows``/``endInsertRows`` need. Descending order is the ascending list read backwards, so
  flipping the order costs nothing.

Deliberately not done: natural ("web-9" before "web-10") ordering, server-side filtering (the cloud serves
whole lists; filtering 100,000 rows here takes milliseconds) and sorting by a column whose value is not in
the row (the nodes' PODS column is kept in the row and re-projected when the pod count changes).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from app.clientmodels import node_roles, pod_row
from app.describe import NO_TIME, epoch, involved
from app.query import NO_FILTER, Filter
from app.resources import DEPLOYMENTS, DEVICES, EVENTS, NODES, PODS, JSONObject, ResourceType
from app.twinview import twin_summary

Kind = Literal["nodes", "pods", "deploy", "devices", "events"]
KINDS: tuple[Kind, ...] = ("nodes", "pods", "deploy", "devices", "events")
RESOURCES: dict[Kind, ResourceType] = {
    "nodes": NODES,
    "pods": PODS,
    "deploy": DEPLOYMENTS,
    "devices": DEVICES,
    "events": EVENTS,
}
Key = tuple[str, str]
CAMERA_PROTOCOL = "camera"


# -- rows -------------------------------------------------------------------------------------------------

ColumnKind = Literal["text", "number", "age"]


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: ``text`` and ``number`` cells are projected; ``age`` cells show the time since the
    row's value (epoch seconds) when painted. ``width`` is the initial width in pixels."""

    title: str
    kind: ColumnKind = "text"
    width: int = 120
    tip: str = ""


@dataclass(frozen=True, slots=True, eq=False)
class Row:
    key: Key
    cells: tuple[str, ...]  # display text per column ("" for age columns)
    values: tuple[Any, ...]  # sort value per column: str, int, or epoch seconds (age; NO_TIME if none)
    text: str  # the lower-cased cells joined by spaces: what the filter searches
    labels: Mapping[str, str]
    raw: JSONObject = field(repr=False)
    node: str = ""  # the node the object runs on (pods, devices) or is (nodes)
    group: str = ""  # what the overview counts: pod phase, node readiness, device state, event type
    tone: str = ""  # "ok", "warn", "bad" or "": the row's colour
    since: float = NO_TIME  # nodes: when Ready last changed; events: last seen (epoch seconds)

    @property
    def namespace(self) -> str:
        return self.key[0]

    @property
    def name(self) -> str:
        return self.key[1]


def _d(value: Any) -> JSONObject:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _labels(m: JSONObject) -> dict[str, str]:
    labels = m.get("labels")
    if not isinstance(labels, dict):
        return {}
    return {str(k): str(v) for k, v in labels.items()}


def _make(
    key: Key,
    cells: Sequence[str],
    values: Sequence[Any],
    labels: Mapping[str, str],
    raw: JSONObject,
    *,
    node: str = "",
    group: str = "",
    tone: str = "",
    since: float = NO_TIME,
) -> Row:
    text = " ".join(c for c in cells if c).lower().replace("\n", " ")
    return Row(key, tuple(cells), tuple(values), text, labels, raw, node, group, tone, since)


POD_PHASES = ("Running", "Pending", "Succeeded", "Failed", "Unknown")


def project_pod(obj: JSONObject) -> Row:
    """A pod's row, with kubectl's READY / STATUS / RESTARTS (``app.clientmodels.pod_row``)."""
    m, spec, status = _d(obj.get("metadata")), _d(obj.get("spec")), _d(obj.get("status"))
    ns, name = str(m.get("namespace") or ""), str(m.get("name") or "")
    node = str(spec.get("nodeName") or "")
    ready, total, restarts, shown, tone = pod_row(m, spec, status)
    phase = str(status.get("phase") or "Pending")
    created = epoch(m.get("creationTimestamp"))
    ip = str(status.get("podIP") or "")
    ready_text = f"{ready}/{total}"
    node_text = node or "<none>"
    return Row(
        (ns, name),
        (ns, name, ready_text, shown, str(restarts), node_text, ip, ""),
        (ns, name, ready_text, shown, restarts, node_text, ip, created),
        f"{ns} {name} {ready_text} {shown} {restarts} {node_text} {ip}".lower(),
        _labels(m),
        obj,
        node,
        phase if phase in POD_PHASES else "Unknown",
        tone,
    )


NODE_GROUPS = ("Ready", "NotReady", "Unknown")


def project_node(obj: JSONObject, pods: int = 0) -> Row:
    """A node's row. ``group`` is the Ready condition (``Ready``, ``NotReady`` or ``Unknown``: the cloud
    sets Unknown when the edge stopped reporting, i.e. its link is down); ``since`` is when it last
    changed. ``pods`` is how many pods are bound to it (see :func:`with_pods`)."""
    m, spec, status = _d(obj.get("metadata")), _d(obj.get("spec")), _d(obj.get("status"))
    name = str(m.get("name") or "")
    ready, heartbeat, since = "Unknown", NO_TIME, NO_TIME
    for cond in _l(status.get("conditions")):
        c = _d(cond)
        if c.get("type") == "Ready":
            ready = {"True": "Ready", "False": "NotReady"}.get(str(c.get("status")), "Unknown")
            heartbeat = epoch(c.get("lastHeartbeatTime"))
            since = epoch(c.get("lastTransitionTime"))
            break
    shown = "Ready" if ready == "Ready" else "NotReady"
    if spec.get("unschedulable"):
        shown += ",SchedulingDisabled"
    labels = _labels(m)
    capacity = _d(status.get("capacity"))
    ip = next(
        (
            str(_d(a).get("address") or "")
            for a in _l(status.get("addresses"))
            if _d(a).get("type") == "InternalIP"
        ),
        "",
    )
    version = str(_d(status.get("nodeInfo")).get("kubeletVersion") or "")
    cpu, memory = str(capacity.get("cpu") or ""), str(capacity.get("memory") or "")
    roles = node_roles(labels)
    return _make(
        ("", name),
        (name, shown, roles, str(pods), cpu, memory, ip, version, "", ""),
        (name, shown, roles, pods, cpu, memory, ip, version, heartbeat, epoch(m.get("creationTimestamp"))),
        labels,
        obj,
        node=name,
        group=ready,
        # Unknown (the cloud lost the edge) is worse than NotReady (the edge says it is not ready).
        tone={"Ready": "ok", "NotReady": "warn"}.get(ready, "bad"),
        since=since,
    )


def with_pods(row: Row, pods: int) -> Row:
    """The node row with its PODS cell set to ``pods`` (the same row when it already says so)."""
    if row.values[3] == pods:
        return row
    cells, values = list(row.cells), list(row.values)
    cells[3], values[3] = str(pods), pods
    return replace(row, cells=tuple(cells), values=tuple(values))


def _images(template: JSONObject) -> str:
    containers = _l(_d(template.get("spec")).get("containers"))
    return ", ".join(str(_d(c).get("image") or "") for c in containers)


def project_deployment(obj: JSONObject) -> Row:
    m, spec, status = _d(obj.get("metadata")), _d(obj.get("spec")), _d(obj.get("status"))
    ns, name = str(m.get("namespace") or ""), str(m.get("name") or "")
    replicas = spec.get("replicas")
    desired = replicas if isinstance(replicas, int) else 1

    def count(key: str) -> int:
        value = status.get(key)
        return value if isinstance(value, int) else 0

    ready, updated, available = count("readyReplicas"), count("updatedReplicas"), count("availableReplicas")
    generation = m.get("generation")
    observed = status.get("observedGeneration")
    caught_up = not isinstance(generation, int) or (isinstance(observed, int) and observed >= generation)
    done = caught_up and updated == desired and available == desired and count("replicas") == desired
    images = _images(_d(spec.get("template")))
    return _make(
        (ns, name),
        (ns, name, f"{ready}/{desired}", str(updated), str(available), images, ""),
        (ns, name, ready - desired, updated, available, images, epoch(m.get("creationTimestamp"))),
        _labels(m),
        obj,
        group="done" if done else "progressing",
        tone="ok" if done else "warn",
    )


def protocol_of(obj: JSONObject) -> str:
    """A Device's ``spec.protocol.protocolName`` ("" when absent)."""
    return str(_d(_d(obj.get("spec")).get("protocol")).get("protocolName") or "")


DEVICE_GROUPS = ("online", "offline", "unknown")


def project_device(obj: JSONObject) -> Row:
    m, spec, status = _d(obj.get("metadata")), _d(obj.get("spec")), _d(obj.get("status"))
    ns, name = str(m.get("namespace") or ""), str(m.get("name") or "")
    node = str(spec.get("nodeName") or "")
    state = str(status.get("state") or "unknown").lower()
    model = str(_d(spec.get("deviceModelRef")).get("name") or "")
    protocol = protocol_of(obj)
    summary = twin_summary(obj)
    node_text = node or "<none>"
    return _make(
        (ns, name),
        (ns, name, model, protocol, node_text, state, summary, ""),
        (ns, name, model, protocol, node_text, state, summary, epoch(m.get("creationTimestamp"))),
        _labels(m),
        obj,
        node=node,
        group=state if state in DEVICE_GROUPS else "unknown",
        tone={"online": "ok", "offline": "bad"}.get(state, "warn"),
        since=epoch(status.get("lastOnlineTime")),
    )


def event_time(obj: JSONObject) -> float:
    m = _d(obj.get("metadata"))
    for value in (obj.get("lastTimestamp"), obj.get("eventTime"), obj.get("firstTimestamp")):
        t = epoch(value)
        if t != NO_TIME:
            return t
    return epoch(m.get("creationTimestamp"))


def project_event(obj: JSONObject) -> Row:
    m = _d(obj.get("metadata"))
    ns, name = str(m.get("namespace") or ""), str(m.get("name") or "")
    kind, _, inv_name = involved(obj)
    what = f"{kind.lower()}/{inv_name}" if kind else inv_name
    type_ = str(obj.get("type") or "Normal")
    reason = str(obj.get("reason") or "")
    message = " ".join(str(obj.get("message") or "").split())
    count = obj.get("count")
    n = count if isinstance(count, int) else 1
    seen = event_time(obj)
    return _make(
        (ns, name),
        ("", type_, reason, what, message, ns, str(n)),
        (seen, type_, reason, what, message, ns, n),
        _labels(m),
        obj,
        node=str(_d(obj.get("source")).get("host") or ""),
        group=type_,
        tone="warn" if type_ == "Warning" else "",
        since=seen,
    )


@dataclass(frozen=True, slots=True)
class TableSpec:
    """One kind's table: its columns, projection and default order (``sort_column`` ascending)."""

    kind: Kind
    title: str
    columns: tuple[Column, ...]
    project: Callable[[JSONObject], Row]
    sort_column: int = 0
    status_column: int = -1  # the column coloured by the row's tone


_AGE = Column("AGE", "age", 55, "time since the object was created")

SPECS: dict[Kind, TableSpec] = {
    "nodes": TableSpec(
        "nodes",
        "Nodes",
        (
            Column("NAME", width=150),
            Column("STATUS", width=90),
            Column("ROLES", width=60),
            Column("PODS", "number", 50, "pods bound to the node"),
            Column("CPU", width=45),
            Column("MEMORY", width=95),
            Column("INTERNAL-IP", width=95),
            Column("VERSION", width=130),
            Column("HEARTBEAT", "age", 85, "time since the cloud last heard from the node"),
            _AGE,
        ),
        project_node,
        status_column=1,
    ),
    "pods": TableSpec(
        "pods",
        "Pods",
        (
            Column("NAMESPACE", width=100),
            Column("NAME", width=190),
            Column("READY", width=50),
            Column("STATUS", width=125),
            Column("RESTARTS", "number", 70),
            Column("NODE", width=90),
            Column("IP", width=90),
            _AGE,
        ),
        project_pod,
        status_column=3,
    ),
    "deploy": TableSpec(
        "deploy",
        "Deployments",
        (
            Column("NAMESPACE", width=100),
            Column("NAME", width=160),
            Column("READY", width=55, tip="ready / desired replicas"),
            Column("UP-TO-DATE", "number", 85),
            Column("AVAILABLE", "number", 80),
            Column("IMAGES", width=190),
            _AGE,
        ),
        project_deployment,
        status_column=2,
    ),
    "devices": TableSpec(
        "devices",
        "Devices",
        (
            Column("NAMESPACE", width=100),
            Column("NAME", width=130),
            Column("MODEL", width=100),
            Column("PROTOCOL", width=75),
            Column("NODE", width=75),
            Column("STATE", width=60),
            Column("TWIN", width=190, tip="desired values synced; reported -> desired where not"),
            _AGE,
        ),
        project_device,
        status_column=5,
    ),
    "events": TableSpec(
        "events",
        "Events",
        (
            Column("LAST SEEN", "age", 90),
            Column("TYPE", width=65),
            Column("REASON", width=115),
            Column("OBJECT", width=170),
            Column("MESSAGE", width=330),
            Column("NAMESPACE", width=100),
            Column("COUNT", "number", 55),
        ),
        project_event,
        status_column=1,
    ),
}


def sort_key(spec: TableSpec, column: int) -> Callable[[Row], tuple[Any, Key]]:
    """The ascending order of ``column``: its value, then (namespace, name). Age columns put the newest
    first (the smallest age), as a person reading an AGE column expects."""
    if not 0 <= column < len(spec.columns):
        column = spec.sort_column
    if spec.columns[column].kind == "age":
        return lambda r: (-r.values[column], r.key)
    return lambda r: (r.values[column], r.key)


def row_key(row: Row) -> Key:
    return row.key


# -- filter -----------------------------------------------------------------------------------------------

# -- the sorted, filtered index ---------------------------------------------------------------------------


class IndexHooks(Protocol):
    """What :class:`RowIndex` announces; positions are those of the view (descending order applied)."""

    def begin_insert(self, position: int) -> None: ...

    def end_insert(self) -> None: ...

    def begin_remove(self, position: int) -> None: ...

    def end_remove(self) -> None: ...

    def changed(self, first: int, last: int) -> None: ...


class SortedRows:
    """Rows kept in order by ``key``, as a list of chunks (the idea of ``sortedcontainers.SortedList``):
    inserting or removing one row among 100,000 moves a chunk of about :data:`CHUNK_LOAD` pointers, not
    the whole list (a plain ``list.insert`` costs ~40 us there, this a few), and reading by position is a
    bisection over the chunks' offsets."""

    def __init__(self, key: Callable[[Row], Any], rows: Iterable[Row] = ()) -> None:
        self._keyf = key
        ordered = list(rows)  # already sorted by ``key``
        self._chunks: list[list[Row]] = [
            ordered[i : i + CHUNK_LOAD] for i in range(0, len(ordered), CHUNK_LOAD)
        ]
        self._maxes: list[Any] = [key(c[-1]) for c in self._chunks]
        self._offsets: list[int] | None = None
        self._len = len(ordered)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[Row]:
        for chunk in self._chunks:
            yield from chunk

    def flat(self) -> list[Row]:
        """Every row in order, as one list (a copy of the pointers: ~1 ms at 100,000 rows)."""
        return list(itertools.chain.from_iterable(self._chunks))

    def _starts(self) -> list[int]:
        if self._offsets is None:
            self._offsets = [0, *itertools.accumulate(map(len, self._chunks))][:-1]
        return self._offsets

    def __getitem__(self, position: int) -> Row:
        starts = self._starts()
        i = bisect.bisect_right(starts, position) - 1
        return self._chunks[i][position - starts[i]]

    def _locate(self, k: Any) -> tuple[int, int]:
        """(chunk, offset in it) of the first row whose key is >= ``k`` (may be one past a chunk's end)."""
        i = bisect.bisect_left(self._maxes, k)
        if i == len(self._chunks):
            i -= 1
            return (i, len(self._chunks[i])) if i >= 0 else (0, 0)
        return i, bisect.bisect_left(self._chunks[i], k, key=self._keyf)

    def find(self, row: Row) -> int | None:
        """The position of the row with ``row``'s key, found by ``row``'s sort key; None if absent."""
        if not self._chunks:
            return None
        i, j = self._locate(self._keyf(row))
        chunk = self._chunks[i]
        if j < len(chunk) and chunk[j].key == row.key:
            return self._starts()[i] + j
        return None

    def insertion_point(self, row: Row) -> int:
        if not self._chunks:
            return 0
        i, j = self._locate(self._keyf(row))
        return self._starts()[i] + j

    def insert(self, row: Row) -> None:
        k = self._keyf(row)
        if not self._chunks:
            self._chunks, self._maxes = [[row]], [k]
        else:
            i, j = self._locate(k)
            chunk = self._chunks[i]
            chunk.insert(j, row)
            if j == len(chunk) - 1:
                self._maxes[i] = k
            if len(chunk) > 2 * CHUNK_LOAD:
                half = len(chunk) // 2
                self._chunks[i : i + 1] = [chunk[:half], chunk[half:]]
                self._maxes[i : i + 1] = [self._keyf(chunk[half - 1]), self._maxes[i]]
        self._len += 1
        self._offsets = None

    def pop(self, position: int) -> Row:
        starts = self._starts()
        i = bisect.bisect_right(starts, position) - 1
        chunk = self._chunks[i]
        row = chunk.pop(position - starts[i])
        if not chunk:
            del self._chunks[i], self._maxes[i]
        elif position - starts[i] == len(chunk):
            self._maxes[i] = self._keyf(chunk[-1])
        self._len -= 1
        self._offsets = None
        return row

    def replace(self, position: int, row: Row) -> None:
        """Put ``row`` at ``position`` (its sort key must equal the one it replaces)."""
        starts = self._starts()
        i = bisect.bisect_right(starts, position) - 1
        self._chunks[i][position - starts[i]] = row


# Rows per chunk of a SortedRows (a chunk splits at twice this): inserting moves up to 4,000 pointers
# (~2 us) and the chunks' offsets, rebuilt after a change, are a sum over 50 chunks at 100,000 rows.
CHUNK_LOAD = 2000


def _bring_up_to_date(
    rows: SortedRows, touched: Mapping[Key, Row | None], now: Mapping[Key, Row], flt: Filter | None
) -> None:
    """``rows`` was made from a snapshot: replace the snapshot's version of each ``touched`` key by the
    current one (or none), keeping only rows ``flt`` matches when there is a filter."""
    for k, old in touched.items():
        if old is not None and (flt is None or flt.matches(old)):
            i = rows.find(old)
            if i is not None:
                rows.pop(i)
        new = now.get(k)
        if new is not None and (flt is None or flt.matches(new)):
            rows.insert(new)


class RowIndex:
    """Rows by key, in sort order, and the filtered subset: see the module docstring."""

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self.rows: dict[Key, Row] = {}
        self.sort_column = spec.sort_column
        self.descending = False
        self.filter = NO_FILTER
        self._key = sort_key(spec, self.sort_column)
        self._order = SortedRows(self._key)
        self._visible = self._order
        # Snapshots being sorted or filtered elsewhere (see snapshot), by ticket: per key changed since,
        # the row the snapshot holds (None: the key was not there).
        self._ticket = 0
        self._pending: dict[int, dict[Key, Row | None]] = {}

    # -- reading --------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._visible)

    def at(self, position: int) -> Row:
        """The row shown at ``position``."""
        if self.descending:
            return self._visible[len(self._visible) - 1 - position]
        return self._visible[position]

    def visible(self) -> list[Row]:
        """The rows shown, in view order (a copy)."""
        rows = list(self._visible)
        return rows[::-1] if self.descending else rows

    def position(self, key: Key) -> int | None:
        """Where the row of ``key`` is shown, or None (unknown, or filtered out)."""
        row = self.rows.get(key)
        if row is None:
            return None
        i = self._visible.find(row)
        if i is None:
            return None
        return len(self._visible) - 1 - i if self.descending else i

    @property
    def filtered(self) -> bool:
        return self._visible is not self._order

    # -- changing -------------------------------------------------------------------------------------

    def reset(
        self, rows: Iterable[Row], *, presorted: bool = False, by_key: dict[Key, Row] | None = None
    ) -> dict[Key, Row]:
        """Replace every row (a RESYNC). ``presorted``: ``rows`` are already in this index's order;
        ``by_key``: the same rows by key, when the caller built the mapping already (off the UI thread).
        Answers the previous rows by key, so the caller can free them where it suits it."""
        order = list(rows)
        if not presorted:
            order.sort(key=self._key)
        self._pending.clear()  # what is prepared from the previous rows is moot
        previous = self.rows
        self.rows = by_key if by_key is not None else {r.key: r for r in order}
        self._order = SortedRows(self._key, order)
        self._refilter()
        return previous

    def set_filter(self, flt: Filter) -> None:
        narrowing = (
            self.filtered
            and flt.literal is not None
            and self.filter.literal is not None
            and self.filter.literal in flt.literal
            and flt.selector == self.filter.selector
        )
        base = self._visible if narrowing else self._order
        self.filter = flt
        self._visible = self._order if flt.empty else SortedRows(self._key, flt.apply(base))

    def set_sort(self, column: int, descending: bool) -> None:
        if not 0 <= column < len(self.spec.columns):
            column = self.spec.sort_column
        if column != self.sort_column:
            self._pending.clear()  # snapshots in the old order
            self.sort_column = column
            self._key = sort_key(self.spec, column)
            self._order = SortedRows(self._key, sorted(self._order, key=self._key))
            self._refilter()
        self.descending = descending

    def snapshot(self) -> tuple[int, list[Row]]:
        """The rows in the current order (a copy) to sort or filter elsewhere, and the ticket to adopt the
        result with (:meth:`adopt_sort`, :meth:`adopt_filter`). Until then the index notes which keys
        change, so that the result can be brought up to date. :meth:`reset`, or a new order, voids it."""
        self._ticket += 1
        self._pending[self._ticket] = {}
        return self._ticket, self._order.flat()

    def adopt_sort(
        self,
        ticket: int,
        column: int,
        descending: bool,
        ordered: list[Row],
        kept: tuple[Filter, list[Row]] | None = None,
    ) -> bool:
        """Show the rows in ``column``'s order, given ``ordered``: the snapshot of ``ticket`` sorted by
        ``sort_key(spec, column)``, and ``kept``: a filter and the rows of ``ordered`` it keeps (used
        when it is still the filter shown, else the filter runs here). The rows changed since the
        snapshot are taken out and put back as they are now (a bisection each), so no live change is
        lost. False (nothing changes) when the ticket is void: the rows were replaced meanwhile, or
        another order was asked for since."""
        touched = self._pending.pop(ticket, None)
        if touched is None or not 0 <= column < len(self.spec.columns):
            return False
        self._pending.clear()  # the other snapshots are in the old order
        key = sort_key(self.spec, column)
        order = SortedRows(key, ordered)
        _bring_up_to_date(order, touched, self.rows, None)
        self.sort_column, self._key, self._order = column, key, order
        if kept is not None and kept[0] == self.filter and not self.filter.empty:
            self._visible = SortedRows(key, kept[1])
            _bring_up_to_date(self._visible, touched, self.rows, self.filter)
        else:
            self._refilter()
        self.descending = descending
        return True

    def adopt_filter(self, ticket: int, flt: Filter, kept: list[Row]) -> bool:
        """Show the rows ``flt`` keeps, given ``kept``: ``flt.apply`` of the snapshot of ``ticket``. The
        rows changed since are brought up to date as in :meth:`adopt_sort`. False when the ticket is
        void."""
        touched = self._pending.pop(ticket, None)
        if touched is None:
            return False
        self.filter = flt
        if flt.empty:
            self._visible = self._order
        else:
            self._visible = SortedRows(self._key, kept)
            _bring_up_to_date(self._visible, touched, self.rows, flt)
        return True

    def _refilter(self) -> None:
        if self.filter.empty:
            self._visible = self._order
        else:
            self._visible = SortedRows(self._key, self.filter.apply(self._order))

    def apply(self, changes: Sequence[tuple[Key, Row | None]], hooks: IndexHooks) -> None:
        """Apply changes (a row, or None for a deletion) in two passes: rows that keep their place are
        replaced and announced as one ``changed`` range; the others are removed and re-inserted."""
        key_of = self._key
        flt = self.filter
        filtered = self.filtered
        moves: list[tuple[Row | None, Row | None]] = []
        first, last = -1, -1
        pending = self._pending.values()
        for key, new in changes:
            old = self.rows.get(key)
            for touched in pending:
                if key not in touched:
                    touched[key] = old
            if old is None and new is None:
                continue
            if old is None or new is None or key_of(old) != key_of(new):
                moves.append((old, new))
                continue
            if filtered and flt.matches(old) != flt.matches(new):
                moves.append((old, new))
                continue
            i = self._order.find(old)
            if i is None:  # cannot happen while the invariants hold; recover rather than show wrong rows
                moves.append((old, new))
                continue
            self._order.replace(i, new)
            self.rows[key] = new
            if filtered:
                if not flt.matches(new):
                    continue
                j = self._visible.find(old)
                if j is None:
                    continue
                self._visible.replace(j, new)
            else:
                j = i
            pos = len(self._visible) - 1 - j if self.descending else j
            first = pos if first < 0 else min(first, pos)
            last = max(last, pos)
        if first >= 0:
            hooks.changed(first, last)
        for old, new in moves:
            if old is not None:
                self._remove(old, hooks)
            if new is not None:
                self._insert(new, hooks)

    def _view(self, i: int, length: int) -> int:
        return length - 1 - i if self.descending else i

    def _remove(self, row: Row, hooks: IndexHooks) -> None:
        self.rows.pop(row.key, None)
        i = self._order.find(row)
        if not self.filtered:
            if i is not None:
                hooks.begin_remove(self._view(i, len(self._order)))
                self._order.pop(i)
                hooks.end_remove()
            return
        if i is not None:
            self._order.pop(i)
        if self.filter.matches(row):
            j = self._visible.find(row)
            if j is not None:
                hooks.begin_remove(self._view(j, len(self._visible)))
                self._visible.pop(j)
                hooks.end_remove()

    def _insert(self, row: Row, hooks: IndexHooks) -> None:
        self.rows[row.key] = row
        if not self.filtered:
            i = self._order.insertion_point(row)
            hooks.begin_insert(len(self._order) - i if self.descending else i)
            self._order.insert(row)
            hooks.end_insert()
            return
        self._order.insert(row)
        if self.filter.matches(row):
            j = self._visible.insertion_point(row)
            hooks.begin_insert(len(self._visible) - j if self.descending else j)
            self._visible.insert(row)
            hooks.end_insert()

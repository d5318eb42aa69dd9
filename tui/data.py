"""The TUI's data layer: where rows come from, how they are projected, filtered and kept current.

Nothing here imports Textual, so it is unit-tested (and benchmarked) without a terminal.

* A :class:`Source` yields, per kind (nodes, pods, deploy, devices, events), an endless stream of
  :class:`~app.client.WatchEvent` s: a ``RESYNC`` carrying every object, then changes. The cloud's source
  (:class:`CloudSource`) is one :class:`~app.client.Reflector` per kind (list, then watch with backoff and
  relist on 410); the edge's (``tui.edge.EdgeSource``) polls the local API and yields a ``RESYNC`` per poll.
  Sources also carry the few actions a view offers (logs, delete, restart), so the views never care
  which one they talk to. :class:`StaticSource` is the in-memory seam snapshot tests and benchmarks use.
* A :class:`Store` per kind holds the objects keyed by ``(namespace, name)`` and projects each changed
  object to a :class:`Row` once (text cells, times, labels). Events are applied as they arrive, but rows
  are only rebuilt when the UI asks (its refresh tick, 10 Hz), so a burst of 1,000 watch events costs one
  redraw, not 1,000.
* :func:`parse_filter` / :func:`filter_rows` are the pure filter: a case-insensitive regex over the row's
  text plus an optional ``-l k=v,k2!=v`` label selector. A plain word is matched as a substring (several
  times faster than a regex over 100,000 rows) and a query that extends the previous one narrows the
  previous result instead of starting over, which is what typing does.

Time-dependent cells (AGE, LAST SEEN, HEARTBEAT) are kept as datetimes and formatted only for the rows on
screen, with an injected clock, so rows need not be re-projected as time passes and snapshots are
deterministic. Deliberately not done: server-side filtering (the cloud serves whole lists; filtering 100k
rows locally takes milliseconds) and sorting by column (rows are ordered by namespace and name, as kubectl).
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, Self, TypeVar

from app.client import (
    ApiError,
    AsyncClient,
    ClientError,
    Reflectors,
    WatchEvent,
    deployment_view,
    format_age,
    node_view,
)
from app.clientmodels import format_bytes, node_roles, parse_quantity, pod_row
from app.errors import FleetOpsError
from app.query import Filter
from app.resources import DEPLOYMENTS, DEVICES, EVENTS, NODES, PODS, JSONObject, ResourceType, parse_rfc3339
from app.twinview import twin_summary

logger = logging.getLogger(__name__)
T = TypeVar("T")

Kind = Literal["nodes", "pods", "deploy", "devices", "events"]
KINDS: tuple[Kind, ...] = ("nodes", "pods", "deploy", "devices", "events")
RESOURCES: dict[Kind, ResourceType] = {
    "nodes": NODES,
    "pods": PODS,
    "deploy": DEPLOYMENTS,
    "devices": DEVICES,
    "events": EVENTS,
}
# What `:name` accepts besides the kind itself (kubectl's plurals and short names).
ALIASES: dict[str, Kind] = {
    "no": "nodes",
    "node": "nodes",
    "nodes": "nodes",
    "po": "pods",
    "pod": "pods",
    "pods": "pods",
    "deploy": "deploy",
    "deployment": "deploy",
    "deployments": "deploy",
    "dp": "deploy",
    "dev": "devices",
    "device": "devices",
    "devices": "devices",
    "ev": "events",
    "event": "events",
    "events": "events",
}
CONNECTED_ANNOTATION = "fleetops.io/cloud-connected"
Key = tuple[str, str]
Clock = Callable[[], dt.datetime]


class TuiError(FleetOpsError):
    """Root of the TUI's own errors."""


class NotSupported(TuiError):
    """An action this source does not offer (e.g. deleting a pod through the edge's local API)."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- rows -------------------------------------------------------------------------------------------------


ColumnKind = Literal["text", "age", "pods", "cpu%", "mem%"]


@dataclass(frozen=True, slots=True)
class Column:
    """A table column. ``age`` columns show ``Row.times[time_index]`` relative to the clock; ``pods``
    shows how many pods run on the row's node (derived at render time from the pods store); ``cpu%`` and
    ``mem%`` the node's usage (metrics.k8s.io, polled) as a share of what it can allocate."""

    title: str
    kind: ColumnKind = "text"
    time_index: int = 0
    max_width: int = 40


@dataclass(frozen=True, slots=True)
class Row:
    key: Key
    cells: tuple[str, ...]  # one per text column, in column order (age/pods columns hold "")
    times: tuple[dt.datetime | None, ...]
    labels: Mapping[str, str]
    text: str  # lower-cased cells joined by spaces: what the regex filter searches
    node: str = ""  # the node the object runs on / is bound to (pods, devices): drill-down scope
    tone: str = ""  # "ok", "warn", "bad" or "": the row's colour hint
    raw: JSONObject = field(default_factory=dict, repr=False, compare=False)

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


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = parse_rfc3339(value)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def _row(
    key: Key,
    cells: Sequence[str],
    times: Sequence[dt.datetime | None],
    labels: Mapping[str, str],
    *,
    node: str = "",
    tone: str = "",
    raw: JSONObject,
) -> Row:
    cells = tuple(cells)
    text = " ".join(cells).lower().replace("\n", " ")  # one line: see Corpus
    return Row(key, cells, tuple(times), labels, text, node, tone, raw)


def project_pod(obj: JSONObject) -> Row:
    """A pod's row, with kubectl's READY / STATUS / RESTARTS (``app.clientmodels.pod_row``)."""
    m, spec, status = _d(obj.get("metadata")), _d(obj.get("spec")), _d(obj.get("status"))
    ns, name = str(m.get("namespace") or ""), str(m.get("name") or "")
    node = str(spec.get("nodeName") or "")
    ready, total, restarts, shown, tone = pod_row(m, spec, status)
    labels = m.get("labels")
    return Row(
        (ns, name),
        (ns, name, f"{ready}/{total}", shown, str(restarts), node or "<none>", ""),
        (_time(m.get("creationTimestamp")),),
        labels if isinstance(labels, dict) else {},
        f"{ns} {name} {ready}/{total} {shown} {restarts} {node or '<none>'}".lower(),
        node,
        tone,
        obj,
    )


# Labels every node carries, left out of the LABELS column (the ROLES column shows the roles).
_PLAIN_LABEL_PREFIXES = ("node-role.kubernetes.io/", "kubernetes.io/", "beta.kubernetes.io/")


def _own_labels(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if not k.startswith(_PLAIN_LABEL_PREFIXES))


def project_node(obj: JSONObject) -> Row:
    v = node_view(obj)
    version = str(_d(_d(obj.get("status")).get("nodeInfo")).get("kubeletVersion") or "")
    memory = parse_quantity(v.memory)
    mem = format_bytes(memory) if memory is not None else v.memory
    return _row(
        ("", v.name),
        (
            v.name,
            v.status,
            node_roles(v.labels),
            "",
            version,
            "",
            "",
            v.cpu,
            "",
            mem,
            "",
            _own_labels(v.labels),
        ),
        (v.created, v.last_heartbeat),
        v.labels,
        node=v.name,
        tone="ok" if v.ready == "Ready" else "bad",
        raw=obj,
    )


def project_deployment(obj: JSONObject) -> Row:
    v = deployment_view(obj)
    tone = "ok" if v.rolled_out else "warn"
    labels = {str(k): str(val) for k, val in _d(_d(obj.get("metadata")).get("labels")).items()}
    return _row(
        (v.namespace, v.name),
        (v.namespace, v.name, v.ready_text, str(v.updated), str(v.available), ""),
        (v.created,),
        labels,
        tone=tone,
        raw=obj,
    )


def project_device(obj: JSONObject) -> Row:
    m, spec, status = _d(obj.get("metadata")), _d(obj.get("spec")), _d(obj.get("status"))
    ns, name = str(m.get("namespace") or ""), str(m.get("name") or "")
    node = str(spec.get("nodeName") or "")
    state = str(status.get("state") or "unknown")
    model = str(_d(spec.get("deviceModelRef")).get("name") or "")
    labels = {str(k): str(v) for k, v in _d(m.get("labels")).items()}
    tone = {"online": "ok", "offline": "bad"}.get(state, "warn")
    return _row(
        (ns, name),
        (ns, name, model, node or "<none>", state, twin_summary(obj)),
        (),
        labels,
        node=node,
        tone=tone,
        raw=obj,
    )


def project_event(obj: JSONObject) -> Row:
    m = _d(obj.get("metadata"))
    ns, name = str(m.get("namespace") or ""), str(m.get("name") or "")
    involved = _d(obj.get("involvedObject"))
    seen = (
        _time(obj.get("lastTimestamp"))
        or _time(obj.get("eventTime"))
        or _time(obj.get("firstTimestamp"))
        or _time(m.get("creationTimestamp"))
    )
    kind = str(involved.get("kind") or "").lower()
    what = f"{kind}/{involved.get('name', '')}" if kind else str(involved.get("name") or "")
    type_ = str(obj.get("type") or "Normal")
    message = " ".join(str(obj.get("message") or "").split())
    labels = {str(k): str(v) for k, v in _d(m.get("labels")).items()}
    node = str(_d(obj.get("source")).get("host") or "")
    return _row(
        (ns, name),
        (ns, "", type_, str(obj.get("reason") or ""), what, message),
        (seen,),
        labels,
        node=node,
        tone="warn" if type_ == "Warning" else "",
        raw=obj,
    )


@dataclass(frozen=True, slots=True)
class ViewSpec:
    kind: Kind
    title: str
    columns: tuple[Column, ...]
    project: Callable[[JSONObject], Row]
    # Index of the column that holds the NAMESPACE, or -1 (hidden when a namespace is selected).
    namespace_column: int = -1


VIEWS: dict[Kind, ViewSpec] = {
    "nodes": ViewSpec(
        "nodes",
        "Nodes",
        (
            Column("NAME", max_width=50),
            Column("STATUS", max_width=30),
            Column("ROLES", max_width=24),
            Column("AGE", "age", 0),
            Column("VERSION", max_width=24),
            Column("PODS", "pods"),
            Column("HEARTBEAT", "age", 1),
            Column("CPU", max_width=8),
            Column("%CPU", "cpu%"),
            Column("MEM", max_width=10),
            Column("%MEM", "mem%"),
            Column("LABELS", max_width=60),
        ),
        project_node,
    ),
    "pods": ViewSpec(
        "pods",
        "Pods",
        (
            Column("NAMESPACE", max_width=24),
            Column("NAME", max_width=60),
            Column("READY"),
            Column("STATUS", max_width=24),
            Column("RESTARTS"),
            Column("NODE", max_width=40),
            Column("AGE", "age", 0),
        ),
        project_pod,
        namespace_column=0,
    ),
    "deploy": ViewSpec(
        "deploy",
        "Deployments",
        (
            Column("NAMESPACE", max_width=24),
            Column("NAME", max_width=60),
            Column("READY"),
            Column("UP-TO-DATE"),
            Column("AVAILABLE"),
            Column("AGE", "age", 0),
        ),
        project_deployment,
        namespace_column=0,
    ),
    "devices": ViewSpec(
        "devices",
        "Devices",
        (
            Column("NAMESPACE", max_width=24),
            Column("NAME", max_width=50),
            Column("MODEL", max_width=40),
            Column("NODE", max_width=40),
            Column("STATE", max_width=12),
            Column("TWIN (reported->desired)", max_width=80),
        ),
        project_device,
        namespace_column=0,
    ),
    "events": ViewSpec(
        "events",
        "Events",
        (
            Column("NAMESPACE", max_width=24),
            Column("LAST SEEN", "age", 0),
            Column("TYPE", max_width=8),
            Column("REASON", max_width=24),
            Column("OBJECT", max_width=50),
            Column("MESSAGE", max_width=200),
        ),
        project_event,
        namespace_column=0,
    ),
}


@dataclass(frozen=True, slots=True)
class NodeUsage:
    """What a node uses now (metrics.k8s.io): CPU in cores, memory in bytes."""

    cpu: float
    memory: float


@dataclass(slots=True)
class PerNode:
    """Figures a node row shows that live elsewhere: its pods (the pods store) and its usage (polled)."""

    pods: Mapping[str, int] = field(default_factory=dict)
    usage: Mapping[str, NodeUsage] = field(default_factory=dict)


def _share(used: float | None, raw: JSONObject, key: str) -> str:
    status = _d(raw.get("status"))
    total = parse_quantity(_d(status.get("allocatable")).get(key)) or parse_quantity(
        _d(status.get("capacity")).get(key)
    )
    if used is None or not total:
        return "n/a"
    return f"{100 * used / total:.0f}%"


def cell_text(column: Column, row: Row, index: int, now: dt.datetime, per_node: PerNode) -> str:
    """What a cell shows: text cells as projected, ages against ``now``, pod counts and usage per node."""
    if column.kind == "age":
        when = row.times[column.time_index] if column.time_index < len(row.times) else None
        return "<unknown>" if when is None else format_age(now - when)
    if column.kind == "pods":
        return str(per_node.pods.get(row.name, 0))
    if column.kind in ("cpu%", "mem%"):
        usage = per_node.usage.get(row.name)
        if column.kind == "cpu%":
            return _share(usage.cpu if usage else None, row.raw, "cpu")
        return _share(usage.memory if usage else None, row.raw, "memory")
    return row.cells[index]


def parse_node_metrics(doc: JSONObject) -> dict[str, NodeUsage]:
    """A metrics.k8s.io NodeMetricsList as usage by node name; malformed items are left out."""
    out: dict[str, NodeUsage] = {}
    for item in _l(doc.get("items")):
        name = _d(_d(item).get("metadata")).get("name")
        usage = _d(_d(item).get("usage"))
        cpu, memory = parse_quantity(usage.get("cpu")), parse_quantity(usage.get("memory"))
        if isinstance(name, str) and cpu is not None and memory is not None:
            out[name] = NodeUsage(cpu, memory)
    return out


# -- stores -----------------------------------------------------------------------------------------------


class Store:
    """The objects of one kind and their rows. ``apply`` is cheap (the event loop may receive thousands
    of events a second); ``rows()`` projects what changed since the last call and returns every row,
    sorted by (namespace, name). ``generation`` grows with each change so a view knows when to redraw.

    ``pods_per_node()`` counts the objects per ``spec.nodeName`` once (a pass over 100,000 pods takes
    ~13 ms) and from then on keeps the count current as events arrive, so the nodes view's refresh on
    every pods tick costs nothing; a RESYNC drops the count and the next call recounts."""

    def __init__(self, spec: ViewSpec) -> None:
        self.spec = spec
        self.objects: dict[Key, JSONObject] = {}
        self.loaded = False  # a first RESYNC arrived
        self.generation = 0
        self._rows: dict[Key, Row] = {}
        self._pending: set[Key] = set()
        self._all_pending = False
        self._sorted: list[Row] | None = []
        self._order: list[Row] = []
        self._keys: list[Key] = []
        self._per_node: Counter[str] | None = None  # see pods_per_node

    def apply(self, ev: WatchEvent) -> None:
        counts = self._per_node
        if ev.type == "RESYNC":
            self.objects = {_key(o): o for o in ev.items}
            self.loaded = True
            self._all_pending = True
            self._pending.clear()
            self._per_node = None
        elif ev.type == "DELETED":
            key = _key(ev.object)
            old = self.objects.pop(key, None)
            self._pending.add(key)
            if counts is not None and old is not None:
                _uncount(counts, _node_of(old))
        elif ev.type in ("ADDED", "MODIFIED"):
            key = _key(ev.object)
            old = self.objects.get(key)
            self.objects[key] = ev.object
            self._pending.add(key)
            if counts is not None:
                if old is not None:
                    _uncount(counts, _node_of(old))
                counts[_node_of(ev.object)] += 1
        else:
            return
        self._sorted = None
        self.generation += 1

    def rows(self) -> list[Row]:
        if self._sorted is not None:
            return self._sorted
        project = self.spec.project
        if self._all_pending:
            old = self._rows
            fresh: dict[Key, Row] = {}
            for key, obj in self.objects.items():
                prev = old.get(key)
                fresh[key] = prev if prev is not None and prev.raw is obj else project(obj)
            self._rows = fresh
            self._all_pending = False
            self._order = sorted(self._rows.values(), key=_row_key)
            self._keys = [r.key for r in self._order]
        else:
            # A few changes (the usual watch tick): patch the sorted list in place with bisect rather
            # than re-sorting 100,000 rows (~100 ms) for one MODIFIED pod.
            for key in self._pending:
                current = self.objects.get(key)
                i = bisect.bisect_left(self._keys, key)
                present = i < len(self._keys) and self._keys[i] == key
                if current is None:
                    self._rows.pop(key, None)
                    if present:
                        del self._keys[i]
                        del self._order[i]
                    continue
                row = project(current)
                self._rows[key] = row
                if present:
                    self._order[i] = row
                else:
                    self._keys.insert(i, key)
                    self._order.insert(i, row)
        self._pending.clear()
        self._sorted = list(self._order)
        return self._sorted

    def pods_per_node(self) -> Mapping[str, int]:
        """How many objects each node holds (``""``: unscheduled). A live view: it changes as events
        are applied, so read it, don't keep it across ticks expecting a snapshot."""
        if self._per_node is None:
            self._per_node = Counter(_node_of(o) for o in self.objects.values())
        return self._per_node


def _node_of(obj: JSONObject) -> str:
    return str(_d(obj.get("spec")).get("nodeName") or "")


def _uncount(counts: Counter[str], node: str) -> None:
    left = counts[node] - 1
    if left > 0:
        counts[node] = left
    else:
        del counts[node]


def _row_key(row: Row) -> Key:
    return row.key


def _key(obj: JSONObject) -> Key:
    m = _d(obj.get("metadata"))
    return str(m.get("namespace") or ""), str(m.get("name") or "")


def make_stores() -> dict[Kind, Store]:
    return {kind: Store(VIEWS[kind]) for kind in KINDS}


# -- filtering --------------------------------------------------------------------------------------------


class Corpus:
    """The texts of a list of rows joined by newlines, with each row's offset: a filter then scans one
    string in C (``str.find`` / ``Pattern.search`` from an offset) and only touches the rows that match,
    instead of calling the matcher once per row from Python: 4-5x faster when few rows match. When many
    do, jumping from match to match is slower than testing each row, so past ``limit`` matches it gives
    up (returns None) and the caller tests rows one by one. Build one per row list and reuse it for every
    keystroke while the list is unchanged (~40 ms for 100,000 rows)."""

    def __init__(self, rows: Sequence[Row]) -> None:
        self.rows = rows
        starts: list[int] = []
        pos = 0
        for r in rows:
            starts.append(pos)
            pos += len(r.text) + 1
        self.starts = starts
        self.text = "\n".join(r.text for r in rows)
        # Past this many matching rows, jumping from match to match costs more than testing every row.
        self.limit = max(64, len(rows) // 6)

    def _row_at(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset) - 1

    def find(self, needle: str) -> list[Row] | None:
        """Rows containing ``needle``; None when most rows would (then a per-row pass is faster)."""
        if self.text.count(needle) > self.limit:
            return None
        rows, starts, find = self.rows, self.starts, self.text.find
        out: list[Row] = []
        pos, n = 0, len(rows)
        while (j := find(needle, pos)) >= 0:
            i = self._row_at(j)
            out.append(rows[i])
            if i + 1 >= n:
                break
            pos = starts[i + 1]
        return out

    def search(self, pattern: re.Pattern[str]) -> list[Row] | None:
        r"""Rows where ``pattern`` matches. The corpus is searched with MULTILINE so ``^``/``$`` still mean
        a row's start and end; a match that runs across a row boundary (``\s``, ``[^x]`` match the
        newline) is checked again on the row alone."""
        corpus_pattern = re.compile(pattern.pattern, pattern.flags | re.MULTILINE)
        rows, starts, search = self.rows, self.starts, corpus_pattern.search
        out: list[Row] = []
        pos, n, size = 0, len(rows), len(self.text)
        while pos <= size and (m := search(self.text, pos)) is not None:
            i = self._row_at(m.start())
            row_end = starts[i + 1] - 1 if i + 1 < n else size
            if m.end() <= row_end or pattern.search(rows[i].text) is not None:
                out.append(rows[i])
                if len(out) > self.limit:
                    return None  # a broad pattern: the per-row pass is faster from here
            if i + 1 >= n:
                break
            pos = starts[i + 1]
        return out


def filter_rows(rows: Sequence[Row], flt: Filter, corpus: Corpus | None = None) -> list[Row]:
    """The rows ``flt`` keeps, in order. Pure; the fast paths are the point (see the module docstring).
    ``corpus`` (built from these very ``rows``) makes the text match a scan of one string."""
    if flt.empty:
        return list(rows)
    if corpus is not None and corpus.rows is not rows:
        corpus = None
    if flt.literal is not None and not flt.selector:
        needle = flt.literal
        found = corpus.find(needle) if corpus is not None else None
        return found if found is not None else [r for r in rows if needle in r.text]
    if flt.pattern is not None and not flt.selector:
        found = corpus.search(flt.pattern) if corpus is not None else None
        if found is not None:
            return found
        search = flt.pattern.search
        return [r for r in rows if search(r.text) is not None]
    kept: Sequence[Row] = rows
    for req in flt.selector:
        k, v = req.key, req.value
        if req.op == "=":
            kept = [r for r in kept if r.labels.get(k) == v]
        elif req.op == "!=":
            kept = [r for r in kept if r.labels.get(k) != v]
        elif req.op == "exists":
            kept = [r for r in kept if k in r.labels]
        else:
            kept = [r for r in kept if k not in r.labels]
    return filter_rows(kept, Filter(flt.text, flt.pattern, flt.literal))


# -- scopes (drill-down) ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scope:
    """What a drilled-down view is restricted to: a node's objects, or the pods a selector picks."""

    title: str
    node: str = ""
    namespace: str | None = None
    selector: Mapping[str, str] | None = None

    def matches(self, row: Row) -> bool:
        if self.node and row.node != self.node:
            return False
        if self.namespace is not None and row.namespace != self.namespace:
            return False
        return self.selector is None or all(row.labels.get(k) == v for k, v in self.selector.items())


def deployment_scope(obj: JSONObject) -> Scope:
    m = _d(obj.get("metadata"))
    match = {
        str(k): str(v) for k, v in _d(_d(_d(obj.get("spec")).get("selector")).get("matchLabels")).items()
    }
    ns, name = str(m.get("namespace") or ""), str(m.get("name") or "")
    return Scope(f"deploy/{name}", namespace=ns, selector=match)


def scoped_rows(rows: Sequence[Row], *, namespace: str | None, scope: Scope | None) -> Sequence[Row]:
    """The rows a view draws from before the user's filter: one namespace, a drill-down scope."""
    base: Sequence[Row] = rows
    if namespace is not None:
        base = [r for r in base if r.namespace in (namespace, "")]
    if scope is not None:
        base = [r for r in base if scope.matches(r)]
    return base


def visible_rows(
    rows: Sequence[Row], *, namespace: str | None, scope: Scope | None, flt: Filter
) -> list[Row]:
    """What a view shows: the namespace and the drill-down scope first, then the user's filter."""
    return filter_rows(scoped_rows(rows, namespace=namespace, scope=scope), flt)


# -- sources ----------------------------------------------------------------------------------------------


ConnState = Literal["connecting", "connected", "reconnecting", "unreachable", "failed"]


@dataclass(frozen=True, slots=True)
class Connection:
    """What the header shows: the link state, its reason, and (at the edge) whether the cloud is reachable."""

    state: ConnState
    reason: str = ""
    cloud_connected: bool | None = None


class EventStream(Protocol):
    def __aiter__(self) -> Self: ...

    async def __anext__(self) -> WatchEvent: ...

    async def aclose(self) -> None: ...


class LineSource(Protocol):
    def __aiter__(self) -> Self: ...

    async def __anext__(self) -> str: ...

    async def aclose(self) -> None: ...


class Source(Protocol):
    """Where a TUI gets its objects and does its few writes. ``client`` is the cloud's AsyncClient when
    there is one (the device, deploy and rollout screens need it); ``kubeconfig`` enables exec."""

    @property
    def description(self) -> str: ...

    @property
    def edge(self) -> bool: ...

    @property
    def client(self) -> AsyncClient | None: ...

    @property
    def kubeconfig(self) -> str | None: ...

    def events(self, kind: Kind) -> EventStream: ...

    async def node_usage(self) -> dict[str, NodeUsage]: ...

    def connection(self) -> Connection: ...

    def logs(self, namespace: str, name: str, *, container: str | None, timestamps: bool) -> LineSource: ...

    async def get(self, kind: Kind, namespace: str, name: str) -> JSONObject: ...

    async def delete_pod(self, namespace: str, name: str) -> None: ...

    async def restart_pod(self, namespace: str, name: str) -> str: ...

    async def aclose(self) -> None: ...


def describe_error(exc: BaseException) -> str:
    """A notification's text for a client failure: the server's message and field causes, or the reason."""
    if isinstance(exc, ApiError):
        causes = "; ".join(exc.field_errors)
        text = exc.message or exc.reason or f"HTTP {exc.code}"
        return f"{text} ({causes})" if causes and causes not in text else text
    return str(exc) or type(exc).__name__


class CloudSource:
    """The cloud, through :class:`~app.client.AsyncClient`: one Reflector per kind (all namespaces)."""

    edge = False

    def __init__(self, client: AsyncClient, *, description: str = "", kubeconfig: str | None = None) -> None:
        self.client = client
        self.description = description or client.server
        self.kubeconfig = kubeconfig
        self._reflectors = Reflectors(client)

    def events(self, kind: Kind) -> EventStream:
        return self._reflectors.watch(kind, RESOURCES[kind])

    async def node_usage(self) -> dict[str, NodeUsage]:
        """The nodes' usage from the metrics API (``kubectl top nodes``); empty when it is not served."""
        try:
            doc = await self.client.node_metrics()
        except ClientError as exc:
            logger.debug("node metrics unavailable: %s", exc)
            return {}
        return parse_node_metrics(doc)

    def connection(self) -> Connection:
        state, error = self._reflectors.state()
        return Connection(state, describe_error(error) if error is not None else "")

    def logs(self, namespace: str, name: str, *, container: str | None, timestamps: bool) -> LineSource:
        return self.client.logs(
            name, namespace, container=container, follow=True, tail_lines=500, timestamps=timestamps
        )

    async def get(self, kind: Kind, namespace: str, name: str) -> JSONObject:
        return await self.client.get(RESOURCES[kind], name, namespace)

    async def delete_pod(self, namespace: str, name: str) -> None:
        await self.client.delete(PODS, name, namespace)

    async def restart_pod(self, namespace: str, name: str) -> str:
        await self.client.delete(PODS, name, namespace)
        return f"deleted pod {namespace}/{name}; its controller recreates it"

    async def aclose(self) -> None:
        await self._reflectors.aclose()
        await self.client.aclose()


class StaticSource:
    """Fixed objects, for snapshot tests and benchmarks: each kind yields one RESYNC and then waits
    (``push`` adds a change). Writes are recorded in ``actions``, not performed."""

    edge = False
    client: AsyncClient | None = None
    kubeconfig: str | None = None

    def __init__(
        self,
        objects: Mapping[Kind, Sequence[JSONObject]],
        *,
        description: str = "static",
        connection: Connection | None = None,
        logs: Sequence[str] = (),
        usage: Mapping[str, NodeUsage] | None = None,
    ) -> None:
        self.description = description
        self.objects = {k: list(objects.get(k, ())) for k in KINDS}
        self.state = connection or Connection("connected")
        self.log_lines = list(logs)
        self.usage = dict(usage or {})
        self.actions: list[str] = []
        self._queues: dict[Kind, asyncio.Queue[WatchEvent]] = {}

    def events(self, kind: Kind) -> EventStream:
        q: asyncio.Queue[WatchEvent] = asyncio.Queue()
        q.put_nowait(WatchEvent("RESYNC", {}, tuple(self.objects[kind])))
        self._queues[kind] = q
        return _QueueStream(q)

    def push(self, kind: Kind, ev: WatchEvent) -> None:
        self._queues[kind].put_nowait(ev)

    async def node_usage(self) -> dict[str, NodeUsage]:
        return dict(self.usage)

    def connection(self) -> Connection:
        return self.state

    def logs(self, namespace: str, name: str, *, container: str | None, timestamps: bool) -> LineSource:
        q: asyncio.Queue[str] = asyncio.Queue()
        for line in self.log_lines:
            q.put_nowait(f"2026-01-01T00:00:00Z {line}" if timestamps else line)
        return _QueueStream(q)

    async def get(self, kind: Kind, namespace: str, name: str) -> JSONObject:
        for obj in self.objects[kind]:
            if _key(obj) == (namespace, name):
                return obj
        raise NotSupported(f"{kind} {namespace}/{name} not found")

    async def delete_pod(self, namespace: str, name: str) -> None:
        self.actions.append(f"delete {namespace}/{name}")

    async def restart_pod(self, namespace: str, name: str) -> str:
        self.actions.append(f"restart {namespace}/{name}")
        return f"restarted {namespace}/{name}"

    async def aclose(self) -> None:
        return None


class _QueueStream(Generic[T]):
    def __init__(self, q: asyncio.Queue[T]) -> None:
        self._q = q

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        return await self._q.get()

    async def aclose(self) -> None:
        return None


async def drain(stream: AsyncIterator[WatchEvent], store: Store) -> None:
    """Apply every event of ``stream`` to ``store`` until it ends (the UI's feed loop, minus the UI)."""
    async for ev in stream:
        store.apply(ev)

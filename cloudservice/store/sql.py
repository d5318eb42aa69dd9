"""The SQL store: CloudCore's source of truth on SQLite (embedded default) or PostgreSQL.

Design
------
Objects are stored as JSON text, one row per object, keyed by (resource ``group/plural``, namespace,
name). Everything is SQLAlchemy 2 *Core* on its asyncio engine (no ORM: rows are documents, not entities).

Revisions. The store keeps one monotonic revision, like etcd. It lives in a single-row table and every
write transaction starts with ``UPDATE revision SET value = value + 1 ... RETURNING value``. That row lock
serialises writers (in SQLite the write lock does the same), so revisions are handed out in commit order
and a watcher that has seen revision N has seen everything below N. A PostgreSQL SEQUENCE would not give
this: two transactions can take 7 and 8 and commit 8 first, and a watcher resuming "after 8" would lose 7.
Because a write holds the counter while it reads the current object, the read-compare-write of an update
(and the whole of ``guaranteed_update``) happens under that lock: CAS failures only come from callers'
stale ``resourceVersion``, never from races between writers. Each write is one transaction: bump the
counter, read the current row, write the row, append to the event log (and advance a cursor).

Event log and watch. Each write appends (revision, resource, namespace, name, type, JSON) to the event
log; compaction runs every few writes and keeps at least the last ``event_window`` events, so
``watch(since=N)`` can replay what a client missed, or raises Gone when the log no longer reaches back.
After commit the write publishes the event in-process (:class:`_EventHub`) to every matching watcher.
Each watcher has a bounded buffer of ``watch_queue`` events; a watcher that falls behind is ended with
Gone (after its buffered events) instead of letting memory grow, and its client re-lists as with
Kubernetes. A watch with ``since`` subscribes *before* reading the log and drops live events at or below
the last revision it replayed, so replay hands over to live events without a gap or a duplicate.

Deliberately not done (yet):

* Several cloud replicas on one PostgreSQL. Only this process's writes reach its watchers. The seam is
  :meth:`_EventHub.publish`: in multi-replica mode local writes should stop publishing directly and a
  single reader should feed the hub from the event log in revision order (poll ``revision > last`` or
  wake on LISTEN/NOTIFY), since the hub drops anything at or below the last revision it published.
* Migrations. ``start()`` creates missing tables and records :data:`SCHEMA_VERSION`; a migration step
  belongs where ``start()`` compares the stored version with the code's.
* In-memory SQLite (``sqlite+aiosqlite://``) works for a single caller, but it shares one connection
  (StaticPool), so concurrent readers see uncommitted writes; use a file.
* Label/field selectors are the caller's job; the store filters by kind and namespace only.

Telemetry. Device window summaries (:class:`~cloudservice.store.base.TelemetryPoint`) live in their own
table, outside the revision counter and the event log: they are not Kubernetes objects and nobody watches
them row by row. A hub batch of summaries is one transaction (one fsync), which is what lets one edge's
telemetry arrive at thousands of summaries per second; the caller bounds each property's rows with
``prune``/``keep``.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import secrets
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    and_,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app.resources import JSONObject, ResourceType, by_plural, meta, now_rfc3339
from cloudservice.errors import AlreadyExists, Conflict, Gone, NotFound, StoreError
from cloudservice.store.base import Cursor, EventType, Point, TelemetryPoint, UpdateFn, WatchEvent

logger = logging.getLogger(__name__)

# Bumped whenever the tables change; start() refuses a database written by newer code.
SCHEMA_VERSION: Final = 1

# SQLite busy timeout: how long a writer waits for another *process* holding the write lock (writers in
# this process never wait on SQLite: they queue on an asyncio.Lock first). 5 s rides out a checkpoint or
# a CLI tool's short transaction without hanging an API request for long.
SQLITE_BUSY_TIMEOUT_MS: Final = 5_000

# Compaction runs every event_window / 10 writes (at most every 1,000), so the log holds between
# event_window and 1.1 x event_window events and the DELETE cost is spread thin.
_COMPACT_FRACTION: Final = 10
_COMPACT_EVERY_MAX: Final = 1_000

# Kubernetes' generateName suffix: 5 characters from an alphabet without vowels or look-alikes.
_GENERATE_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"
_GENERATE_LEN: Final = 5


class BackendError(StoreError):
    """The database or its driver failed (connection lost, disk full, locked too long...).

    ``operation`` names what the store was doing; the driver's exception is chained as ``__cause__``.
    """

    def __init__(self, operation: str, message: str) -> None:
        super().__init__(f"{operation}: {message}")
        self.operation = operation


# --------------------------------------------------------------------------------------------- schema


@dataclass(frozen=True, slots=True)
class _Tables:
    metadata: MetaData
    schema_version: Table
    revision: Table
    objects: Table
    events: Table
    cursors: Table
    telemetry: Table


def _tables(schema: str | None) -> _Tables:
    md = MetaData(schema=schema)
    return _Tables(
        metadata=md,
        schema_version=Table(
            "schema_version",
            md,
            Column("id", Integer, primary_key=True, autoincrement=False),
            Column("version", Integer, nullable=False),
        ),
        revision=Table(
            "revision",
            md,
            Column("id", Integer, primary_key=True, autoincrement=False),
            Column("value", BigInteger, nullable=False),
        ),
        # The primary key (resource, namespace, name) is the index that list and get use.
        objects=Table(
            "objects",
            md,
            Column("resource", String(255), nullable=False),
            Column("namespace", String(63), nullable=False),
            Column("name", String(253), nullable=False),
            Column("uid", String(36), nullable=False),
            Column("revision", BigInteger, nullable=False),
            Column("data", Text, nullable=False),
            PrimaryKeyConstraint("resource", "namespace", "name", name="objects_pk"),
        ),
        events=Table(
            "events",
            md,
            Column("revision", BigInteger, primary_key=True, autoincrement=False),
            Column("resource", String(255), nullable=False),
            Column("namespace", String(63), nullable=False),
            Column("name", String(253), nullable=False),
            Column("type", String(8), nullable=False),
            Column("data", Text, nullable=False),
        ),
        cursors=Table(
            "cursors",
            md,
            Column("name", String(255), primary_key=True),
            Column("value", BigInteger, nullable=False),
        ),
        telemetry=Table(
            "telemetry",
            md,
            Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
            Column("namespace", String(63), nullable=False),
            Column("device", String(253), nullable=False),
            Column("property", String(253), nullable=False),
            Column("start_ms", BigInteger, nullable=False),
            Column("end_ms", BigInteger, nullable=False),
            Column("min", Float, nullable=False),
            Column("max", Float, nullable=False),
            Column("mean", Float, nullable=False),
            Column("count", BigInteger, nullable=False),
            Column("last", Float, nullable=False),
            Index("telemetry_series", "namespace", "device", "property", "end_ms"),
        ),
    )


# --------------------------------------------------------------------------------------------- helpers


def resource_key(rt: ResourceType) -> str:
    """The stored resource column: ``group/plural`` (``/pods`` for the core group)."""
    return f"{rt.group}/{rt.plural}"


def _qualified(rt: ResourceType) -> str:
    """Kubernetes' qualified resource name used in Status messages: ``pods``, ``deployments.apps``."""
    return f"{rt.plural}.{rt.group}" if rt.group else rt.plural


def _not_found(rt: ResourceType, name: str) -> NotFound:
    return NotFound(f'{_qualified(rt)} "{name}" not found', kind=rt.plural, name=name)


def _conflict(rt: ResourceType, name: str) -> Conflict:
    return Conflict(
        f'Operation cannot be fulfilled on {_qualified(rt)} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        kind=rt.plural,
        name=name,
    )


def _dumps(obj: JSONObject) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _copy(obj: JSONObject) -> JSONObject:
    """A deep copy through JSON: also proves the object is JSON before it reaches the database."""
    copied: JSONObject = json.loads(_dumps(obj))
    return copied


def store_url(url_or_path: str) -> str:
    """A SQLAlchemy async URL for a URL or a bare SQLite path.

    Bare paths become ``sqlite+aiosqlite:///ABSOLUTE``; sync driver names are swapped for the async ones
    (``sqlite://`` -> aiosqlite, ``postgresql://`` -> asyncpg).
    """
    if "://" not in url_or_path:
        return f"sqlite+aiosqlite:///{Path(url_or_path).expanduser().absolute()}"
    scheme, rest = url_or_path.split("://", 1)
    scheme = {
        "sqlite": "sqlite+aiosqlite",
        "postgresql": "postgresql+asyncpg",
        "postgres": "postgresql+asyncpg",
    }.get(scheme, scheme)
    return f"{scheme}://{rest}"


def open_store(
    url_or_path: str, *, event_window: int = 10_000, watch_queue: int = 1_000, schema: str | None = None
) -> SqlStore:
    """A :class:`SqlStore` for a database URL or a bare filesystem path (SQLite). Call ``start()`` next."""
    return SqlStore(store_url(url_or_path), event_window=event_window, watch_queue=watch_queue, schema=schema)


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    try:
        # WAL: readers (list, watch replay) never block the writer and vice versa.
        cur.execute("PRAGMA journal_mode=WAL")
        # synchronous=FULL: in WAL mode this fsyncs the WAL at every commit, so a write the store has
        # acknowledged survives power loss. NORMAL would only survive a process crash, and the edge
        # drops its outbox entry once the cloud acknowledges it: losing an acknowledged write is the one
        # thing the design forbids. The price is one fsync per write, fine at control-plane rates.
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
    finally:
        cur.close()


# --------------------------------------------------------------------------------------------- watch


@dataclass(frozen=True, slots=True)
class _LogEvent:
    """An event as logged and fanned out: JSON text, decoded per watcher so each gets its own copy."""

    revision: int
    rt: ResourceType
    namespace: str
    type: EventType
    data: str

    def decode(self) -> WatchEvent:
        return WatchEvent(self.type, self.rt, revision=self.revision, raw=self.data)


class _Subscriber:
    """One watcher's live feed: a bounded buffer, ended with Gone when it overflows or stopped on close."""

    def __init__(self, hub: _EventHub, key: str | None, namespace: str | None, limit: int, kind: str) -> None:
        self.hub = hub
        self.key = key
        self.namespace = namespace
        self.start_revision = hub.last_published
        self._limit = limit
        self._kind = kind
        self._buf: deque[_LogEvent] = deque()
        self._wake = asyncio.Event()
        self._ended = False
        self._overflowed = False

    def matches(self, ev: _LogEvent) -> bool:
        return (self.key is None or self.key == resource_key(ev.rt)) and (
            self.namespace is None or self.namespace == ev.namespace
        )

    def offer(self, ev: _LogEvent) -> None:
        if self._ended:
            return
        if len(self._buf) >= self._limit:
            logger.warning(
                "watch on %s fell %d events behind at revision %d; ending it",
                self.key or "all kinds",
                self._limit,
                ev.revision,
            )
            self._overflowed = True
            self.end()
            return
        self._buf.append(ev)
        self._wake.set()

    def end(self, *, drop: bool = False) -> None:
        """Stop taking events; ``drop`` discards what is buffered (close) instead of draining it first."""
        self._ended = True
        if drop:
            self._buf.clear()
        self.hub.discard(self)
        self._wake.set()

    async def get(self) -> _LogEvent:
        """The next live event; Gone after an overflow, StopAsyncIteration once ended."""
        while True:
            if self._buf:
                return self._buf.popleft()
            if self._ended:
                if self._overflowed:
                    raise Gone(
                        f"watch fell more than {self._limit} events behind and was ended; list again",
                        kind=self._kind,
                    )
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()


class _EventHub:
    """In-process fan-out of committed events to watchers.

    ``publish`` is the seam for multi-replica PostgreSQL: it ignores revisions at or below the last one
    published, so exactly one ordered source must feed it (today: local writes under the write lock;
    later: a reader tailing the event log).
    """

    def __init__(self) -> None:
        self.last_published = 0
        self._subs: set[_Subscriber] = set()

    def subscribe(self, sub: _Subscriber) -> None:
        self._subs.add(sub)

    def discard(self, sub: _Subscriber) -> None:
        self._subs.discard(sub)

    def publish(self, ev: _LogEvent) -> None:
        if ev.revision <= self.last_published:
            return
        self.last_published = ev.revision
        for sub in list(self._subs):
            if sub.matches(ev):
                sub.offer(ev)

    def close(self) -> None:
        for sub in list(self._subs):
            sub.end(drop=True)


class SqlWatch:
    """The iterator ``SqlStore.watch`` returns.

    It is subscribed to live events as soon as it is created, so nothing written after ``watch()``
    returns is missed even before the first ``__anext__``. Call :meth:`aclose` (or let the store close)
    when done; an abandoned watch is ended by its own buffer overflowing.
    """

    def __init__(self, store: SqlStore, sub: _Subscriber, rt: ResourceType | None, since: int | None) -> None:
        self._store = store
        self._sub = sub
        self._rt = rt
        self._since = since
        self._started = False
        self._pending: deque[_LogEvent] = deque()
        self._last = 0

    def __aiter__(self) -> SqlWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        if not self._started:
            self._started = True
            if self._since is None:
                self._last = self._sub.start_revision
            else:
                try:
                    replay = await self._store._replay(self._rt, self._sub.namespace, self._since)
                except BaseException:
                    self._sub.end(drop=True)
                    raise
                self._pending.extend(replay)
                self._last = self._since
        while True:
            ev = self._pending.popleft() if self._pending else await self._sub.get()
            if ev.revision > self._last:  # live events already covered by the replay are dropped here
                self._last = ev.revision
                return ev.decode()

    async def aclose(self) -> None:
        self._pending.clear()
        self._sub.end(drop=True)


# --------------------------------------------------------------------------------------------- store


@dataclass(slots=True)
class _Txn:
    """What a write transaction produced: its revision, the event to log and publish, or a skip."""

    conn: AsyncConnection
    revision: int
    event: _LogEvent | None = None
    name: str = ""
    skip: bool = field(default=False)


class SqlStore:
    """The :class:`~cloudservice.store.base.Store` on SQLAlchemy: ``sqlite+aiosqlite:///PATH`` or
    ``postgresql+asyncpg://USER@HOST/DB``.

    Writers are serialised twice, on purpose: an ``asyncio.Lock`` orders this process's writes so their
    events are published in revision order, and the counter row (see the module docstring) orders writers
    across processes, which is what lets watchers trust the revision order. ``schema`` puts the tables
    in a PostgreSQL schema (which must exist); leave it None for SQLite.
    """

    def __init__(
        self, url: str, *, event_window: int = 10_000, watch_queue: int = 1_000, schema: str | None = None
    ) -> None:
        if event_window < 1:
            raise ValueError(f"event_window must be at least 1, got {event_window}")
        if watch_queue < 1:
            raise ValueError(f"watch_queue must be at least 1, got {watch_queue}")
        try:
            self._url: URL = make_url(url)
        except ArgumentError as exc:
            raise ValueError(f"not a database URL: {url!r}") from exc
        self._event_window = event_window
        self._watch_queue = watch_queue
        self._compact_every = max(1, min(event_window // _COMPACT_FRACTION, _COMPACT_EVERY_MAX))
        self._t = _tables(schema)
        self._engine: AsyncEngine | None = None
        self._closed = False
        self._write_lock = asyncio.Lock()
        self._hub = _EventHub()
        # Resource types seen in this process, to give replayed events of any kind their ResourceType.
        self._types: dict[str, ResourceType] = {}

    @property
    def url(self) -> URL:
        return self._url

    @property
    def is_sqlite(self) -> bool:
        return self._url.get_backend_name() == "sqlite"

    # ----------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._closed:
            raise StoreError("store is closed")
        if self._engine is not None:
            return
        db = self._url.database
        if self.is_sqlite and db and db != ":memory:" and not db.startswith("file:"):
            try:
                await asyncio.to_thread(Path(db).parent.mkdir, parents=True, exist_ok=True)
            except OSError as exc:
                raise BackendError("start", f"cannot create the directory for {db}: {exc}") from exc
        engine = create_async_engine(self._url, pool_reset_on_return=None)
        if self.is_sqlite:
            event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
        t = self._t
        try:
            async with engine.begin() as conn:
                await conn.run_sync(t.metadata.create_all)
                version = (
                    await conn.execute(select(t.schema_version.c.version).where(t.schema_version.c.id == 1))
                ).scalar_one_or_none()
                if version is None:
                    await conn.execute(insert(t.schema_version).values(id=1, version=SCHEMA_VERSION))
                elif version > SCHEMA_VERSION:
                    raise StoreError(
                        f"database schema version {version} is newer than this FleetOps ({SCHEMA_VERSION})"
                    )
                # version < SCHEMA_VERSION: the place for migrations once there is a second version.
                current = (
                    await conn.execute(select(t.revision.c.value).where(t.revision.c.id == 1))
                ).scalar_one_or_none()
                if current is None:
                    current = 0
                    await conn.execute(insert(t.revision).values(id=1, value=0))
        except BaseException as exc:
            await engine.dispose()
            if isinstance(exc, SQLAlchemyError | OSError):
                raise BackendError("start", str(exc)) from exc
            raise
        self._engine = engine
        self._hub.last_published = int(current)
        logger.info(
            "store open at %s (schema version %d, revision %d)",
            self._url.render_as_string(hide_password=True),
            SCHEMA_VERSION,
            current,
        )

    async def close(self) -> None:
        """End every watcher (their iterators stop) and release the database connections."""
        self._closed = True
        self._hub.close()
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()

    def _require_engine(self) -> AsyncEngine:
        if self._engine is None:
            raise StoreError("store is closed" if self._closed else "store not started")
        return self._engine

    @asynccontextmanager
    async def _reading(self, operation: str) -> AsyncIterator[AsyncConnection]:
        engine = self._require_engine()
        try:
            async with engine.connect() as conn:
                yield conn
        except (SQLAlchemyError, OSError) as exc:
            raise BackendError(operation, str(exc)) from exc

    @asynccontextmanager
    async def _writing(self, operation: str) -> AsyncIterator[_Txn]:
        """One write transaction: takes the next revision first (locking the counter), appends the body's
        ``txn.event`` to the log, commits, then publishes the event. ``txn.skip`` rolls back instead."""
        engine = self._require_engine()
        t = self._t
        async with self._write_lock:
            try:
                async with engine.connect() as conn, conn.begin() as trans:
                    # pysqlite begins a (deferred) transaction before this UPDATE; being a write,
                    # it waits on busy_timeout for other processes and takes SQLite's write lock.
                    rev = (
                        await conn.execute(
                            update(t.revision)
                            .where(t.revision.c.id == 1)
                            .values(value=t.revision.c.value + 1)
                            .returning(t.revision.c.value)
                        )
                    ).scalar_one()
                    txn = _Txn(conn=conn, revision=int(rev))
                    yield txn
                    if txn.skip:
                        await trans.rollback()
                    elif txn.event is not None:
                        await self._log_event(conn, txn)
            except (SQLAlchemyError, OSError) as exc:
                raise BackendError(operation, str(exc)) from exc
            if not txn.skip and txn.event is not None:
                self._hub.publish(txn.event)

    async def _log_event(self, conn: AsyncConnection, txn: _Txn) -> None:
        ev = txn.event
        assert ev is not None
        t = self._t
        await conn.execute(
            insert(t.events).values(
                revision=ev.revision,
                resource=resource_key(ev.rt),
                namespace=ev.namespace,
                name=txn.name,
                type=ev.type,
                data=ev.data,
            )
        )
        if ev.revision % self._compact_every == 0:
            await conn.execute(
                delete(t.events).where(t.events.c.revision <= ev.revision - self._event_window)
            )

    def _key_filter(self, rt: ResourceType, namespace: str, name: str) -> ColumnElement[bool]:
        o = self._t.objects.c
        return and_(o.resource == resource_key(rt), o.namespace == namespace, o.name == name)

    def _remember(self, rt: ResourceType) -> None:
        self._types.setdefault(resource_key(rt), rt)

    def _type_for(self, key: str, obj_text: str) -> ResourceType:
        rt = self._types.get(key)
        if rt is not None:
            return rt
        group, _, plural = key.partition("/")
        rt = by_plural(group, plural)
        if rt is None:  # a kind this process never wrote and the registry does not know
            obj = json.loads(obj_text)
            version = str(obj.get("apiVersion", "v1")).rpartition("/")[2]
            rt = ResourceType(
                group,
                version,
                str(obj.get("kind", plural)),
                plural,
                namespaced=bool(meta(obj).get("namespace")),
            )
        self._types[key] = rt
        return rt

    # ----------------------------------------------------------------------------------- reads

    async def revision(self) -> int:
        t = self._t
        async with self._reading("revision") as conn:
            value = (await conn.execute(select(t.revision.c.value).where(t.revision.c.id == 1))).scalar_one()
        return int(value)

    async def get(self, rt: ResourceType, namespace: str, name: str) -> JSONObject:
        ns = namespace if rt.namespaced else ""
        async with self._reading("get") as conn:
            data = (
                await conn.execute(select(self._t.objects.c.data).where(self._key_filter(rt, ns, name)))
            ).scalar_one_or_none()
        if data is None:
            raise _not_found(rt, name)
        obj: JSONObject = json.loads(data)
        return obj

    async def list(self, rt: ResourceType, namespace: str | None = None) -> tuple[list[JSONObject], int]:
        t = self._t
        o = t.objects.c
        cond = o.resource == resource_key(rt)
        if namespace is not None and rt.namespaced:
            cond = and_(cond, o.namespace == namespace)
        # One statement, so the objects and the revision come from the same snapshot; the outer join
        # from the one-row counter still returns the revision when there are no objects.
        stmt = (
            select(t.revision.c.value, o.data)
            .select_from(t.revision.outerjoin(t.objects, cond))
            .where(t.revision.c.id == 1)
            .order_by(o.namespace, o.name)
        )
        async with self._reading("list") as conn:
            rows = (await conn.execute(stmt)).all()
        loads = json.loads
        return [loads(data) for _, data in rows if data is not None], int(rows[0][0])

    async def read_cursor(self, name: str) -> int:
        c = self._t.cursors.c
        async with self._reading("read_cursor") as conn:
            value = (await conn.execute(select(c.value).where(c.name == name))).scalar_one_or_none()
        return int(value or 0)

    # ----------------------------------------------------------------------------------- writes

    async def create(self, rt: ResourceType, obj: JSONObject) -> JSONObject:
        new = _copy(obj)
        new.setdefault("apiVersion", rt.api_version)
        new.setdefault("kind", rt.kind)
        m = meta(new)
        name = str(m.get("name") or "")
        if not name and m.get("generateName"):
            name = str(m["generateName"]) + "".join(
                secrets.choice(_GENERATE_ALPHABET) for _ in range(_GENERATE_LEN)
            )
            m["name"] = name
        if not name:
            raise StoreError("metadata.name or metadata.generateName is required", kind=rt.plural)
        if rt.namespaced:
            ns = str(m.get("namespace") or "default")
            m["namespace"] = ns
        else:
            ns = ""
            m.pop("namespace", None)
        self._remember(rt)
        async with self._writing("create") as txn:
            uid = str(uuid.uuid4())
            m["uid"] = uid
            m["creationTimestamp"] = now_rfc3339()
            m["resourceVersion"] = str(txn.revision)
            m["generation"] = 1
            text = _dumps(new)
            try:
                await txn.conn.execute(
                    insert(self._t.objects).values(
                        resource=resource_key(rt),
                        namespace=ns,
                        name=name,
                        uid=uid,
                        revision=txn.revision,
                        data=text,
                    )
                )
            except IntegrityError as exc:
                raise AlreadyExists(
                    f'{_qualified(rt)} "{name}" already exists', kind=rt.plural, name=name
                ) from exc
            txn.name = name
            txn.event = _LogEvent(txn.revision, rt, ns, "ADDED", text)
        return new

    async def update(
        self, rt: ResourceType, obj: JSONObject, *, cursor: Cursor | None = None
    ) -> JSONObject | None:
        new = _copy(obj)
        m = meta(new)
        name = str(m.get("name") or "")
        ns = str(m.get("namespace") or "default") if rt.namespaced else ""
        want = m.get("resourceVersion")
        self._remember(rt)
        async with self._writing("update") as txn:
            if cursor is not None and not await self._advance_cursor(txn.conn, cursor):
                txn.skip = True
                return None
            stored_rev, stored = await self._current(txn.conn, rt, ns, name)
            if want not in (None, "") and str(want) != str(stored_rev):
                raise _conflict(rt, name)
            await self._replace(txn, rt, ns=ns, name=name, stored=stored, new=new)
        return new

    async def guaranteed_update(
        self, rt: ResourceType, namespace: str, name: str, fn: UpdateFn, *, cursor: Cursor | None = None
    ) -> JSONObject | None:
        """Read, apply ``fn`` and write in one transaction. The read happens under the write lock, so
        the CAS cannot fail and no retry is needed; ``fn`` runs inside the transaction and must be quick.
        When ``fn`` returns None nothing is written (a cursor is not advanced either)."""
        ns = namespace if rt.namespaced else ""
        self._remember(rt)
        async with self._writing("guaranteed_update") as txn:
            if cursor is not None and not await self._advance_cursor(txn.conn, cursor):
                txn.skip = True
                return None
            _, stored = await self._current(txn.conn, rt, ns, name)
            changed = fn(_copy(stored))
            if changed is None:
                txn.skip = True
                return stored
            new = _copy(changed)
            m = meta(new)
            m["name"] = name
            if rt.namespaced:
                m["namespace"] = ns
            await self._replace(txn, rt, ns=ns, name=name, stored=stored, new=new)
        return new

    async def delete(
        self, rt: ResourceType, namespace: str, name: str, *, resource_version: str | None = None
    ) -> JSONObject:
        ns = namespace if rt.namespaced else ""
        self._remember(rt)
        async with self._writing("delete") as txn:
            stored_rev, last = await self._current(txn.conn, rt, ns, name)
            if resource_version not in (None, "") and str(resource_version) != str(stored_rev):
                raise _conflict(rt, name)
            await txn.conn.execute(delete(self._t.objects).where(self._key_filter(rt, ns, name)))
            meta(last)["resourceVersion"] = str(txn.revision)
            txn.name = name
            txn.event = _LogEvent(txn.revision, rt, ns, "DELETED", _dumps(last))
        return last

    async def _current(
        self, conn: AsyncConnection, rt: ResourceType, ns: str, name: str
    ) -> tuple[int, JSONObject]:
        o = self._t.objects.c
        row = (await conn.execute(select(o.revision, o.data).where(self._key_filter(rt, ns, name)))).first()
        if row is None:
            raise _not_found(rt, name)
        return int(row[0]), json.loads(row[1])

    async def _replace(
        self, txn: _Txn, rt: ResourceType, *, ns: str, name: str, stored: JSONObject, new: JSONObject
    ) -> None:
        """Write ``new`` over ``stored``: identity fields are kept, generation moves when spec changes."""
        sm, m = meta(stored), meta(new)
        m["uid"] = sm.get("uid")
        m["creationTimestamp"] = sm.get("creationTimestamp")
        m["resourceVersion"] = str(txn.revision)
        generation = int(sm.get("generation") or 1)
        m["generation"] = generation + 1 if new.get("spec") != stored.get("spec") else generation
        new.setdefault("apiVersion", stored.get("apiVersion", rt.api_version))
        new.setdefault("kind", stored.get("kind", rt.kind))
        text = _dumps(new)
        await txn.conn.execute(
            update(self._t.objects)
            .where(self._key_filter(rt, ns, name))
            .values(revision=txn.revision, data=text)
        )
        txn.name = name
        txn.event = _LogEvent(txn.revision, rt, ns, "MODIFIED", text)

    async def _advance_cursor(self, conn: AsyncConnection, cursor: Cursor) -> bool:
        """Store ``cursor.value`` if it is newer than the stored one; False means skip the write. Runs
        under the counter lock, so the read-then-write cannot race another writer."""
        c = self._t.cursors.c
        stored = (await conn.execute(select(c.value).where(c.name == cursor.name))).scalar_one_or_none()
        if stored is None:
            await conn.execute(insert(self._t.cursors).values(name=cursor.name, value=cursor.value))
            return True
        if cursor.value <= stored:
            logger.debug("cursor %s at %d: skipping write with %d", cursor.name, stored, cursor.value)
            return False
        await conn.execute(update(self._t.cursors).where(c.name == cursor.name).values(value=cursor.value))
        return True

    # ----------------------------------------------------------------------------------- telemetry

    async def write_telemetry(
        self,
        points: Sequence[TelemetryPoint],
        *,
        prune: Sequence[tuple[str, str, str]] = (),
        keep: int = 0,
    ) -> None:
        if not points and not prune:
            return
        tc = self._t.telemetry.c
        rows = [
            {
                "namespace": p.namespace,
                "device": p.device,
                "property": p.property,
                "start_ms": p.point.start,
                "end_ms": p.point.end,
                "min": p.point.min,
                "max": p.point.max,
                "mean": p.point.mean,
                "count": p.point.count,
                "last": p.point.last,
            }
            for p in points
        ]
        engine = self._require_engine()
        # Telemetry takes no revision, but SQLite has one writer: queue behind this process's object
        # writes instead of meeting them at the busy timeout.
        async with self._write_lock:
            try:
                async with engine.begin() as conn:
                    if rows:
                        await conn.execute(insert(self._t.telemetry), rows)
                    for namespace, device, prop in prune:
                        series = and_(tc.namespace == namespace, tc.device == device, tc.property == prop)
                        # The end of the oldest point to keep; everything older goes.
                        cutoff = (
                            select(tc.end_ms)
                            .where(series)
                            .order_by(tc.end_ms.desc())
                            .limit(1)
                            .offset(max(keep, 1) - 1)
                            .scalar_subquery()
                        )
                        await conn.execute(delete(self._t.telemetry).where(series, tc.end_ms < cutoff))
            except (SQLAlchemyError, OSError) as exc:
                raise BackendError("write_telemetry", str(exc)) from exc

    async def telemetry(self, namespace: str, device: str) -> builtins.list[TelemetryPoint]:
        tc = self._t.telemetry.c
        stmt = (
            select(tc.property, tc.start_ms, tc.end_ms, tc.min, tc.max, tc.mean, tc.count, tc.last)
            .where(tc.namespace == namespace, tc.device == device)
            .order_by(tc.property, tc.end_ms)
        )
        async with self._reading("telemetry") as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            TelemetryPoint(
                namespace, device, prop, Point(int(start), int(end), lo, hi, mean, int(count), last)
            )
            for prop, start, end, lo, hi, mean, count, last in rows
        ]

    async def forget_telemetry(self, namespace: str, device: str) -> None:
        tc = self._t.telemetry.c
        engine = self._require_engine()
        async with self._write_lock:
            try:
                async with engine.begin() as conn:
                    await conn.execute(
                        delete(self._t.telemetry).where(tc.namespace == namespace, tc.device == device)
                    )
            except (SQLAlchemyError, OSError) as exc:
                raise BackendError("forget_telemetry", str(exc)) from exc

    # ----------------------------------------------------------------------------------- watch

    def watch(
        self, rt: ResourceType | None, namespace: str | None = None, since: int | None = None
    ) -> SqlWatch:
        if rt is not None:
            self._remember(rt)
            if not rt.namespaced:
                namespace = None
        sub = _Subscriber(
            self._hub,
            resource_key(rt) if rt is not None else None,
            namespace,
            self._watch_queue,
            rt.plural if rt is not None else "",
        )
        if self._closed:
            sub.end(drop=True)
        else:
            self._hub.subscribe(sub)
        return SqlWatch(self, sub, rt, since)

    async def _replay(
        self, rt: ResourceType | None, namespace: str | None, since: int
    ) -> builtins.list[_LogEvent]:
        """Logged events after ``since`` for this watch; Gone when the log no longer reaches back."""
        t = self._t
        e = t.events.c
        stmt = select(e.revision, e.resource, e.namespace, e.type, e.data).where(e.revision > since)
        if rt is not None:
            stmt = stmt.where(e.resource == resource_key(rt))
        if namespace is not None:
            stmt = stmt.where(e.namespace == namespace)
        bounds = select(select(func.min(e.revision)).scalar_subquery(), t.revision.c.value).where(
            t.revision.c.id == 1
        )
        async with self._reading("watch") as conn:
            rows = (await conn.execute(stmt.order_by(e.revision))).all()
            # Checked after the read: compaction only moves the oldest event forward, so if the log
            # still reaches back to `since` now, the rows above are complete.
            oldest, current = (await conn.execute(bounds)).one()
        first_kept = int(oldest) if oldest is not None else int(current) + 1
        if since < first_kept - 1:
            raise Gone(
                f"too old resource version: {since} (the event log starts at {first_kept})",
                kind=rt.plural if rt is not None else "",
            )
        return [
            _LogEvent(int(rev), rt if rt is not None else self._type_for(key, data), ns, typ, data)
            for rev, key, ns, typ, data in rows
        ]

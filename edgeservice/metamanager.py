"""MetaManager: the edge's durable cache of what the cloud assigned to this node, and its outbox.

Everything the edge must still know after a SIGKILL, a power cut or a week without the cloud lives here,
in one SQLite file (SQLAlchemy Core over the standard sqlite3 driver):

* ``objects``: the last version of every object the cloud sent (pods now; configmaps, secrets and devices
  later), keyed by the tunnel's ``namespace/type/name``, with its resourceVersion. A message older than
  the cached version is acknowledged and ignored, so resends and reordering across reconnects are harmless.
* ``outbox``: what the edge must tell the cloud (pod status, pod termination), in order, with a sequence
  number the cloud uses to drop duplicates. A row leaves the outbox only when the cloud acknowledged it,
  or when a newer message of a *latest wins* kind (:data:`LATEST_WINS`: a device's status) replaced it.
* ``meta``: the outbox *epoch*, a random id minted when the file is created. The cloud keeps its
  duplicate-detection cursor per epoch, so a rebuilt cache (sequence back at 1) cannot be mistaken for
  replays of the old one.

Latest wins. A device's status report is its whole twin (every property's reported and observed desired
value, and its state), and an adapter reports on every collect/report cycle, so a week offline would
queue hundreds of thousands of them, each superseded by the next. Writing a status for a device removes
that device's rows still in the outbox and appends the new one, with its status merged over theirs
(``{**old, **new}``, the shallow merge the cloud applies, so a ``lastOnlineTime`` only an older report
carried survives): an offline period leaves one row per device. The new row takes a *new* sequence
number, never a replaced row's: the cloud's duplicate cursor only moves forward, so a row that was
already sent (and perhaps applied, its ack lost) must never come back under the same number with other
content, and a new number can never be mistaken for a replay. A replaced row that was in flight stays in
flight on the tunnel: the cloud applies it (or skips it) and its ack removes nothing, which is right,
since the newer row that follows it carries everything it said. Events, pod statuses and everything else
are never coalesced: every Event must arrive, and a pod status ack carries a resourceVersion the edge
keeps.

Durability: WAL journal with ``synchronous=FULL`` — each commit is on disk before we acknowledge to the
cloud ("persist, then ack"). The tunnel hands us messages in batches, and a batch is one transaction, so
the fsync cost is paid per batch, not per message.

A file that cannot be opened, fails ``PRAGMA quick_check`` or carries an unknown schema version is never
trusted: it is moved aside as ``<name>.corrupt-<timestamp>``, reported, and a fresh cache is built; the
cloud then resends everything on the next connection. Calls are synchronous and short; the edge runs
them on its event loop (a commit is a few milliseconds on eMMC), which keeps ordering trivial, except
the outbox's writes (:meth:`MetaManager.write_outbox`): the edge runs those in a worker thread as a group
commit, so that the loop keeps taking messages (a burst of device telemetry) while a commit waits for the
disk, and the next commit carries everything that arrived meanwhile.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from app.envelope import Message, decode
from app.resources import JSONObject
from edgeservice.errors import EdgeError

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
# Outbox kinds (the ``type`` of ``namespace/type/name``) of which only the newest update per object needs
# to reach the cloud (see the module doc). A set, so that the SQL below stays one definition.
LATEST_WINS: Final = frozenset({"devicestatus"})
# Rows of those kinds, as an SQL condition on the outbox's key: the partial index over them and the query
# that finds them must spell it identically for SQLite to use the index.
_LATEST_WINS_SQL: Final = "(" + " OR ".join(f"key GLOB '*/{kind}/*'" for kind in sorted(LATEST_WINS)) + ")"

_md = MetaData()
objects_t = Table(
    "objects",
    _md,
    Column("key", String, primary_key=True),
    Column("type", String, nullable=False, index=True),
    Column("uid", String, nullable=False, default=""),
    Column("rv", Integer, nullable=False),
    Column("data", Text, nullable=False),
    Column("status", Text, nullable=True),
)
outbox_t = Table(
    "outbox",
    _md,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("key", String, nullable=False),
    Column("message", Text, nullable=False),
    sqlite_autoincrement=True,  # never reuse a sequence number, even after the newest row is deleted
)
meta_t = Table("meta", _md, Column("k", String, primary_key=True), Column("v", String, nullable=False))
# The edge's own state that is not a copy of a cloud object (device twins): never part of the inventory.
local_t = Table("local", _md, Column("k", String, primary_key=True), Column("v", Text, nullable=False))


class CacheError(EdgeError):
    """The cache could not be read or written."""


@dataclass(frozen=True, slots=True)
class Change:
    """An applied cloud message: ``obj`` is the new object, or None when it was deleted."""

    key: str
    type: str
    obj: JSONObject | None
    previous: JSONObject | None


def _type_of(key: str) -> str:
    parts = key.split("/")
    return parts[1] if len(parts) == 3 else ""


def _latest_wins(message: Message) -> bool:
    return message.operation == "update" and _type_of(message.resource) in LATEST_WINS


def _supersede(older: Message, newer: Message) -> None:
    """Fold an unsent status report into the newer one that replaces it: the newer status over the older
    (the cloud's own shallow merge, so the pair has the effect the two would have had in turn). A report
    about another incarnation of the object (another uid) is dropped as it is: the cloud would refuse it."""
    old, new = older.content, newer.content
    if not isinstance(old, dict) or not isinstance(new, dict) or old.get("uid") != new.get("uid"):
        return
    old_status, new_status = old.get("status"), new.get("status")
    if isinstance(old_status, dict) and isinstance(new_status, dict):
        newer.content = {**new, "status": {**old_status, **new_status}}


class MetaManager:
    name = "metamanager"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._engine: Engine | None = None
        self.rebuilt = False
        self.epoch = ""
        # Outbox rows, counted lazily (see outbox_depth); the lock because write_outbox may run in a thread.
        self._depth: int | None = None
        self._depth_lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------------

    def open(self) -> None:
        """Open (or build) the cache; sets ``rebuilt`` when the edge starts from nothing."""
        # Private: the cache holds the Secrets the node's pods use. SQLite gives the -wal and -shm files the
        # mode of the database file, so creating that 0600 covers all three.
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        existed = self.path.exists()
        if existed:
            problem = self._check()
            if problem is not None:
                aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
                log.error(
                    "edge cache %s is unusable (%s); moved to %s and rebuilding from the cloud",
                    self.path,
                    problem,
                    aside,
                )
                self.path.replace(aside)
                for suffix in ("-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                existed = False
        elif Path(f"{self.path}-wal").exists():
            Path(f"{self.path}-wal").unlink()
        if not existed:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._engine = self._make_engine()
        if not existed:
            log.warning("edge cache %s is new: the node's state will be rebuilt from the cloud", self.path)
            _md.create_all(self._engine)
            with self._engine.begin() as conn:
                conn.execute(
                    insert(meta_t),
                    [
                        {"k": "schema_version", "v": str(SCHEMA_VERSION)},
                        {"k": "epoch", "v": uuid.uuid4().hex},
                    ],
                )
            self.rebuilt = True
        with self._engine.begin() as conn:
            # A table added after schema version 1 was released; plain SQL, because going through the
            # DDL compiler on every start costs the edge a megabyte of its footprint budget.
            conn.exec_driver_sql(
                "CREATE TABLE IF NOT EXISTS local (k VARCHAR NOT NULL PRIMARY KEY, v TEXT NOT NULL)"
            )
            # Finds the latest-wins rows a new report replaces; partial, so that the other rows (telemetry
            # at thousands a second) pay nothing for it. Added, like ``local``, after version 1.
            conn.exec_driver_sql(
                f"CREATE INDEX IF NOT EXISTS outbox_latest_wins ON outbox (key) WHERE {_LATEST_WINS_SQL}"
            )
        with self._engine.connect() as conn:
            self.epoch = str(conn.execute(select(meta_t.c.v).where(meta_t.c.k == "epoch")).scalar_one())

    def _make_engine(self) -> Engine:
        engine = create_engine(f"sqlite:///{self.path}")

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

        return engine

    def _check(self) -> str | None:
        """Why the existing file cannot be trusted, or None when it can."""
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True)
            try:
                (result,) = conn.execute("PRAGMA quick_check").fetchone()
                if result != "ok":
                    return f"integrity check failed: {result}"
                row = conn.execute("SELECT v FROM meta WHERE k = 'schema_version'").fetchone()
                if row is None or row[0] != str(SCHEMA_VERSION):
                    return f"unknown schema version {row[0] if row else None}"
                conn.execute("SELECT count(*) FROM objects").fetchone()
                conn.execute("SELECT count(*) FROM outbox").fetchone()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            return str(exc)
        return None

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
            self._depth = None

    @property
    def is_open(self) -> bool:
        return self._engine is not None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise CacheError("the cache is not open")
        return self._engine

    # -- objects ----------------------------------------------------------------------------------

    def inventory(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(objects_t.c.key, objects_t.c.rv)).all()
        return {str(key): int(rv) for key, rv in rows}

    def objects(self, type_: str) -> list[JSONObject]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(objects_t.c.data).where(objects_t.c.type == type_).order_by(objects_t.c.key)
            )
            return [json.loads(data) for (data,) in rows]

    def get(self, key: str) -> JSONObject | None:
        with self.engine.connect() as conn:
            data = conn.execute(select(objects_t.c.data).where(objects_t.c.key == key)).scalar_one_or_none()
        return None if data is None else dict(json.loads(data))

    def apply(self, messages: Iterable[Message]) -> list[Change]:
        """Make a batch of cloud messages durable in one transaction; returns what actually changed.

        Updates older than (or as old as) the cached version and deletes of unknown objects are no-ops.
        """
        changes: list[Change] = []
        try:
            with self.engine.begin() as conn:
                for msg in messages:
                    key = msg.resource
                    row = conn.execute(
                        select(objects_t.c.rv, objects_t.c.data).where(objects_t.c.key == key)
                    ).one_or_none()
                    previous = json.loads(row.data) if row is not None else None
                    if msg.operation == "delete":
                        if row is None:
                            continue
                        uid = (msg.content or {}).get("uid") if isinstance(msg.content, dict) else None
                        if uid and previous and previous.get("metadata", {}).get("uid") != uid:
                            continue
                        conn.execute(delete(objects_t).where(objects_t.c.key == key))
                        changes.append(Change(key, _type_of(key), None, previous))
                        continue
                    if not isinstance(msg.content, dict):
                        continue
                    rv = int(msg.resourceversion or 0)
                    if row is not None and row.rv >= rv:
                        continue
                    type_ = _type_of(key)
                    values = {
                        "type": type_,
                        "uid": str(msg.content.get("metadata", {}).get("uid", "")),
                        "rv": rv,
                        "data": json.dumps(msg.content, separators=(",", ":")),
                    }
                    if row is None:
                        conn.execute(insert(objects_t).values(key=key, **values))
                    else:
                        conn.execute(update(objects_t).where(objects_t.c.key == key).values(**values))
                    changes.append(Change(key, type_, msg.content, previous))
        except (SQLAlchemyError, ValueError) as exc:
            raise CacheError(f"cannot persist {len(changes)}+ cloud messages: {exc}") from exc
        return changes

    def prune(self, keep: set[str]) -> list[Change]:
        """Drop cached objects the cloud no longer assigns to this node (deleted while we were away)."""
        removed: list[Change] = []
        with self.engine.begin() as conn:
            for key, data in conn.execute(select(objects_t.c.key, objects_t.c.data)).all():
                if key not in keep:
                    conn.execute(delete(objects_t).where(objects_t.c.key == key))
                    removed.append(Change(key, _type_of(key), None, json.loads(data)))
        return removed

    def version(self, key: str) -> int:
        """The resourceVersion of our copy of an object (0 when we have none)."""
        with self.engine.connect() as conn:
            rv = conn.execute(select(objects_t.c.rv).where(objects_t.c.key == key)).scalar_one_or_none()
        return int(rv or 0)

    def set_status(self, key: str, status: JSONObject) -> None:
        """The node's own view of an object's status, served locally while the cloud is away."""
        with self.engine.begin() as conn:
            conn.execute(update(objects_t).where(objects_t.c.key == key).values(status=json.dumps(status)))

    def status(self, key: str) -> JSONObject | None:
        with self.engine.connect() as conn:
            data = conn.execute(select(objects_t.c.status).where(objects_t.c.key == key)).scalar_one_or_none()
        return None if data is None else dict(json.loads(data))

    # -- local state ---------------------------------------------------------------------------------

    def local(self, key: str) -> JSONObject | None:
        with self.engine.connect() as conn:
            data = conn.execute(select(local_t.c.v).where(local_t.c.k == key)).scalar_one_or_none()
        return None if data is None else dict(json.loads(data))

    def set_local(self, key: str, value: JSONObject) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(local_t).where(local_t.c.k == key))
            conn.execute(insert(local_t).values(k=key, v=json.dumps(value, separators=(",", ":"))))

    def delete_local(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(local_t).where(local_t.c.k == key))

    # -- outbox -----------------------------------------------------------------------------------

    def enqueue(self, message: Message, *, status_of: tuple[str, JSONObject] | None = None) -> Message:
        """Persist a message for the cloud and return it stamped with its sequence number. With
        ``status_of`` the local status copy is written in the same transaction."""
        self.write_outbox([(message, status_of)])
        return message

    def write_outbox(
        self,
        batch: Sequence[tuple[Message, tuple[str, JSONObject] | None]],
        acked: Sequence[int] = (),
        versions: dict[str, int] | None = None,
    ) -> list[Message]:
        """One outbox transaction: persist ``batch`` (stamping each message with its sequence number and
        writing its ``status_of`` local status copy), drop the ``acked`` rows, and raise the cached
        versions the cloud vouched for (see :meth:`outbox_acked`). One commit, one fsync, for the lot:
        this is the edge's group commit. Safe to call from a worker thread (the engine's connections are
        not tied to a thread), one call at a time.

        A latest-wins message (:data:`LATEST_WINS`) replaces the rows of its object still in the outbox
        and any earlier one of the batch (see the module doc). Returns the messages that were persisted,
        in order: those to send; a replaced message of the batch is neither stored nor numbered."""
        if not batch and not acked and not versions:
            return []
        # The last latest-wins message of each object in the batch replaces the earlier ones.
        last: dict[str, int] = {}
        for i, (message, _) in enumerate(batch):
            if _latest_wins(message):
                if message.resource in last:
                    _supersede(batch[last[message.resource]][0], message)
                last[message.resource] = i
        kept = [
            (message, status_of)
            for i, (message, status_of) in enumerate(batch)
            if not _latest_wins(message) or last[message.resource] == i
        ]
        replaced = 0
        try:
            with self.engine.begin() as conn:
                if last:
                    replaced = self._replace_pending(conn, [batch[i][0] for i in last.values()])
                if kept:
                    # Number the batch ourselves so each message is encoded once, with its seq, and the
                    # rows go in with one executemany: AUTOINCREMENT's counter is the highest seq ever
                    # used, and only this method inserts outbox rows, one call at a time.
                    top = conn.exec_driver_sql(
                        "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'"
                    ).scalar_one_or_none()
                    rows: list[dict[str, object]] = []
                    statuses: list[dict[str, object]] = []
                    for i, (message, status_of) in enumerate(kept, start=int(top or 0) + 1):
                        message.seq = i
                        rows.append({"seq": i, "key": message.resource, "message": message.encode()})
                        if status_of is not None:
                            statuses.append({"k": status_of[0], "s": json.dumps(status_of[1])})
                    conn.execute(insert(outbox_t), rows)
                    if statuses:
                        conn.execute(
                            update(objects_t)
                            .where(objects_t.c.key == bindparam("k"))
                            .values(status=bindparam("s")),
                            statuses,
                        )
                dropped = 0
                if acked:
                    dropped = int(conn.execute(delete(outbox_t).where(outbox_t.c.seq.in_(acked))).rowcount)
                for key, rv in (versions or {}).items():
                    conn.execute(
                        update(objects_t).where(objects_t.c.key == key, objects_t.c.rv < rv).values(rv=rv)
                    )
        except SQLAlchemyError as exc:
            names = ", ".join(sorted({m.resource for m, _ in batch})[:5]) or "acknowledged rows"
            raise CacheError(f"cannot write the outbox ({len(batch)} message(s) for {names}): {exc}") from exc
        with self._depth_lock:
            if self._depth is not None:
                self._depth += len(kept) - replaced - dropped
        return [message for message, _ in kept]

    @staticmethod
    def _replace_pending(conn: Connection, newer: list[Message]) -> int:
        """Delete the outbox rows the latest-wins messages ``newer`` replace, folding each into its
        replacement (oldest first); returns how many rows this transaction deleted.

        Under the sqlite3 driver's legacy transaction handling the SELECT runs before the transaction's
        BEGIN (issued by the DELETE), so :meth:`MetaManager.outbox_done_through` on the loop thread may
        delete some of these rows in between. Folding them in stays right (the cloud applied them, and
        the newer status goes over theirs), but only the DELETE's own count may come off the depth:
        ``outbox_done_through`` has already taken the others off."""
        by_key = {m.resource: m for m in newer}
        rows = conn.execute(
            select(outbox_t.c.seq, outbox_t.c.message)
            .where(text(_LATEST_WINS_SQL), outbox_t.c.key.in_(by_key))
            .order_by(outbox_t.c.seq)
        ).all()
        if not rows:
            return 0
        gone: list[int] = []
        latest: dict[str, Message] = {}
        for seq, data in rows:
            gone.append(int(seq))
            older = decode(data)
            if older.resource in latest:
                _supersede(latest[older.resource], older)
            latest[older.resource] = older
        for key, older in latest.items():
            _supersede(older, by_key[key])
        deleted = int(conn.execute(delete(outbox_t).where(outbox_t.c.seq.in_(gone))).rowcount)
        log.debug("outbox: %d pending report(s) replaced by newer ones", deleted)
        return deleted

    def outbox(self, after: int = 0) -> list[Message]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(outbox_t.c.message).where(outbox_t.c.seq > after).order_by(outbox_t.c.seq)
            )
            return [decode(m) for (m,) in rows]

    def outbox_acked(self, seqs: list[int], versions: dict[str, int] | None = None) -> None:
        """Drop acknowledged outbox rows, and raise objects' versions where the cloud said our copy of the
        spec is that current (it stored our status write as that version), in one transaction."""
        self.write_outbox([], seqs, versions)

    def outbox_done_through(self, seq: int) -> int:
        """The cloud already applied everything up to ``seq`` (its ack was lost): drop those rows."""
        with self.engine.begin() as conn:
            dropped = int(conn.execute(delete(outbox_t).where(outbox_t.c.seq <= seq)).rowcount)
        with self._depth_lock:
            if self._depth is not None:
                self._depth -= dropped
        return dropped

    def outbox_depth(self) -> int:
        """Rows waiting in the outbox: counted once, then kept up to date by the writes (it is asked on
        every telemetry message, and a COUNT per message would cost more than the insert)."""
        with self._depth_lock:
            if self._depth is None:
                with self.engine.connect() as conn:
                    self._depth = int(conn.execute(select(func.count()).select_from(outbox_t)).scalar_one())
            return self._depth

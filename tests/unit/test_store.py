"""SqlStore against real SQLite (a file under tmp_path) and real PostgreSQL (127.0.0.1:5432, database
``test``, a fresh schema per test). PostgreSQL tests skip when the server is unreachable, except when
CI=true, where they fail."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from app.resources import DEPLOYMENTS, NODES, PODS, JSONObject
from cloudservice.errors import AlreadyExists, Conflict, Gone, NotFound, StoreError
from cloudservice.store import BackendError, Cursor, SqlStore, WatchEvent, open_store, store_url
from tests.unit.conftest import MakeStore


def pod(name: str, namespace: str = "default", **spec: Any) -> JSONObject:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "web"}},
        "spec": {"nodeName": "edge-1", "containers": [{"name": "c", "image": "busybox"}], **spec},
    }


def node(name: str) -> JSONObject:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": {"phase": "Ready"}}


async def take(watch: AsyncIterator[WatchEvent], n: int, timeout: float = 10) -> list[WatchEvent]:
    async with asyncio.timeout(timeout):
        return [await anext(watch) for _ in range(n)]


# ------------------------------------------------------------------------------------------- CRUD


async def test_crud_fills_metadata_and_orders_revisions(store: SqlStore) -> None:
    assert await store.revision() == 0
    created = await store.create(PODS, pod("web"))
    meta = created["metadata"]
    assert meta["resourceVersion"] == "1"
    assert meta["generation"] == 1
    assert uuid.UUID(meta["uid"]).version == 4
    assert meta["creationTimestamp"].endswith("Z")
    assert await store.get(PODS, "default", "web") == created

    n = await store.create(NODES, node("edge-1"))
    assert n["metadata"]["resourceVersion"] == "2"
    assert "namespace" not in n["metadata"]
    assert (await store.get(NODES, "", "edge-1"))["status"] == {"phase": "Ready"}

    changed = await store.get(PODS, "default", "web")
    changed["status"] = {"phase": "Running"}
    del changed["metadata"]["uid"]  # identity fields come from the stored object, not the caller
    updated = await store.update(PODS, changed)
    assert updated is not None
    assert updated["metadata"]["resourceVersion"] == "3"
    assert updated["metadata"]["uid"] == meta["uid"]
    assert updated["metadata"]["creationTimestamp"] == meta["creationTimestamp"]
    assert updated["metadata"]["generation"] == 1  # status-only change

    items, rev = await store.list(PODS)
    assert rev == 3 == await store.revision()
    assert items == [updated]

    deleted = await store.delete(PODS, "default", "web")
    assert deleted["metadata"]["resourceVersion"] == "4"
    assert deleted["status"] == {"phase": "Running"}
    with pytest.raises(NotFound) as err:
        await store.get(PODS, "default", "web")
    assert (err.value.kind, err.value.name, err.value.code) == ("pods", "web", 404)
    assert await store.list(PODS) == ([], 4)


async def test_create_twice_is_already_exists(store: SqlStore) -> None:
    await store.create(PODS, pod("web"))
    with pytest.raises(AlreadyExists) as err:
        await store.create(PODS, pod("web"))
    assert (err.value.kind, err.value.name, err.value.code) == ("pods", "web", 409)
    # The failed create took no revision and logged no event.
    assert await store.revision() == 1
    # Same name in another namespace or kind is a different object.
    await store.create(PODS, pod("web", namespace="other"))
    await store.create(DEPLOYMENTS, {"metadata": {"name": "web", "namespace": "default"}, "spec": {}})


async def test_generation_moves_with_spec_only(store: SqlStore) -> None:
    dep = await store.create(
        DEPLOYMENTS, {"metadata": {"name": "d", "namespace": "a"}, "spec": {"replicas": 1}}
    )
    assert (dep["apiVersion"], dep["kind"]) == ("apps/v1", "Deployment")
    dep["spec"]["replicas"] = 3
    scaled = await store.update(DEPLOYMENTS, dep)
    assert scaled is not None and scaled["metadata"]["generation"] == 2
    scaled["status"] = {"replicas": 3}
    reported = await store.update(DEPLOYMENTS, scaled)
    assert reported is not None and reported["metadata"]["generation"] == 2


async def test_generate_name(store: SqlStore) -> None:
    a = await store.create(PODS, {"metadata": {"generateName": "web-", "namespace": "x"}, "spec": {}})
    b = await store.create(PODS, {"metadata": {"generateName": "web-", "namespace": "x"}, "spec": {}})
    assert a["metadata"]["name"].startswith("web-") and len(a["metadata"]["name"]) == len("web-") + 5
    assert a["metadata"]["name"] != b["metadata"]["name"]


async def test_list_filters_by_namespace_and_kind(store: SqlStore) -> None:
    for ns, name in [("a", "p1"), ("b", "p2"), ("a", "p3")]:
        await store.create(PODS, pod(name, namespace=ns))
    await store.create(NODES, node("n1"))
    names = [p["metadata"]["name"] for p in (await store.list(PODS, "a"))[0]]
    assert names == ["p1", "p3"]
    assert len((await store.list(PODS))[0]) == 3
    assert [n["metadata"]["name"] for n in (await store.list(NODES))[0]] == ["n1"]
    assert await store.list(PODS, "empty") == ([], 4)


async def test_update_and_delete_of_missing_object_are_not_found(store: SqlStore) -> None:
    with pytest.raises(NotFound):
        await store.update(PODS, pod("ghost"))
    with pytest.raises(NotFound):
        await store.delete(PODS, "default", "ghost")
    with pytest.raises(NotFound):
        await store.guaranteed_update(PODS, "default", "ghost", lambda o: o)
    assert await store.revision() == 0


# ------------------------------------------------------------------------------------------- CAS


async def test_stale_resource_version_is_conflict(store: SqlStore) -> None:
    first = await store.create(PODS, pod("web"))
    stale = dict(first, status={"phase": "A"})
    fresh = await store.update(PODS, dict(first, status={"phase": "B"}))
    assert fresh is not None
    with pytest.raises(Conflict) as err:
        await store.update(PODS, stale)
    assert (err.value.kind, err.value.name, err.value.code) == ("pods", "web", 409)
    with pytest.raises(Conflict):
        await store.delete(PODS, "default", "web", resource_version=first["metadata"]["resourceVersion"])
    assert (await store.get(PODS, "default", "web"))["status"] == {"phase": "B"}

    # Without a resourceVersion the update is unconditional.
    del stale["metadata"]["resourceVersion"]
    assert await store.update(PODS, stale) is not None
    current = await store.get(PODS, "default", "web")
    await store.delete(PODS, "default", "web", resource_version=current["metadata"]["resourceVersion"])


async def test_guaranteed_update_loses_no_update_under_concurrent_writers(make_store: MakeStore) -> None:
    # Two stores on one database stand for two processes: their writes meet only in the database.
    a, b = await make_store(), await make_store()
    await a.create(PODS, pod("counter"))

    def bump(obj: JSONObject) -> JSONObject:
        ann = obj["metadata"].setdefault("annotations", {})
        ann["count"] = str(int(ann.get("count", "0")) + 1)
        return obj

    per_store = 15
    async with asyncio.TaskGroup() as tg:
        for i in range(per_store):
            tg.create_task(a.guaranteed_update(PODS, "default", "counter", bump), name=f"a{i}")
            tg.create_task(b.guaranteed_update(PODS, "default", "counter", bump), name=f"b{i}")
    final = await a.get(PODS, "default", "counter")
    assert final["metadata"]["annotations"]["count"] == str(2 * per_store)
    assert final["metadata"]["resourceVersion"] == str(1 + 2 * per_store) == str(await b.revision())


async def test_guaranteed_update_returns_unchanged_object_when_fn_declines(store: SqlStore) -> None:
    created = await store.create(PODS, pod("web"))
    assert await store.guaranteed_update(PODS, "default", "web", lambda o: None) == created
    assert await store.revision() == 1


# ------------------------------------------------------------------------------------------- cursors


async def test_cursor_makes_writes_idempotent(store: SqlStore) -> None:
    await store.create(PODS, pod("web"))
    assert await store.read_cursor("edge-outbox/edge-1") == 0

    def phase(value: str) -> Callable[[JSONObject], JSONObject]:
        def fn(obj: JSONObject) -> JSONObject:
            obj["status"] = {"phase": value}
            return obj

        return fn

    cur = Cursor("edge-outbox/edge-1", 5)
    written = await store.guaranteed_update(PODS, "default", "web", phase("Running"), cursor=cur)
    assert written is not None and written["metadata"]["resourceVersion"] == "2"
    assert await store.read_cursor("edge-outbox/edge-1") == 5

    # The same message again (a resend after a lost ack) writes nothing, nor does an older one.
    assert await store.guaranteed_update(PODS, "default", "web", phase("Failed"), cursor=cur) is None
    older = dict(written, status={"phase": "Pending"})
    assert await store.update(PODS, older, cursor=Cursor("edge-outbox/edge-1", 4)) is None
    assert await store.revision() == 2
    assert (await store.get(PODS, "default", "web"))["status"] == {"phase": "Running"}
    assert await store.read_cursor("edge-outbox/edge-1") == 5

    # A newer one writes, and cursors are independent by name.
    assert await store.update(PODS, older, cursor=Cursor("edge-outbox/edge-1", 6)) is not None
    del older["metadata"]["resourceVersion"]
    assert await store.update(PODS, older, cursor=Cursor("edge-outbox/edge-2", 1)) is not None
    assert await store.read_cursor("edge-outbox/edge-1") == 6
    assert await store.read_cursor("edge-outbox/edge-2") == 1


async def test_cursor_is_not_advanced_when_the_write_fails(store: SqlStore) -> None:
    created = await store.create(PODS, pod("web"))
    await store.update(PODS, created)
    with pytest.raises(Conflict):
        await store.update(PODS, created, cursor=Cursor("c", 1))
    assert await store.read_cursor("c") == 0


# ------------------------------------------------------------------------------------------- watch


async def test_watch_from_now_streams_writes_in_order(store: SqlStore) -> None:
    await store.create(PODS, pod("before"))
    w = store.watch(PODS)
    try:
        p = await store.create(PODS, pod("web"))
        p["status"] = {"phase": "Running"}
        await store.update(PODS, p)
        await store.delete(PODS, "default", "web")
        events = await take(w, 3)
    finally:
        await w.aclose()
    assert [(e.type, e.revision, e.resource) for e in events] == [
        ("ADDED", 2, PODS),
        ("MODIFIED", 3, PODS),
        ("DELETED", 4, PODS),
    ]
    assert events[1].object["status"] == {"phase": "Running"}
    assert events[2].object["metadata"]["resourceVersion"] == "4"


async def test_watch_since_replays_missed_events_then_live_without_gap_or_duplicate(store: SqlStore) -> None:
    for i in range(5):
        await store.create(PODS, pod(f"old-{i}"))
    since = await store.revision()
    for i in range(5):
        await store.create(PODS, pod(f"missed-{i}"))
    w = store.watch(PODS, since=since)

    async def writer() -> None:
        for i in range(20):
            await store.create(PODS, pod(f"live-{i}"))

    try:
        # The writer runs while the watch replays from the log: the hand-over is where gaps hide.
        task = asyncio.create_task(writer(), name="writer")
        events = await take(w, 25)
        await task
        await store.create(PODS, pod("last"))
        (last,) = await take(w, 1)
    finally:
        await w.aclose()
    assert [e.revision for e in events] == list(range(since + 1, since + 26))
    assert [e.object["metadata"]["name"] for e in events[:6]] == [f"missed-{i}" for i in range(5)] + [
        "live-0"
    ]
    assert last.revision == since + 26


async def test_watch_since_current_revision_yields_only_new_events(store: SqlStore) -> None:
    await store.create(PODS, pod("a"))
    w = store.watch(PODS, since=await store.revision())
    try:
        await store.create(PODS, pod("b"))
        (ev,) = await take(w, 1)
    finally:
        await w.aclose()
    assert (ev.object["metadata"]["name"], ev.revision) == ("b", 2)


async def test_watch_since_compacted_revision_is_gone(make_store: MakeStore) -> None:
    store = await make_store(event_window=5)
    for i in range(20):
        await store.create(PODS, pod(f"p{i}"))
    for since in (0, 14):
        w = store.watch(PODS, since=since)
        with pytest.raises(Gone) as err:
            await anext(w)
        assert err.value.code == 410
    w = store.watch(PODS, since=15)  # the log keeps revisions 16..20
    try:
        assert [e.revision for e in await take(w, 5)] == [16, 17, 18, 19, 20]
    finally:
        await w.aclose()


async def test_watch_filters_by_kind_and_namespace(store: SqlStore) -> None:
    in_a, pods, everything = store.watch(PODS, "a"), store.watch(PODS), store.watch(None)
    since_all = store.watch(None, since=0)
    try:
        await store.create(PODS, pod("p1", namespace="b"))
        await store.create(NODES, node("n1"))
        await store.create(PODS, pod("p2", namespace="a"))
        got_a = await take(in_a, 1)
        got_pods = await take(pods, 2)
        got_all = await take(everything, 3)
        replayed = await take(since_all, 3)
    finally:
        for w in (in_a, pods, everything, since_all):
            await w.aclose()
    assert [e.object["metadata"]["name"] for e in got_a] == ["p2"]
    assert [e.object["metadata"]["name"] for e in got_pods] == ["p1", "p2"]
    assert [(e.resource, e.revision) for e in got_all] == [(PODS, 1), (NODES, 2), (PODS, 3)]
    assert [(e.resource, e.revision) for e in replayed] == [(PODS, 1), (NODES, 2), (PODS, 3)]


async def test_slow_watcher_is_ended_with_gone_while_others_continue(make_store: MakeStore) -> None:
    store = await make_store(watch_queue=5)
    slow, fast = store.watch(PODS), store.watch(PODS)
    try:
        for i in range(10):
            await store.create(PODS, pod(f"p{i}"))
            await take(fast, 1)  # the fast watcher keeps up
        # The slow one gets what it had buffered, then Gone.
        assert [e.revision for e in await take(slow, 5)] == [1, 2, 3, 4, 5]
        with pytest.raises(Gone):
            await anext(slow)
        await store.create(PODS, pod("after"))
        (ev,) = await take(fast, 1)
        assert ev.revision == 11
    finally:
        await slow.aclose()
        await fast.aclose()


async def test_close_ends_watchers(store: SqlStore) -> None:
    w = store.watch(None)
    waiting = asyncio.create_task(anext(w), name="watcher")
    await asyncio.sleep(0)  # let the watcher block on its queue
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await waiting
    with pytest.raises(StoreError):
        await store.get(PODS, "default", "x")


# ------------------------------------------------------------------------------------------- copies


async def test_results_are_deep_copies(store: SqlStore) -> None:
    mine = pod("web")
    created = await store.create(PODS, mine)
    w1, w2 = store.watch(PODS), store.watch(PODS)
    try:
        mine["spec"]["containers"][0]["image"] = "changed-input"
        created["spec"]["containers"][0]["image"] = "changed-result"
        got = await store.get(PODS, "default", "web")
        got["metadata"]["labels"]["app"] = "changed-get"
        (listed,), _ = await store.list(PODS)
        listed["spec"]["nodeName"] = "changed-list"
        await store.guaranteed_update(PODS, "default", "web", lambda o: o)
        (e1,) = await take(w1, 1)
        e1.object["spec"]["nodeName"] = "changed-event"
        (e2,) = await take(w2, 1)
    finally:
        await w1.aclose()
        await w2.aclose()
    stored = await store.get(PODS, "default", "web")
    assert stored["spec"] == pod("web")["spec"]
    assert stored["metadata"]["labels"] == {"app": "web"}
    assert e2.object["spec"]["nodeName"] == "edge-1"


# ------------------------------------------------------------------------------------------- lifecycle


async def test_reopen_keeps_objects_and_revision(make_store: MakeStore) -> None:
    first = await make_store()
    await first.create(PODS, pod("web"))
    await first.create(NODES, node("n1"))
    await first.close()
    second = await make_store()
    assert (await second.get(PODS, "default", "web"))["metadata"]["resourceVersion"] == "1"
    assert await second.revision() == 2
    created = await second.create(PODS, pod("next"))
    assert created["metadata"]["resourceVersion"] == "3"
    w = second.watch(None, since=0)  # the event log survived too
    try:
        assert [e.revision for e in await take(w, 3)] == [1, 2, 3]
    finally:
        await w.aclose()


async def test_open_store_accepts_a_bare_path(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "cloud.db"
    store = open_store(str(path))
    await store.start()
    try:
        await store.create(NODES, node("n1"))
    finally:
        await store.close()
    assert path.exists()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/var/lib/fleetops/cloud.db", "sqlite+aiosqlite:////var/lib/fleetops/cloud.db"),
        ("sqlite:////x/y.db", "sqlite+aiosqlite:////x/y.db"),
        ("sqlite+aiosqlite:///rel.db", "sqlite+aiosqlite:///rel.db"),
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h:5433/db", "postgresql+asyncpg://u@h:5433/db"),
    ],
)
def test_store_url(given: str, expected: str) -> None:
    assert store_url(given) == expected


def test_store_url_makes_relative_paths_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert store_url("cloud.db") == f"sqlite+aiosqlite:///{tmp_path / 'cloud.db'}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_driver_errors_are_wrapped_and_chained(tmp_path: Path) -> None:
    unreachable = SqlStore(f"postgresql+asyncpg://postgres@127.0.0.1:{_free_port()}/test")
    with pytest.raises(BackendError) as err:
        await unreachable.start()
    assert err.value.operation == "start" and err.value.__cause__ is not None

    # A directory where the database file should be: SQLite cannot open it.
    bad = SqlStore(f"sqlite+aiosqlite:///{tmp_path}")
    with pytest.raises(BackendError) as err:
        await bad.start()
    assert err.value.__cause__ is not None

    with pytest.raises(StoreError, match="not started"):
        await SqlStore("sqlite+aiosqlite:///x.db").revision()

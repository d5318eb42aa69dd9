"""The edge cache's outbox: sequence numbers, the group commit, acknowledgements and the depth count."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from app.envelope import Message
from edgeservice.metamanager import CacheError, MetaManager


@pytest.fixture
def meta(tmp_path: Path) -> Iterator[MetaManager]:
    m = MetaManager(tmp_path / "edge.db")
    m.open()
    yield m
    m.close()


def _msg(name: str) -> Message:
    return Message("update", f"default/devicedata/{name}", {"uid": name})


def test_a_batch_is_numbered_in_order_and_persisted_with_its_numbers(meta: MetaManager) -> None:
    batch = [_msg(f"d{i}") for i in range(5)]
    meta.write_outbox([(m, None) for m in batch])
    assert [m.seq for m in batch] == [1, 2, 3, 4, 5]
    stored = meta.outbox()
    assert [m.seq for m in stored] == [1, 2, 3, 4, 5]
    assert [m.resource for m in stored] == [m.resource for m in batch]


def test_numbers_are_never_reused_after_acks_or_a_restart(tmp_path: Path) -> None:
    meta = MetaManager(tmp_path / "edge.db")
    meta.open()
    first = [_msg("a"), _msg("b")]
    meta.write_outbox([(m, None) for m in first])
    meta.write_outbox([], acked=[1, 2])  # the newest row is gone too
    assert meta.outbox() == []
    meta.close()
    meta.open()  # a restarted edge
    again = meta.enqueue(_msg("c"))
    assert again.seq == 3
    meta.close()


def test_acks_status_copies_and_versions_share_the_transaction(meta: MetaManager) -> None:
    pod = {"metadata": {"name": "p", "namespace": "default", "uid": "u1"}, "spec": {}}
    meta.apply([Message("update", "default/pod/p", pod, resourceversion="4")])
    queued = meta.enqueue(_msg("old"))
    status = {"phase": "Running"}
    fresh = Message("update", "default/podstatus/p", {"uid": "u1", "status": status})
    meta.write_outbox([(fresh, ("default/pod/p", status))], acked=[queued.seq], versions={"default/pod/p": 7})
    assert [m.seq for m in meta.outbox()] == [fresh.seq]
    assert meta.status("default/pod/p") == status
    assert meta.version("default/pod/p") == 7


def test_the_depth_follows_every_write(meta: MetaManager) -> None:
    assert meta.outbox_depth() == 0
    msgs = [_msg(str(i)) for i in range(10)]
    meta.write_outbox([(m, None) for m in msgs])
    assert meta.outbox_depth() == 10
    meta.outbox_acked([msgs[0].seq, msgs[1].seq, 999])  # an unknown seq removes nothing
    assert meta.outbox_depth() == 8
    assert meta.outbox_done_through(msgs[5].seq) == 4
    assert meta.outbox_depth() == 4 == len(meta.outbox())


def test_a_worker_thread_may_write_the_outbox(meta: MetaManager) -> None:
    # The edge runs its group commit in a thread while the loop keeps reading the cache.
    msgs = [_msg(str(i)) for i in range(100)]
    writer = threading.Thread(target=meta.write_outbox, args=([(m, None) for m in msgs],))
    writer.start()
    writer.join()
    assert meta.outbox_depth() == 100
    assert [m.seq for m in meta.outbox()] == list(range(1, 101))


def test_a_closed_cache_refuses_writes(meta: MetaManager) -> None:
    meta.close()
    with pytest.raises(CacheError, match="not open"):
        meta.enqueue(_msg("x"))


# -- latest wins: a device's status reports ------------------------------------------------------------


def _status(device: str, value: str, *, uid: str = "u1", **extra: object) -> Message:
    twins = [{"propertyName": "setpoint", "reported": {"value": value}}]
    return Message(
        "update", f"default/devicestatus/{device}", {"uid": uid, "status": {"twins": twins, **extra}}
    )


def _reported(message: Message) -> str:
    return str(message.content["status"]["twins"][0]["reported"]["value"])


def test_an_offline_period_leaves_one_pending_status_per_device(meta: MetaManager) -> None:
    for i in range(200):  # an adapter reporting every cycle while the cloud is away
        meta.enqueue(_status("pump", str(i)))
    [row] = meta.outbox()
    assert row.resource == "default/devicestatus/pump" and _reported(row) == "199"
    assert row.seq == 200  # each report took a new number: none is ever reused with other content
    assert meta.outbox_depth() == 1


def test_each_device_keeps_its_own_latest_status(meta: MetaManager) -> None:
    for i in range(5):
        meta.write_outbox([(_status("pump", f"p{i}"), None), (_status("fan", f"f{i}"), None)])
    rows = meta.outbox()
    assert [(m.resource, _reported(m)) for m in rows] == [
        ("default/devicestatus/pump", "p4"),
        ("default/devicestatus/fan", "f4"),
    ]
    assert meta.outbox_depth() == 2


def test_events_pod_statuses_and_telemetry_are_never_coalesced(meta: MetaManager) -> None:
    kinds = [
        Message("insert", "default/deviceevent/pump", {"uid": "u1", "reason": "DeviceOffline"}),
        Message("insert", "default/event/web", {"uid": "u2", "reason": "BackOff"}),
        Message("update", "default/podstatus/web", {"uid": "u2", "status": {"phase": "Running"}}),
        Message("update", "default/devicedata/pump", {"uid": "u1", "summary": {"data": {}}}),
        Message("delete", "default/pod/web", {"uid": "u2"}),
    ]
    for _ in range(3):
        meta.write_outbox([(Message(m.operation, m.resource, m.content), None) for m in kinds])
        meta.enqueue(_status("pump", "1"))  # a status report between them replaces only its own kind
    rows = meta.outbox()
    assert [m.resource for m in rows] == [m.resource for m in kinds] * 3 + ["default/devicestatus/pump"]
    assert meta.outbox_depth() == len(rows) == 16


def test_a_batch_persists_and_returns_only_the_latest_status_of_each_device(meta: MetaManager) -> None:
    event = Message("insert", "default/deviceevent/pump", {"uid": "u1", "reason": "DeviceOffline"})
    first, second = _status("pump", "1"), _status("pump", "2")
    written = meta.write_outbox([(first, None), (event, None), (second, None)])
    assert written == [event, second]  # what the edge puts on the tunnel: never the replaced one
    assert [m.seq for m in written] == [1, 2] and first.seq == 0
    assert [m.seq for m in meta.outbox()] == [1, 2]


def test_a_replacing_status_keeps_what_only_the_older_one_said(meta: MetaManager) -> None:
    # The cloud merges a status report over the stored status; the merged row has the effect of the two.
    meta.enqueue(_status("pump", "1", state="online", lastOnlineTime="2024-05-01T10:00:00Z"))
    meta.enqueue(_status("pump", "2", state="offline"))
    [row] = meta.outbox()
    assert row.content["status"] == {
        "twins": [{"propertyName": "setpoint", "reported": {"value": "2"}}],
        "state": "offline",
        "lastOnlineTime": "2024-05-01T10:00:00Z",
    }
    # A report about another incarnation of the device (recreated under the same name) is dropped as it
    # is: the cloud would refuse it, and nothing of it may leak into the new one's status.
    meta.enqueue(_status("pump", "3", uid="u2"))
    [row] = meta.outbox()
    assert row.content == {
        "uid": "u2",
        "status": {"twins": [{"propertyName": "setpoint", "reported": {"value": "3"}}]},
    }


def test_a_status_in_flight_that_is_replaced_still_has_its_ack_cleared_correctly(meta: MetaManager) -> None:
    sent = meta.enqueue(_status("pump", "1"))  # on the tunnel, not acknowledged yet
    event = meta.enqueue(Message("insert", "default/deviceevent/pump", {"uid": "u1", "reason": "X"}))
    newer = meta.enqueue(_status("pump", "2"))
    assert newer.seq > event.seq > sent.seq  # the cloud's cursor, at sent.seq, can never skip the newer
    assert [m.seq for m in meta.outbox()] == [event.seq, newer.seq]
    # The ack of the replaced row arrives: it removes nothing else, and the depth stays exact.
    meta.outbox_acked([sent.seq])
    assert [m.seq for m in meta.outbox()] == [event.seq, newer.seq]
    assert meta.outbox_depth() == 2
    # Or its ack was lost, and the cloud's resync says it applied everything up to it: the same.
    assert meta.outbox_done_through(sent.seq) == 0
    meta.outbox_acked([event.seq, newer.seq])
    assert meta.outbox() == [] and meta.outbox_depth() == 0


def test_reports_queued_before_a_restart_are_replaced_after_it(tmp_path: Path) -> None:
    meta = MetaManager(tmp_path / "edge.db")
    meta.open()
    for i in range(3):
        meta.enqueue(_status("pump", str(i)))
    meta.close()
    meta.open()
    meta.enqueue(_status("pump", "after"))
    assert [(m.seq, _reported(m)) for m in meta.outbox()] == [(4, "after")]
    meta.close()


def test_finding_the_reports_to_replace_uses_the_partial_index(meta: MetaManager) -> None:
    # An offline edge holds up to tens of thousands of telemetry rows; a status report must not scan them.
    seen: list[tuple[str, Any]] = []

    def record(_conn: object, _cursor: object, statement: str, params: Any, *_: object) -> None:
        if "GLOB" in statement and statement.lstrip().startswith("SELECT"):
            seen.append((statement, params))

    event.listen(meta.engine, "before_cursor_execute", record)
    meta.enqueue(_status("pump", "1"))
    meta.enqueue(_status("pump", "2"))
    event.remove(meta.engine, "before_cursor_execute", record)
    assert seen, "no query for the reports to replace"
    with meta.engine.connect() as conn:
        for statement, params in seen:
            plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
            assert any("USING INDEX outbox_latest_wins" in str(row) for row in plan), plan


def test_rows_acked_while_being_replaced_come_off_the_depth_once(meta: MetaManager) -> None:
    # The group commit runs in a worker thread while the loop thread handles a resync: the cloud applied
    # everything up to a seq, and ``outbox_done_through`` drops those rows between the replacing write's
    # SELECT of the rows it replaces and its DELETE of them (the sqlite3 driver begins the transaction only
    # at the DELETE). Each row must come off the depth once, or the depth drifts below the real count.
    meta.enqueue(_status("pump", "1", lastOnlineTime="2024-05-01T10:00:00Z"))
    fan = meta.enqueue(_status("fan", "1"))
    meta.enqueue(_msg("pump"))  # telemetry, after them
    assert meta.outbox_depth() == 3
    resynced: list[int] = []
    hooked = threading.Event()

    def resync_before_the_delete(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if not hooked.is_set() and statement.lstrip().startswith("DELETE FROM outbox"):
            hooked.set()  # first: the resync's own DELETE comes through here too
            resynced.append(meta.outbox_done_through(fan.seq))

    event.listen(meta.engine, "before_cursor_execute", resync_before_the_delete)
    try:
        written = meta.write_outbox([(_status("pump", "2"), None), (_status("fan", "2"), None)])
    finally:
        event.remove(meta.engine, "before_cursor_execute", resync_before_the_delete)
    assert resynced == [2], "the resync did not run between the SELECT and the DELETE"
    rows = meta.outbox()
    assert [m.seq for m in rows] == [3, *(m.seq for m in written)]
    assert meta.outbox_depth() == len(rows) == 3
    # What the write had read is still folded in: the cloud applied it, and the newer report goes over it.
    assert rows[1].content["status"]["lastOnlineTime"] == "2024-05-01T10:00:00Z"
    meta.outbox_acked([m.seq for m in rows])
    assert meta.outbox_depth() == 0 == len(meta.outbox())

"""The edge cache's outbox: sequence numbers, the group commit, acknowledgements and the depth count."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

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

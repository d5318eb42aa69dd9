"""The cloud hub against a real store, with a raw WebSocket client playing the edge's part of the protocol."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.envelope import Message, decode_batch, from_dict
from app.resources import NODES, PODS, JSONObject
from app.tunnel import hello
from cloudservice.auth import TokenStore
from cloudservice.hub import CloudHub
from cloudservice.store.sql import SqlStore, open_store


@dataclass
class Env:
    store: SqlStore
    hub: CloudHub
    token: str

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.hub.port}"


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = open_store(str(tmp_path / "cloud.db"))
    await store.start()
    tokens = TokenStore(tmp_path / "tokens.json")
    token = tokens.create("join", "nodes")
    hub = CloudHub(store, tokens, host="127.0.0.1", port=0, max_frame=64 * 1024)
    await hub.start()
    try:
        yield Env(store, hub, token)
    finally:
        await hub.stop()
        await store.close()


def pod(name: str, node: str, **meta: Any) -> JSONObject:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", **meta},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x", "command": ["sleep", "60"]}]},
        "status": {"phase": "Pending"},
    }


class FakeEdge:
    """Speaks the tunnel protocol frame by frame, so tests can assert on every message."""

    def __init__(self, ws: ClientConnection, node: str) -> None:
        self.ws = ws
        self.node = node
        self._pending: list[Message] = []

    async def recv(self, timeout: float = 5.0) -> Message:
        """The next envelope, whether it came alone or in a batched frame."""
        if not self._pending:
            async with asyncio.timeout(timeout):
                self._pending = [from_dict(item) for item in decode_batch(await self.ws.recv())]
        return self._pending.pop(0)

    async def send(self, msg: Message) -> None:
        await self.ws.send(msg.encode())

    async def hello(self, inventory: dict[str, int] | None = None, epoch: str = "e1") -> Message:
        status = {
            "conditions": [{"type": "Ready", "status": "True"}],
            "capacity": {"cpu": "2", "pods": "110"},
        }
        request = hello(
            self.node,
            {"epoch": epoch, "inventory": inventory or {}, "status": status, "labels": {"site": "a"}},
        )
        await self.send(request)
        reply = await self.recv()
        assert reply.parent_msg_id == request.msg_id
        return reply

    async def ack(self, msg: Message, content: Any = None) -> None:
        await self.send(msg.reply("response", content, source=self.node))


async def join(env: Env, node: str, token: str | None = None) -> FakeEdge:
    ws = await connect(
        env.url,
        additional_headers={"Authorization": f"Bearer {token or env.token}", "X-FleetOps-Node": node},
        proxy=None,
    )
    return FakeEdge(ws, node)


async def test_node_registers_on_hello_with_labels_and_ready_status(env: Env) -> None:
    edge = await join(env, "edge-1")
    try:
        reply = await edge.hello()
        assert reply.content == {"applied_seq": 0, "objects": {}}
        node = await env.store.get(NODES, "", "edge-1")
        assert node["metadata"]["labels"]["site"] == "a"
        assert node["metadata"]["labels"]["node-role.kubernetes.io/edge"] == ""
        [ready] = node["status"]["conditions"]
        assert ready["status"] == "True" and ready["lastHeartbeatTime"]
        assert node["status"]["capacity"]["pods"] == "110"
        assert "edge-1" in env.hub.sessions
    finally:
        await edge.ws.close()


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (
            {"Authorization": "Bearer abcdef.wrongwrongwrong1", "X-FleetOps-Node": "edge-1"},
            "unknown join token",
        ),
        ({"Authorization": "Bearer nodots", "X-FleetOps-Node": "edge-1"}, "malformed token"),
        ({"X-FleetOps-Node": "edge-1"}, "missing bearer token"),
        ({"Authorization": "Bearer {token}"}, "X-FleetOps-Node"),
        ({"Authorization": "Bearer {token}", "X-FleetOps-Node": "Bad_Name"}, "X-FleetOps-Node"),
    ],
)
async def test_bad_credentials_are_refused_at_the_upgrade(
    env: Env, headers: dict[str, str], reason: str
) -> None:
    headers = {k: v.replace("{token}", env.token) for k, v in headers.items()}
    with pytest.raises(InvalidStatus) as err:
        await connect(env.url, additional_headers=headers, proxy=None)
    assert err.value.response.status_code == 401
    assert reason in (err.value.response.body or b"").decode()
    assert env.hub.stats["refused"] == 1
    assert (await env.store.list(NODES))[0] == []


async def test_resync_sends_only_what_the_edge_lacks(env: Env) -> None:
    a = await env.store.create(PODS, pod("a", "edge-1"))
    b = await env.store.create(PODS, pod("b", "edge-1"))
    await env.store.create(PODS, pod("other", "edge-2"))
    edge = await join(env, "edge-1")
    try:
        rv_a, rv_b = int(a["metadata"]["resourceVersion"]), int(b["metadata"]["resourceVersion"])
        # The edge holds "a" up to date, an old "b", and "gone", which the cloud no longer has.
        reply = await edge.hello({"default/pod/a": rv_a, "default/pod/b": rv_b - 1, "default/pod/gone": 1})
        assert reply.content["objects"] == {"default/pod/a": rv_a, "default/pod/b": rv_b}
        msg = await edge.recv()
        assert (msg.operation, msg.resource, msg.resourceversion, msg.sync) == (
            "update",
            "default/pod/b",
            str(rv_b),
            True,
        )
        await edge.ack(msg)
        # Nothing else was queued ("a" is current, "other" is not ours): the next message is a sentinel.
        await env.store.create(PODS, pod("sentinel", "edge-1"))
        assert (await edge.recv()).resource == "default/pod/sentinel"
    finally:
        await edge.ws.close()


async def test_live_changes_reach_the_node_and_status_only_changes_do_not(env: Env) -> None:
    edge = await join(env, "edge-1")
    try:
        await edge.hello()
        created = await env.store.create(PODS, pod("web", "edge-1"))
        msg = await edge.recv()
        assert msg.operation == "update" and msg.content["metadata"]["uid"] == created["metadata"]["uid"]
        await edge.ack(msg)
        await env.store.guaranteed_update(
            PODS, "default", "web", lambda p: {**p, "status": {"phase": "Running"}}
        )
        # The status change was not forwarded: the next message the node gets is the delete.
        await env.store.delete(PODS, "default", "web")
        gone = await edge.recv()
        assert gone.operation == "delete" and gone.content == {"uid": created["metadata"]["uid"]}
    finally:
        await edge.ws.close()


async def test_status_writes_are_applied_once_per_outbox_sequence(env: Env) -> None:
    created = await env.store.create(PODS, pod("web", "edge-1"))
    uid = created["metadata"]["uid"]
    edge = await join(env, "edge-1")
    try:
        await edge.hello({"default/pod/web": int(created["metadata"]["resourceVersion"])})
        held = int(created["metadata"]["resourceVersion"])
        status = {"phase": "Running", "containerStatuses": [{"name": "c", "restartCount": 1}]}
        content = {"uid": uid, "status": status, "rv": held}
        msg = Message("update", "default/podstatus/web", content, sync=True, seq=7)
        await edge.send(msg)
        ack = await edge.recv()
        assert ack.parent_msg_id == msg.msg_id
        stored = await env.store.get(PODS, "default", "web")
        assert stored["status"] == status
        assert ack.content == {"resourceversion": stored["metadata"]["resourceVersion"]}
        revision = await env.store.revision()
        # Redelivered after a lost ack (same seq) and an older one: both acknowledged, neither written.
        for seq in (7, 6):
            again = Message(
                "update",
                "default/podstatus/web",
                {"uid": uid, "status": {"phase": "Failed"}},
                sync=True,
                seq=seq,
            )
            await edge.send(again)
            assert (await edge.recv()).parent_msg_id == again.msg_id
        assert await env.store.revision() == revision
        assert (await env.store.get(PODS, "default", "web"))["status"] == status
        assert env.hub.stats["duplicates_skipped"] == 2
    finally:
        await edge.ws.close()
    # A reconnect learns how far the cloud got, so the edge can drop what was applied.
    edge = await join(env, "edge-1")
    try:
        assert (await edge.hello(epoch="e1")).content["applied_seq"] == 7
    finally:
        await edge.ws.close()


async def test_the_new_version_is_returned_only_when_the_edge_held_the_current_spec(env: Env) -> None:
    created = await env.store.create(PODS, pod("web", "edge-1"))
    uid, held = created["metadata"]["uid"], int(created["metadata"]["resourceVersion"])
    edge = await join(env, "edge-1")
    try:
        await edge.hello({"default/pod/web": held})

        def relabel(p: JSONObject) -> JSONObject:
            p["metadata"]["labels"] = {"changed": "yes"}
            return p

        # A spec change the edge has not received yet (it is still on its way)...
        await env.store.guaranteed_update(PODS, "default", "web", relabel)
        update = await edge.recv()
        # ... so a status written against the older copy must not mark the new spec as seen.
        msg = Message(
            "update",
            "default/podstatus/web",
            {"uid": uid, "status": {"phase": "Running"}, "rv": held},
            sync=True,
            seq=1,
        )
        await edge.send(msg)
        ack = await edge.recv()
        assert ack.parent_msg_id == msg.msg_id and ack.content == {"resourceversion": ""}
        assert update.content["metadata"]["labels"] == {"changed": "yes"}
    finally:
        await edge.ws.close()


async def test_a_node_cannot_write_another_nodes_pods(env: Env) -> None:
    theirs = await env.store.create(PODS, pod("theirs", "edge-2"))

    def terminating(p: JSONObject) -> JSONObject:
        p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        return p

    theirs = await env.store.guaranteed_update(PODS, "default", "theirs", terminating) or theirs
    edge = await join(env, "edge-1")
    try:
        await edge.hello()
        uid = theirs["metadata"]["uid"]
        await edge.send(
            Message(
                "update",
                "default/podstatus/theirs",
                {"uid": uid, "status": {"phase": "Failed"}},
                sync=True,
                seq=1,
            )
        )
        await edge.recv()
        await edge.send(Message("delete", "default/pod/theirs", {"uid": uid}, sync=True, seq=2))
        await edge.recv()
        stored = await env.store.get(PODS, "default", "theirs")  # still there: the delete was refused too
        assert stored["status"] == {"phase": "Pending"}
    finally:
        await edge.ws.close()


async def test_terminated_pod_is_removed_only_when_being_deleted(env: Env) -> None:
    created = await env.store.create(PODS, pod("web", "edge-1"))
    uid = created["metadata"]["uid"]
    edge = await join(env, "edge-1")
    try:
        await edge.hello({"default/pod/web": int(created["metadata"]["resourceVersion"])})
        early = Message("delete", "default/pod/web", {"uid": uid}, sync=True, seq=1)
        await edge.send(early)
        await edge.recv()
        assert (await env.store.get(PODS, "default", "web"))["metadata"][
            "uid"
        ] == uid  # not terminating: kept

        def terminate(p: JSONObject) -> JSONObject:
            p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
            return p

        await env.store.guaranteed_update(PODS, "default", "web", terminate)
        update = await edge.recv()
        assert update.content["metadata"]["deletionTimestamp"]
        await edge.ack(update)
        done = Message("delete", "default/pod/web", {"uid": uid}, sync=True, seq=2)
        await edge.send(done)
        await edge.recv()
        assert (await env.store.list(PODS))[0] == []
    finally:
        await edge.ws.close()


async def test_bad_frames_are_rejected_and_other_nodes_are_unaffected(env: Env) -> None:
    good = await join(env, "edge-good")
    bad = await join(env, "edge-bad")
    try:
        await good.hello()
        await bad.hello()
        await bad.ws.send("{this is not json")
        error = await bad.recv()
        assert error.operation == "error" and "not valid JSON" in error.content["reason"]
        unknown = json.dumps(
            {
                "header": {"msg_id": "m1", "timestamp": 1},
                "route": {"source": "x", "group": "resource", "operation": "explode", "resource": "a/b/c"},
            }
        )
        await bad.ws.send(unknown)
        assert "unknown operation" in (await bad.recv()).content["reason"]
        await bad.send(Message("update", "default/secret/x", {}, sync=True, seq=1))
        assert (await bad.recv()).operation == "error"
        # Still connected after three bad frames; then one frame past the limit closes just this connection.
        await bad.ws.send("x" * (65 * 1024))
        with pytest.raises(ConnectionClosed) as closed:
            await bad.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        # The good node is untouched and still served.
        await env.store.create(PODS, pod("p", "edge-good"))
        assert (await good.recv()).resource == "default/pod/p"
        assert env.hub.stats["rejected_frames"] >= 2
    finally:
        await good.ws.close()
        await bad.ws.close()


async def test_an_edge_that_sends_no_hello_is_dropped(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cloudservice.hub.HELLO_TIMEOUT", 0.2)
    edge = await join(env, "edge-1")
    with pytest.raises(ConnectionClosed):
        await edge.recv(timeout=5)
    assert "edge-1" not in env.hub.sessions

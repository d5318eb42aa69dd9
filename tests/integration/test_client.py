"""app.client against a real `fleetops cloud` process (HTTPS, its own CA, bearer tokens), plus table-driven
tests of the pure parts (typed views, Status decoding, backoff) and one small aiohttp server of our own
that plays the API for the reflector's 410 Gone / bookmark / dropped-stream handling, which a real cloud
cannot be made to produce quickly (its event window is 10,000 events and not configurable from the CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib
import json
import random
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from app.client import (
    AlreadyExists,
    ApiError,
    AsyncClient,
    Backoff,
    ClientError,
    Conflict,
    ConnectionFailed,
    Gone,
    Invalid,
    NotFound,
    Reflector,
    StatusCause,
    Unauthorized,
    WatchEvent,
    api_error_from_status,
    deployment_view,
    format_age,
    node_view,
    pod_view,
)
from app.kubeconfig import load_kubeconfig
from app.launcher import LocalCluster, tail
from app.resources import DEPLOYMENTS, NODES, PODS, JSONObject, now_rfc3339

NOW = dt.datetime(2026, 1, 2, 12, 0, 0, tzinfo=dt.UTC)


# -- pure: typed views ------------------------------------------------------------------------------------


def node(
    name: str, labels: dict[str, str] | None = None, ready: str | None = "True", heartbeat: str = ""
) -> JSONObject:
    """A Node; integration tests pass a fresh ``heartbeat`` so the cloud's node lifecycle controller does
    not mark it Unknown (and bump its resourceVersion) in the middle of a test."""
    obj: JSONObject = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels or {}},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi"},
            "addresses": [
                {"type": "InternalIP", "address": "10.0.0.7"},
                {"type": "Hostname", "address": name},
            ],
        },
    }
    if ready is not None:
        obj["status"]["conditions"] = [
            {"type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat or "2026-01-02T11:59:30Z"}
        ]
    return obj


@pytest.mark.parametrize(
    ("obj", "ready", "status", "heartbeat"),
    [
        (node("a"), "Ready", "Ready", dt.datetime(2026, 1, 2, 11, 59, 30, tzinfo=dt.UTC)),
        (
            node("a", ready="False"),
            "NotReady",
            "NotReady",
            dt.datetime(2026, 1, 2, 11, 59, 30, tzinfo=dt.UTC),
        ),
        (
            node("a", ready="Unknown"),
            "Unknown",
            "NotReady",
            dt.datetime(2026, 1, 2, 11, 59, 30, tzinfo=dt.UTC),
        ),
        (node("a", ready=None), "Unknown", "NotReady", None),
        (
            {**node("a"), "spec": {"unschedulable": True}},
            "Ready",
            "Ready,SchedulingDisabled",
            dt.datetime(2026, 1, 2, 11, 59, 30, tzinfo=dt.UTC),
        ),
        ({"metadata": "junk", "status": {"conditions": "junk"}}, "Unknown", "NotReady", None),
    ],
    ids=["ready", "not-ready", "unknown", "no-condition", "cordoned", "malformed"],
)
def test_node_view(obj: JSONObject, ready: str, status: str, heartbeat: dt.datetime | None) -> None:
    v = node_view(obj)
    assert (v.ready, v.status, v.last_heartbeat) == (ready, status, heartbeat)
    assert v.raw is obj


def test_node_view_fields() -> None:
    v = node_view(
        {
            **node("edge-1", {"zone": "a"}),
            "metadata": {
                "name": "edge-1",
                "labels": {"zone": "a"},
                "creationTimestamp": "2026-01-02T11:00:00Z",
            },
        }
    )
    assert (v.name, dict(v.labels), v.cpu, v.memory) == ("edge-1", {"zone": "a"}, "4", "8Gi")
    assert v.addresses == (("InternalIP", "10.0.0.7"), ("Hostname", "edge-1"))
    assert (v.address(), v.address("Hostname"), v.address("ExternalIP")) == ("10.0.0.7", "edge-1", "")
    assert v.age(NOW) == "60m"


def pod(containers: list[JSONObject], statuses: list[JSONObject], **extra: Any) -> JSONObject:
    return {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "creationTimestamp": "2026-01-02T11:59:00Z",
            **extra.pop("metadata", {}),
        },
        "spec": {"nodeName": "edge-1", "containers": containers},
        "status": {"phase": extra.pop("phase", "Running"), "containerStatuses": statuses},
    }


C1, C2 = {"name": "main", "image": "app:1"}, {"name": "side", "image": "side:1"}
RUNNING = {"running": {"startedAt": "2026-01-02T11:59:01Z"}}


@pytest.mark.parametrize(
    ("obj", "ready", "restarts", "status"),
    [
        (
            pod([C1], [{"name": "main", "ready": True, "restartCount": 0, "state": RUNNING}]),
            "1/1",
            0,
            "Running",
        ),
        (
            pod(
                [C1, C2],
                [
                    {"name": "main", "ready": True, "restartCount": 2, "state": RUNNING},
                    {
                        "name": "side",
                        "ready": False,
                        "restartCount": 5,
                        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                    },
                ],
            ),
            "1/2",
            7,
            "CrashLoopBackOff",
        ),
        (
            pod(
                [C1],
                [
                    {
                        "name": "main",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": {"reason": "Completed", "exitCode": 0}},
                    }
                ],
                phase="Succeeded",
            ),
            "0/1",
            0,
            "Completed",
        ),
        (pod([C1], [], phase="Pending"), "0/1", 0, "Pending"),
        (
            pod(
                [C1],
                [{"name": "main", "ready": True, "restartCount": 0, "state": RUNNING}],
                metadata={"deletionTimestamp": "2026-01-02T12:00:30Z"},
            ),
            "1/1",
            0,
            "Terminating",
        ),
        ({"metadata": None, "spec": [], "status": 3}, "0/0", 0, "Pending"),
    ],
    ids=["running", "crashloop", "completed", "pending", "terminating", "malformed"],
)
def test_pod_view(obj: JSONObject, ready: str, restarts: int, status: str) -> None:
    v = pod_view(obj)
    assert (v.ready, v.restarts, v.status) == (ready, restarts, status)


def test_pod_view_containers() -> None:
    v = pod_view(
        pod(
            [C1, C2],
            [
                {
                    "name": "side",
                    "ready": False,
                    "restartCount": 1,
                    "state": {"terminated": {"reason": "Error", "exitCode": 3, "message": "boom"}},
                },
                {"name": "main", "ready": True, "restartCount": 0, "state": RUNNING},
            ],
        )
    )
    assert (v.namespace, v.name, v.node, v.phase, v.age(NOW)) == ("ns", "p", "edge-1", "Running", "60s")
    main, side = v.containers
    assert (main.name, main.image, main.state, main.reason, main.exit_code) == (
        "main",
        "app:1",
        "running",
        "",
        None,
    )
    assert (side.name, side.state, side.reason, side.message, side.exit_code) == (
        "side",
        "terminated",
        "Error",
        "boom",
        3,
    )


def deploy_obj(spec: JSONObject, status: JSONObject, generation: int = 2) -> JSONObject:
    return {
        "metadata": {"name": "web", "namespace": "default", "generation": generation},
        "spec": spec,
        "status": status,
    }


@pytest.mark.parametrize(
    ("obj", "ready_text", "observed", "rolled_out"),
    [
        (
            deploy_obj(
                {"replicas": 3},
                {
                    "observedGeneration": 2,
                    "replicas": 3,
                    "updatedReplicas": 3,
                    "readyReplicas": 3,
                    "availableReplicas": 3,
                },
            ),
            "3/3",
            True,
            True,
        ),
        (
            deploy_obj(
                {"replicas": 3},
                {
                    "observedGeneration": 1,
                    "replicas": 3,
                    "updatedReplicas": 3,
                    "readyReplicas": 3,
                    "availableReplicas": 3,
                },
            ),
            "3/3",
            False,
            False,
        ),
        (
            deploy_obj(
                {"replicas": 3},
                {
                    "observedGeneration": 2,
                    "replicas": 4,
                    "updatedReplicas": 2,
                    "readyReplicas": 3,
                    "availableReplicas": 3,
                },
            ),
            "3/3",
            True,
            False,
        ),
        (deploy_obj({}, {}, generation=1), "0/1", False, False),
        (deploy_obj({"replicas": 0}, {"observedGeneration": 2}), "0/0", True, True),
    ],
    ids=["done", "not-observed", "rolling", "defaults", "scaled-to-zero"],
)
def test_deployment_view(obj: JSONObject, ready_text: str, observed: bool, rolled_out: bool) -> None:
    v = deployment_view(obj)
    assert (v.ready_text, v.observed, v.rolled_out) == (ready_text, observed, rolled_out)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (7199, "119m"),
        (7200, "2h"),
        (172799, "47h"),
        (172800, "2d"),
    ],
)
def test_format_age(seconds: int, text: str) -> None:
    assert format_age(dt.timedelta(seconds=seconds)) == text


# -- pure: errors and backoff -----------------------------------------------------------------------------


def status(code: int, reason: str, message: str = "m", **details: Any) -> JSONObject:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
        **({"details": details} if details else {}),
    }


@pytest.mark.parametrize(
    ("code", "body", "cls", "reason"),
    [
        (404, status(404, "NotFound", name="x", kind="pods"), NotFound, "NotFound"),
        (409, status(409, "AlreadyExists"), AlreadyExists, "AlreadyExists"),
        (409, status(409, "Conflict"), Conflict, "Conflict"),
        (422, status(422, "Invalid"), Invalid, "Invalid"),
        (401, status(401, "Unauthorized"), Unauthorized, "Unauthorized"),
        (410, status(410, "Expired"), Gone, "Expired"),
        (200, status(410, "Expired"), Gone, "Expired"),  # a watch ERROR event: the Status carries the code
        (401, "Unauthorized\n", Unauthorized, "Unauthorized"),  # a proxy's plain-text answer
        (502, "<html>bad gateway</html>", ApiError, "Bad Gateway"),
    ],
)
def test_api_error_from_status(code: int, body: Any, cls: type[ApiError], reason: str) -> None:
    err = api_error_from_status(code, body, "Unauthorized" if code == 401 else "Bad Gateway")
    assert type(err) is cls and err.reason == reason and isinstance(err, ClientError)


def test_api_error_causes() -> None:
    err = api_error_from_status(
        422,
        status(
            422,
            "Invalid",
            'Deployment.apps "x" is invalid: ...',
            name="x",
            kind="Deployment",
            group="apps",
            causes=[
                {
                    "field": "spec.replicas",
                    "message": "Invalid value: -1: must be >= 0",
                    "reason": "FieldValueInvalid",
                },
                {"message": "no field"},
            ],
        ),
    )
    assert isinstance(err, Invalid)
    assert (err.name, err.kind, err.group) == ("x", "Deployment", "apps")
    assert err.causes[0] == StatusCause(
        "spec.replicas", "Invalid value: -1: must be >= 0", "FieldValueInvalid"
    )
    assert err.field_errors == ["spec.replicas: Invalid value: -1: must be >= 0", "no field"]
    assert str(err) == 'Deployment.apps "x" is invalid: ...'


def test_backoff_grows_caps_jitters_and_resets() -> None:
    b = Backoff(initial=1.0, maximum=8.0, factor=2.0, jitter=0.5, rand=random.Random(7))
    delays = [b.next_delay() for _ in range(6)]
    for delay, base in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert base * 0.5 <= delay <= base
    assert len(set(delays[3:])) == 3  # capped, but still spread by jitter
    b.reset()
    assert b.next_delay() <= 1.0
    assert Backoff(initial=1.0, jitter=0.0).next_delay() == 1.0


# -- against a real cloud ---------------------------------------------------------------------------------


def live_node(name: str, labels: dict[str, str] | None = None) -> JSONObject:
    return node(name, labels, heartbeat=now_rfc3339())


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    c = LocalCluster(tmp_path)
    await c.start_cloud()
    try:
        yield c
    except BaseException:
        if c.cloud is not None:
            print(f"--- cloud log ---\n{tail(c.cloud.log_path, 60)}")
        raise
    finally:
        await c.stop()


@pytest.fixture
async def client(cluster: LocalCluster) -> AsyncIterator[AsyncClient]:
    async with AsyncClient.from_kubeconfig(cluster.kubeconfig) as c:
        yield c


def deployment(name: str, replicas: int = 1, **labels: str) -> JSONObject:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": f"example/{name}:1", "command": ["true"]}]},
            },
        },
    }


async def next_matching(
    events: AsyncIterator[WatchEvent], pred: Callable[[WatchEvent], bool], timeout: float = 20.0
) -> WatchEvent:
    async with asyncio.timeout(timeout):
        async for ev in events:
            if pred(ev):
                return ev
    raise AssertionError("the stream ended before the expected event")


async def test_node_crud(client: AsyncClient) -> None:
    created = await client.create(NODES, live_node("edge-1", {"zone": "a"}))
    assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    got = await client.get(NODES, "edge-1")
    assert got["metadata"]["labels"] == {"zone": "a"}

    with pytest.raises(AlreadyExists) as already:
        await client.create(NODES, live_node("edge-1"))
    assert already.value.code == 409

    got["metadata"]["labels"]["zone"] = "b"
    replaced = await client.replace(NODES, got)
    assert replaced["metadata"]["labels"] == {"zone": "b"}
    with pytest.raises(Conflict):  # got still carries the old resourceVersion
        await client.replace(NODES, got)

    deleted = await client.delete(NODES, "edge-1")
    assert deleted["metadata"]["name"] == "edge-1"
    with pytest.raises(NotFound) as missing:
        await client.get(NODES, "edge-1")
    assert missing.value.name == "edge-1" and missing.value.code == 404


async def test_patch_types_apply_and_scale(client: AsyncClient) -> None:
    await client.create(DEPLOYMENTS, deployment("web"))

    merged = await client.patch(DEPLOYMENTS, "web", {"metadata": {"labels": {"tier": "front"}}})
    assert merged["metadata"]["labels"] == {"tier": "front"}

    # Strategic merge: containers are merged by name, so the existing container keeps its command.
    strategic = await client.patch(
        DEPLOYMENTS,
        "web",
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "main", "env": [{"name": "A", "value": "1"}]}]}}
            }
        },
        type="strategic",
    )
    [c] = strategic["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["true"] and c["env"] == [{"name": "A", "value": "1"}]
    # The same body as a merge patch replaces the whole list (and the container loses its image).
    with pytest.raises(Invalid):
        await client.patch(
            DEPLOYMENTS,
            "web",
            {"spec": {"template": {"spec": {"containers": [{"name": "main"}]}}}},
            type="merge",
        )

    jp = await client.patch(
        DEPLOYMENTS,
        "web",
        [
            {"op": "test", "path": "/spec/replicas", "value": 1},
            {"op": "replace", "path": "/spec/replicas", "value": 2},
        ],
        type="json",
    )
    assert jp["spec"]["replicas"] == 2

    scale = await client.scale(DEPLOYMENTS, "web", 4)
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 4
    assert (await client.get(DEPLOYMENTS, "web", "default"))["spec"]["replicas"] == 4

    # apply: creates when absent; patches only the given fields when present (not server-side apply).
    first = await client.apply(deployment("api", 1, tier="back"))
    assert first["metadata"]["generation"] == 1
    again = await client.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "api", "namespace": "default"},
            "spec": {"replicas": 3},
        }
    )
    assert again["spec"]["replicas"] == 3 and again["metadata"]["labels"] == {"tier": "back"}
    with pytest.raises(ClientError, match="unknown kind"):
        await client.apply({"apiVersion": "v1", "kind": "Gizmo", "metadata": {"name": "g"}})


async def test_selectors_and_typed_views(client: AsyncClient) -> None:
    for name, zone in (("n1", "a"), ("n2", "a"), ("n3", "b")):
        await client.create(NODES, live_node(name, {"zone": zone}))
    everything = await client.list(NODES)
    assert sorted(n["metadata"]["name"] for n in everything.items) == ["n1", "n2", "n3"]
    assert int(everything.resource_version) >= 3 and len(everything) == 3
    zone_a = await client.list(NODES, label_selector="zone=a")
    assert [n["metadata"]["name"] for n in zone_a.items] == ["n1", "n2"]
    only = await client.list(NODES, label_selector="zone in (a,b)", field_selector="metadata.name=n3")
    assert [n["metadata"]["name"] for n in only.items] == ["n3"]
    assert all(n["kind"] == "Node" for n in only.items)

    views = [node_view(n) for n in zone_a.items]
    assert [(v.name, v.ready, v.cpu, v.address()) for v in views] == [
        ("n1", "Ready", "4", "10.0.0.7"),
        ("n2", "Ready", "4", "10.0.0.7"),
    ]

    # A deployment's view from the real controller: it observes the spec and makes a pod (no edge, so the
    # pod stays Pending and the deployment reports 0 ready).
    await client.create(DEPLOYMENTS, deployment("web", 1))
    async with client.watch(DEPLOYMENTS, "default", field_selector="metadata.name=web") as events:
        ev = await next_matching(events, lambda e: deployment_view(e.object).observed)
    dv = deployment_view(ev.object)
    assert (dv.name, dv.replicas, dv.ready_text, dv.generation) == ("web", 1, "0/1", 1)
    assert not dv.rolled_out
    async with client.watch(PODS, "default", label_selector="app=web") as events:
        ev = await next_matching(events, lambda e: e.type == "ADDED")
    pv = pod_view(ev.object)
    assert pv.namespace == "default" and pv.name.startswith("web-") and pv.ready == "0/1"
    assert pv.phase == "Pending" and pv.restarts == 0


async def test_watch_stream_in_order(client: AsyncClient) -> None:
    await client.create(NODES, live_node("before"))
    start = await client.list(NODES)
    async with client.watch(NODES, resource_version=start.resource_version) as events:
        await client.create(NODES, live_node("w1"))
        await client.patch(NODES, "w1", {"metadata": {"labels": {"x": "1"}}})
        await client.delete(NODES, "w1")
        seen = []
        async with asyncio.timeout(20):
            async for ev in events:
                if ev.object["metadata"]["name"] == "w1":
                    seen.append((ev.type, ev.object["metadata"].get("labels")))
                if ev.type == "DELETED":
                    break
    assert [t for t, _ in seen] == ["ADDED", "MODIFIED", "DELETED"]
    assert seen[1][1] == {"x": "1"}

    # Without a resourceVersion the server starts with the current state as ADDED events.
    async with client.watch(NODES, label_selector="") as events:
        first = await anext(events)
    assert (first.type, first.object["metadata"]["name"]) == ("ADDED", "before")


async def test_invalid_deployment_causes(client: AsyncClient) -> None:
    with pytest.raises(Invalid) as info:
        await client.create(DEPLOYMENTS, deployment("bad", replicas=-1))
    err = info.value
    assert err.code == 422 and err.reason == "Invalid"
    assert err.message == 'Deployment.apps "bad" is invalid: spec.replicas: Invalid value: -1: must be >= 0'
    assert [c.field for c in err.causes] == ["spec.replicas"]
    assert err.field_errors == ["spec.replicas: Invalid value: -1: must be >= 0"]
    await client.create(DEPLOYMENTS, deployment("ok"))
    with pytest.raises(Invalid) as scale_info:
        await client.scale(DEPLOYMENTS, "ok", -2)
    assert scale_info.value.causes[0].field == "spec.replicas"


async def test_unauthorized_and_tls(cluster: LocalCluster) -> None:
    kc = load_kubeconfig(cluster.kubeconfig)
    async with AsyncClient(cluster.api, "not-a-token", ca_file=kc.certificate_authority) as bad:
        with pytest.raises(Unauthorized) as info:
            await bad.list(NODES)
    assert info.value.code == 401
    async with AsyncClient(cluster.api, "", ca_file=kc.certificate_authority) as anonymous:
        with pytest.raises(Unauthorized):
            await anonymous.get(NODES, "x")
    # Without the cloud's CA the certificate does not verify: a connection failure, not a silent accept.
    async with AsyncClient(cluster.api, kc.token) as untrusted:
        with pytest.raises(ConnectionFailed) as tls:
            await untrusted.list(NODES)
    assert tls.value.server == cluster.api
    async with AsyncClient(cluster.api, kc.token, insecure=True) as insecure:
        assert isinstance((await insecure.list(NODES)).items, tuple)


async def test_connection_failed_when_nothing_listens() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = f"https://127.0.0.1:{port}"
    async with AsyncClient(server, "t", insecure=True) as c:
        with pytest.raises(ConnectionFailed) as info:
            await c.get(NODES, "x")
        assert info.value.server == server and "GET /api/v1/nodes/x" in str(info.value)
        with pytest.raises(ConnectionFailed):
            async with c.watch(NODES):
                pass
    with pytest.raises(ClientError, match="closed"):
        await c.list(NODES)


async def collect(reflector: Reflector, queue: asyncio.Queue[WatchEvent]) -> None:
    async for ev in reflector:
        await queue.put(ev)


async def test_reflector_survives_cloud_restart(cluster: LocalCluster, client: AsyncClient) -> None:
    await client.create(NODES, live_node("old"))
    queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
    async with client.list_watch(NODES, backoff=Backoff(initial=0.05, maximum=0.5)) as reflector:
        task = asyncio.create_task(collect(reflector, queue), name="test.reflector")
        try:
            resync = await asyncio.wait_for(queue.get(), 20)
            assert resync.type == "RESYNC" and [o["metadata"]["name"] for o in resync.items] == ["old"]
            assert reflector.connected

            assert cluster.cloud is not None
            await cluster.cloud.stop()
            await cluster.start_cloud()  # same ports, same data: resourceVersions carry on
            await client.create(NODES, live_node("new"))

            ev = await asyncio.wait_for(queue.get(), 30)
            assert (ev.type, ev.object["metadata"]["name"]) == ("ADDED", "new")
            assert reflector.relists == 1  # resumed from its resourceVersion, no relist needed
            assert set(reflector.items) == {("", "old"), ("", "new")}
            assert reflector.resource_version == ev.object["metadata"]["resourceVersion"]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_reflector_is_connected_again_as_soon_as_its_watch_is_answered(
    cluster: LocalCluster, client: AsyncClient
) -> None:
    """A quiet fleet after a cloud restart: no event comes, yet the UI must stop saying "reconnecting"."""
    queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
    async with client.list_watch(NODES, backoff=Backoff(initial=0.05, maximum=0.2)) as reflector:
        task = asyncio.create_task(collect(reflector, queue), name="test.reflector")
        try:
            await asyncio.wait_for(queue.get(), 20)  # the RESYNC
            assert cluster.cloud is not None
            await cluster.cloud.stop()

            async def until(predicate: Callable[[], bool]) -> None:
                while not predicate():
                    await asyncio.sleep(0.02)  # the reflector's state has no event to await

            await asyncio.wait_for(until(lambda: reflector.last_error is not None), 20)
            assert not reflector.connected
            await cluster.start_cloud()
            await asyncio.wait_for(until(lambda: reflector.connected and reflector.last_error is None), 20)
            assert queue.empty()  # connected with no event at all
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_reflector_raises_unauthorized(cluster: LocalCluster) -> None:
    ca = load_kubeconfig(cluster.kubeconfig).certificate_authority
    async with AsyncClient(cluster.api, "wrong", ca_file=ca) as bad, bad.list_watch(NODES) as reflector:
        with pytest.raises(Unauthorized):
            await anext(reflector)


# -- the reflector against our own small API server: 410 Gone, bookmarks, dropped streams ------------------


def nodes_list(rv: int, *names: str) -> JSONObject:
    return {
        "kind": "NodeList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": str(rv)},
        "items": [{"metadata": {"name": n, "resourceVersion": str(rv)}} for n in names],
    }


def event(type_: str, name: str, rv: int) -> bytes:
    return (
        json.dumps(
            {
                "type": type_,
                "object": {"kind": "Node", "metadata": {"name": name, "resourceVersion": str(rv)}},
            }
        ).encode()
        + b"\n"
    )


class FakeApi:
    """Serves /api/v1/nodes: two lists and three scripted watches, recording each watch's resourceVersion."""

    def __init__(self) -> None:
        self.log_queries: list[dict[str, str]] = []
        self.lists = [nodes_list(5, "a"), nodes_list(9, "a", "b")]
        self.watch_rvs: list[str] = []
        self.bookmarks_asked: list[str] = []
        self.hold = asyncio.Event()

    async def nodes(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            return web.json_response(self.lists.pop(0))
        self.watch_rvs.append(request.query.get("resourceVersion", ""))
        self.bookmarks_asked.append(request.query.get("allowWatchBookmarks", ""))
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        n = len(self.watch_rvs)
        if n == 1:  # the list's resourceVersion has expired: ERROR with a 410 Status, as the apiserver does
            gone = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "code": 410,
                "reason": "Expired",
                "message": "too old resource version: 5 (8)",
            }
            await resp.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
        elif n == 2:  # one change, a bookmark, then the stream ends (server timeout or restart)
            await resp.write(event("ADDED", "c", 10))
            await resp.write(
                json.dumps(
                    {"type": "BOOKMARK", "object": {"kind": "Node", "metadata": {"resourceVersion": "12"}}}
                ).encode()
                + b"\n"
            )
        else:
            await resp.write(event("MODIFIED", "c", 13))
            await self.hold.wait()
        await resp.write_eof()
        return resp

    async def log(self, request: web.Request) -> web.StreamResponse:
        self.log_queries.append(dict(request.query))
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await resp.prepare(request)
        for chunk in (b"first li", b"ne\nsecond\r\n", b"\xc3\xa9t\xc3\xa9\nno newline"):
            await resp.write(chunk)  # lines split across chunks, CRLF, UTF-8 and a last partial line
        await resp.write_eof()
        return resp


@pytest.fixture
async def fake_api() -> AsyncIterator[tuple[FakeApi, str]]:
    fake = FakeApi()
    app = web.Application()
    app.router.add_get("/api/v1/nodes", fake.nodes)
    app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}/log", fake.log)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        fake.hold.set()
        await runner.cleanup()


async def test_reflector_relists_on_gone_and_follows_bookmarks(fake_api: tuple[FakeApi, str]) -> None:
    fake, url = fake_api
    async with AsyncClient(url, "t") as c, c.list_watch(NODES, backoff=Backoff(initial=0.01)) as reflector:
        first = await anext(reflector)
        assert first.type == "RESYNC" and first.resource_version == "5"
        assert [o["metadata"]["name"] for o in first.items] == ["a"]

        second = await anext(reflector)  # the watch answered 410: relisted
        assert second.type == "RESYNC" and second.resource_version == "9" and reflector.relists == 2
        assert set(reflector.items) == {("", "a"), ("", "b")}

        added = await anext(reflector)
        assert (added.type, added.object["metadata"]["name"]) == ("ADDED", "c")
        # The bookmark (rv 12) is not yielded, but the re-watch after the stream ended starts from it.
        modified = await anext(reflector)
        assert (modified.type, modified.resource_version) == ("MODIFIED", "13")
        assert fake.watch_rvs == ["5", "9", "12"] and set(fake.bookmarks_asked) == {"true"}
        assert reflector.resource_version == "13" and len(reflector.items) == 3


async def test_raw_watch_raises_gone(fake_api: tuple[FakeApi, str]) -> None:
    _fake, url = fake_api
    async with AsyncClient(url, "t") as c:
        events = c.watch(NODES, resource_version="5")
        with pytest.raises(Gone) as info:
            await anext(events)
        await events.aclose()
    assert info.value.code == 410 and "too old" in info.value.message


async def test_logs_query_and_line_splitting(fake_api: tuple[FakeApi, str]) -> None:
    """What ``logs`` sends (the Kubernetes query parameters) and how it cuts the text into lines."""
    fake, url = fake_api
    async with AsyncClient(url, "t", namespace="default") as c:
        plain = [line async for line in c.logs("p")]
        async with c.logs(
            "p", "default", container="main", follow=True, tail_lines=5, since_seconds=60, timestamps=True
        ) as stream:
            followed = [line async for line in stream]
    assert plain == followed == ["first line", "second", "été", "no newline"]
    assert fake.log_queries == [
        {},
        {"container": "main", "follow": "true", "tailLines": "5", "sinceSeconds": "60", "timestamps": "true"},
    ]


# -- logs: the route is being built; test it only once the cloud serves it ---------------------------------


@pytest.mark.slow
async def test_logs(cluster: LocalCluster, client: AsyncClient) -> None:
    # Probe the route with an unscheduled pod: a server with the route answers 400 ("waiting to start"),
    # one without answers 404 for the path.
    await client.create(
        PODS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "probe"},
            "spec": {"containers": [{"name": "main", "image": "x", "command": ["true"]}]},
        },
    )
    try:
        async with client.logs("probe", "default"):
            pass
    except NotFound:
        pytest.skip("the cloud does not serve GET /api/v1/namespaces/{ns}/pods/{name}/log yet")
    except ApiError as exc:
        assert exc.code == 400 and "waiting to start" in exc.message
    try:  # the edge's half of the log stream is being built alongside; its CLI must at least import
        importlib.import_module("edgeservice.core")
    except ImportError as exc:
        pytest.skip(f"the edge service cannot start yet, so no pod can run to have logs: {exc}")
    cluster.status_interval = 0.5
    await cluster.start_edge("edge-1")
    await cluster.wait_ready_nodes(["edge-1"])
    script = "import time\nfor i in range(3): print(f'line {i}', flush=True)\ntime.sleep(60)"
    await client.create(
        PODS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "talker"},
            "spec": {
                "nodeName": "edge-1",
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {"name": "main", "image": "python", "command": [sys.executable, "-c", script]}
                ],
            },
        },
    )
    async with client.watch(PODS, "default", field_selector="metadata.name=talker") as events:
        await next_matching(events, lambda e: pod_view(e.object).ready == "1/1", timeout=60)
    async with asyncio.timeout(30):
        while True:  # the process may not have flushed its three lines the moment it is Ready
            lines = [line async for line in client.logs("talker", "default")]
            if len(lines) >= 3:
                break
            await asyncio.sleep(0.1)
    assert lines[:3] == ["line 0", "line 1", "line 2"]
    assert [line async for line in client.logs("talker", "default", tail_lines=1)] == ["line 2"]
    async with client.logs("talker", "default", follow=True, tail_lines=2) as stream:
        assert [await anext(stream), await anext(stream)] == ["line 1", "line 2"]
    await client.delete(PODS, "talker", "default", grace_period=0)

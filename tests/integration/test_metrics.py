"""Prometheus metrics: the cloud's against a real store, hub and API with a raw WebSocket edge; the edge's
against a real MetaManager. Assertions are on the parsed exposition, as Prometheus would read it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from app.envelope import Message
from app.resources import PODS, JSONObject
from cloudservice.api import ApiServer, build_app
from cloudservice.auth import TokenStore
from cloudservice.hub import CloudHub
from cloudservice.metrics import CloudMetrics, install_metrics, node_ready
from cloudservice.store.sql import SqlStore, open_store
from edgeservice.metamanager import MetaManager
from edgeservice.metrics import EdgeMetrics, restart_counts
from tests.integration.test_hub import FakeEdge, pod

ADMIN = "metrics-admin-token"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(content_type: str, body: bytes) -> Samples:
    assert content_type.startswith("text/plain; version=0.0.4")
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 5.0) -> None:
    """Poll ``check`` (the hub's state changes on its own tasks, with no event to await from here)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


# -- cloud -------------------------------------------------------------------------------------------------


@dataclass
class Cloud:
    store: SqlStore
    hub: CloudHub
    server: ApiServer
    http: aiohttp.ClientSession
    metrics: CloudMetrics
    join_token: str

    async def scrape(self) -> Samples:
        async with self.http.get(
            f"{self.server.url}/metrics", headers={"Authorization": f"Bearer {ADMIN}"}
        ) as resp:
            assert resp.status == 200
            return parse(resp.headers["Content-Type"], await resp.read())

    async def join(self, node: str) -> FakeEdge:
        ws = await connect(
            f"ws://127.0.0.1:{self.hub.port}",
            additional_headers={"Authorization": f"Bearer {self.join_token}", "X-FleetOps-Node": node},
            proxy=None,
        )
        return FakeEdge(ws, node)


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    store = open_store(str(tmp_path / "cloud.db"))
    await store.start()
    tokens = TokenStore(tmp_path / "tokens.json")
    join_token = tokens.create("join", "nodes")
    # Resends after 0.3 s, so a test sees one without waiting the default 5 s.
    hub = CloudHub(store, tokens, host="127.0.0.1", port=0, resend_after=0.3)
    await hub.start()
    app = build_app(store, tokens={ADMIN: "admin"})
    metrics = install_metrics(app, hub, store)
    server = ApiServer(app)
    await server.start()
    http = aiohttp.ClientSession()
    try:
        yield Cloud(store, hub, server, http, metrics, join_token)
    finally:
        await http.close()
        await server.stop()
        await hub.stop()
        await store.close()


def with_phase(name: str, node: str, phase: str | None) -> JSONObject:
    p = pod(name, node)
    p["status"] = {"phase": phase} if phase else {}
    return p


async def test_cloud_metrics_follow_an_edge_through_its_session(cloud: Cloud) -> None:
    for name, node, phase in [
        ("a", "edge-1", "Running"),
        ("b", "edge-1", None),  # no phase yet: counted as Pending, the apiserver's default
        ("c", "edge-2", "Failed"),
    ]:
        await cloud.store.create(PODS, with_phase(name, node, phase))
    before = await cloud.scrape()
    assert value(before, "fleetops_hub_connected_edges") == 0
    assert {p: value(before, "fleetops_pods", phase=p) for p in ("Pending", "Running", "Failed")} == {
        "Pending": 1,
        "Running": 1,
        "Failed": 1,
    }
    assert value(before, "fleetops_nodes", ready="true") == 0
    assert value(before, "fleetops_store_up") == 1
    assert value(before, "process_resident_memory_bytes") > 0

    edge = await cloud.join("edge-1")
    try:
        await edge.hello()
        sent = [await edge.recv(), await edge.recv()]  # edge-1's two pods, not yet acknowledged
        assert sorted(m.resource for m in sent) == ["default/pod/a", "default/pod/b"]
        live = await cloud.scrape()
        assert value(live, "fleetops_hub_connected_edges") == 1
        assert value(live, "fleetops_nodes", ready="true") == 1
        # Counted while the session is live, though the hub folds them into its stats only at its end.
        assert value(live, "fleetops_hub_messages_received_total") >= 1  # the hello
        assert value(live, "fleetops_hub_messages_sent_total") >= 3  # the hello's reply and two pods
        assert value(live, "fleetops_hub_node_queue_depth", node="edge-1") == 2
        assert value(live, "fleetops_hub_queue_depth") == 2

        async def resent() -> bool:
            return value(await cloud.scrape(), "fleetops_hub_resends_total") >= 1

        await eventually(resent, "an unacknowledged pod is resent")
        for msg in sent:
            await edge.ack(msg)

        async def drained() -> bool:
            return value(await cloud.scrape(), "fleetops_hub_node_queue_depth", node="edge-1") == 0

        await eventually(drained, "acks empty the node's queue")
        await edge.ws.send("this is not an envelope")
        await edge.recv()  # the hub's error answer: the frame has been handled

        async def rejected() -> bool:
            return value(await cloud.scrape(), "fleetops_hub_rejected_frames_total") == 1

        await eventually(rejected, "the bad frame is counted")
        during = await cloud.scrape()
    finally:
        await edge.ws.close()

    async def gone() -> bool:
        return "edge-1" not in cloud.hub.sessions and cloud.hub.stats["messages_in"] > 0

    await eventually(gone, "the session ends")
    after = await cloud.scrape()
    assert value(after, "fleetops_hub_connected_edges") == 0
    assert ("fleetops_hub_node_queue_depth", (("node", "edge-1"),)) not in after
    for counter in ("messages_received", "messages_sent", "resends"):
        name = f"fleetops_hub_{counter}_total"
        assert value(after, name) >= value(during, name), name
    assert value(after, "fleetops_hub_connections_total") == 1


async def test_cloud_metrics_count_refusals_and_running_watches(cloud: Cloud) -> None:
    with pytest.raises(InvalidStatus):
        await connect(
            f"ws://127.0.0.1:{cloud.hub.port}",
            additional_headers={"Authorization": "Bearer nope.nopenopenope", "X-FleetOps-Node": "edge-1"},
            proxy=None,
        )
    assert value(await cloud.scrape(), "fleetops_hub_refused_connections_total") == 1

    async with cloud.http.get(f"{cloud.server.url}/metrics") as resp:
        assert resp.status == 401  # like every API path but the health checks

    assert value(await cloud.scrape(), "fleetops_api_watches") == 0
    watch = await cloud.http.get(
        f"{cloud.server.url}/api/v1/namespaces/default/pods?watch=true",
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    try:
        assert watch.status == 200  # headers are sent once the watch runs
        assert value(await cloud.scrape(), "fleetops_api_watches") == 1
    finally:
        watch.close()

    async def ended() -> bool:
        return value(await cloud.scrape(), "fleetops_api_watches") == 0

    await eventually(ended, "a watch whose client went away is no longer counted")


# A stand-in hub at our own seam (the HubView protocol) for the one case a real hub only shows by chance:
# a replaced session leaving ``sessions`` before its counts reach ``stats``.
@dataclass
class _Channel:
    stats: dict[str, int]
    queued: int = 0
    in_flight: int = 0


@dataclass
class _Session:
    channel: _Channel


@dataclass
class _Hub:
    stats: dict[str, int] = field(default_factory=dict)
    sessions: dict[str, _Session] = field(default_factory=dict)


async def test_cloud_counters_never_go_down_while_a_session_is_folded_in(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "cloud.db"))
    await store.start()
    try:
        hub = _Hub(stats={"messages_in": 5})
        hub.sessions["edge-1"] = _Session(_Channel({"received": 7}))
        metrics = CloudMetrics(hub, store, lambda: 0)
        assert value(parse(*await metrics.render()), "fleetops_hub_messages_received_total") == 12
        del hub.sessions["edge-1"]  # gone from sessions, counts not yet added to stats
        assert value(parse(*await metrics.render()), "fleetops_hub_messages_received_total") == 12
        hub.stats["messages_in"] += 7 + 1  # folded in, with one more received meanwhile
        assert value(parse(*await metrics.render()), "fleetops_hub_messages_received_total") == 13
    finally:
        await store.close()


async def test_cloud_metrics_still_serve_the_hub_when_the_store_cannot_be_read(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "cloud.db"))
    await store.start()
    await store.close()  # every read now fails with a StoreError
    samples = parse(*await CloudMetrics(_Hub(stats={"refused": 2}), store, lambda: 0).render())
    assert value(samples, "fleetops_store_up") == 0
    assert value(samples, "fleetops_hub_refused_connections_total") == 2
    assert not any(name in ("fleetops_pods", "fleetops_nodes") for name, _ in samples)


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([{"type": "Ready", "status": "True"}], "true"),
        ([{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "False"}], "false"),
        ([{"type": "Ready", "status": "Unknown"}], "unknown"),
        ([], "unknown"),
        (None, "unknown"),
    ],
)
def test_node_ready(conditions: list[dict[str, str]] | None, expected: str) -> None:
    assert node_ready({"metadata": {"name": "n"}, "status": {"conditions": conditions}}) == expected


# -- edge --------------------------------------------------------------------------------------------------


@dataclass
class _Edged:
    """Edged's live statuses by pod uid (a stand-in at the EdgeView seam: no processes needed here)."""

    statuses: dict[str, JSONObject] = field(default_factory=dict)

    def status_of(self, uid: str) -> JSONObject | None:
        return self.statuses.get(uid)


@dataclass
class _Core:
    meta: MetaManager
    edged: _Edged = field(default_factory=_Edged)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    stats: Mapping[str, int] = field(default_factory=lambda: {"connects": 0, "received": 0, "acked_out": 0})
    devicetwin: None = None


def edge_pod(name: str, uid: str) -> JSONObject:
    return {
        "metadata": {"name": name, "namespace": "default", "uid": uid},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }


def statuses(phase: str, restarts: int) -> JSONObject:
    return {"phase": phase, "containerStatuses": [{"name": "c", "restartCount": restarts}]}


@pytest.fixture
def meta(tmp_path: Path) -> Iterator[MetaManager]:
    m = MetaManager(tmp_path / "edge.db")
    m.open()
    try:
        yield m
    finally:
        m.close()


def test_edge_metrics_read_the_cache_the_outbox_and_live_statuses(meta: MetaManager) -> None:
    meta.apply(
        Message("update", f"default/pod/{name}", edge_pod(name, f"uid-{name}"), resourceversion="1")
        for name in ("a", "b", "c")
    )
    core = _Core(meta)
    core.edged.statuses["uid-a"] = statuses("Running", 2)
    meta.set_status("default/pod/b", statuses("Failed", 1))  # persisted only: Edged no longer has it
    queued = [meta.enqueue(Message("update", f"default/podstatus/{n}", {"uid": n})) for n in ("a", "b")]
    metrics = EdgeMetrics(core)

    first = parse(*metrics.render())
    assert value(first, "fleetops_edge_cloud_connected") == 0
    assert value(first, "fleetops_edge_outbox_depth") == 2
    assert {p: value(first, "fleetops_edge_pods", phase=p) for p in ("Pending", "Running", "Failed")} == {
        "Pending": 1,  # "c": nothing reported yet
        "Running": 1,
        "Failed": 1,
    }
    assert value(first, "fleetops_edge_container_restarts_total") == 3
    assert value(first, "process_resident_memory_bytes") > 0

    core.connected.set()
    core.stats = {"connects": 1, "received": 3, "acked_out": 1}
    assert queued[0].seq is not None
    meta.outbox_acked([queued[0].seq])
    core.edged.statuses["uid-a"] = statuses("Running", 4)
    second = parse(*metrics.render())
    assert value(second, "fleetops_edge_cloud_connected") == 1
    assert value(second, "fleetops_edge_connects_total") == 1
    assert value(second, "fleetops_edge_messages_received_total") == 3
    assert value(second, "fleetops_edge_outbox_acked_total") == 1
    assert value(second, "fleetops_edge_outbox_depth") == 1
    assert value(second, "fleetops_edge_container_restarts_total") == 5

    # Pod "a" deleted, then recreated under the same name with a new uid that has restarted once: the
    # counter keeps what it counted and adds the new container's restart.
    meta.prune({"default/pod/b", "default/pod/c"})
    assert value(parse(*metrics.render()), "fleetops_edge_container_restarts_total") == 5
    meta.apply([Message("update", "default/pod/a", edge_pod("a", "uid-a2"), resourceversion="2")])
    core.edged.statuses["uid-a2"] = statuses("Running", 1)
    third = parse(*metrics.render())
    assert value(third, "fleetops_edge_container_restarts_total") == 6
    assert value(third, "fleetops_edge_pods", phase="Running") == 1


def test_edge_metrics_leave_out_the_cache_while_it_is_closed(tmp_path: Path) -> None:
    core = _Core(MetaManager(tmp_path / "edge.db"))  # never opened, as before start or after stop
    samples = parse(*EdgeMetrics(core).render())
    assert value(samples, "fleetops_edge_cloud_connected") == 0
    assert not any(
        name.startswith(("fleetops_edge_outbox_depth", "fleetops_edge_pods")) for name, _ in samples
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({}, {}),
        ({"containerStatuses": [{"name": "c", "restartCount": 3}]}, {("u", "c"): 3}),
        (
            {
                "initContainerStatuses": [{"name": "init", "restartCount": 1}],
                "containerStatuses": [{"name": "c"}, "junk"],
            },
            {("u", "init"): 1, ("u", "c"): 0},
        ),
    ],
)
def test_restart_counts(status: JSONObject, expected: dict[tuple[str, str], int]) -> None:
    assert restart_counts({"metadata": {"uid": "u"}}, status) == expected

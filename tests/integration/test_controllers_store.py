"""The controllers against a real SQLite store: a Deployment rolls onto matching edge nodes, updates within
its surge/unavailability bounds, cascades on delete; a node whose heartbeat stops goes Unknown.

The test plays the edge: it watches the store, marks bound pods Running+Ready and finishes the deletion of
pods that get a deletionTimestamp. Time only moves through the injected clock."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from app.resources import DEPLOYMENTS, EVENTS, NODES, PODS, REPLICASETS, JSONObject, ResourceType
from cloudservice.controllers import ControllerManager, ManualClock, delete_pod_gracefully, record_event
from cloudservice.errors import NotFound
from cloudservice.store import SqlStore, WatchEvent, open_store

Key = tuple[str, str, str]


def stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def ready_node(name: str, labels: dict[str, str], now: dt.datetime) -> JSONObject:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {
            "allocatable": {"pods": "10"},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "EdgeReady",
                    "lastHeartbeatTime": stamp(now),
                    "lastTransitionTime": stamp(now),
                }
            ],
        },
    }


def web_deployment(image: str) -> JSONObject:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"nodeSelector": {"site": "a"}, "containers": [{"name": "web", "image": image}]},
            },
        },
    }


def is_ready(pod: JSONObject) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


class Edge:
    """A mirror of the store fed by one watch, acting as every edge node's pod runtime."""

    def __init__(self, store: SqlStore, since: int) -> None:
        self.store = store
        self.watch = store.watch(None, since=since)
        self.objs: dict[Key, JSONObject] = {}
        self.checks: list[Callable[[Edge], None]] = []
        self.removed_without_grace: list[str] = []

    def of(self, rt: ResourceType) -> list[JSONObject]:
        return [o for (plural, _, _), o in self.objs.items() if plural == rt.plural]

    def active_pods(self) -> list[JSONObject]:
        return [p for p in self.of(PODS) if not p["metadata"].get("deletionTimestamp")]

    async def until(self, pred: Callable[[Edge], bool], timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not pred(self):
                ev = await anext(self.watch)
                self._apply(ev)
                for check in self.checks:
                    check(self)
                await self._act(ev)

    def _apply(self, ev: WatchEvent) -> None:
        m = ev.object["metadata"]
        key = (ev.resource.plural, m.get("namespace", ""), m["name"])
        if ev.type == "DELETED":
            self.objs.pop(key, None)
            if ev.resource == PODS and ev.object["spec"].get("nodeName") and not m.get("deletionTimestamp"):
                self.removed_without_grace.append(m["name"])
        else:
            self.objs[key] = ev.object

    async def _act(self, ev: WatchEvent) -> None:
        if ev.resource != PODS or ev.type == "DELETED":
            return
        pod = ev.object
        name = pod["metadata"]["name"]
        if pod["metadata"].get("deletionTimestamp"):
            with contextlib.suppress(NotFound):
                await self.store.delete(PODS, "default", name)
        elif pod["spec"].get("nodeName") and not is_ready(pod):

            def run(p: JSONObject) -> JSONObject:
                conds = [
                    c
                    for c in p["status"].get("conditions", [])
                    if c["type"] not in ("Ready", "ContainersReady")
                ]
                conds += [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}]
                p["status"].update(phase="Running", conditions=conds)
                return p

            with contextlib.suppress(NotFound):
                await self.store.guaranteed_update(PODS, "default", name, run)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    s = open_store(str(tmp_path / "cloud.db"))
    await s.start()
    yield s
    await s.close()


async def wait_for_sleeper(clock: ManualClock) -> None:
    """The node monitor parks on the clock; there is no event for that, so poll briefly with a deadline."""
    async with asyncio.timeout(5):
        while clock.sleepers == 0:
            await asyncio.sleep(0.01)


async def test_deployment_rollout_delete_and_node_heartbeat(store: SqlStore) -> None:
    clock = ManualClock()
    t0 = clock.now()
    edge = Edge(store, since=await store.revision())
    for name, labels in (("edge-a1", {"site": "a"}), ("edge-a2", {"site": "a"}), ("edge-b1", {"site": "b"})):
        await store.create(NODES, ready_node(name, labels, t0))
    manager = ControllerManager(store, clock=clock, node_grace_period=40.0, node_monitor_period=5.0)
    await manager.start()
    try:
        # ---- apply: 4 pods, bound only to the site=a nodes, spread over both
        await store.create(DEPLOYMENTS, web_deployment("web:v1"))

        def rolled_out(image: str) -> Callable[[Edge], bool]:
            def pred(e: Edge) -> bool:
                pods = e.active_pods()
                d = e.objs.get(("deployments", "default", "web"), {})
                progressing = [
                    c for c in d.get("status", {}).get("conditions", []) if c["type"] == "Progressing"
                ]
                return (
                    len(e.of(PODS)) == 4
                    and all(is_ready(p) and p["spec"]["containers"][0]["image"] == image for p in pods)
                    and bool(progressing)
                    and progressing[0]["reason"] == "NewReplicaSetAvailable"
                )

            return pred

        await edge.until(rolled_out("web:v1"))
        nodes = sorted(p["spec"]["nodeName"] for p in edge.active_pods())
        assert nodes == ["edge-a1", "edge-a1", "edge-a2", "edge-a2"]
        for p in edge.active_pods():
            assert p["metadata"]["name"].startswith("web-")
            assert p["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
            scheduled = [c for c in p["status"]["conditions"] if c["type"] == "PodScheduled"]
            assert scheduled and scheduled[0]["status"] == "True"
        status = edge.objs[("deployments", "default", "web")]["status"]
        assert (status["replicas"], status["updatedReplicas"], status["availableReplicas"]) == (4, 4, 4)

        # ---- rolling update: never more than 4 + 1 pods, never fewer than 4 - 1 available
        seen: dict[str, int] = {"max_pods": 0, "min_available": 4}

        def bounds(e: Edge) -> None:
            active = e.active_pods()
            seen["max_pods"] = max(seen["max_pods"], len(active))
            seen["min_available"] = min(seen["min_available"], sum(1 for p in active if is_ready(p)))
            assert len(active) <= 5
            assert sum(1 for p in active if is_ready(p)) >= 3

        edge.checks.append(bounds)

        def new_image(d: JSONObject) -> JSONObject:
            d["spec"]["template"]["spec"]["containers"][0]["image"] = "web:v2"
            return d

        await store.guaranteed_update(DEPLOYMENTS, "default", "web", new_image)
        await edge.until(rolled_out("web:v2"))
        assert (
            seen["max_pods"] == 5
        )  # the surge was used (how much of maxUnavailable is used depends on timing)
        revisions = sorted(
            rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] for rs in edge.of(REPLICASETS)
        )
        assert revisions == ["1", "2"]
        edge.checks.clear()

        # ---- delete cascades: RS and pods go, pods through deletionTimestamp (the edge finishes them)
        events_seen = {e["reason"] for e in (await store.list(EVENTS))[0]}
        assert {"ScalingReplicaSet", "SuccessfulCreate", "SuccessfulDelete", "Scheduled"} <= events_seen
        await store.delete(DEPLOYMENTS, "default", "web")
        await edge.until(lambda e: not e.of(PODS) and not e.of(REPLICASETS))
        assert edge.removed_without_grace == []

        # ---- heartbeats: edge-b1 stops reporting, the others keep going
        await wait_for_sleeper(clock)
        clock.advance(30)
        await wait_for_sleeper(clock)

        def beat(n: JSONObject) -> JSONObject:
            n["status"]["conditions"][0]["lastHeartbeatTime"] = stamp(clock.now())
            return n

        for name in ("edge-a1", "edge-a2"):
            await store.guaranteed_update(NODES, "", name, beat)
        clock.advance(15)

        def ready_of(e: Edge, name: str) -> dict[str, Any]:
            cond: dict[str, Any] = e.objs[("nodes", "", name)]["status"]["conditions"][0]
            return cond

        await edge.until(lambda e: ready_of(e, "edge-b1")["status"] == "Unknown")
        assert ready_of(edge, "edge-b1")["reason"] == "NodeStatusUnknown"
        assert ready_of(edge, "edge-b1")["message"] == "Kubelet stopped posting node status."
        assert ready_of(edge, "edge-a1")["status"] == "True"
        assert ready_of(edge, "edge-a2")["status"] == "True"
    finally:
        await manager.stop()
        await edge.watch.aclose()


async def test_delete_pod_gracefully_and_record_event(store: SqlStore) -> None:
    bound = await store.create(
        PODS,
        {
            "metadata": {"name": "bound", "namespace": "default"},
            "spec": {"nodeName": "edge-a1", "terminationGracePeriodSeconds": 5, "containers": []},
        },
    )
    unbound = await store.create(PODS, {"metadata": {"name": "unbound", "namespace": "default"}, "spec": {}})
    marked = await delete_pod_gracefully(store, bound)
    assert marked is not None
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["deletionGracePeriodSeconds"] == 5
    assert (await store.get(PODS, "default", "bound"))["metadata"]["deletionTimestamp"]
    await delete_pod_gracefully(store, unbound)
    with pytest.raises(NotFound):
        await store.get(PODS, "default", "unbound")
    assert await delete_pod_gracefully(store, unbound) is None  # already gone: not an error

    for _ in range(3):
        await record_event(store, bound, "Warning", "FailedScheduling", "0/1 nodes are available.", rt=PODS)
    await record_event(
        store, bound, "Normal", "Scheduled", "Successfully assigned default/bound to edge-a1", rt=PODS
    )
    events = {e["reason"]: e for e in (await store.list(EVENTS, "default"))[0]}
    assert events["FailedScheduling"]["count"] == 3
    assert events["Scheduled"]["count"] == 1
    assert events["FailedScheduling"]["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "bound",
        "namespace": "default",
        "uid": bound["metadata"]["uid"],
        "resourceVersion": bound["metadata"]["resourceVersion"],
    }

"""metrics.k8s.io served from real measurements: a real Edged runs a CPU-burning container and an idle
one, a real UsageSampler reads /proc, the UsageStore keeps the sample, and the routes answer over HTTP."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from app.resources import NODES
from cloudservice.api.metricsapi import add_metrics_api, discovery_group, discovery_resources
from cloudservice.store.sql import SqlStore, open_store
from cloudservice.usage import UsageStore
from edgeservice.edged import Edged
from edgeservice.usage import UsageSampler

JSONObject = dict[str, Any]
DEADLINE = 15.0
BASE = "/apis/metrics.k8s.io/v1beta1"


class Sink:
    """Edged's PodStatusSink: wakes waiters on every report."""

    def __init__(self) -> None:
        self.statuses: dict[str, JSONObject] = {}
        self.changed = asyncio.Event()

    def pod_status_changed(self, pod: JSONObject, status: JSONObject) -> None:
        self.statuses[pod["metadata"]["uid"]] = status
        self.changed.set()

    def pod_terminated(self, pod: JSONObject) -> None:
        self.changed.set()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(DEADLINE):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


def make_pod(uid: str, name: str, code: str, labels: dict[str, str]) -> JSONObject:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "factory", "uid": uid, "labels": labels},
        "spec": {
            "containers": [{"name": "main", "image": "python:3.11", "command": [sys.executable, "-c", code]}],
            "terminationGracePeriodSeconds": 2,
        },
    }


def nanocores(quantity: str) -> float:
    """CPU quantity to nanocores (what the edge writes: n, m or whole cores)."""
    m = re.fullmatch(r"(\d+)(n|m)?", quantity)
    assert m, quantity
    return int(m[1]) * {"n": 1, "m": 1_000_000, None: 1_000_000_000}[m[2]]


def kib(quantity: str) -> int:
    m = re.fullmatch(r"(\d+)Ki", quantity)
    assert m, quantity
    return int(m[1])


def running(status: JSONObject | None) -> bool:
    return bool(status) and all("running" in c["state"] for c in (status or {}).get("containerStatuses", []))


@pytest.fixture
async def sampled(tmp_path: Path) -> AsyncIterator[JSONObject]:
    """A sample taken from a real Edged running a busy pod and an idle pod."""
    sink = Sink()
    edged = Edged(tmp_path / "edged", "edge-1", sink)
    await edged.start()
    pods = [
        make_pod("busy-1", "busy", "while True: pass", {"app": "busy", "tier": "compute"}),
        make_pod("idle-1", "idle", "import time; time.sleep(300)", {"app": "idle"}),
    ]
    try:
        for p in pods:
            edged.upsert(p)
        await sink.wait_for(lambda: all(running(sink.statuses.get(p["metadata"]["uid"])) for p in pods))
        sampler = UsageSampler(edged, lambda: pods, min_window=0.5)
        sampler.sample()  # the baseline (or, for containers that started just now, a first rate)
        # CPU accumulates with no event to await: poll until a rate over at least min_window exists.
        async with asyncio.timeout(DEADLINE):
            while True:
                await asyncio.sleep(0.6)
                sample = sampler.sample()
                if "node" in sample and len(sample["pods"]) == 2:
                    break
        yield sample
    finally:
        await edged.stop_all_pods()
        await edged.stop()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    s = open_store(str(tmp_path / "cloud.db"))
    await s.start()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def api(store: SqlStore) -> AsyncIterator[tuple[aiohttp.ClientSession, str, UsageStore]]:
    usage = UsageStore()
    app = web.Application()
    add_metrics_api(app, usage, store=store)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            yield session, f"http://127.0.0.1:{port}", usage
    finally:
        await runner.cleanup()


async def get(session: aiohttp.ClientSession, url: str, expect: int = 200) -> JSONObject:
    async with session.get(url) as resp:
        body = await resp.json()
        assert resp.status == expect, body
        assert isinstance(body, dict)
        return body


def test_the_sample_measures_the_busy_container(sampled: JSONObject) -> None:
    by_name = {p["name"]: p["containers"][0]["usage"] for p in sampled["pods"]}
    # A spinning Python process uses about one core; even on a crowded runner it is far above 100m.
    assert nanocores(by_name["busy"]["cpu"]) > 100_000_000
    assert nanocores(by_name["idle"]["cpu"]) < 50_000_000
    assert nanocores(sampled["node"]["cpu"]) >= nanocores(by_name["busy"]["cpu"]) * 0.8
    # A Python interpreter's resident set is several MiB; the node's working set far more.
    assert kib(by_name["busy"]["memory"]) > 2048 and kib(by_name["idle"]["memory"]) > 2048
    assert kib(sampled["node"]["memory"]) > kib(by_name["busy"]["memory"])


async def test_metrics_api_serves_what_the_edge_measured(
    sampled: JSONObject, api: tuple[aiohttp.ClientSession, str, UsageStore], store: SqlStore
) -> None:
    session, url, usage = api
    # Before any sample: empty lists (kubectl says "metrics not available yet"), 404 for one object.
    assert (await get(session, f"{url}{BASE}/nodes"))["items"] == []
    missing = await get(session, f"{url}{BASE}/nodes/edge-1", 404)
    assert (missing["kind"], missing["reason"], missing["code"]) == ("Status", "NotFound", 404)
    assert "metrics not available yet" in missing["message"]

    assert usage.update("edge-1", sampled)

    node = await get(session, f"{url}{BASE}/nodes/edge-1")
    assert (node["kind"], node["apiVersion"], node["metadata"]["name"]) == (
        "NodeMetrics",
        "metrics.k8s.io/v1beta1",
        "edge-1",
    )
    assert node["usage"] == {"cpu": sampled["node"]["cpu"], "memory": sampled["node"]["memory"]}
    assert node["timestamp"] == sampled["timestamp"] and node["window"].endswith("s")
    nodes = await get(session, f"{url}{BASE}/nodes")
    assert nodes["kind"] == "NodeMetricsList" and [n["metadata"]["name"] for n in nodes["items"]] == [
        "edge-1"
    ]

    busy = await get(session, f"{url}{BASE}/namespaces/factory/pods/busy")
    assert busy["kind"] == "PodMetrics" and busy["metadata"]["labels"] == {"app": "busy", "tier": "compute"}
    assert [c["name"] for c in busy["containers"]] == ["main"]
    assert nanocores(busy["containers"][0]["usage"]["cpu"]) > 100_000_000

    listed = await get(session, f"{url}{BASE}/namespaces/factory/pods")
    assert listed["kind"] == "PodMetricsList"
    assert [p["metadata"]["name"] for p in listed["items"]] == ["busy", "idle"]
    everywhere = await get(session, f"{url}{BASE}/pods")
    assert [p["metadata"]["name"] for p in everywhere["items"]] == ["busy", "idle"]
    assert (await get(session, f"{url}{BASE}/namespaces/other/pods"))["items"] == []
    await get(session, f"{url}{BASE}/namespaces/other/pods/busy", 404)

    # Selectors, as `kubectl top pods -l ...` and `--field-selector` send them.
    selected = await get(session, f"{url}{BASE}/namespaces/factory/pods?labelSelector=tier%3Dcompute")
    assert [p["metadata"]["name"] for p in selected["items"]] == ["busy"]
    selected = await get(session, f"{url}{BASE}/pods?labelSelector=app+in+(idle,other)")
    assert [p["metadata"]["name"] for p in selected["items"]] == ["idle"]
    selected = await get(session, f"{url}{BASE}/pods?fieldSelector=metadata.name!%3Dbusy")
    assert [p["metadata"]["name"] for p in selected["items"]] == ["idle"]
    bad = await get(session, f"{url}{BASE}/pods?labelSelector=a%3D%3D%3Db", 400)
    assert bad["reason"] == "BadRequest"
    await get(session, f"{url}{BASE}/pods?fieldSelector=spec.nodeName%3Dx", 400)

    # Node label selectors match the Node objects' labels in the store.
    await store.create(
        NODES,
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "edge-1", "labels": {"site": "north"}}},
    )
    north = await get(session, f"{url}{BASE}/nodes?labelSelector=site%3Dnorth")
    assert [n["metadata"]["name"] for n in north["items"]] == ["edge-1"]
    assert (await get(session, f"{url}{BASE}/nodes?labelSelector=site%3Dsouth"))["items"] == []


async def test_discovery_documents(api: tuple[aiohttp.ClientSession, str, UsageStore]) -> None:
    session, url, _ = api
    group = await get(session, f"{url}/apis/metrics.k8s.io")
    assert group == {"kind": "APIGroup", "apiVersion": "v1", **discovery_group()}
    assert group["preferredVersion"] == {"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"}
    resources = await get(session, f"{url}{BASE}")
    assert resources == discovery_resources()
    assert {(r["name"], r["kind"], r["namespaced"]) for r in resources["resources"]} == {
        ("nodes", "NodeMetrics", False),
        ("pods", "PodMetrics", True),
    }

"""Pod startup: apply a 1-replica Deployment to a real edge, time until the cloud's watch sees it Running.

Real processes: one `fleetops cloud`, one `fleetops edge`. Each run creates a Deployment through the API
(deployment controller -> ReplicaSet -> Pod -> scheduler -> hub -> tunnel -> edge cache -> Edged -> shim ->
process -> status -> outbox -> tunnel -> store -> watch) and stops the clock when a watch event shows the
pod phase Running with its container running. Target p50 <= 300 ms, p99 <= 1 s (KubeEdge: p50 1.7 s).
For reference the same run reports the bare cost of spawning the workload process locally.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from app.launcher import LocalCluster
from bench.common import summary, table

RUNS = 50


def deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": "bench:1", "command": ["sleep", "600"]}],
                },
            },
        },
    }


def is_running(pod: dict[str, Any]) -> bool:
    status = pod.get("status", {})
    statuses = status.get("containerStatuses", [])
    return status.get("phase") == "Running" and bool(statuses) and "running" in statuses[0]["state"]


async def bare_spawn() -> float:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec("sleep", "600")
    elapsed = time.perf_counter() - started
    proc.kill()
    await proc.wait()
    return elapsed


async def run() -> dict[str, Any]:
    bare: list[float] = [await bare_spawn() for _ in range(RUNS)]
    with tempfile.TemporaryDirectory() as d:
        cluster = LocalCluster(Path(d), status_interval=2.0)
        try:
            await cluster.start_cloud()
            await cluster.start_edge("edge-1")
            await cluster.wait_ready_nodes(["edge-1"])
            assert cluster._ssl is not None
            samples = await _measure(cluster, cluster._ssl)
        finally:
            await cluster.stop()
    s, b = summary(samples), summary(bare)
    table(
        [
            ("pod startup p50 (ms)", f"{s['p50'] * 1000:.0f}", "target <= 300"),
            ("pod startup p99 (ms)", f"{s['p99'] * 1000:.0f}", "target <= 1000"),
            ("bare process spawn p50 (ms)", f"{b['p50'] * 1000:.1f}", "floor"),
        ]
    )
    return {"runs": len(samples), "startup_s": s, "bare_spawn_s": b}


async def _measure(cluster: LocalCluster, tls: ssl.SSLContext) -> list[float]:
    headers = {"Authorization": f"Bearer {cluster.token}"}
    running: dict[str, asyncio.Future[float]] = {}
    samples: list[float] = []
    async with aiohttp.ClientSession(headers=headers) as session:
        rv = (await cluster.request("GET", "/api/v1/namespaces/default/pods"))["metadata"]["resourceVersion"]

        async def watch() -> None:
            url = f"{cluster.api}/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}"
            async with session.get(url, ssl=tls, timeout=aiohttp.ClientTimeout(total=None)) as resp:
                async for line in resp.content:
                    pod = json.loads(line)["object"]
                    fut = running.get(pod["metadata"].get("labels", {}).get("app", ""))
                    if fut is not None and not fut.done() and is_running(pod):
                        fut.set_result(time.perf_counter())

        watcher = asyncio.create_task(watch())
        try:
            loop = asyncio.get_running_loop()
            for i in range(RUNS):
                name = f"bench-{i}"
                running[name] = loop.create_future()
                started = time.perf_counter()
                await cluster.request(
                    "POST", "/apis/apps/v1/namespaces/default/deployments", deployment(name)
                )
                samples.append(await asyncio.wait_for(running[name], 30) - started)
                await cluster.request("DELETE", f"/apis/apps/v1/namespaces/default/deployments/{name}")
                await cluster.wait_until(
                    f"/api/v1/namespaces/default/pods?labelSelector=app%3D{name}",
                    lambda lst: not lst["items"],
                )
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    return samples

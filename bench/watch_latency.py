"""Watch fan-out: 100 concurrent pod watches, 200 writes; latency from each write to each watcher seeing it.

Real process: one `fleetops cloud` (no edge needed). One pod, bound to a node that does not exist so that no
controller writes to it, is patched 200 times (a label change, one write every ~20 ms) by a second client
while 100 watches of all pods stay open on one `AsyncClient` (100 streams, one connection each). Per
(write, watcher) pair the latency runs from just before the PATCH call to that watcher decoding the event
carrying the write's resourceVersion: target p99 < 50 ms. Next to it, in the same run: the PATCH call's own
latency (the write's baseline cost), and the cloud process's RSS before and after the watches opened.

All watchers decode in this one process, so the figure includes the client side fanning in 100 streams
(100 JSON decodes per write); on a 2-core machine the cloud and the bench also share the CPUs.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import psutil

from app.client import AsyncClient, WatchStream
from app.launcher import LocalCluster
from app.resources import PODS, JSONObject
from bench.common import summary, table

WATCHERS = 100
WRITES = 200
# Spacing between writes: 50 writes/s, a busy but plausible control-plane rate, well under the store's
# write rate, so each latency is one write's fan-out rather than a queue of them.
WRITE_GAP_S = 0.02
TARGET_P99_S = 0.050
GHOST_NODE = "bench-no-such-node"
POD_NAME = "bench-watched"
MB = 1024 * 1024


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def watched_pod() -> JSONObject:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": POD_NAME, "namespace": "default", "labels": {"app": "bench"}},
        "spec": {"nodeName": GHOST_NODE, "containers": [{"name": "main", "image": "bench:1"}]},
    }


async def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        cluster = LocalCluster(Path(d))
        try:
            await cluster.start_cloud()
            assert cluster.cloud is not None
            result = await _measure(cluster, psutil.Process(cluster.cloud.pid))
        finally:
            await cluster.stop()
    lat, write = result["latency_s"], result["write_call_s"]
    first, last = result["first_watcher_s"], result["last_watcher_s"]
    per_watcher = (result["rss_after_watches"] - result["rss_before_watches"]) / WATCHERS
    table(
        [
            ("write -> watcher p50 (ms)", f"{lat['p50'] * 1000:.1f}", f"{lat['n']} (write, watcher) pairs"),
            ("write -> watcher p99 (ms)", f"{lat['p99'] * 1000:.1f}", f"target < {TARGET_P99_S * 1000:.0f}"),
            ("write -> watcher max (ms)", f"{lat['max'] * 1000:.1f}", f"{result['missing']} pairs missing"),
            ("first watcher p50 (ms)", f"{first['p50'] * 1000:.1f}", "per write, the fastest watcher"),
            ("last watcher p50 (ms)", f"{last['p50'] * 1000:.1f}", "per write, the slowest watcher"),
            ("PATCH call p50 (ms)", f"{write['p50'] * 1000:.1f}", "baseline: the write itself"),
            ("PATCH call p99 (ms)", f"{write['p99'] * 1000:.1f}", "baseline: the write itself"),
            ("cloud CPU during writes (cores)", f"{result['cloud_cpu_cores']:.2f}", "fan-out work"),
            ("bench CPU during writes (cores)", f"{result['bench_cpu_cores']:.2f}", "100 decoders + writer"),
            ("cloud RSS, no watches (MB)", f"{result['rss_before_watches'] / MB:.1f}", ""),
            (f"cloud RSS, {WATCHERS} watches (MB)", f"{result['rss_after_watches'] / MB:.1f}", ""),
            ("RSS per watcher (KB)", f"{per_watcher / 1024:.0f}", "after - before, / watchers"),
        ]
    )
    result["rss_per_watcher"] = per_watcher
    return result


async def _measure(cluster: LocalCluster, cloud: psutil.Process) -> dict[str, Any]:
    # Watches and writes use separate clients: the watchers take all 100 of one client's pooled connections.
    async with (
        AsyncClient.from_kubeconfig(cluster.kubeconfig) as watch_client,
        AsyncClient.from_kubeconfig(cluster.kubeconfig) as writer,
    ):
        created = await writer.create(PODS, watched_pod())
        since = str(created["metadata"]["resourceVersion"])
        await asyncio.sleep(1.0)  # let the cloud settle after start before the baseline RSS
        rss_before = cloud.memory_info().rss

        # received[w] maps a resourceVersion to when watcher w decoded it (perf_counter).
        received: list[dict[str, float]] = [{} for _ in range(WATCHERS)]
        last_rv = ""
        all_seen = asyncio.Event()
        done = 0
        streams: list[WatchStream] = [
            watch_client.watch(PODS, resource_version=since, read_timeout=60.0) for _ in range(WATCHERS)
        ]
        await asyncio.gather(*(s.open() for s in streams))

        async def consume(i: int, stream: WatchStream) -> None:
            nonlocal done
            seen = received[i]
            async for ev in stream:
                rv = ev.resource_version
                seen[rv] = time.perf_counter()
                if rv == last_rv:
                    done += 1
                    if done == WATCHERS:
                        all_seen.set()

        tasks = [asyncio.create_task(consume(i, s), name=f"bench.watch[{i}]") for i, s in enumerate(streams)]
        try:
            await asyncio.sleep(0.5)  # every watch request has reached the server and is idle
            rss_after = cloud.memory_info().rss

            sent: dict[str, float] = {}
            write_calls: list[float] = []
            cloud_cpu, bench_cpu, wall = _cpu(cloud), _cpu(psutil.Process()), time.perf_counter()
            for k in range(WRITES):
                started = time.perf_counter()
                obj = await writer.patch(PODS, POD_NAME, {"metadata": {"labels": {"seq": str(k)}}}, "default")
                write_calls.append(time.perf_counter() - started)
                rv = str(obj["metadata"]["resourceVersion"])
                sent[rv] = started
                if k == WRITES - 1:
                    last_rv = rv
                    # A watcher may have decoded the last event before last_rv was known.
                    done = sum(1 for seen in received if rv in seen)
                    if done == WATCHERS:
                        all_seen.set()
                await asyncio.sleep(WRITE_GAP_S)
            with suppress(TimeoutError):  # what never arrived is counted below as missing pairs
                await asyncio.wait_for(all_seen.wait(), 30.0)
            wall = time.perf_counter() - wall
            cloud_cpu = (_cpu(cloud) - cloud_cpu) / wall
            bench_cpu = (_cpu(psutil.Process()) - bench_cpu) / wall
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for s in streams:
                await s.aclose()
    per_write = [[seen[rv] - t0 for seen in received if rv in seen] for rv, t0 in sent.items()]
    latencies = [x for xs in per_write for x in xs]
    missing = WATCHERS * len(sent) - len(latencies)
    return {
        "watchers": WATCHERS,
        "writes": WRITES,
        "latency_s": summary(latencies),
        "missing": missing,
        # Per write, the first and the last of the watchers to see it: the spread is the fan-out's cost.
        "first_watcher_s": summary([min(xs) for xs in per_write if xs]),
        "last_watcher_s": summary([max(xs) for xs in per_write if xs]),
        "write_call_s": summary(write_calls),
        # CPU seconds per wall second during the writes (1.0 = one core busy), cloud and this process.
        "cloud_cpu_cores": cloud_cpu,
        "bench_cpu_cores": bench_cpu,
        "rss_before_watches": rss_before,
        "rss_after_watches": rss_after,
    }

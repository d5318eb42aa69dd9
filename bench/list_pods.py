"""List pods: `kubectl get pods -A` with 10,000 pods in the cloud, next to SqlStore.list on the same data.

Real processes: one `fleetops cloud` on a SQLite store seeded beforehand (with the cloud stopped) through
`SqlStore.create`, 10,000 pods over 10 namespaces, each bound to a node that does not exist and owned by
nothing, so no controller touches them (the scheduler skips bound pods, the garbage collector pods without
owners, node lifecycle only the pods of nodes it knows, the hub only pods of connected edges); the run
checks that afterwards. Timed, 5 runs each, after one untimed warm-up: `kubectl get pods -A` (target
< 1.5 s), a raw GET of `/api/v1/pods` with the Accept header kubectl sends (a meta.k8s.io Table), and
`AsyncClient.list(PODS)` (full objects). Baseline in the same run: `SqlStore.list` from this process on the
same database file, and the in-process cost of the API handler's steps after it (sort, Table conversion,
JSON encoding), so a miss can be placed without a profiler.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from app.client import AsyncClient
from app.launcher import LocalCluster
from app.resources import NAMESPACES, PODS, JSONObject
from bench.common import table
from cloudservice.api import tables
from cloudservice.store.sql import SqlStore, open_store

TOTAL_PODS = 10_000
NAMESPACE_COUNT = 10
RUNS = 5
TARGET_S = 1.5
# A node name no edge uses: the pods count as bound (the scheduler leaves them alone) but no edge runs them.
GHOST_NODE = "bench-no-such-node"
# What kubectl 1.3x sends for `get`: a server-side Table, falling back to a plain list.
KUBECTL_ACCEPT = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)
# The cloud lists every pod into its controllers' informer at start; timing starts once its CPU use
# falls under this share of one core (or after the deadline), so start-up work does not pollute the runs.
IDLE_CPU_PERCENT = 10.0
IDLE_DEADLINE_S = 60.0
MB = 1024 * 1024


def pod(i: int) -> JSONObject:
    """A pod shaped like a running one (status, conditions, container status), ~1.3 KB of JSON."""
    stamp = "2025-01-01T00:00:00Z"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"bench-{i:05d}",
            "namespace": f"bench-{i % NAMESPACE_COUNT}",
            "labels": {"app": "bench", "shard": str(i % 100)},
        },
        "spec": {
            "nodeName": GHOST_NODE,
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "containers": [
                {
                    "name": "main",
                    "image": "registry.example/bench:1.0",
                    "command": ["sleep", "infinity"],
                    "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                }
            ],
        },
        "status": {
            "phase": "Running",
            "hostIP": "10.0.0.1",
            "podIP": f"10.1.{i // 256 % 256}.{i % 256}",
            "startTime": stamp,
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": stamp}
                for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            "containerStatuses": [
                {
                    "name": "main",
                    "image": "registry.example/bench:1.0",
                    "ready": True,
                    "restartCount": 0,
                    "started": True,
                    "state": {"running": {"startedAt": stamp}},
                }
            ],
        },
    }


async def seed(store: SqlStore) -> dict[str, str]:
    """Namespaces and pods through the store's own create (one transaction each); name -> resourceVersion."""
    for n in range(NAMESPACE_COUNT):
        await store.create(NAMESPACES, {"metadata": {"name": f"bench-{n}"}})
    seeded: dict[str, str] = {}
    for i in range(TOTAL_PODS):
        created = await store.create(PODS, pod(i))
        seeded[created["metadata"]["name"]] = created["metadata"]["resourceVersion"]
    return seeded


async def timed(fn: Callable[[], Awaitable[object]], runs: int = RUNS) -> list[float]:
    """One untimed warm-up call, then ``runs`` timed ones."""
    await fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - started)
    return samples


async def wait_idle(pid: int) -> float:
    """Seconds until the process's CPU use drops under IDLE_CPU_PERCENT over a 0.5 s window."""
    proc = psutil.Process(pid)
    started = time.monotonic()
    proc.cpu_percent()
    while time.monotonic() - started < IDLE_DEADLINE_S:
        await asyncio.sleep(0.5)
        if proc.cpu_percent() < IDLE_CPU_PERCENT:
            break
    return time.monotonic() - started


async def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        cluster = LocalCluster(Path(d))
        cluster.cloud_dir.mkdir(parents=True)
        store = open_store(str(cluster.cloud_dir / "cloud.db"))
        await store.start()
        try:
            started = time.perf_counter()
            seeded = await seed(store)
            seed_s = time.perf_counter() - started
            await cluster.start_cloud(timeout=120.0)
            assert cluster.cloud is not None and cluster._ssl is not None
            settle_s = await wait_idle(cluster.cloud.pid)
            result = await _measure(cluster, cluster._ssl, store, Path(d))
            items, _ = await store.list(PODS)
            touched = sum(
                1 for o in items if seeded.get(o["metadata"]["name"]) != o["metadata"]["resourceVersion"]
            )
        finally:
            await store.close()
            await cluster.stop()
    result.update(seed_s=seed_s, settle_s=settle_s, pods_changed_by_controllers=touched)
    _print(result)
    return result


async def _measure(cluster: LocalCluster, tls: ssl.SSLContext, store: SqlStore, root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"pods": TOTAL_PODS, "runs": RUNS}

    # Baseline: the store alone, then the handler's in-process steps on its answer.
    store_samples = await timed(lambda: store.list(PODS))
    items, rev = await store.list(PODS)
    out["pods_in_store"] = len(items)
    t0 = time.perf_counter()
    ordered = sorted(items, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))
    t1 = time.perf_counter()
    tab = tables.to_table(PODS, ordered, resource_version=str(rev))
    t2 = time.perf_counter()
    body = json.dumps(tab, separators=(",", ":")).encode()
    t3 = time.perf_counter()
    out["store_list_s"] = _stats(store_samples)
    out["handler_steps_s"] = {"sort": t1 - t0, "to_table": t2 - t1, "json_encode": t3 - t2}
    out["table_bytes"] = len(body)

    headers = {"Authorization": f"Bearer {cluster.token}", "Accept": KUBECTL_ACCEPT}
    async with aiohttp.ClientSession(headers=headers) as session:
        sizes: list[int] = []

        async def raw_get() -> None:
            url = f"{cluster.api}/api/v1/pods?limit=500"
            async with session.get(url, ssl=tls) as resp:
                resp.raise_for_status()
                sizes.append(len(await resp.read()))

        out["raw_table_get_s"] = _stats(await timed(raw_get))
        out["raw_table_bytes"] = sizes[-1]

    async with AsyncClient.from_kubeconfig(cluster.kubeconfig) as client:
        counts: list[int] = []

        async def client_list() -> None:
            counts.append(len(await client.list(PODS)))

        out["client_list_s"] = _stats(await timed(client_list))
        out["client_list_items"] = counts[-1]

    kubectl = shutil.which("kubectl")
    out["kubectl_s"] = None
    if kubectl is not None:
        # A private discovery cache, filled by the warm-up run, as on an operator's machine.
        args = [kubectl, "--kubeconfig", str(cluster.kubeconfig), "--cache-dir", str(root / "kube-cache")]
        lines: list[int] = []

        async def kubectl_get() -> None:
            proc = await asyncio.create_subprocess_exec(
                *args, "get", "pods", "-A", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            stdout, stderr = await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"kubectl get pods -A failed: {stderr.decode(errors='replace')[-2000:]}")
            lines.append(stdout.count(b"\n") - 1)  # minus the header

        out["kubectl_s"] = _stats(await timed(kubectl_get))
        out["kubectl_rows"] = lines[-1]
    out["kubectl_path"] = kubectl or ""
    out["cpu_count"] = os.cpu_count()
    return out


def _stats(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "max": max(samples), "min": min(samples)}


def _print(r: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str]] = []
    if r["kubectl_s"] is None:
        rows.append(("kubectl get pods -A (s)", "skipped", "kubectl not on PATH"))
    else:
        k = r["kubectl_s"]
        rows.append(("kubectl get pods -A, median (s)", f"{k['median']:.2f}", f"target < {TARGET_S}"))
        rows.append(("kubectl get pods -A, max (s)", f"{k['max']:.2f}", f"{r['kubectl_rows']} rows"))
    g, c, s = r["raw_table_get_s"], r["client_list_s"], r["store_list_s"]
    steps = r["handler_steps_s"]
    rows += [
        (
            "raw GET /api/v1/pods as Table, median (s)",
            f"{g['median']:.2f}",
            f"{r['raw_table_bytes'] / MB:.1f} MB",
        ),
        (
            "AsyncClient.list(PODS), median (s)",
            f"{c['median']:.2f}",
            f"{r['client_list_items']} full objects",
        ),
        ("SqlStore.list in-process, median (s)", f"{s['median']:.2f}", "baseline: the store alone"),
        ("  + sort by namespace/name (s)", f"{steps['sort']:.3f}", "handler step, in-process"),
        ("  + tables.to_table (s)", f"{steps['to_table']:.3f}", "handler step, in-process"),
        ("  + json encode (s)", f"{steps['json_encode']:.3f}", f"{r['table_bytes'] / MB:.1f} MB"),
        ("seed 10,000 pods via SqlStore.create (s)", f"{r['seed_s']:.1f}", "setup, cloud stopped"),
        ("pods changed by controllers", str(r["pods_changed_by_controllers"]), "must be 0"),
    ]
    table(rows)

"""Log follow: a line written on the edge to `kubectl logs -f` printing it, next to the edge's own reader.

Real processes: one `fleetops cloud`, one `fleetops edge` running a pod whose container prints its own
`time.time()` every 100 ms (flushed). Three readers follow that container's log at once, for the same lines:
`kubectl logs -f` (skipped with a note when kubectl is absent), `AsyncClient.logs(follow=True)` (both through
the cloud API and the tunnel), and, as the baseline, `edgeservice.edged.logs.follow` reading the CRI file on
disk in this process (the edge's own reader, no tunnel). Each computes now - printed time per line, over the
~100 lines printed once all three are open: target p50 < 100 ms. Everything runs on one machine, so the
clocks agree. The baseline includes the shim writing the record and the follower's 50 ms poll interval, which
the tunnel path pays too (the edge serves `logs -f` with the same follower).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from typing import Any

from app.client import AsyncClient
from app.launcher import LaunchError, LocalCluster
from app.resources import JSONObject
from bench.common import summary, table
from edgeservice.edged.logs import follow

LINES = 100
# The container prints every 100 ms: 100 lines in ~10 s.
PRINT_INTERVAL_S = 0.1
TARGET_P50_S = 0.100
POD = "bench-log"
SCRIPT = (
    "import time\n"
    "while True:\n"
    f"    print(f'{{time.time():.6f}}', flush=True)\n"
    f"    time.sleep({PRINT_INTERVAL_S})\n"
)

# One sample: (printed time, received time), both time.time().
Sample = tuple[float, float]


def log_pod() -> JSONObject:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": POD, "namespace": "default"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "bench:1", "command": [sys.executable, "-c", SCRIPT]}],
        },
    }


def is_running(pod: JSONObject) -> bool:
    status = pod.get("status", {})
    statuses = status.get("containerStatuses", [])
    return status.get("phase") == "Running" and bool(statuses) and "running" in statuses[0]["state"]


def stamp(line: str | bytes, samples: list[Sample]) -> None:
    """Record one printed line (other text, e.g. a partial line, is ignored)."""
    now = time.time()
    with suppress(ValueError):
        samples.append((float(line), now))


async def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        cluster = LocalCluster(root, status_interval=1.0)
        try:
            await cluster.start_cloud()
            await cluster.start_edge("edge-1")
            await cluster.wait_ready_nodes(["edge-1"])
            await cluster.request("POST", "/api/v1/namespaces/default/pods", log_pod())
            pod = await cluster.wait_until(f"/api/v1/namespaces/default/pods/{POD}", is_running, what=POD)
            uid = pod["metadata"]["uid"]
            logs = [p for p in (root / "edge-1").rglob("main.log") if uid in p.parts]
            if not logs:
                raise LaunchError(f"no log file for pod uid {uid} under {root / 'edge-1'}")
            result = await _measure(cluster, logs[0])
        finally:
            await cluster.stop()
    rows: list[tuple[str, str, str]] = []
    for key, name, note in (
        ("kubectl", "kubectl logs -f", f"target < {TARGET_P50_S * 1000:.0f}"),
        ("client", "AsyncClient.logs(follow=True)", "API + tunnel"),
        ("direct", "edged.logs.follow on the file", "baseline: no tunnel"),
    ):
        s = result.get(key)
        if s is None:
            why = "kubectl not on PATH" if key == "kubectl" and not result["kubectl_path"] else "no lines"
            rows.append((f"{name} p50 (ms)", "skipped", why))
            continue
        rows.append((f"{name} p50 (ms)", f"{s['p50'] * 1000:.1f}", note))
        rows.append((f"{name} p99 (ms)", f"{s['p99'] * 1000:.1f}", f"{s['n']} lines"))
    table(rows)
    return result


async def _measure(cluster: LocalCluster, log_file: Path) -> dict[str, Any]:
    samples: dict[str, list[Sample]] = {"client": [], "direct": []}
    tasks: list[asyncio.Task[None]] = []
    kubectl_proc: asyncio.subprocess.Process | None = None
    kubectl = shutil.which("kubectl")
    async with AsyncClient.from_kubeconfig(cluster.kubeconfig) as client:
        stream = client.logs(POD, "default", follow=True)
        try:
            await stream.open()

            async def read_client() -> None:
                async for line in stream:
                    stamp(line, samples["client"])

            async def read_direct() -> None:
                chunks: AsyncIterator[bytes] = follow(log_file)
                async for chunk in chunks:
                    for line in chunk.splitlines():
                        stamp(line, samples["direct"])

            tasks += [asyncio.create_task(read_client()), asyncio.create_task(read_direct())]
            if kubectl is not None:
                samples["kubectl"] = []
                kubectl_proc = await asyncio.create_subprocess_exec(
                    kubectl,
                    "--kubeconfig",
                    str(cluster.kubeconfig),
                    "logs",
                    "-f",
                    POD,
                    "-n",
                    "default",
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                tasks.append(asyncio.create_task(_read_lines(kubectl_proc, samples["kubectl"])))
            # Count lines printed once every reader is attached: kubectl needs ~0.5 s to start.
            await asyncio.sleep(1.0)
            since = time.time()
            await asyncio.sleep(LINES * PRINT_INTERVAL_S + 0.5)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await stream.aclose()
            if kubectl_proc is not None:
                if kubectl_proc.returncode is None:
                    kubectl_proc.kill()
                await kubectl_proc.wait()
    result: dict[str, Any] = {"lines_wanted": LINES, "kubectl_path": kubectl or ""}
    for key, got in samples.items():
        fresh = [recv - printed for printed, recv in got if printed >= since][:LINES]
        result[key] = summary(fresh) if fresh else None
    return result


async def _read_lines(proc: asyncio.subprocess.Process, samples: list[Sample]) -> None:
    assert proc.stdout is not None
    while line := await proc.stdout.readline():
        stamp(line, samples)

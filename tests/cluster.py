"""The live cluster the UI tests (tests/tui, tests/gui) drive: a real cloud and one edge, with a pod that
prints, started and stopped by the test. Each UI's conftest wraps :func:`printer_cluster` in its ``live``
fixture."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from app.launcher import LocalCluster, tail
from app.resources import JSONObject

PRINTER = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"


def deployment_manifest(name: str, command: list[str], replicas: int = 1) -> JSONObject:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": f"example/{name}:1", "command": command}],
                },
            },
        },
    }


def running(p: JSONObject) -> bool:
    statuses = p.get("status", {}).get("containerStatuses", [])
    return (
        p.get("status", {}).get("phase") == "Running" and bool(statuses) and "running" in statuses[0]["state"]
    )


@asynccontextmanager
async def printer_cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    """A cloud and one edge (``edge-1``, label site=a) with a Deployment ``printer`` whose one pod prints
    ``tick N`` five times a second; every process stopped on the way out, their logs printed on failure."""
    c = LocalCluster(
        tmp_path, node_grace_period=3.0, status_interval=0.5, ping_interval=1.0, restart_backoff=0.2
    )
    await c.start_cloud()
    try:
        await c.start_edge("edge-1", {"site": "a"})
        await c.wait_ready_nodes(["edge-1"], timeout=30)
        await c.request(
            "POST",
            "/apis/apps/v1/namespaces/default/deployments",
            deployment_manifest("printer", ["sh", "-c", PRINTER]),
        )
        await c.wait_until(
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dprinter",
            lambda lst: len(lst["items"]) == 1 and running(lst["items"][0]),
            timeout=30,
            what="the printer pod running",
        )
        yield c
    except BaseException:
        for proc in [c.cloud, *c.edges.values()]:
            if proc is not None:
                print(f"--- {proc.name} log ---\n{tail(proc.log_path, 60)}")
        raise
    finally:
        await c.stop()


def edge_url(c: LocalCluster, name: str = "edge-1") -> str:
    """The local API of edge ``name``, as its endpoints.json says."""
    return str(json.loads((c.root / name / "endpoints.json").read_text())["localApi"])

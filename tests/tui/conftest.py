"""Shared TUI fixtures: fixed objects for deterministic screens; a real cloud and edge for Pilot tests.

The fixed data goes through ``tui.data.StaticSource`` (our own seam) with a fixed clock, so snapshots and
unit tests do not depend on time or on a server. The live fixtures start real ``fleetops cloud`` and
``fleetops edge`` processes on loopback with ``app.launcher.LocalCluster``, as the end-to-end tests do.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from app.launcher import LocalCluster, tail
from app.resources import JSONObject
from tests.cluster import printer_cluster

NOW = dt.datetime(2026, 1, 2, 12, 0, 0, tzinfo=dt.UTC)


def fixed_clock() -> dt.datetime:
    return NOW


def ts(seconds_ago: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def node(
    name: str, *, ready: bool = True, labels: dict[str, str] | None = None, age: float = 86400
) -> JSONObject:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"node-role.kubernetes.io/edge": "", **(labels or {})},
            "creationTimestamp": ts(age),
        },
        "status": {
            "conditions": [
                {"type": "Ready", "status": "True" if ready else "False", "lastHeartbeatTime": ts(7)}
            ],
            "capacity": {"cpu": "4", "memory": "8056928Ki"},
            "nodeInfo": {"kubeletVersion": "v1.32.0-fleetops"},
        },
    }


def pod(
    name: str,
    node_name: str,
    *,
    ns: str = "default",
    app: str = "web",
    phase: str = "Running",
    ready: bool = True,
    restarts: int = 0,
    reason: str = "",
    age: float = 600,
) -> JSONObject:
    state: JSONObject = {"running": {"startedAt": ts(age)}}
    if reason:
        state = {"waiting": {"reason": reason}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"app": app},
            "creationTimestamp": ts(age),
            "uid": f"uid-{name}",
        },
        "spec": {"nodeName": node_name, "containers": [{"name": "main", "image": f"example/{app}:1"}]},
        "status": {
            "phase": phase,
            "containerStatuses": [
                {"name": "main", "ready": ready, "restartCount": restarts, "state": state, "image": "x"}
            ],
        },
    }


def deployment(name: str, replicas: int, ready: int, *, ns: str = "default") -> JSONObject:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": ts(3600), "generation": 1},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}},
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
        },
    }


def device(name: str, node_name: str, *, state: str, desired: str, reported: str) -> JSONObject:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": ts(7200)},
        "spec": {
            "deviceModelRef": {"name": "pump-model"},
            "nodeName": node_name,
            "protocol": {"protocolName": "modbus"},
            "properties": [{"name": "setpoint", "desired": {"value": desired}}, {"name": "pressure"}],
        },
        "status": {
            "state": state,
            "twins": [
                {"propertyName": "setpoint", "reported": {"value": reported}},
                {"propertyName": "pressure", "reported": {"value": "2.5"}},
            ],
        },
    }


def event(
    name: str, pod_name: str, reason: str, message: str, *, warning: bool = False, ago: float = 30
) -> JSONObject:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": ts(ago)},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": pod_name},
        "type": "Warning" if warning else "Normal",
        "reason": reason,
        "message": message,
        "lastTimestamp": ts(ago),
        "source": {"host": "edge-a"},
    }


def fixed_objects() -> dict[str, list[JSONObject]]:
    """A small fleet: three nodes (one NotReady), pods in two namespaces, two deployments, devices, events."""
    return {
        "nodes": [
            node("edge-a", labels={"site": "a"}),
            node("edge-b", labels={"site": "b"}),
            node("edge-c", ready=False),
        ],
        "pods": [
            pod("web-7d4f-abcde", "edge-a", age=600),
            pod("web-7d4f-fghij", "edge-b", age=610),
            pod("db-0", "edge-a", app="db", age=90000),
            pod(
                "crash-1",
                "edge-b",
                app="crash",
                phase="Running",
                ready=False,
                restarts=7,
                reason="CrashLoopBackOff",
            ),
            pod("sensor-reader", "edge-c", ns="factory", app="sensor", phase="Pending", ready=False, age=45),
        ],
        "deploy": [deployment("web", 2, 2), deployment("crash", 1, 0)],
        "devices": [
            device("pump-1", "edge-a", state="online", desired="40", reported="40"),
            device("pump-2", "edge-b", state="offline", desired="55", reported="38"),
        ],
        "events": [
            event(
                "crash-1.1", "crash-1", "BackOff", "Back-off restarting failed container main", warning=True
            ),
            event("web-7d4f-abcde.1", "web-7d4f-abcde", "Started", "Started container main", ago=600),
        ],
    }


# -- live cluster -----------------------------------------------------------------------------------------


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    """A cloud and one edge with the ``printer`` Deployment (see tests.cluster.printer_cluster)."""
    async with printer_cluster(tmp_path) as c:
        yield c


async def until(predicate: Callable[[], Any], pilot: Any, timeout: float = 15.0, what: str = "") -> None:
    """Let the app run (pilot.pause) until ``predicate()`` holds: UI state has no event to await."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await pilot.pause(0.05)
    await asyncio.sleep(0)


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    """A cloud alone (no edge): for what only needs the API."""
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


def closed_port() -> int:
    """A loopback port nothing listens on: bound by us (so free), then closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port

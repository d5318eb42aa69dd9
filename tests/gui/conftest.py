"""Shared GUI fixtures: offscreen Qt, QSettings in a temporary directory, the I/O bridge, fixed fleet data,
screenshots, and a real cloud and edge for the live tests.

``QT_QPA_PLATFORM`` is set before anything imports Qt, so every test runs offscreen. QSettings' user scope
is pointed at a per-session temporary directory (and each test gets its own settings file), so no test
reads or writes a real user's settings. Every test must leave no GUI thread behind (the bridge's I/O
thread, the camera decoders), on top of the suite-wide task and process check.
"""

from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"

import datetime as dt
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QWidget
from pytestqt.exceptions import TimeoutError

from app.launcher import LocalCluster
from app.resources import JSONObject
from gui.bridge import AsyncBridge
from gui.settings import Settings
from tests.cluster import printer_cluster

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "build" / "screenshots"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture(scope="session", autouse=True)
def _qsettings_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Any QSettings in user scope (the GUI's default) lands in a temporary directory."""
    where = tmp_path_factory.mktemp("qsettings")
    for fmt in (QSettings.Format.IniFormat, QSettings.Format.NativeFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, str(where))
        QSettings.setPath(fmt, QSettings.Scope.SystemScope, str(where / "system"))


@pytest.fixture(autouse=True)
def _no_gui_threads() -> Iterator[None]:
    """Fail a test that leaves a GUI thread running (I/O loop, decoders)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    while True:
        left = [t for t in threading.enumerate() if t not in before and t.name.startswith("fleetops-gui")]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"test left GUI threads running: {[t.name for t in left]}"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(QSettings(str(tmp_path / "fleetops-gui.ini"), QSettings.Format.IniFormat))


@pytest.fixture
def bridge(qapp: Any) -> Iterator[AsyncBridge]:
    b = AsyncBridge()
    b.start()
    try:
        yield b
    finally:
        b.stop()


def screenshot(widget: QWidget, name: str) -> Path:
    """Save ``widget`` as ``build/screenshots/<name>.png`` (looked at by a person, not compared)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    assert widget.grab().save(str(path)), f"cannot save {path}"
    return path


# -- fixed objects ----------------------------------------------------------------------------------------


def ts(seconds_ago: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def node(
    name: str,
    *,
    ready: str = "True",
    labels: dict[str, str] | None = None,
    age: float = 86400,
    since: float = 3600,
    reason: str = "",
) -> JSONObject:
    cond: JSONObject = {
        "type": "Ready",
        "status": ready,
        "lastHeartbeatTime": ts(7 if ready == "True" else since),
        "lastTransitionTime": ts(since),
    }
    if reason:
        cond.update(reason=reason, message="Kubelet stopped posting node status.")
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"node-role.kubernetes.io/edge": "", **(labels or {})},
            "creationTimestamp": ts(age),
        },
        "status": {
            "conditions": [cond],
            "capacity": {"cpu": "4", "memory": "8056928Ki"},
            "addresses": [{"type": "InternalIP", "address": f"10.0.0.{len(name)}"}],
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
        state = {"waiting": {"reason": reason, "message": "back-off 5m0s restarting failed container"}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"app": app},
            "creationTimestamp": ts(age),
            "uid": f"uid-{name}",
            "ownerReferences": [{"kind": "ReplicaSet", "name": f"{app}-7d4f", "controller": True}],
        },
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": "main", "image": f"example/{app}:1", "command": ["sleep", "3600"]}],
        },
        "status": {
            "phase": phase,
            "podIP": "10.244.0.7",
            "startTime": ts(age),
            "containerStatuses": [
                {"name": "main", "ready": ready, "restartCount": restarts, "state": state, "image": "x"}
            ],
        },
    }


def deployment(name: str, replicas: int, ready: int, *, ns: str = "default", image: str = "") -> JSONObject:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": ns,
            "creationTimestamp": ts(3600),
            "generation": 1,
            "annotations": {"deployment.kubernetes.io/revision": "1"},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image or f"example/{name}:1"}]},
            },
        },
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
        },
    }


def device(
    name: str,
    node_name: str,
    *,
    state: str,
    desired: str,
    reported: str,
    protocol: str = "modbus",
    model: str = "pump-model",
) -> JSONObject:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": ts(7200)},
        "spec": {
            "deviceModelRef": {"name": model},
            "nodeName": node_name,
            "protocol": {"protocolName": protocol},
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


def camera(name: str, node_name: str) -> JSONObject:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": ts(7200)},
        "spec": {
            "deviceModelRef": {"name": "camera"},
            "nodeName": node_name,
            "protocol": {"protocolName": "camera", "configData": {"url": "synthetic://conveyor", "fps": 10}},
        },
        "status": {"state": "online"},
    }


def event(
    name: str,
    obj_name: str,
    reason: str,
    message: str,
    *,
    kind: str = "Pod",
    warning: bool = False,
    ago: float = 30,
) -> JSONObject:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": ts(ago)},
        "involvedObject": {"kind": kind, "namespace": "default" if kind != "Node" else "", "name": obj_name},
        "type": "Warning" if warning else "Normal",
        "reason": reason,
        "message": message,
        "lastTimestamp": ts(ago),
        "count": 1,
        "source": {"component": "fleetops", "host": "edge-a"},
    }


def fixed_objects() -> dict[str, list[JSONObject]]:
    """A small fleet: four nodes (one lost its link, one NotReady), pods in two namespaces, deployments,
    devices (two cameras), events."""
    return {
        "nodes": [
            node("edge-a", labels={"site": "a"}),
            node("edge-b", labels={"site": "b"}),
            node("edge-c", ready="Unknown", labels={"site": "a"}, since=420, reason="NodeStatusUnknown"),
            node("edge-d", ready="False", labels={"site": "c"}, since=95),
        ],
        "pods": [
            pod("web-7d4f-abcde", "edge-a", age=600),
            pod("web-7d4f-fghij", "edge-b", age=610),
            pod("db-0", "edge-a", app="db", age=90000),
            pod("crash-1", "edge-b", app="crash", ready=False, restarts=7, reason="CrashLoopBackOff"),
            pod("sensor-reader", "edge-c", ns="factory", app="sensor", phase="Pending", ready=False, age=45),
        ],
        "deploy": [deployment("web", 2, 2), deployment("crash", 1, 0), deployment("db", 1, 1)],
        "devices": [
            device("pump-1", "edge-a", state="online", desired="40", reported="40"),
            device("pump-2", "edge-b", state="offline", desired="55", reported="38"),
            camera("belt-cam", "edge-a"),
            camera("dock-cam", "edge-b"),
        ],
        "events": [
            event(
                "crash-1.1", "crash-1", "BackOff", "Back-off restarting failed container main", warning=True
            ),
            event("web-7d4f-abcde.1", "web-7d4f-abcde", "Started", "Started container main", ago=600),
            event(
                "edge-c.1",
                "edge-c",
                "NodeNotReady",
                "Node edge-c status is now: NodeNotReady",
                kind="Node",
                ago=420,
            ),
        ],
    }


def wait_until(qtbot: Any, predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    """``qtbot.waitUntil`` with a message that says what was awaited."""
    try:
        qtbot.waitUntil(lambda: bool(predicate()), timeout=int(timeout * 1000))
    except TimeoutError as exc:
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}") from exc


# -- live cluster -----------------------------------------------------------------------------------------


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    """A cloud and one edge with the ``printer`` Deployment (see tests.cluster.printer_cluster)."""
    async with printer_cluster(tmp_path) as c:
        yield c

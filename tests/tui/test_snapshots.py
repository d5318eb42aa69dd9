"""SVG snapshots of each main screen with fixed data (``StaticSource``) and a fixed clock.

Regenerate after a deliberate change with ``pytest tests/tui/test_snapshots.py --snapshot-update`` and look
at the SVGs (``tests/tui/__snapshots__/``) before committing them.
"""

from __future__ import annotations

from typing import Any

import pytest
from textual.app import App
from textual.screen import Screen

from app.client import AsyncClient
from app.resources import JSONObject
from tui.app import FleetApp
from tui.data import Connection, Kind, NodeUsage, StaticSource
from tui.device import DeviceScreen
from tui.rollout import RolloutScreen

from .conftest import NOW, closed_port, deployment, fixed_clock, fixed_objects, pod, ts, until

SIZE = (140, 24)


def make_app(view: Kind, *, edge: bool = False, readonly: bool = False) -> FleetApp:
    source = StaticSource(
        fixed_objects(),  # type: ignore[arg-type]
        description="https://cloud.example:6443",
        connection=Connection("connected", cloud_connected=False if edge else None),
        logs=["tick 0", "tick 1"],
        usage={"edge-a": NodeUsage(1.5, 3 * 2**30), "edge-b": NodeUsage(0.25, 512 * 2**20)},
    )
    if edge:
        source.edge = True
        source.description = "http://127.0.0.1:10550"
    return FleetApp(source, view=view, clock=fixed_clock, readonly=readonly)


def loaded(app: FleetApp) -> Any:
    async def run_before(pilot: Any) -> None:
        await until(
            lambda: all(s.loaded for s in app.stores.values()) and app.shown_rows and app.node_usage, pilot
        )
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("view", ["pods", "nodes", "deploy", "devices", "events"])
def test_main_views(snap_compare: Any, view: Kind) -> None:
    app = make_app(view)
    assert snap_compare(app, terminal_size=SIZE, run_before=loaded(app))


def test_filtered_pods(snap_compare: Any) -> None:
    app = make_app("pods")
    assert snap_compare(app, press=["slash", "w", "e", "b"], terminal_size=SIZE, run_before=loaded(app))


def test_pod_describe(snap_compare: Any) -> None:
    app = make_app("pods", readonly=True)
    assert snap_compare(app, press=["enter"], terminal_size=SIZE, run_before=loaded(app))


def test_edge_banner(snap_compare: Any) -> None:
    app = make_app("pods", edge=True)
    assert snap_compare(app, terminal_size=SIZE, run_before=loaded(app))


def test_help(snap_compare: Any) -> None:
    app = make_app("pods")
    assert snap_compare(app, press=["question_mark"], terminal_size=(140, 40), run_before=loaded(app))


# -- the device and rollout screens, from fixed objects ------------------------------------------------------


class Host(App[None]):
    """One screen, as the TUI's shell pushes it; closes the screen's client at the end."""

    def __init__(self, screen: Screen[None], client: AsyncClient) -> None:
        super().__init__()
        self._first = screen
        self._client = client

    def on_mount(self) -> None:
        self.push_screen(self._first)

    async def on_unmount(self) -> None:
        self.workers.cancel_all()
        await self._client.aclose()


def nowhere() -> AsyncClient:
    """A client whose server does not exist: the screens' watches retry quietly in the background while
    the test shows fixed objects (``show``)."""
    return AsyncClient(f"https://127.0.0.1:{closed_port()}", "t", insecure=True)


PUMP_MODEL: JSONObject = {
    "apiVersion": "devices.kubeedge.io/v1beta1",
    "kind": "DeviceModel",
    "metadata": {"name": "pump-model", "namespace": "default"},
    "spec": {
        "protocol": "modbus",
        "properties": [
            {
                "name": "setpoint",
                "type": "INT",
                "accessMode": "ReadWrite",
                "minimum": "0",
                "maximum": "3000",
                "unit": "rpm",
            },
            {"name": "pressure", "type": "FLOAT", "accessMode": "ReadOnly", "unit": "bar"},
            {"name": "mode", "type": "STRING", "accessMode": "ReadWrite"},
        ],
    },
}


def pump_device() -> JSONObject:
    stamp = {"timestamp": str(int(ts_ms(60)))}
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": "pump-2", "namespace": "default"},
        "spec": {
            "deviceModelRef": {"name": "pump-model"},
            "nodeName": "edge-b",
            "protocol": {"protocolName": "modbus"},
            "properties": [
                {"name": "setpoint", "desired": {"value": "1500"}, "visitors": visitor(1)},
                {"name": "pressure", "visitors": visitor(2)},
                {"name": "mode", "desired": {"value": "auto"}, "visitors": visitor(3)},
            ],
        },
        "status": {
            "state": "online",
            "twins": [
                {"propertyName": "setpoint", "reported": {"value": "1380", "metadata": stamp}},
                {"propertyName": "pressure", "reported": {"value": "2.5", "metadata": stamp}},
                {"propertyName": "mode", "reported": {"value": "auto", "metadata": stamp}},
            ],
        },
    }


def visitor(offset: int) -> JSONObject:
    return {
        "protocolName": "modbus",
        "configData": {"register": "HoldingRegister", "offset": offset, "dataType": "uint16"},
    }


def ts_ms(seconds_ago: float) -> float:
    return (NOW.timestamp() - seconds_ago) * 1000


def test_device_twin(snap_compare: Any) -> None:
    client = nowhere()
    screen = DeviceScreen(client, "default", "pump-2", readonly=False, history_interval=3600)
    ramp = [1000.0 + 40 * i for i in range(12)]
    pressure = [2.0 + 0.1 * (i % 6) for i in range(30)]

    async def run_before(pilot: Any) -> None:
        screen.show(pump_device(), PUMP_MODEL, {"setpoint": ramp, "pressure": pressure})
        await until(lambda: bool(screen.query("#spark-1-last")), pilot, what="the sparklines")
        await pilot.pause()

    assert snap_compare(Host(screen, client), terminal_size=(120, 24), run_before=run_before)


def rollout_objects() -> tuple[JSONObject, list[JSONObject], list[JSONObject]]:
    uid = "uid-web"
    dep = deployment("web", 3, 2)
    dep["metadata"].update(uid=uid, annotations={"deployment.kubernetes.io/revision": "2"})
    dep["spec"]["template"] = {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "example/web:2"}]},
    }
    dep["status"].update(
        updatedReplicas=2,
        conditions=[
            {
                "type": "Available",
                "status": "False",
                "reason": "MinimumReplicasUnavailable",
                "message": "Deployment does not have minimum availability.",
                "lastUpdateTime": ts(30),
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "ReplicaSetUpdated",
                "message": 'ReplicaSet "web-5d9c" is progressing.',
                "lastUpdateTime": ts(10),
            },
        ],
    )

    def rs(hash_: str, revision: int, image: str, replicas: int, ready: int) -> JSONObject:
        return {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"web-{hash_}",
                "namespace": "default",
                "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                "ownerReferences": [{"kind": "Deployment", "name": "web", "uid": uid, "controller": True}],
            },
            "spec": {
                "replicas": replicas,
                "template": {
                    "metadata": {"labels": {"app": "web", "pod-template-hash": hash_}},
                    "spec": {"containers": [{"name": "web", "image": image}]},
                },
            },
            "status": {"replicas": replicas, "readyReplicas": ready},
        }

    def web_pod(name: str, hash_: str, node_name: str, *, ready: bool) -> JSONObject:
        p = pod(name, node_name, ready=ready, reason="" if ready else "ContainerCreating")
        p["metadata"]["labels"]["pod-template-hash"] = hash_
        return p

    replicasets = [rs("7b8f", 1, "example/web:1", 1, 1), rs("5d9c", 2, "example/web:2", 2, 1)]
    pods = [
        web_pod("web-7b8f-aaaaa", "7b8f", "edge-a", ready=True),
        web_pod("web-5d9c-bbbbb", "5d9c", "edge-b", ready=True),
        web_pod("web-5d9c-ccccc", "5d9c", "edge-c", ready=False),
    ]
    return dep, replicasets, pods


def test_rollout(snap_compare: Any) -> None:
    client = nowhere()
    screen = RolloutScreen(client, "default", "web", readonly=False)

    async def run_before(pilot: Any) -> None:
        screen.show(*rollout_objects())
        await pilot.pause()

    assert snap_compare(Host(screen, client), terminal_size=(120, 34), run_before=run_before)

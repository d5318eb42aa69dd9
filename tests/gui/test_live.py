"""The GUI against a real cloud and edge (``fleetops cloud`` / ``fleetops edge`` processes on loopback):
live tables and the detail pane's logs, deploy with node targeting and the API's field errors, rollout and
rollback, the connection lost and recovered, an edge's link lost and restored on the overview, a device
twin edited end to end through a simulated pump, and the camera wall showing a camera workload's frames.
"""

from __future__ import annotations

import json
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from app.launcher import FLEETOPS, LocalCluster, Proc
from app.manifest import STARTER_MANIFEST
from app.resources import JSONObject
from gui.bridge import AsyncBridge
from gui.settings import Settings
from gui.target import Target
from gui.twin import DESIRED_COLUMN
from gui.views.cameras import CameraPage
from gui.views.deploy import DeployPage
from gui.views.overview import OverviewPage
from gui.views.resources import ResourcePage
from gui.window import MainWindow
from tests.cluster import deployment_manifest
from tests.services import require_mosquitto

from .conftest import screenshot, wait_until

pytestmark = pytest.mark.slow

DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
DEVICES = "/apis/devices.kubeedge.io/v1beta1/namespaces/default"
MQTT = ("127.0.0.1", 1883)


@pytest.fixture
def window(live: LocalCluster, qtbot: Any, bridge: AsyncBridge, settings: Settings) -> Iterator[MainWindow]:
    w = MainWindow(bridge, settings, target=Target(kubeconfig=str(live.kubeconfig)))
    qtbot.addWidget(w)
    w.resize(1400, 860)
    w.show()
    wait_until(qtbot, lambda: w.connection_status().startswith("Connected"), "the window to connect")
    yield w
    w.close()


def page_of(window: MainWindow, kind: str) -> ResourcePage:
    page = window.page(kind)
    assert isinstance(page, ResourcePage)
    return page


def shown(page: ResourcePage) -> list[str]:
    return [page.model.table.at(i).name for i in range(page.model.rowCount())]


def pod_named(page: ResourcePage, prefix: str) -> Any:
    return next((r for r in page.model.all_rows() if r.name.startswith(prefix)), None)


async def test_live_tables_logs_and_overview(live: LocalCluster, window: MainWindow, qtbot: Any) -> None:
    pods = page_of(window, "pods")
    window.show_page("pods")
    wait_until(qtbot, lambda: pod_named(pods, "printer-") is not None, "the printer pod")
    # A new object reaches the table through the watch.
    await live.request("POST", DEPLOYMENTS, deployment_manifest("sleeper", ["sleep", "3600"]))
    wait_until(
        qtbot, lambda: pod_named(pods, "sleeper-") is not None, "the sleeper pod after its watch event"
    )
    wait_until(qtbot, lambda: pod_named(pods, "sleeper-").cells[3] == "Running", "the sleeper running", 30)
    pods.set_filter_text("printer")
    assert len(shown(pods)) == 1 and shown(pods)[0].startswith("printer-")
    pods.set_filter_text("-l app=sleeper")
    assert len(shown(pods)) == 1 and shown(pods)[0].startswith("sleeper-")
    pods.set_filter_text("")

    printer = pod_named(pods, "printer-")
    assert pods.select_key(printer.key)
    logs = pods.detail.logs
    assert logs is not None
    pods.detail.setCurrentWidget(logs)
    wait_until(qtbot, lambda: "tick" in logs.text.toPlainText(), "the printer's log")
    lines = logs.text.blockCount()
    wait_until(qtbot, lambda: logs.text.blockCount() > lines + 3, "the log to follow")
    assert logs.state.text().startswith("following")
    screenshot(window, "live-pods-logs")

    nodes = page_of(window, "nodes")
    window.show_page("nodes")
    wait_until(qtbot, lambda: nodes.model.get(("", "edge-1")) is not None, "edge-1")
    wait_until(qtbot, lambda: nodes.model.get(("", "edge-1")).cells[3] == "2", "edge-1's pod count")
    window.show_page("overview")
    overview = window.page("overview")
    assert isinstance(overview, OverviewPage)
    wait_until(
        qtbot, lambda: overview.summary is not None and overview.summary.pods["Running"] == 2, "counts"
    )
    assert overview.summary is not None and overview.summary.nodes["Ready"] == 1
    screenshot(window, "live-overview")


BAD = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: Web_App
spec:
  replicas: -1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: example/web:1, command: [sleep, "3600"]}]
"""


def web(image: str) -> str:
    return (
        STARTER_MANIFEST.replace("my-app", "web")
        .replace("example/web:1", image)
        .replace('command: ["sleep", "infinity"]', 'command: ["sleep", "3600"]')
        + "      terminationGracePeriodSeconds: 1\n"
    )


def rolled_out(page: DeployPage, revision: int) -> bool:
    view = page.rollout_controller.view
    return (
        view.status is not None
        and view.status.done
        and view.current == revision
        and len(view.pods) == 1
        and all(p.status == "Running" for p in view.pods)
    )


async def test_live_deploy_rollout_and_rollback(live: LocalCluster, window: MainWindow, qtbot: Any) -> None:
    window.show_page("apply")
    page = window.page("apply")
    assert isinstance(page, DeployPage)

    # Valid YAML the API refuses: its reason and every field cause are shown, the text is kept.
    page.editor.setPlainText(BAD)
    assert page.validate().ok
    page.run(apply=True)
    wait_until(qtbot, lambda: page.results, "the refusal")
    refused = page.results[0]
    assert not refused.ok and refused.reason == "Invalid" and "Web_App" in refused.message
    assert any(c.startswith("metadata.name") for c in refused.causes)
    assert any(c.startswith("spec.replicas") for c in refused.causes)
    assert "metadata.name" in page.outcome.item(0).text() and page.message.severity == "error"
    assert page.editor.toPlainText() == BAD
    screenshot(window, "live-deploy-refused")

    # Targeted at site=a (edge-1's label): created, scheduled there, rolled out.
    page.editor.setPlainText(web("example/web:1"))
    page.selector.setText("site=a")
    assert page.matches.text().startswith("1 node(s) match: edge-1")
    page.run(apply=True)
    wait_until(qtbot, lambda: page.results and page.results[0].ok, "the apply")
    assert str(page.results[0]) == "deployment.apps/web created"
    live_obj = await live.request("GET", f"{DEPLOYMENTS}/web")
    assert live_obj["spec"]["template"]["spec"]["nodeSelector"] == {"site": "a"}
    wait_until(qtbot, lambda: rolled_out(page, 1), "revision 1 rolled out", 40)
    assert page.rollout_controller.view.pods[0].node == "edge-1"

    # The diff of a changed image shows exactly that line; the apply rolls revision 2 out.
    page.editor.setPlainText(web("example/web:2"))
    page.run(apply=False)
    wait_until(qtbot, lambda: "example/web:2" in page.diff_view.toPlainText(), "the diff")
    diff = page.diff_view.toPlainText()
    assert "-        image: example/web:1" in diff and "+        image: example/web:2" in diff
    screenshot(window, "live-deploy-diff")
    page.run(apply=True)
    wait_until(
        qtbot, lambda: page.results and str(page.results[0]).endswith("configured"), "the second apply"
    )
    wait_until(qtbot, lambda: rolled_out(page, 2), "revision 2 rolled out", 40)
    assert [r.number for r in page.rollout_controller.view.history] == [2, 1]
    screenshot(window, "live-rollout")

    # Roll back: asked inline first, then revision 1's template comes back as revision 3.
    page.rollout.rollback_button.click()
    assert page.rollout.confirm.isVisible() and "revision 1" in page.rollout.confirm_text.text()
    page.rollout.confirm_yes.click()
    wait_until(qtbot, lambda: rolled_out(page, 3), "the rollback rolled out", 40)
    assert page.rollout_controller.view.images == ("example/web:1",)
    assert "rolled back to revision 1" in page.rollout.message.text()
    after = await live.request("GET", f"{DEPLOYMENTS}/web")
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "example/web:1"
    screenshot(window, "live-rollback")


async def test_live_connection_lost_and_recovered(live: LocalCluster, window: MainWindow, qtbot: Any) -> None:
    pods = page_of(window, "pods")
    window.show_page("pods")
    wait_until(qtbot, lambda: pod_named(pods, "printer-") is not None, "the printer pod")
    assert live.cloud is not None
    await live.cloud.stop()
    wait_until(qtbot, lambda: window.connection_status().startswith("Reconnecting"), "the lost link in view")
    assert window.banner.isVisible() and "last state seen" in window.banner.text()
    assert pod_named(pods, "printer-") is not None  # the last known rows stay
    screenshot(window, "live-connection-lost")
    await live.start_cloud()
    wait_until(qtbot, lambda: window.connection_status().startswith("Connected"), "the link back", 40)
    assert not window.banner.isVisible()
    # The watches resumed: a change made after the restart shows up.
    await live.request("POST", DEPLOYMENTS, deployment_manifest("after", ["sleep", "3600"]))
    wait_until(qtbot, lambda: pod_named(pods, "after-") is not None, "a pod created after the restart", 30)


async def test_live_link_lost_and_restored(live: LocalCluster, window: MainWindow, qtbot: Any) -> None:
    """edge-1 stops: once the cloud's grace period (3 s here) passes without a status, the overview lists
    it under "Link lost" and the change under "Link changes seen"; it starts again and the link is
    restored, the newest change first."""
    window.show_page("overview")
    overview = window.page("overview")
    assert isinstance(overview, OverviewPage)
    wait_until(
        qtbot, lambda: overview.summary is not None and overview.summary.nodes["Ready"] == 1, "edge-1 Ready"
    )
    assert overview.lost.rowCount() == 0 and overview.changes.rowCount() == 0

    def rows(table: Any, columns: tuple[int, ...]) -> list[list[str]]:
        return [[table.item(i, c).text() for c in columns] for i in range(table.rowCount())]

    await live.edges["edge-1"].stop()
    wait_until(qtbot, lambda: overview.lost.rowCount() == 1, "edge-1 under Link lost", 30)
    assert rows(overview.lost, (0, 1)) == [["edge-1", "Unknown"]]
    assert "Kubelet stopped posting node status" in overview.lost.item(0, 4).text()
    assert overview.lost_title.text() == "Link lost  ·  1"
    assert overview.nodes.counts["Unknown"].text().startswith("1")
    wait_until(qtbot, lambda: overview.changes.rowCount() == 1, "the link change listed")
    assert rows(overview.changes, (1, 2)) == [["edge-1", "link lost (Unknown)"]]
    screenshot(window, "live-link-lost")

    await live.start_edge("edge-1", {"site": "a"})
    wait_until(qtbot, lambda: overview.lost.rowCount() == 0, "edge-1's link restored", 40)
    wait_until(qtbot, lambda: overview.changes.rowCount() == 2, "the restore listed")
    assert rows(overview.changes, (1, 2)) == [["edge-1", "link restored"], ["edge-1", "link lost (Unknown)"]]
    assert overview.lost_title.text() == "Link lost  ·  none"
    assert overview.nodes.counts["Ready"].text().startswith("1")


# -- device twin, end to end ------------------------------------------------------------------------------


def pump_model() -> JSONObject:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": "pump", "namespace": "default"},
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
                {"name": "speed", "type": "INT", "accessMode": "ReadOnly", "unit": "rpm"},
            ],
        },
    }


def pump_device(name: str, port: int, setpoint_register: int) -> JSONObject:
    def prop(pname: str, register: str, offset: int) -> JSONObject:
        return {
            "name": pname,
            "collectCycle": 200,
            "reportCycle": 500,
            "visitors": {
                "protocolName": "modbus",
                "configData": {"register": register, "offset": offset, "dataType": "uint16"},
            },
        }

    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "deviceModelRef": {"name": "pump"},
            "nodeName": "edge-1",
            "protocol": {
                "protocolName": "modbus",
                "configData": {"ip": "127.0.0.1", "port": port, "slaveID": 1, "timeout": 500},
            },
            "properties": [
                prop("setpoint", "HoldingRegister", setpoint_register),
                prop("speed", "InputRegister", 4),
            ],
        },
    }


def workload(app: str, module: str, config: Path) -> JSONObject:
    container = {
        "name": app,
        "image": f"fleetops/{app}:dev",
        "command": [sys.executable, "-m", module, "--config", str(config)],
        "workingDir": str(Path(__file__).resolve().parents[2]),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"terminationGracePeriodSeconds": 5, "containers": [container]},
            },
        },
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def pump_cluster(tmp_path: Path) -> Any:
    """A cloud, edge-1 on the shared Mosquitto, a simulated Modbus pump (its own process: the test's
    event loop does not run while Qt waits), its Device, its adapter pod and an aggregator pod (the
    history's source)."""
    require_mosquitto()
    from edgeservice.sim.modbus import HR_SPEED_SETPOINT

    port = free_port()
    sim = Proc("pump-sim", [*FLEETOPS, "sim", "modbus", "--port", str(port)], tmp_path / "logs" / "sim.log")
    await sim.start()
    c = LocalCluster(tmp_path, status_interval=0.5, ping_interval=1.0, restart_backoff=0.2)
    try:
        await c.start_cloud()
        await c.start_edge("edge-1", {"site": "a"}, "--mqtt", f"tcp://{MQTT[0]}:{MQTT[1]}")
        await c.wait_ready_nodes(["edge-1"])
        name = f"pump-{uuid.uuid4().hex[:8]}"  # Mosquitto is shared: topics of our own
        dev = pump_device(name, port, HR_SPEED_SETPOINT)
        await c.request("POST", f"{DEVICES}/devicemodels", pump_model())
        await c.request("POST", f"{DEVICES}/devices", dev)
        broker = f"mqtt://{MQTT[0]}:{MQTT[1]}"
        adapter = tmp_path / "adapter.json"
        adapter.write_text(json.dumps({"broker": broker, "devices": [dev], "deviceModels": [pump_model()]}))
        await c.request(
            "POST", DEPLOYMENTS, workload("modbus-adapter", "edgeservice.workloads.modbus", adapter)
        )
        aggregator = tmp_path / "aggregator.json"
        aggregator.write_text(json.dumps({"broker": broker, "window": 0.5, "devices": [name]}))
        await c.request(
            "POST", DEPLOYMENTS, workload("aggregator", "edgeservice.workloads.aggregator", aggregator)
        )
        yield c, name
    finally:
        await c.stop()
        await sim.stop()


async def test_live_device_twin_edit_and_history(
    pump_cluster: Any, qtbot: Any, bridge: AsyncBridge, settings: Settings
) -> None:
    cluster, name = pump_cluster
    window = MainWindow(bridge, settings, target=Target(kubeconfig=str(cluster.kubeconfig)))
    qtbot.addWidget(window)
    window.resize(1400, 860)
    window.show()
    try:
        devices = page_of(window, "devices")
        window.show_page("devices")
        wait_until(qtbot, lambda: devices.select_key(("default", name)), "the pump in the devices table", 30)
        twin = devices.detail.twin
        assert twin is not None
        devices.detail.setCurrentWidget(twin)
        controller = twin.controller

        def reported(prop: str) -> str:
            row = controller.row(prop)
            return row.reported if row is not None else ""

        # The simulated pump starts at 1500 rpm.
        wait_until(qtbot, lambda: reported("setpoint") == "1500", "the pump's setpoint reported", 60)
        setpoint = next(i for i in range(twin.model.rowCount()) if twin.model.row(i).name == "setpoint")  # type: ignore[union-attr]
        speed = next(i for i in range(twin.model.rowCount()) if twin.model.row(i).name == "speed")  # type: ignore[union-attr]
        cell = twin.model.index(setpoint, DESIRED_COLUMN)

        # Refused before anything is sent, with the model's reason inline.
        assert not twin.model.setData(cell, "5000")
        assert twin.message.isVisible() and "5000 is above the maximum 3000" in twin.message.text()
        assert not twin.model.setData(cell, "fast") and "not a valid INT" in twin.message.text()
        editable = Qt.ItemFlag.ItemIsEditable
        assert twin.model.flags(cell) & editable
        assert not twin.model.flags(twin.model.index(speed, DESIRED_COLUMN)) & editable  # ReadOnly
        screenshot(window, "live-twin-refused")

        # A valid value reaches the pump through the edge and comes back reported (read from the pump).
        assert twin.model.setData(cell, "2200")
        wait_until(qtbot, lambda: controller.row("setpoint").desired == "2200", "desired 2200")  # type: ignore[union-attr]
        wait_until(qtbot, lambda: reported("setpoint") == "2200", "reported 2200", 60)
        assert controller.row("setpoint").synced  # type: ignore[union-attr]

        def table_twin() -> str:
            row = devices.model.get(("default", name))
            return row.cells[6] if row is not None else ""

        wait_until(qtbot, lambda: table_twin() == "1/1 synced", "the devices table's twin summary")
        # Charts of the numeric properties fill from the cloud's history.
        controller.history_interval = 0.3
        wait_until(qtbot, lambda: twin.charts["setpoint"].points >= 2, "history points in the chart", 60)
        assert "last" in twin.charts["setpoint"].title.text()
        screenshot(window, "live-twin")
    finally:
        window.close()


# -- camera wall, end to end ------------------------------------------------------------------------------


@pytest.fixture
async def camera_cluster(tmp_path: Path) -> Any:
    """A cloud, edge-1 on the shared Mosquitto, and a synthetic conveyor camera Device served by the
    camera workload as a pod."""
    require_mosquitto()
    c = LocalCluster(tmp_path, status_interval=0.5, ping_interval=1.0, restart_backoff=0.2)
    try:
        await c.start_cloud()
        await c.start_edge("edge-1", {"site": "a"}, "--mqtt", f"tcp://{MQTT[0]}:{MQTT[1]}")
        await c.wait_ready_nodes(["edge-1"])
        model = {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "DeviceModel",
            "metadata": {"name": "camera", "namespace": "default"},
            "spec": {"protocol": "camera", "properties": []},
        }
        await c.request("POST", f"{DEVICES}/devicemodels", model)
        name = f"cam-{uuid.uuid4().hex[:6]}"  # Mosquitto is shared: topics of our own
        dev = {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "deviceModelRef": {"name": "camera"},
                "nodeName": "edge-1",
                "protocol": {
                    "protocolName": "camera",
                    "configData": {"url": "synthetic://conveyor", "fps": 15, "width": 320, "height": 240},
                },
            },
        }
        await c.request("POST", f"{DEVICES}/devices", dev)
        config = tmp_path / "camera.json"
        config.write_text(json.dumps({"broker": f"mqtt://{MQTT[0]}:{MQTT[1]}", "devices": [dev]}))
        await c.request("POST", DEPLOYMENTS, workload("camera", "edgeservice.workloads.camera", config))
        yield c, name
    finally:
        await c.stop()


async def test_live_camera_wall(
    camera_cluster: Any, qtbot: Any, bridge: AsyncBridge, settings: Settings
) -> None:
    cluster, name = camera_cluster
    window = MainWindow(bridge, settings, target=Target(kubeconfig=str(cluster.kubeconfig)))
    qtbot.addWidget(window)
    window.resize(1400, 860)
    window.show()
    try:
        window.show_page("cameras")
        page = window.page("cameras")
        assert isinstance(page, CameraPage)
        tile_id = f"default/{name}"
        wait_until(qtbot, lambda: tile_id in page.tiles, "the camera Device on the wall", 30)
        tile = page.tiles[tile_id]
        # Frames from the camera workload, through the edge, the tunnel and the cloud's WebSocket.
        wait_until(qtbot, lambda: tile.stats.frames >= 10, "frames from the camera workload", 60)
        assert tile.status == "live" and tile.picture is not None
        assert tile.picture.frame_size == (320, 240)
        assert tile.stats.latency_ms is not None and tile.stats.latency_ms < 5000
        wait_until(qtbot, lambda: tile.stats.fps(tile.stats.shown[-1]) > 3, "a frame rate")
        screenshot(window, "live-camera-wall")
        # Nothing flows without a viewer: leaving the page closes the stream.
        window.show_page("overview")
        frames = tile.stats.frames
        qtbot.wait(500)  # frames not arriving is what is checked: there is no signal for it
        assert page.wall.tile_status(tile_id) == "paused" and tile.stats.frames == frames
    finally:
        window.close()

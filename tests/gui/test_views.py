"""The window on fixed data (no server): every page shows what the data says and is screenshotted; watch
events add rows, the filter narrows, selections survive relists, settings persist, a server that cannot
be reached (refused, or accepting and never answering) is said so inline without anything hanging, and
switching away from a server that hangs does not stall the window."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from PySide6.QtCore import QSettings, Qt, QTimer

from app.client import WatchEvent
from app.devices import parse_device_model
from app.twinview import twin_rows
from gui.bridge import AsyncBridge
from gui.camera import SyntheticFeed
from gui.fleet import StaticSource
from gui.rollout import RolloutController, RolloutData, rollout_view
from gui.rows import KINDS
from gui.session import Session
from gui.settings import Settings
from gui.target import Target
from gui.twin import DESIRED_COLUMN, Series, TwinController, TwinTableModel
from gui.views.deploy import DeployPage
from gui.views.overview import OverviewPage
from gui.views.resources import ResourcePage
from gui.views.rollout import RolloutPanel
from gui.views.twin import TwinPanel
from gui.window import MainWindow

from .conftest import NOW, deployment, fixed_objects, node, pod, screenshot, wait_until
from .test_rows import MODEL, _pump


def open_window(
    qtbot: Any, bridge: AsyncBridge, settings: Settings, source: StaticSource, *, resize: bool = True
) -> MainWindow:
    session = Session(bridge, source, camera_feed=SyntheticFeed(fps=10, width=320, height=240))
    w = MainWindow(bridge, settings, session=session)
    qtbot.addWidget(w)
    if resize:
        w.resize(1400, 860)
    w.show()
    wait_until(qtbot, lambda: all(session.fleet.loaded(k) for k in KINDS), "the tables to load")
    return w


@pytest.fixture
def source() -> StaticSource:
    return StaticSource(fixed_objects(), description="https://cloud.example:6443")


@pytest.fixture
def window(qtbot: Any, bridge: AsyncBridge, settings: Settings, source: StaticSource) -> Iterator[MainWindow]:
    w = open_window(qtbot, bridge, settings, source)
    yield w
    w.close()


def resources(window: MainWindow, kind: str) -> ResourcePage:
    page = window.page(kind)
    assert isinstance(page, ResourcePage)
    return page


def names(page: ResourcePage) -> list[str]:
    return [page.model.table.at(i).name for i in range(page.model.rowCount())]


def cells(table: Any, columns: tuple[int, ...]) -> list[list[str]]:
    return [[table.item(i, c).text() for c in columns] for i in range(table.rowCount())]


def test_overview_counts_what_changed_and_links_to_the_tables(
    window: MainWindow, source: StaticSource, qtbot: Any
) -> None:
    window.show_page("overview")
    page = window.page("overview")
    assert isinstance(page, OverviewPage)
    wait_until(qtbot, lambda: page.summary is not None and page.summary.node_total == 4, "the summary")
    assert page.nodes.counts["Ready"].text().startswith("2") and page.nodes.counts[
        "Unknown"
    ].text().startswith("1")
    assert page.pods.counts["Pending"].text().startswith("1")
    assert page.devices.counts["online"].text() == "3  online"  # pump-1 and both cameras
    assert page.devices.counts["offline"].text() == "1  offline"  # pump-2
    assert not page.devices.counts["unknown"].isEnabled()
    assert "2 camera(s)" in page.devices.title.text()
    lost = [page.lost.item(i, 0).text() for i in range(page.lost.rowCount())]
    assert lost == ["edge-d", "edge-c"]
    assert "NodeStatusUnknown" in page.lost.item(1, 4).text()
    reasons = [page.events.item(i, 2).text() for i in range(page.events.rowCount())]
    assert reasons[0] == "BackOff" and "NodeNotReady" in reasons
    # Nothing has changed since the window connected; then edge-a's link goes and comes back.
    assert page.changes.rowCount() == 0
    site_a = {"site": "a"}
    source.push(
        "nodes",
        WatchEvent(
            "MODIFIED", node("edge-a", ready="Unknown", labels=site_a, since=60, reason="NodeStatusUnknown")
        ),
    )
    wait_until(qtbot, lambda: page.changes.rowCount() == 1, "edge-a's link change on the overview")
    assert cells(page.changes, (1, 2)) == [["edge-a", "link lost (Unknown)"]]
    # When: the Ready condition's transition time, on the local clock.
    lost_at = dt.datetime.fromtimestamp(NOW.timestamp() - 60).strftime("%Y-%m-%d %H:%M:%S")
    assert page.changes.item(0, 0).text() == lost_at
    assert [page.lost.item(i, 0).text() for i in range(page.lost.rowCount())] == [
        "edge-a",
        "edge-d",
        "edge-c",
    ]
    assert page.lost_title.text() == "Link lost  ·  3"
    source.push("nodes", WatchEvent("MODIFIED", node("edge-a", labels=site_a, since=5)))
    wait_until(qtbot, lambda: page.changes.rowCount() == 2, "edge-a's link restored on the overview")
    assert cells(page.changes, (1, 2)) == [["edge-a", "link restored"], ["edge-a", "link lost (Unknown)"]]
    assert page.nodes.counts["Ready"].text().startswith("2")
    screenshot(window, "overview")
    page.nodes.counts["NotReady"].click()
    assert window.current_page() == "nodes"
    assert names(resources(window, "nodes")) == ["edge-c", "edge-d"]


def test_every_table_and_its_detail_pane(window: MainWindow, qtbot: Any) -> None:
    pods = resources(window, "pods")
    window.show_page("pods")
    assert pods.select_key(("default", "crash-1"))
    wait_until(qtbot, lambda: "CrashLoopBackOff" in pods.detail.describe.toPlainText(), "the describe text")
    assert "BackOff" in pods.detail.describe.toPlainText()  # the pod's events
    screenshot(window, "pods-describe")
    pods.detail.setCurrentWidget(pods.detail.yaml)
    wait_until(qtbot, lambda: "name: crash-1" in pods.detail.yaml.toPlainText(), "the YAML")
    assert pods.detail.logs is not None
    pods.detail.setCurrentWidget(pods.detail.logs)
    assert "no log" in pods.detail.logs.state.text()  # a static source has no cloud to stream from
    assert "connection to the cloud" in pods.detail.logs.message.text()
    for kind in ("nodes", "deploy", "events"):
        window.show_page(kind)
        page = resources(window, kind)
        wait_until(qtbot, lambda p=page: p.detail.key is not None, f"a {kind} row selected")  # type: ignore[misc]
        screenshot(window, f"table-{kind}")
    window.show_page("nodes")
    nodes = resources(window, "nodes")
    nodes.select_key(("", "edge-c"))
    nodes.detail.setCurrentWidget(nodes.detail.describe)
    wait_until(qtbot, lambda: "NodeStatusUnknown" in nodes.detail.describe.toPlainText(), "the node describe")


def test_a_watch_event_adds_a_row_and_the_filter_narrows(
    window: MainWindow, source: StaticSource, qtbot: Any
) -> None:
    page = resources(window, "pods")
    window.show_page("pods")
    with qtbot.waitSignal(page.model.rowsInserted, timeout=5000):
        source.push("pods", WatchEvent("ADDED", pod("web-7d4f-zzzzz", "edge-b", phase="Pending")))
    assert "web-7d4f-zzzzz" in names(page)
    page.set_filter_text("web")
    assert names(page) == ["web-7d4f-abcde", "web-7d4f-fghij", "web-7d4f-zzzzz"]
    assert page.count.text() == "3 of 6 pods"
    page.set_filter_text("web -l app=db")
    assert names(page) == []
    page.set_filter_text("^factory|crash")
    assert names(page) == ["crash-1", "sensor-reader"]
    page.set_filter_text("web(")
    assert page.filter_error.isVisible() and "invalid regex" in page.filter_error.text()
    assert names(page) == ["crash-1", "sensor-reader"]  # the last good filter stays
    with qtbot.waitSignal(page.model.rowsRemoved, timeout=5000):
        source.push("pods", WatchEvent("DELETED", pod("crash-1", "edge-b")))
    page.set_filter_text("")
    assert "crash-1" not in names(page) and len(names(page)) == 5
    screenshot(window, "pods-filtered")


def test_selection_follows_its_object_through_sorting_and_relists(
    window: MainWindow, source: StaticSource, qtbot: Any
) -> None:
    page = resources(window, "pods")
    window.show_page("pods")
    page.select_key(("default", "web-7d4f-fghij"))
    page.table.sortByColumn(3, Qt.SortOrder.DescendingOrder)  # STATUS
    assert page.selected_row() is not None and page.selected_row().name == "web-7d4f-fghij"  # type: ignore[union-attr]
    current = page.table.currentIndex().row()
    assert page.model.key_at(current) == ("default", "web-7d4f-fghij")
    objects = [*fixed_objects()["pods"][::-1], pod("aaa-first", "edge-a")]
    with qtbot.waitSignal(page.model.modelReset, timeout=5000):
        source.push("pods", WatchEvent("RESYNC", {}, tuple(objects)))
    assert page.model.key_at(page.table.currentIndex().row()) == ("default", "web-7d4f-fghij")


def test_device_twin_refuses_an_invalid_value_with_the_reason(qtbot: Any, bridge: AsyncBridge) -> None:
    controller = TwinController(bridge, None)
    messages: list[tuple[str, str]] = []
    controller.message.connect(lambda severity, text: messages.append((severity, text)))
    model = TwinTableModel(controller)
    controller.device, controller.model = _pump(), parse_device_model(MODEL)
    controller.rows = twin_rows(controller.device, controller.model)
    controller.changed.emit()
    setpoint = next(i for i in range(model.rowCount()) if model.row(i).name == "setpoint")  # type: ignore[union-attr]
    pressure = next(i for i in range(model.rowCount()) if model.row(i).name == "pressure")  # type: ignore[union-attr]
    assert model.flags(model.index(setpoint, DESIRED_COLUMN)) & Qt.ItemFlag.ItemIsEditable
    assert not model.flags(model.index(pressure, DESIRED_COLUMN)) & Qt.ItemFlag.ItemIsEditable
    assert not model.setData(model.index(setpoint, DESIRED_COLUMN), "500")
    assert messages[-1] == ("error", "setpoint: 500 is above the maximum 100")
    assert not model.setData(model.index(setpoint, DESIRED_COLUMN), "fast")
    assert "not a valid INT" in messages[-1][1]
    assert not controller.set_desired("pressure", "1")
    assert "ReadOnly" in messages[-1][1]


def test_deploy_page_marks_bad_lines_and_targets_nodes(window: MainWindow, qtbot: Any) -> None:
    window.show_page("apply")
    page = window.page("apply")
    assert isinstance(page, DeployPage)
    page.editor.setPlainText("apiVersion: apps/v1\nkind: Deployment\nmetadata: {}\n---\nkind: [\n")
    result = page.validate()
    assert not result.ok and page.problems.count() == 2
    assert set(page.editor.marked_lines()) == {1, 5}  # each document's first line, and the bad one
    assert not page.apply_button.isEnabled()
    screenshot(window, "deploy-problems")
    page.editor.setPlainText(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"
        "spec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n"
        "    spec:\n      containers: [{name: web, image: x}]\n"
    )
    assert page.validate().ok and not page.editor.marked_lines()
    page.selector.setText("site=a")
    assert page.matches.text().startswith("2 node(s) match: edge-a, edge-c")
    page.selector.setText("site=nowhere")
    assert "No node matches" in page.matches.text()
    page.selector.setText("site!=a")
    assert "key=value" in page.matches.text()
    page.selector.setText("")
    page.run(apply=True)
    assert "connection to the cloud" in page.message.text()


def test_layout_filters_and_last_page_persist(qtbot: Any, bridge: AsyncBridge, settings: Settings) -> None:
    first = open_window(qtbot, bridge, settings, StaticSource(fixed_objects()))
    first.resize(1234, 777)
    first.show_page("events")
    resources(first, "pods").set_filter_text("web")
    resources(first, "pods").table.setColumnWidth(1, 333)
    first.close()
    settings.remember(Target(kubeconfig="/etc/fleet/admin.kubeconfig", context="prod"))
    again = Settings(QSettings(settings.path, QSettings.Format.IniFormat))
    assert again.page("overview") == "events" and again.text("filters/pods") == "web"
    second = open_window(qtbot, bridge, again, StaticSource(fixed_objects()), resize=False)
    try:
        assert second.current_page() == "events"
        # Restored from the saved geometry (the offscreen screen may clamp it, so not to the pixel).
        assert again.blob("window/geometry") is not None and second.width() != 1360
        pods = resources(second, "pods")
        assert pods.filter.text() == "web" and pods.table.columnWidth(1) == 333
        assert names(pods) == ["web-7d4f-abcde", "web-7d4f-fghij"]
        assert again.last_server() == Target(kubeconfig="/etc/fleet/admin.kubeconfig", context="prod")
    finally:
        second.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_server_is_said_inline_and_nothing_hangs(
    qtbot: Any, bridge: AsyncBridge, settings: Settings
) -> None:
    url = f"https://127.0.0.1:{closed_port()}"
    window = MainWindow(bridge, settings, target=Target(server=url, token="t"))
    qtbot.addWidget(window)
    window.resize(1300, 800)
    window.show()
    try:
        wait_until(qtbot, lambda: window.connection_status().startswith("Cannot reach"), "the status bar")
        assert url in window.connection_status() and "Connect call failed" in window.connection_status()
        assert window.banner.isVisible() and "Retrying by itself" in window.banner.text()
        window.show_page("pods")
        assert resources(window, "pods").count.text() == "loading..."
        deploy = window.page("apply")
        assert isinstance(deploy, DeployPage)
        window.show_page("apply")
        deploy.run(apply=False)
        wait_until(qtbot, lambda: deploy.message.severity == "error", "the diff to fail")
        assert f"cannot read what runs at {url}" in deploy.message.text()
        assert "Connect call failed" in deploy.message.text() and deploy.diff_button.isEnabled()
        screenshot(window, "unreachable")
        window.connect_to(Target(kubeconfig="/no/such/kubeconfig"))
        assert (
            window.connection_status().startswith("Not connected")
            and "/no/such/kubeconfig" in window.banner.text()
        )
    finally:
        window.close()


def test_the_command_opens_the_window_and_returns_when_it_closes(qapp: Any) -> None:
    """``fleetops gui --server URL --token T --page pods``, against a server that is not there: the window
    opens on the pods page and says why; closing it returns 0 and stops the I/O thread."""
    import argparse

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from gui.cli import GuiCommand

    parser = argparse.ArgumentParser()
    GuiCommand().add_arguments(parser)
    url = f"https://127.0.0.1:{closed_port()}"
    args = parser.parse_args(["--server", url, "--token", "t", "--page", "pods"])
    seen: dict[str, str] = {}

    def check() -> None:
        for w in QApplication.topLevelWidgets():
            if (
                isinstance(w, MainWindow)
                and w.isVisible()
                and w.connection_status().startswith("Cannot reach")
            ):
                seen.update(page=w.current_page(), status=w.connection_status())
                w.close()
                return
        QTimer.singleShot(50, check)

    QTimer.singleShot(50, check)
    assert GuiCommand().run(args) == 0
    assert seen["page"] == "pods" and url in seen["status"]


# -- a server that hangs -----------------------------------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An ``https://`` URL whose listener accepts TCP connections and never sends a byte (a hung server,
    or a middlebox that swallows the traffic): the TLS handshake waits forever unless timed out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # the listener was shut down: the test is over
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, name="silent-server", daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        listener.close()
        thread.join(5)
        for conn in accepted:
            conn.close()
    assert not thread.is_alive()
    assert accepted, "nothing connected to the silent server: the test did not test it"


def test_a_server_that_accepts_and_never_answers_is_said_inline_and_nothing_hangs(
    qtbot: Any, bridge: AsyncBridge, settings: Settings, silent_server: str
) -> None:
    # The client's default connect timeout is 10 s: with 0.5 s, the reason must show well before that.
    window = MainWindow(bridge, settings, target=Target(server=silent_server, token="t", connect_timeout=0.5))
    qtbot.addWidget(window)
    window.resize(1300, 800)
    window.show()
    try:
        wait_until(qtbot, lambda: window.connection_status().startswith("Cannot reach"), "the status bar", 8)
        status = window.connection_status()
        assert silent_server in status and status.endswith("timed out"), status
        assert window.banner.isVisible() and "Retrying by itself" in window.banner.text()
        deploy = window.page("apply")
        assert isinstance(deploy, DeployPage)
        window.show_page("apply")
        deploy.run(apply=False)
        wait_until(qtbot, lambda: deploy.message.severity == "error", "the diff to fail", 8)
        assert f"cannot read what runs at {silent_server}" in deploy.message.text()
        assert "timed out" in deploy.message.text() and deploy.diff_button.isEnabled()
        screenshot(window, "unreachable-silent")
    finally:
        window.close()


class HangingSource(StaticSource):
    """Fixed objects from a server that stops answering as it is left: closing the connection hangs
    until :meth:`release` (called from the UI thread)."""

    def __init__(self) -> None:
        super().__init__(fixed_objects(), description="https://hung.example:6443")
        self.closing = threading.Event()
        self.closed = threading.Event()
        self._release: asyncio.Event | None = None
        self._close_loop: asyncio.AbstractEventLoop | None = None

    async def aclose(self) -> None:
        self._release, self._close_loop = asyncio.Event(), asyncio.get_running_loop()
        self.closing.set()
        await self._release.wait()
        self.closed.set()

    def release(self) -> None:
        assert self._close_loop is not None and self._release is not None
        self._close_loop.call_soon_threadsafe(self._release.set)


def test_switching_server_does_not_wait_for_the_old_one_to_close(
    qtbot: Any, bridge: AsyncBridge, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The old server hangs until the UI thread has turned its event loop a few times after the switch.
    A switch that waited for the old session (as it once did, up to 5 s) could therefore only give up on
    it, which logs that closing failed; one that does not wait sees the close finish normally."""
    hung = HangingSource()
    window = open_window(qtbot, bridge, settings, hung)
    old = window.session
    assert old is not None
    beats: list[bool] = []  # per heartbeat: had the old session closed by then?

    def beat() -> None:
        beats.append(hung.closed.is_set())
        if len(beats) == 3:
            hung.release()

    heartbeat = QTimer()
    heartbeat.setInterval(10)
    heartbeat.timeout.connect(beat)
    heartbeat.start()
    try:
        with caplog.at_level(logging.WARNING, logger="gui"):
            fresh = StaticSource(fixed_objects(), description="https://fresh.example:6443")
            window.use_session(Session(bridge, fresh))
            # The switch returned before the first beat: the old session is closing, not closed.
            assert beats == [] and hung.closing.wait(5) and not hung.closed.is_set()
            assert window.session is not None and window.session.description == "https://fresh.example:6443"
            assert window.connection_status() == "Connected to https://fresh.example:6443"
        assert not old.wait_closed(0.01)  # the bounded wait gives up, saying so (the window's close uses it)
        assert "gave up waiting" in caplog.text
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="gui"):
            wait_until(qtbot, hung.closed.is_set, "the old session to close")
            wait_until(qtbot, lambda: resources(window, "pods").model.total() == 5, "the new tables")
        assert beats[:3] == [False, False, False]  # the event loop ran while the old server hung
        assert old.closed and old.wait_closed(0.01)
        assert not [r for r in caplog.records if "failed" in r.getMessage()], caplog.text
    finally:
        heartbeat.stop()
        window.close()


# -- the remaining views on fixed data ---------------------------------------------------------------------


def test_devices_table_twin_panel_and_rollout_panel(
    window: MainWindow, qtbot: Any, bridge: AsyncBridge
) -> None:
    devices = resources(window, "devices")
    window.show_page("devices")
    assert devices.select_key(("default", "pump-2"))
    devices.detail.setCurrentWidget(devices.detail.describe)
    wait_until(qtbot, lambda: "pump-2" in devices.detail.describe.toPlainText(), "the device's describe")
    assert names(devices) == ["belt-cam", "dock-cam", "pump-1", "pump-2"]
    screenshot(window, "table-devices")

    # The twin panel as a device shows it: desired vs reported, a refused edit, the history charts.
    controller = TwinController(bridge, None)
    panel = TwinPanel(controller)
    qtbot.addWidget(panel)
    panel.resize(900, 640)
    controller.namespace, controller.name = "default", "pump-2"
    controller.device, controller.model = _pump(), parse_device_model(MODEL)
    controller.rows = twin_rows(controller.device, controller.model)
    start = NOW.timestamp() * 1000 - 600_000
    controller.history = {"pressure": Series(), "setpoint": Series()}
    controller.history["pressure"].extend(
        [{"end": start + i * 5000, "mean": 2.4 + (i % 7) / 20, "min": 2.3, "max": 2.9} for i in range(120)]
    )
    controller.history["setpoint"].extend(
        [{"end": start + i * 5000, "mean": 38 + min(i, 60) / 4} for i in range(120)]
    )
    controller.changed.emit()
    panel.show()
    assert set(panel.charts) == {"setpoint", "pressure"} and panel.charts["pressure"].points == 120
    assert not panel.model.setData(panel.model.index(0, DESIRED_COLUMN), "500")
    assert panel.message.isVisible() and "above the maximum 100" in panel.message.text()
    screenshot(panel, "twin-panel")

    # The rollout panel of a Deployment half-way from revision 1 to revision 2.
    rollout = RolloutController(bridge, None)
    rpanel = RolloutPanel(rollout)
    qtbot.addWidget(rpanel)
    rpanel.resize(900, 600)
    web = deployment("web", 3, 2, image="example/web:2")
    web["metadata"].update(uid="uid-web", annotations={"deployment.kubernetes.io/revision": "2"})
    web["status"].update(
        updatedReplicas=2,
        conditions=[
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "ok"},
            {
                "type": "Progressing",
                "status": "True",
                "reason": "ReplicaSetUpdated",
                "message": 'ReplicaSet "web-2b" is progressing.',
            },
        ],
    )
    owner = [{"kind": "Deployment", "name": "web", "uid": "uid-web", "controller": True}]

    def replicaset(revision: int, name: str, image: str, replicas: int) -> dict[str, Any]:
        template = {
            "metadata": {"labels": {"app": "web", "pod-template-hash": name[-2:]}},
            "spec": {"containers": [{"name": "main", "image": image}]},
        }
        return {
            "metadata": {
                "name": name,
                "namespace": "default",
                "ownerReferences": owner,
                "annotations": {"deployment.kubernetes.io/revision": str(revision)},
            },
            "spec": {"replicas": replicas, "template": template},
            "status": {"replicas": replicas, "readyReplicas": replicas},
        }

    pods = {}
    for name, node_name, rs in (
        ("web-1a-x", "edge-a", "1a"),
        ("web-2b-y", "edge-b", "2b"),
        ("web-2b-z", "edge-a", "2b"),
    ):
        p = pod(name, node_name)
        p["metadata"]["labels"]["pod-template-hash"] = rs
        pods[name] = p
    rollout.name = rollout.namespace = "default"
    rollout.name = "web"
    rollout.data = RolloutData(
        web,
        {
            "web-1a": replicaset(1, "web-1a", "example/web:1", 1),
            "web-2b": replicaset(2, "web-2b", "example/web:2", 2),
        },
        pods,
        state="watching",
    )
    rollout.view = rollout_view(rollout.data, "web")
    rollout.changed.emit()
    rpanel.show()
    assert [r.number for r in rollout.view.history] == [2, 1]
    assert rpanel.bars["updated"].value() == 2 and rpanel.bars["updated"].maximum() == 3
    rpanel.rollback_button.click()
    assert rpanel.confirm.isVisible() and "revision 1" in rpanel.confirm_text.text()
    screenshot(rpanel, "rollout-panel")

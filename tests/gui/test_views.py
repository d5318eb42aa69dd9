"""The window on fixed data (no server): every page shows what the data says and is screenshotted; watch
events add rows, the filter narrows, selections survive relists, settings persist, and a server that
cannot be reached is said so inline without anything hanging."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from PySide6.QtCore import QSettings, Qt

from app.client import WatchEvent
from app.devices import parse_device, parse_device_model
from app.twinview import twin_rows
from gui.bridge import AsyncBridge
from gui.camera import SyntheticFeed
from gui.fleet import StaticSource
from gui.rows import KINDS
from gui.session import Session
from gui.settings import Settings
from gui.target import Target
from gui.twin import DESIRED_COLUMN, TwinController, TwinTableModel
from gui.views.deploy import DeployPage
from gui.views.overview import OverviewPage
from gui.views.resources import ResourcePage
from gui.window import MainWindow

from .conftest import fixed_objects, pod, screenshot, wait_until
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


def test_overview_counts_what_changed_and_links_to_the_tables(window: MainWindow, qtbot: Any) -> None:
    window.show_page("overview")
    page = window.page("overview")
    assert isinstance(page, OverviewPage)
    wait_until(qtbot, lambda: page.summary is not None and page.summary.node_total == 4, "the summary")
    assert page.nodes.counts["Ready"].text().startswith("2") and page.nodes.counts[
        "Unknown"
    ].text().startswith("1")
    assert page.pods.counts["Pending"].text().startswith("1")
    assert "2 camera(s)" in page.devices.title.text()
    lost = [page.lost.item(i, 0).text() for i in range(page.lost.rowCount())]
    assert lost == ["edge-d", "edge-c"]
    assert "NodeStatusUnknown" in page.lost.item(1, 4).text()
    reasons = [page.events.item(i, 2).text() for i in range(page.events.rowCount())]
    assert reasons[0] == "BackOff" and "NodeNotReady" in reasons
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
    assert parse_device is not None


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

"""The device screen against a real cloud: the twin table, validated edits of desired values, readonly,
and (end to end, with an edge, a simulated Modbus pump and its adapter) a value that comes back reported;
at the edge (``--edge``): the read-only screen on fixed data, and live from the local API with the cloud
stopped."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.app import App
from textual.screen import Screen
from textual.widgets import DataTable, Input, Label, Sparkline

from app.client import AsyncClient
from app.launcher import LocalCluster, tail
from app.resources import DEVICEMODELS, DEVICES, JSONObject
from tests.cluster import edge_url
from tests.services import require_mosquitto
from tui.app import FleetApp
from tui.device import EDGE_NO_HISTORY, DesiredValueScreen, DeviceScreen, series_means
from tui.edge import EdgeSource

from .conftest import closed_port

NS = "default"
MQTT = ("127.0.0.1", 1883)


class Host(App[None]):
    """The smallest app that shows one screen, as the TUI's shell pushes it."""

    def __init__(self, screen: Screen[None]) -> None:
        super().__init__()
        self._first = screen

    def on_mount(self) -> None:
        self.push_screen(self._first)


async def until(pilot: Any, predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Let the app run until ``predicate`` holds (the screen's data arrives over the network: no event of
    the test's own to await)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    c = LocalCluster(tmp_path, status_interval=0.5, ping_interval=1.0, restart_backoff=0.2)
    await c.start_cloud()
    try:
        yield c
    finally:
        await c.stop()
        for proc in [c.cloud, *c.edges.values()]:
            if proc is not None:
                print(f"--- {proc.name} ---\n{tail(proc.log_path, 40)}")


@pytest.fixture
async def client(cluster: LocalCluster) -> AsyncIterator[AsyncClient]:
    async with AsyncClient.from_kubeconfig(cluster.kubeconfig) as c:
        yield c


def model() -> JSONObject:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": "pump", "namespace": NS},
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


def device(
    name: str, port: int, desired: str | None, *, reported: dict[str, str] | None = None
) -> JSONObject:
    def prop(pname: str, register: str, offset: int) -> JSONObject:
        return {
            "name": pname,
            "collectCycle": 200,
            "reportCycle": 1000,
            "visitors": {
                "protocolName": "modbus",
                "configData": {"register": register, "offset": offset, "dataType": "uint16"},
            },
        }

    setpoint = prop("setpoint", "HoldingRegister", 1)
    if desired is not None:
        setpoint["desired"] = {"value": desired}
    obj: JSONObject = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "deviceModelRef": {"name": "pump"},
            "nodeName": "edge-1",
            "protocol": {
                "protocolName": "modbus",
                "configData": {"ip": "127.0.0.1", "port": port, "slaveID": 1, "timeout": 500},
            },
            "properties": [setpoint, prop("speed", "InputRegister", 4)],
        },
    }
    if reported:
        # Devices have no /status subresource (as KubeEdge's CRD): the status a test writes is kept, which
        # stands in for an edge's report where the screen only needs to show one.
        obj["status"] = {
            "state": "online",
            "twins": [
                {"propertyName": k, "reported": {"value": v, "metadata": {"timestamp": "1767355200000"}}}
                for k, v in reported.items()
            ],
        }
    return obj


def table_rows(screen: DeviceScreen) -> dict[str, list[str]]:
    table = screen.query_one("#twins", DataTable)
    return {str(r[0]): [str(c) for c in r] for r in (table.get_row_at(i) for i in range(table.row_count))}


# -- pure -------------------------------------------------------------------------------------------------


def test_history_means_skip_malformed_points() -> None:
    assert series_means([{"mean": 1}, {"mean": 2.5}, {"mean": "x"}, "junk"]) == [1.0, 2.5]


# -- against a real cloud ---------------------------------------------------------------------------------


async def test_twin_table_and_validated_edit(client: AsyncClient) -> None:
    await client.create(DEVICEMODELS, model())
    await client.create(DEVICES, device("pump-a", 5020, "1000", reported={"setpoint": "990", "speed": "985"}))
    screen = DeviceScreen(client, NS, "pump-a", readonly=False)
    app = Host(screen)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: "setpoint" in table_rows(screen), "the twin table")
        rows = table_rows(screen)
        assert rows["setpoint"][:6] == ["setpoint", "1000", "990", "rpm", "INT", "ReadWrite"]
        assert rows["setpoint"][6] == "2026-01-02 12:00:00Z"
        assert rows["speed"][:6] == ["speed", "", "985", "rpm", "INT", "ReadOnly"]
        assert "state online" in str(screen.query_one("#title").render())
        before = await client.get(DEVICES, "pump-a", NS)

        # Out of range: the modal shows why and stays open; nothing reaches the API.
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, DesiredValueScreen), "the edit dialog")
        modal = app.screen
        modal.query_one("#value", Input).value = "5000"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, DesiredValueScreen)
        assert str(modal.query_one("#error", Label).render()) == "5000 is above the maximum 3000"
        after = await client.get(DEVICES, "pump-a", NS)
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

        # A valid value lands at the API, and the watch brings it back into the table.
        modal.query_one("#value", Input).value = "1500"
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is screen, "the dialog to close")
        await until(pilot, lambda: table_rows(screen)["setpoint"][1] == "1500", "the new desired value")
        stored = await client.get(DEVICES, "pump-a", NS)
        setpoint = next(p for p in stored["spec"]["properties"] if p["name"] == "setpoint")
        assert setpoint["desired"]["value"] == "1500"
        assert setpoint["visitors"]["configData"]["register"] == "HoldingRegister"  # the rest kept

        # A ReadOnly property opens no dialog.
        await pilot.press("down", "e")
        await pilot.pause()
        assert front(app) is screen


async def test_readonly_hides_edit(client: AsyncClient) -> None:
    await client.create(DEVICEMODELS, model())
    await client.create(DEVICES, device("pump-b", 5020, "1000"))
    screen = DeviceScreen(client, NS, "pump-b", readonly=True)
    app = Host(screen)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: "setpoint" in table_rows(screen), "the twin table")
        assert not [b for b in screen.active_bindings.values() if b.binding.action == "edit" and b.enabled]
        assert screen.check_action("edit", ()) is False
        await pilot.press("e")
        await pilot.pause()
        assert app.screen is screen


async def test_missing_device_and_model(client: AsyncClient) -> None:
    await client.create(DEVICES, device("pump-c", 5020, None))  # its model does not exist (yet)
    screen = DeviceScreen(client, NS, "pump-c", readonly=False)
    app = Host(screen)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: "setpoint" in table_rows(screen), "the twin table")
        assert table_rows(screen)["setpoint"][4] == "?"
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, DesiredValueScreen), "the edit dialog")
        app.screen.query_one("#value", Input).value = "10"
        await pilot.press("enter")
        await pilot.pause()
        assert "cannot be checked" in str(app.screen.query_one("#error", Label).render())
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, "the dialog to close")

    gone = DeviceScreen(client, NS, "no-such-device", readonly=False)
    app = Host(gone)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: "not found" in str(gone.query_one("#title").render()), "not found")


# -- end to end -------------------------------------------------------------------------------------------


def workload(name: str, module: str, config: Path) -> JSONObject:
    """A one-replica Deployment running ``python -m module --config config`` on the edge."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": name,
                            "image": f"fleetops/{name}:dev",
                            "command": [sys.executable, "-m", module, "--config", str(config)],
                            "workingDir": str(Path(__file__).resolve().parents[2]),
                        }
                    ],
                },
            },
        },
    }


@pytest.mark.slow
async def test_edit_reaches_the_pump_and_comes_back_reported(
    cluster: LocalCluster, client: AsyncClient, tmp_path: Path
) -> None:
    require_mosquitto()
    from edgeservice.sim.modbus import HR_SPEED_SETPOINT, ModbusPumpSimulator

    sim = ModbusPumpSimulator(port=0)
    sim.model.set_speed_setpoint(0)
    await sim.start()
    try:
        await cluster.start_edge("edge-1", None, "--mqtt", f"tcp://{MQTT[0]}:{MQTT[1]}")
        await cluster.wait_ready_nodes(["edge-1"])
        name = f"pump-{uuid.uuid4().hex[:8]}"  # Mosquitto is shared: topics of our own
        dev = device(name, sim.port, None)
        dev["spec"]["properties"][0]["visitors"]["configData"]["offset"] = HR_SPEED_SETPOINT
        await client.create(DEVICEMODELS, model())
        await client.create(DEVICES, dev)
        config = tmp_path / "adapter.json"
        config.write_text(
            json.dumps({"broker": f"mqtt://{MQTT[0]}:{MQTT[1]}", "devices": [dev], "deviceModels": [model()]})
        )
        await client.apply(workload("modbus-adapter", "edgeservice.workloads.modbus", config))
        # The aggregator turns the adapter's readings into window summaries: the cloud's history.
        agg_config = tmp_path / "aggregator.json"
        agg_config.write_text(
            json.dumps({"broker": f"mqtt://{MQTT[0]}:{MQTT[1]}", "window": 0.5, "devices": [name]})
        )
        await client.apply(workload("aggregator", "edgeservice.workloads.aggregator", agg_config))

        screen = DeviceScreen(client, NS, name, readonly=False, history_interval=0.2)
        app = Host(screen)
        async with app.run_test(size=(140, 40)) as pilot:
            await until(
                pilot, lambda: table_rows(screen).get("setpoint", [""] * 3)[2] == "0", "reported 0", 60
            )
            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, DesiredValueScreen), "the edit dialog")
            app.screen.query_one("#value", Input).value = "1500"
            await pilot.press("enter")
            await until(pilot, lambda: table_rows(screen)["setpoint"][2] == "1500", "reported 1500", 60)

            # The sparkline of each numeric property fills from the history API.
            def spark() -> list[float]:
                lines = list(screen.query("#spark-0-line").results(Sparkline))
                return list(lines[0].data or []) if lines else []

            await until(pilot, lambda: 1500.0 in spark(), "the setpoint's sparkline", 30)
            assert str(screen.query_one("#spark-0-last", Label).render()) == "1500 rpm"
    finally:
        await sim.stop()


# -- at the edge (--edge) -----------------------------------------------------------------------------------


def front(app: App[Any]) -> Screen[Any]:
    """The screen shown now (a call, so that mypy does not narrow it across key presses)."""
    return app.screen


def title(screen: DeviceScreen) -> str:
    return str(screen.query_one("#title").render())


def offers_edit(screen: DeviceScreen) -> bool:
    """Whether the footer offers the edit key (and pressing it would run it)."""
    return any(b.binding.action == "edit" and b.enabled for b in screen.active_bindings.values())


async def test_edge_screen_is_read_only_and_says_why() -> None:
    """Fixed data on the screen as ``--edge`` opens it; nothing listens at its local API's address."""
    edge = EdgeSource(f"http://127.0.0.1:{closed_port()}", poll_interval=0.1)
    screen = DeviceScreen(None, NS, "pump-e", readonly=False, edge=edge)
    app = Host(screen)
    try:
        async with app.run_test(size=(140, 40)) as pilot:
            await until(pilot, lambda: app.screen is screen, "the screen")
            dev = device("pump-e", 5020, "1000", reported={"setpoint": "990", "speed": "985"})
            screen.show(dev, None, {})
            rows = table_rows(screen)
            # No DeviceModel at the edge: unit, type and access are unknown, the values are all there.
            assert rows["setpoint"] == ["setpoint", "1000", "990", "", "?", "?", "2026-01-02 12:00:00Z"]
            assert rows["speed"][:3] == ["speed", "", "985"]
            note = str(screen.query_one("#edge-note").render())
            assert edge.url in note
            assert "desired values are set at the cloud" in note
            assert "Units, types and access unknown: this node's local API has no DeviceModel 'pump'" in note

            # With the model the edge cached, the columns are filled as against the cloud; no such note.
            screen.show(dev, model(), {})
            rows = table_rows(screen)
            assert rows["setpoint"][:6] == ["setpoint", "1000", "990", "rpm", "INT", "ReadWrite"]
            assert rows["speed"][3:6] == ["rpm", "INT", "ReadOnly"]
            note = str(screen.query_one("#edge-note").render())
            assert "desired values are set at the cloud" in note
            assert "unknown" not in note
            assert str(screen.query_one("#history-title").render()) == EDGE_NO_HISTORY
            assert not screen.query("#history") and not screen.query(Sparkline)

            assert screen.check_action("edit", ()) is False
            assert not [
                b for b in screen.active_bindings.values() if b.binding.action == "edit" and b.enabled
            ]
            await pilot.press("e")
            await pilot.pause()
            assert app.screen is screen
            assert "read-only" in title(screen)

            # Its polls fail: the title says so and what was shown stays.
            await until(
                pilot,
                lambda: "local API unreachable" in str(screen.query_one("#title").render()),
                "the failure",
            )
            assert table_rows(screen) == rows
    finally:
        await edge.aclose()

    with pytest.raises(ValueError, match="either the cloud"):
        DeviceScreen(None, NS, "pump-e", readonly=False)


def reported(obj: JSONObject, prop: str) -> str | None:
    twins = (obj.get("status") or {}).get("twins") or []
    return next((t.get("reported", {}).get("value") for t in twins if t.get("propertyName") == prop), None)


@pytest.mark.slow
async def test_edge_mode_shows_the_live_twin_with_the_cloud_stopped(
    cluster: LocalCluster, client: AsyncClient, tmp_path: Path
) -> None:
    """``fleetops tui --edge`` on a node whose cloud is gone: Enter on a device opens its twin from the
    edge's own state, which follows the pump; no edits; a camera says why it cannot be shown."""
    require_mosquitto()
    from edgeservice.sim.modbus import HR_SPEED_SETPOINT, ModbusPumpSimulator

    sim = ModbusPumpSimulator(port=0)
    sim.model.set_speed_setpoint(700)
    await sim.start()
    try:
        await cluster.start_edge("edge-1", None, "--mqtt", f"tcp://{MQTT[0]}:{MQTT[1]}")
        await cluster.wait_ready_nodes(["edge-1"])
        suffix = uuid.uuid4().hex[:8]  # Mosquitto is shared: topics of our own
        name, camera = f"pump-{suffix}", f"cam-{suffix}"
        dev = device(name, sim.port, None)
        dev["spec"]["properties"][0]["visitors"]["configData"]["offset"] = HR_SPEED_SETPOINT
        await client.create(DEVICEMODELS, model())
        await client.create(DEVICES, dev)
        cam = {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device",
            "metadata": {"name": camera, "namespace": NS},
            "spec": {
                "deviceModelRef": {"name": "camera"},
                "nodeName": "edge-1",
                "protocol": {"protocolName": "camera", "configData": {"url": "synthetic://conveyor"}},
            },
        }
        await client.create(DEVICES, cam)
        config = tmp_path / "adapter.json"
        config.write_text(
            json.dumps({"broker": f"mqtt://{MQTT[0]}:{MQTT[1]}", "devices": [dev], "deviceModels": [model()]})
        )
        await client.apply(workload("modbus-adapter", "edgeservice.workloads.modbus", config))
        # The whole pipeline works (the edge has the devices, the adapter reports) before the cloud goes.
        await cluster.wait_until(
            f"/apis/{DEVICES.group}/v1beta1/namespaces/{NS}/devices/{name}",
            lambda obj: reported(obj, "setpoint") == "700",
            timeout=60,
            what="the cloud sees setpoint 700",
        )
        assert cluster.cloud is not None
        await cluster.cloud.stop()
        sim.model.set_speed_setpoint(1200)  # only the edge can know this one

        source = EdgeSource(edge_url(cluster), poll_interval=0.3)
        app = FleetApp(source, view="devices")
        async with app.run_test(size=(140, 40)) as pilot:
            await until(pilot, lambda: app.rows_text() == [camera, name], "the edge's devices")
            for _ in range(app.rows_text().index(name)):
                await pilot.press("down")
            assert app.table.current is not None and app.table.current.name == name
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, DeviceScreen), "the device screen")
            screen = app.screen
            assert isinstance(screen, DeviceScreen) and screen.edge is source

            def setpoint() -> list[str]:
                return table_rows(screen).get("setpoint", [""] * 7)

            await until(pilot, lambda: setpoint()[2] == "1200", "the setpoint reported at the edge", 60)
            assert setpoint()[1] == ""  # no desired value
            # The model comes from the edge's cache too: units, types and access as against the cloud.
            assert setpoint()[3:6] == ["rpm", "INT", "ReadWrite"]
            assert table_rows(screen)["speed"][3:6] == ["rpm", "INT", "ReadOnly"]
            assert "unknown" not in str(screen.query_one("#edge-note").render())
            assert setpoint()[6].endswith("Z")  # the edge's report time
            assert table_rows(screen)["speed"][2] != ""
            await until(
                pilot,
                lambda: "cloud unreachable" in title(screen),
                "the cloud's absence in the title",
            )
            assert screen.check_action("edit", ()) is False
            assert not [
                b for b in screen.active_bindings.values() if b.binding.action == "edit" and b.enabled
            ]
            await pilot.press("e")
            await pilot.pause()
            assert app.screen is screen
            assert "desired values are set at the cloud" in str(screen.query_one("#edge-note").render())
            assert str(screen.query_one("#history-title").render()) == EDGE_NO_HISTORY

            # The table follows the pump while the cloud is still away.
            sim.model.set_speed_setpoint(1500)
            await until(pilot, lambda: setpoint()[2] == "1500", "the next reported setpoint", 60)

            await pilot.press("escape")
            await until(pilot, lambda: app.screen is app.list_screen, "back to the devices")
            await pilot.press("up")
            assert app.table.current is not None and app.table.current.name == camera
            await pilot.press("enter")
            await pilot.pause()
            assert front(app) is app.list_screen
            messages = [str(n.message) for n in app._notifications]
            assert any(
                f"camera {camera} needs the cloud: camera streams come to the viewer through the cloud" in m
                for m in messages
            ), messages
    finally:
        await sim.stop()

"""A device twin while the cloud link is down (issue 4, item 2), end to end with real processes: the cloud,
edge-1 behind a FaultProxy on its tunnel, Mosquitto, a Modbus adapter pod and the pump simulator.

While the link is cut (the cloud stays up): a desired value set on site reaches the pump; the edge's outbox
holds one pending status for the device, however many reports it made; the edge restarts and its twin is
intact; a conflicting desired value set at the cloud meanwhile loses by KubeEdge's version rules
(``app.twin.check_sync_version``: the cloud stamped it without having seen the edge's on-site version),
at the cloud and at the pump; readings taken offline, and only those, arrive at the cloud after reconnect.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

from app.envelope import decode
from app.launcher import LocalCluster
from edgeservice.sim.modbus import HR_SPEED_SETPOINT, ModbusPumpSimulator
from tests.integration import test_devices_e2e
from tests.integration.test_devices_e2e import (
    DEVICES,
    MQTT,
    device,
    holding,
    observed_desired,
    reported,
    start_pump,
)
from tests.proxy import FaultProxy

pytestmark = pytest.mark.slow

# The devices end-to-end tests' fixture: the cloud, started; Mosquitto required (skipped without it).
cluster = test_devices_e2e.cluster

# Modbus function codes that write holding registers (single, multiple).
_WRITE_HOLDING = frozenset({6, 16})


class RecordingPump(ModbusPumpSimulator):
    """The pump simulator, remembering every setpoint written to it over Modbus (what the adapter wrote),
    so that a value that must never reach the machine can be shown never to have reached it."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(port=port)
        self.written: list[int] = []

    def _apply_write(self, function_code: int, address: int, values: list[int] | list[bool]) -> Any:
        error = super()._apply_write(function_code, address, values)
        if error is None and function_code in _WRITE_HOLDING and address == HR_SPEED_SETPOINT:
            self.written.append(int(values[0]))
        return error


async def until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait for a condition on in-process state (the simulator's registers)."""
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def _twin(dev: dict[str, Any], prop: str) -> dict[str, Any]:
    [twin] = [t for t in dev.get("status", {}).get("twins", []) if t.get("propertyName") == prop]
    return dict(twin)


def _desired(dev: dict[str, Any], prop: str) -> dict[str, Any]:
    [p] = [p for p in dev["spec"]["properties"] if p["name"] == prop]
    return dict(p.get("desired") or {})


async def patch_desired(cluster: LocalCluster, name: str, port: int, value: str) -> dict[str, Any]:
    wanted = device(name, port, value)
    result: dict[str, Any] = await cluster.request(
        "PATCH",
        f"{DEVICES}/devices/{name}",
        {"spec": {"properties": wanted["spec"]["properties"]}},
        content_type="application/merge-patch+json",
    )
    return result


async def edge_device(cluster: LocalCluster, name: str) -> tuple[dict[str, Any], bool]:
    """The Device as edge-1's local API serves it (its cache, with the twin's own status), and whether
    the edge says it is connected to the cloud. Retries while the (restarting) edge's API is not up."""
    async with asyncio.timeout(30):
        while True:
            try:
                local = json.loads((cluster.root / "edge-1" / "endpoints.json").read_text())["localApi"]
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"{local}/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices") as r,
                ):
                    body = await r.json()
                    connected = r.headers["X-FleetOps-Cloud-Connected"] == "true"
                [dev] = [d for d in body["items"] if d["metadata"]["name"] == name]
                return dev, connected
            except (OSError, KeyError, ValueError, aiohttp.ClientError):
                await asyncio.sleep(0.1)


async def edge_device_until(
    cluster: LocalCluster, name: str, check: Callable[[dict[str, Any], bool], bool], what: str
) -> dict[str, Any]:
    dev: dict[str, Any] = {}
    try:
        async with asyncio.timeout(30):
            while True:
                dev, connected = await edge_device(cluster, name)
                if check(dev, connected):
                    return dev
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}; last: {json.dumps(dev)[:2000]}") from None


def pending_statuses(cluster: LocalCluster, name: str) -> list[tuple[int, dict[str, Any]]]:
    """The device's status reports waiting in edge-1's outbox (its SQLite cache, read-only): seq, status."""
    db = cluster.root / "edge-1" / "edge.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT seq, message FROM outbox WHERE key = ? ORDER BY seq", (f"default/devicestatus/{name}",)
        ).fetchall()
    finally:
        conn.close()
    return [(int(seq), decode(message).content["status"]) for seq, message in rows]


def _status_value(status: dict[str, Any], prop: str, part: str) -> str | None:
    for twin in status.get("twins", []):
        if twin.get("propertyName") == prop and part in twin:
            return str(twin[part]["value"])
    return None


async def test_twin_changed_on_site_while_the_cloud_is_away_reconciles_on_reconnect(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    sim = RecordingPump()
    sim.model.set_speed_setpoint(0)
    await sim.start()
    proxy = FaultProxy("127.0.0.1", int(cluster.hub.rsplit(":", 1)[1]))
    await proxy.start()
    real_hub = cluster.hub
    cluster.hub = f"ws://127.0.0.1:{proxy.port}"  # edge-1 (and its restart) dial the cloud through it
    try:
        name = await start_pump(cluster, tmp_path, sim)
        await patch_desired(cluster, name, sim.port, "1500")
        await cluster.wait_until(
            f"{DEVICES}/devices/{name}",
            lambda d: reported(d, "setpoint") == "1500" and observed_desired(d, "setpoint") == "1500",
            what="the cloud's first desired value applied",
        )

        # -- the link goes down; the cloud stays up --------------------------------------------------
        proxy.blackhole()
        proxy.cut()
        await edge_device_until(cluster, name, lambda _, connected: not connected, "edge-1 offline")

        # (a) On site, an HMI sets a desired value through MQTT; the edge alone has it written to the pump.
        async with aiomqtt.Client(*MQTT) as hmi:
            body = {"event_id": "hmi-1", "twin": {"setpoint": {"expected": {"value": "2200"}}}}
            await hmi.publish(f"$hw/events/device/{name}/twin/update", json.dumps(body), qos=1)
        await until(lambda: 2200 in sim.written, "the on-site value written to the pump")
        assert await holding(sim.port) == 2200

        # (c) Meanwhile an operator sets a conflicting desired value at the cloud. The API stamps it with
        # the edge version the cloud last heard of (0): it has not seen the on-site change.
        patched = await patch_desired(cluster, name, sim.port, "2800")
        stamp = _desired(patched, "setpoint")["metadata"]
        assert (stamp["cloudVersion"], stamp["edgeVersion"]) == ("2", "0")

        # (b) The edge's reports wait in its outbox: one row for the device however many it made (the
        # on-site value, its read-back, a report every reportCycle), replaced by each newer one.
        def latest_pending() -> tuple[int, dict[str, Any]] | None:
            rows = pending_statuses(cluster, name)
            assert len(rows) <= 1, rows
            return rows[0] if rows else None

        await until(
            lambda: (
                (row := latest_pending()) is not None
                and _status_value(row[1], "setpoint", "reported") == "2200"
            ),
            "the read-back pending in the outbox",
        )
        first = latest_pending()
        assert first is not None
        await until(lambda: (row := latest_pending()) is not None and row[0] > first[0], "a newer report")
        [(_, status)] = pending_statuses(cluster, name)
        assert _status_value(status, "setpoint", "observedDesired") == "2200"

        # (e) The edge restarts, still offline: its twin (values and versions) and its outbox survive.
        await cluster.edges["edge-1"].stop()
        await cluster.start_edge("edge-1", None, "--mqtt", f"tcp://{MQTT[0]}:{MQTT[1]}")
        restarted, connected = await edge_device(cluster, name)
        assert not connected
        assert _desired(restarted, "setpoint")["value"] == "1500"  # the cloud's 2800 never got through
        observed = _twin(restarted, "setpoint")["observedDesired"]
        assert observed["value"] == "2200"
        assert (observed["metadata"]["cloudVersion"], observed["metadata"]["edgeVersion"]) == ("1", "1")
        assert _twin(restarted, "setpoint")["reported"]["value"] == "2200"
        [(_, status)] = pending_statuses(cluster, name)
        assert _status_value(status, "setpoint", "observedDesired") == "2200"

        # -- the link comes back ------------------------------------------------------------------------
        proxy.heal()
        proxy.cut()  # the connection attempt swallowed by the blackhole: retry now
        # The edge receives the cloud's 2800 and refuses it: the edge's counter (1) is ahead of the one
        # the cloud stamped (0), so the on-site value wins. Read from the edge's cache, where the Device
        # and the twin's decision on it are written in the same step: no race with what follows.
        decided = await edge_device_until(
            cluster,
            name,
            lambda d, connected: connected and _desired(d, "setpoint").get("value") == "2800",
            "the cloud's 2800 delivered to edge-1",
        )
        assert _twin(decided, "setpoint")["observedDesired"]["value"] == "2200"
        # At the cloud: the on-site value as observed desired, with the edge's version, and as read back;
        # the operator's 2800 stays in the spec, visibly not applied.
        dev = await cluster.wait_until(
            f"{DEVICES}/devices/{name}",
            lambda d: observed_desired(d, "setpoint") == "2200" and reported(d, "setpoint") == "2200",
            what="the on-site value reconciled at the cloud",
        )
        meta = _twin(dev, "setpoint")["observedDesired"]["metadata"]
        assert (meta["cloudVersion"], meta["edgeVersion"]) == ("1", "1")
        assert _desired(dev, "setpoint")["value"] == "2800"
        assert dev["status"]["state"] == "online"

        # Having seen the edge's version, an operator's next value wins (stamped edge version 1). It also
        # shows that the 2800, delivered before it on the same object, never reached the pump.
        patched = await patch_desired(cluster, name, sim.port, "2500")
        stamp = _desired(patched, "setpoint")["metadata"]
        assert (stamp["cloudVersion"], stamp["edgeVersion"]) == ("3", "1")
        await cluster.wait_until(
            f"{DEVICES}/devices/{name}",
            lambda d: reported(d, "setpoint") == "2500" and observed_desired(d, "setpoint") == "2500",
            what="the operator's value after the reconciliation",
        )
        assert 2800 not in sim.written and sim.written[-1] == 2500, sim.written
        assert await holding(sim.port) == 2500

        # (d) Offline again. The machine's own panel changes the setpoint; the adapter reads it; then the
        # machine goes quiet (no reading can be taken after the link is back). What the cloud shows after
        # reconnect is exactly the last reading taken offline, with its time.
        proxy.blackhole()
        proxy.cut()
        await edge_device_until(cluster, name, lambda _, connected: not connected, "edge-1 offline again")
        sim.model.set_speed_setpoint(1234)
        await edge_device_until(
            cluster,
            name,
            lambda d, _: _twin(d, "setpoint").get("reported", {}).get("value") == "1234",
            "the panel's value read while offline",
        )
        await sim.stop()
        silent = await edge_device_until(
            cluster, name, lambda d, _: d["status"].get("state") == "offline", "the silent pump offline"
        )
        last_reading = _twin(silent, "setpoint")["reported"]
        restored_at = int(time.time() * 1000)
        assert int(last_reading["metadata"]["timestamp"]) < restored_at
        proxy.heal()
        proxy.cut()
        dev = await cluster.wait_until(
            f"{DEVICES}/devices/{name}",
            lambda d: d.get("status", {}).get("state") == "offline" and reported(d, "setpoint") == "1234",
            what="the offline reading at the cloud",
        )
        assert _twin(dev, "setpoint")["reported"] == last_reading
    finally:
        cluster.hub = real_hub
        await proxy.stop()
        await sim.stop()

"""Protocol adapters as Edged runs them: real adapter processes, a real Mosquitto broker, and the real
Modbus and OPC UA simulators, plus table-driven tests of the pure conversions and decisions."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from asyncua.client.client import Client
from pymodbus.client import AsyncModbusTcpClient

from app.devices import ModbusVisitor, ModelProperty
from edgeservice.sim.modbus import HR_SPEED_SETPOINT, ModbusPumpSimulator
from edgeservice.sim.opcua import OpcUaLineSimulator, node_id
from edgeservice.workloads.adapter import (
    EXIT_CONFIG,
    OFFLINE,
    ONLINE,
    DeviceConfig,
    Reported,
    next_state,
    parse_config,
    plan_writes,
    report_due,
)
from edgeservice.workloads.modbus import decode_registers, encode_registers
from tests.services import require_mosquitto
from tests.workloads import run_workload, stop_workload

BROKER = ("127.0.0.1", 1883)
TIMEOUT = 20.0

# --- pure conversions and decisions ------------------------------------------------------------------------

INT = ModelProperty("p", "INT", "ReadWrite")
FLOAT = ModelProperty("p", "FLOAT", "ReadWrite")
BOOL = ModelProperty("p", "BOOLEAN", "ReadWrite")


def _v(**kw: Any) -> ModbusVisitor:
    return ModbusVisitor(register=kw.pop("register", "HoldingRegister"), offset=0, **kw)


@pytest.mark.parametrize(
    ("registers", "visitor", "prop", "expected"),
    [
        ([1500], _v(), INT, "1500"),
        ([0xFFFF], _v(), INT, "-1"),  # empty dataType, limit 1: int16 as KubeEdge's "int"
        ([0xFFFF], _v(data_type="uint16"), INT, "65535"),
        ([301], _v(scale=0.1, data_type="uint16"), FLOAT, "30.1"),  # scale multiplies
        ([0xFF38], _v(scale=0.1, data_type="int16"), FLOAT, "-20.0"),
        ([0x0001, 0x0000], _v(limit=2, data_type="int32"), INT, "65536"),
        ([0x0000, 0x0001], _v(limit=2, data_type="int32", is_register_swap=True), INT, "65536"),
        ([0x0100], _v(data_type="uint16", is_swap=True), INT, "1"),  # bytes swapped in the word
        ([0x4048, 0xF5C3], _v(limit=2, data_type="float32"), FLOAT, "3.14"),
        ([0xF5C3, 0x4048], _v(limit=2, data_type="float", is_register_swap=True), FLOAT, "3.14"),
        ([2], _v(data_type="boolean"), BOOL, "true"),
        ([1234], _v(scale=2), INT, "2468"),
    ],
)
def test_decode_registers(
    registers: list[int], visitor: ModbusVisitor, prop: ModelProperty, expected: str
) -> None:
    assert decode_registers(registers, visitor, prop) == expected


@pytest.mark.parametrize(
    ("value", "visitor", "prop", "expected"),
    [
        ("1500", _v(), INT, [1500]),
        ("-1", _v(), INT, [0xFFFF]),
        ("30.1", _v(scale=0.1, data_type="uint16"), FLOAT, [301]),
        ("65536", _v(limit=2, data_type="int32", is_register_swap=True), INT, [0x0000, 0x0001]),
        ("3.14", _v(limit=2, data_type="float32"), FLOAT, [0x4048, 0xF5C3]),
        ("true", _v(data_type="boolean"), BOOL, [1]),
    ],
)
def test_encode_registers(
    value: str, visitor: ModbusVisitor, prop: ModelProperty, expected: list[int]
) -> None:
    assert encode_registers(value, visitor, prop) == expected
    assert decode_registers(expected, visitor, prop).rstrip("0").rstrip(".") == value.rstrip("0").rstrip(".")


@pytest.mark.parametrize(
    ("value", "visitor"),
    [("70000", _v(data_type="uint16")), ("-1", _v(data_type="uint16")), ("40000", _v())],
)
def test_encode_refuses_what_the_register_cannot_hold(value: str, visitor: ModbusVisitor) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode_registers(value, visitor, INT)


@pytest.mark.parametrize(
    ("last", "value", "now", "expected"),
    [
        (None, "1", 0.0, True),
        (Reported("1", 0.0), "1", 5.0, False),
        (Reported("1", 0.0), "2", 0.1, True),
        (Reported("1", 0.0), "1", 10.0, True),  # report cycle passed
    ],
)
def test_report_due(last: Reported | None, value: str, now: float, expected: bool) -> None:
    assert report_due(last, value, now, 10.0) is expected


@pytest.mark.parametrize(
    ("current", "failures", "expected"),
    [("", 0, ONLINE), (OFFLINE, 0, ONLINE), (ONLINE, 2, ONLINE), (ONLINE, 3, OFFLINE), ("", 1, "")],
)
def test_next_state(current: str, failures: int, expected: str) -> None:
    assert next_state(current, failures, 3) == expected


# --- configs -----------------------------------------------------------------------------------------------


def _model(name: str, protocol: str, props: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"protocol": protocol, "properties": props},
    }


def _device(
    name: str, protocol: str, model: str, conn: dict[str, Any], props: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "deviceModelRef": {"name": model},
            "nodeName": "edge-1",
            "protocol": {"protocolName": protocol, "configData": conn},
            "properties": [
                {
                    "name": p.pop("name"),
                    "collectCycle": 200,
                    "reportCycle": 1000,
                    "visitors": {"protocolName": protocol, "configData": p},
                }
                for p in props
            ],
        },
    }


def modbus_config(device_id: str, port: int) -> dict[str, Any]:
    model = _model(
        "pump",
        "modbus",
        [
            {"name": "setpoint", "type": "INT", "accessMode": "ReadWrite", "minimum": "0", "maximum": "3000"},
            {"name": "speed", "type": "INT", "accessMode": "ReadOnly"},
            {"name": "flow", "type": "FLOAT", "accessMode": "ReadOnly"},
            {"name": "running", "type": "BOOLEAN", "accessMode": "ReadWrite"},
        ],
    )
    device = _device(
        device_id,
        "modbus",
        "pump",
        {"ip": "127.0.0.1", "port": port, "slaveID": 1, "timeout": 500},
        [
            {"name": "setpoint", "register": "HoldingRegister", "offset": 0, "dataType": "uint16"},
            {"name": "speed", "register": "InputRegister", "offset": 4, "dataType": "uint16"},
            {"name": "flow", "register": "InputRegister", "offset": 0, "scale": 0.1, "dataType": "uint16"},
            {"name": "running", "register": "CoilRegister", "offset": 0},
        ],
    )
    return {
        "broker": f"mqtt://{BROKER[0]}:{BROKER[1]}",
        "failureThreshold": 2,
        "devices": [device],
        "deviceModels": [model],
    }


def opcua_config(device_id: str, url: str) -> dict[str, Any]:
    model = _model(
        "line",
        "opcua",
        [
            {"name": "speed", "type": "DOUBLE", "accessMode": "ReadWrite", "minimum": "0", "maximum": "1800"},
            {"name": "actualSpeed", "type": "DOUBLE", "accessMode": "ReadOnly"},
            {"name": "temperature", "type": "DOUBLE", "accessMode": "ReadOnly"},
            {"name": "running", "type": "BOOLEAN", "accessMode": "ReadWrite"},
        ],
    )
    device = _device(
        device_id,
        "opcua",
        "line",
        {"url": url},
        [
            {"name": "speed", "nodeID": node_id("Speed")},
            {"name": "actualSpeed", "nodeID": node_id("ActualSpeed")},
            {"name": "temperature", "nodeID": node_id("Temperature")},
            {"name": "running", "nodeID": node_id("Running")},
        ],
    )
    return {"broker": f"mqtt://{BROKER[0]}:{BROKER[1]}", "devices": [device], "deviceModels": [model]}


def test_plan_writes_refuses_readonly_range_and_unknown() -> None:
    cfg = parse_config(modbus_config("d", 502), "modbus")
    device: DeviceConfig = cfg.devices[0]
    writes, refused = plan_writes(device, {"setpoint": "1500", "speed": "10", "flow": "x", "nope": "1"})
    assert writes == {"setpoint": "1500"}
    assert "ReadOnly" in refused["speed"] and "ReadOnly" in refused["flow"]
    assert refused["nope"] == "unknown property"
    _, refused = plan_writes(device, {"setpoint": "5000"})
    assert "above the maximum" in refused["setpoint"]


# --- processes and MQTT ------------------------------------------------------------------------------------


@pytest.fixture
async def broker() -> None:
    require_mosquitto()


class Topics:
    """Every message of one device, in arrival order, with waiting for one that matches."""

    def __init__(self, client: aiomqtt.Client, device_id: str) -> None:
        self.client = client
        self.prefix = f"$hw/events/device/{device_id}/"
        self.seen: list[tuple[str, Any]] = []

    async def wait(self, suffix: str, pred: Callable[[Any], bool], timeout: float = TIMEOUT) -> Any:
        async with asyncio.timeout(timeout):
            async for message in self.client.messages:
                topic = message.topic.value
                assert isinstance(message.payload, bytes)
                payload = json.loads(message.payload)
                self.seen.append((topic, payload))
                if topic == self.prefix + suffix and pred(payload):
                    return payload
        raise AssertionError("unreachable")

    async def actual(self, prop: str, pred: Callable[[str], bool]) -> str:
        def match(p: Any) -> bool:
            twin = p.get("twin", {}).get(prop)
            return twin is not None and "actual" in twin and pred(twin["actual"]["value"])

        payload = await self.wait("twin/update", match)
        return str(payload["twin"][prop]["actual"]["value"])

    async def state(self, state: str, timeout: float = TIMEOUT) -> None:
        await self.wait("state/update", lambda p: p.get("state") == state, timeout)

    async def delta(self, values: dict[str, str]) -> str:
        event_id = uuid.uuid4().hex
        payload = {"event_id": event_id, "timestamp": int(time.time() * 1000), "twin": {}, "delta": values}
        await self.client.publish(self.prefix + "twin/update/delta", json.dumps(payload), qos=1)
        return event_id


@pytest.fixture
async def mqtt(broker: None) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(*BROKER, identifier=f"test-{uuid.uuid4().hex[:8]}") as client:
        yield client


async def _subscribe(client: aiomqtt.Client, device_id: str) -> Topics:
    await client.subscribe(f"$hw/events/device/{device_id}/#", qos=1)
    return Topics(client, device_id)


async def _holding(port: int, address: int) -> int:
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    try:
        assert await client.connect()
        rr = await client.read_holding_registers(address, count=1, device_id=1)
        assert not rr.isError()
        return int(rr.registers[0])
    finally:
        client.close()


async def test_modbus_adapter_reports_writes_refuses_and_tracks_online(
    mqtt: aiomqtt.Client, tmp_path: Path
) -> None:
    device_id = f"pump-{uuid.uuid4().hex[:8]}"
    sim = ModbusPumpSimulator(port=0)
    sim.model.set_speed_setpoint(0)  # the pump starts at its rated setpoint: start from 0 to see a write
    await sim.start()
    port = sim.port
    config = tmp_path / "adapter.json"
    config.write_text(json.dumps(modbus_config(device_id, port)))
    topics = await _subscribe(mqtt, device_id)
    proc = await run_workload("modbus", config)
    try:
        await topics.state(ONLINE)
        assert await topics.actual("setpoint", lambda v: v == "0") == "0"

        # A valid desired value is written to the holding register, read back and reported.
        await topics.delta({"setpoint": "1500", "running": "true"})
        await topics.actual("setpoint", lambda v: v == "1500")
        assert await _holding(port, HR_SPEED_SETPOINT) == 1500
        # The pump spins up: the reported actual speed moves.
        await topics.actual("speed", lambda v: int(v) > 100)

        # KubeEdge's devicetwin answers a bad update on /result with code 400: so does the adapter.
        event_id = await topics.delta({"speed": "100"})
        result = await topics.wait("twin/update/result", lambda p: p.get("event_id") == event_id)
        assert result["code"] == 400 and "ReadOnly" in result["reason"] and "speed" in result["reason"]
        event_id = await topics.delta({"setpoint": "5000"})
        result = await topics.wait("twin/update/result", lambda p: p.get("event_id") == event_id)
        assert result["code"] == 400 and "above the maximum" in result["reason"]
        assert await _holding(port, HR_SPEED_SETPOINT) == 1500

        # The device goes away: offline; it comes back on the same port: online again by itself.
        await sim.stop()
        await topics.state(OFFLINE)
        sim = ModbusPumpSimulator(port=port)
        await sim.start()
        await topics.state(ONLINE)
        await topics.actual("setpoint", lambda v: True)  # a fresh pump: values flow again
    finally:
        err = await stop_workload(proc, tmp_path / "modbus.log")
        await sim.stop()
    assert proc.returncode == 0, err.decode()


async def test_opcua_adapter_reports_and_writes(mqtt: aiomqtt.Client, tmp_path: Path) -> None:
    device_id = f"line-{uuid.uuid4().hex[:8]}"
    sim = OpcUaLineSimulator(port=0)
    await sim.start()
    config = tmp_path / "adapter.json"
    config.write_text(json.dumps(opcua_config(device_id, sim.endpoint)))
    topics = await _subscribe(mqtt, device_id)
    proc = await run_workload("opcua", config)
    try:
        await topics.state(ONLINE)
        await topics.actual("temperature", lambda v: float(v) > -50)
        await topics.delta({"speed": "900", "running": "true"})
        assert float(await topics.actual("speed", lambda v: float(v) == 900)) == 900
        async with Client(sim.endpoint) as client:
            assert await client.get_node(node_id("Speed")).read_value() == 900.0
        await topics.actual("actualSpeed", lambda v: float(v) > 50)  # the line follows: values move
        event_id = await topics.delta({"temperature": "20"})
        result = await topics.wait("twin/update/result", lambda p: p.get("event_id") == event_id)
        assert result["code"] == 400 and "ReadOnly" in result["reason"]
    finally:
        err = await stop_workload(proc, tmp_path / "opcua.log")
        await sim.stop()
    assert proc.returncode == 0, err.decode()


def _bad(mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    cfg = modbus_config("bad", 5020)
    mutate(cfg)
    return cfg


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        (
            _bad(
                lambda c: c["devices"][0]["spec"]["properties"][0]["visitors"]["configData"].pop("register")
            ),
            "register",
        ),
        (_bad(lambda c: c.pop("broker")), "broker"),
        (_bad(lambda c: c["devices"][0]["spec"]["protocol"]["configData"].pop("ip")), "configData.ip"),
        (
            _bad(
                lambda c: c["devices"][0]["spec"]["properties"][1]["visitors"]["configData"].update(
                    dataType="int32"
                )
            ),
            "limit",
        ),
        (_bad(lambda c: c["devices"][0]["spec"]["deviceModelRef"].update(name="missing")), "deviceModelRef"),
        ("not json", "not JSON"),
    ],
)
async def test_bad_config_exits_2_naming_the_field(tmp_path: Path, config: Any, needle: str) -> None:
    path = tmp_path / "adapter.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    proc = await run_workload("modbus", path)
    try:
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        err = await stop_workload(proc, tmp_path / "modbus.log")
    assert proc.returncode == EXIT_CONFIG
    assert needle in err.decode()

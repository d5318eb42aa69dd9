"""Device simulators: the plant models' invariants, and the real Modbus / OPC UA servers read and written
with the real pymodbus and asyncua clients."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.uaerrors import UaStatusCodeError
from pymodbus.client import AsyncModbusTcpClient

from edgeservice.sim import SimulatorError
from edgeservice.sim.modbus import (
    COIL_FAULT_INJECT,
    COIL_RUNNING,
    DI_FAULT,
    DI_TURNING,
    HR_SPEED_SETPOINT,
    IR_FLOW,
    IR_MOTOR_TEMP,
    IR_PRESSURE,
    IR_SPEED,
    IR_VIBRATION,
    SCALE_FLOW,
    SCALE_MOTOR_TEMP,
    SCALE_PRESSURE,
    SCALE_VIBRATION,
    ModbusPumpSimulator,
)
from edgeservice.sim.opcua import NAMESPACE_URI, OpcUaLineSimulator, node_id
from edgeservice.sim.physics import MOTOR_BOUNDS, PUMP_BOUNDS, MotorModel, PumpModel, lag

T = TypeVar("T")
DT = 0.1  # the simulators' default period


# --- physics: pure, deterministic -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "target", "dt", "tau", "expected"),
    [
        (0.0, 100.0, 1.0, 1.0, 100.0 * (1 - 0.36787944117)),  # one time constant: 63.2% of the way
        (0.0, 100.0, 0.0, 1.0, 0.0),  # no time, no move
        (50.0, 100.0, 1.0, 0.0, 100.0),  # no lag
        (100.0, 0.0, 1e6, 2.0, 0.0),  # long step settles, never overshoots
        (10.0, 10.0, 5.0, 3.0, 10.0),  # at target stays there
    ],
)
def test_lag(value: float, target: float, dt: float, tau: float, expected: float) -> None:
    assert lag(value, target, dt, tau) == pytest.approx(expected, abs=1e-6)


def _run_pump(seed: int, seconds: float, setpoint: float, *, running: bool = True) -> list[float]:
    model = PumpModel(seed)
    model.set_running(running)
    model.set_speed_setpoint(setpoint)
    return [model.step(DT).speed_rpm for _ in range(round(seconds / DT))]


@pytest.mark.parametrize("seed", [0, 1, 7, 42])
def test_pump_readings_stay_within_bounds_through_setpoint_changes_and_faults(seed: int) -> None:
    model = PumpModel(seed)
    model.set_running(True)
    for setpoint, fault in [(3000, False), (9999, True), (-5, False), (1500, True), (2900, False)]:
        model.set_speed_setpoint(setpoint)
        model.set_fault(fault)
        for _ in range(300):
            r = model.step(DT)
            for field, (low, high) in PUMP_BOUNDS.items():
                assert low <= getattr(r, field) <= high, (field, getattr(r, field))
            assert 0 <= r.speed_setpoint_rpm <= model.params.max_speed_rpm


def test_pump_is_deterministic_for_a_seed() -> None:
    assert _run_pump(3, 5, 2000) == _run_pump(3, 5, 2000)
    assert _run_pump(3, 5, 2000) != _run_pump(4, 5, 2000)


@pytest.mark.parametrize(
    ("setpoint", "after_s", "low", "high"),
    [
        (2000, 1.5, 0.55 * 2000, 0.72 * 2000),  # about one time constant (1.5 s): ~63%
        (2000, 15.0, 1980, 2020),  # ten time constants: settled, within noise
        (0, 5.0, 0, 5),
    ],
)
def test_pump_speed_lags_towards_setpoint(setpoint: float, after_s: float, low: float, high: float) -> None:
    speeds = _run_pump(0, after_s, setpoint)
    assert low <= speeds[-1] <= high


def test_stopped_pump_spins_down_and_stops_flowing() -> None:
    model = PumpModel(0)
    model.set_running(True)
    for _ in range(100):
        model.step(DT)
    assert model.last.flow_lpm > 30
    model.set_running(False)
    for _ in range(200):
        r = model.step(DT)
    assert r.speed_rpm < 1 and r.flow_lpm == 0 and r.pressure_bar == 0


def test_pump_temperature_rises_with_load_and_fault_raises_vibration() -> None:
    model = PumpModel(0)
    cold = model.last.motor_temp_c
    model.set_running(True)
    model.set_speed_setpoint(2900)
    for _ in range(600):
        model.step(DT)
    hot, healthy = model.last.motor_temp_c, model.last.vibration_mm_s
    assert hot > cold + 20
    model.set_fault(True)
    assert model.step(DT).vibration_mm_s > 4 * healthy
    model.set_fault(False)
    assert not model.step(DT).fault


def test_motor_counts_parts_only_while_turning() -> None:
    model = MotorModel(0)
    model.set_running(True)
    model.set_speed_setpoint(1500)
    for _ in range(300):
        r = model.step(DT)
        for field, (low, high) in MOTOR_BOUNDS.items():
            assert low <= getattr(r, field) <= high
    counted = r.count
    assert 15 <= counted <= 30  # 30 s at up to 1500 rpm, 30 revolutions a part: at most 25
    model.set_running(False)
    for _ in range(100):
        model.step(DT)
    settled = model.last.count
    for _ in range(100):
        model.step(DT)
    assert model.last.count == settled


# --- helpers -----------------------------------------------------------------------------------


async def eventually(read: Callable[[], Awaitable[T]], ok: Callable[[T], bool], timeout: float = 5.0) -> T:
    """Read until ``ok``; the simulators update every 100 ms and offer no event to await."""
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if ok(value) or time.monotonic() > deadline:
            assert ok(value), f"still {value!r} after {timeout}s"
            return value
        await asyncio.sleep(DT / 2)


# --- Modbus --------------------------------------------------------------------------------------


@pytest.fixture
async def pump() -> AsyncIterator[tuple[ModbusPumpSimulator, AsyncModbusTcpClient]]:
    async with ModbusPumpSimulator(port=0, seed=1) as sim:
        client = AsyncModbusTcpClient("127.0.0.1", port=sim.port)
        assert await client.connect()
        try:
            yield sim, client
        finally:
            client.close()


async def _inputs(client: AsyncModbusTcpClient) -> list[int]:
    rr = await client.read_input_registers(0, count=5)
    assert not rr.isError()
    return list(rr.registers)


async def test_modbus_pump_follows_commands(pump: tuple[ModbusPumpSimulator, AsyncModbusTcpClient]) -> None:
    sim, client = pump
    assert sim.port != 0
    idle = await _inputs(client)
    assert idle[IR_SPEED] == 0 and idle[IR_FLOW] == 0
    assert 20 <= idle[IR_MOTOR_TEMP] / SCALE_MOTOR_TEMP <= 30  # ambient

    # The adapter's write of a desired value reads back at once...
    assert not (await client.write_register(HR_SPEED_SETPOINT, 2400)).isError()
    assert not (await client.write_coil(COIL_RUNNING, True)).isError()
    assert (await client.read_holding_registers(HR_SPEED_SETPOINT, count=1)).registers == [2400]
    assert (await client.read_coils(COIL_RUNNING, count=1)).bits[0] is True
    # ... and moves the pump over the next ticks, within the documented scales.
    first = await eventually(lambda: _inputs(client), lambda r: r[IR_SPEED] > 0)
    later = await eventually(lambda: _inputs(client), lambda r: r[IR_SPEED] > first[IR_SPEED] + 200)
    assert later[IR_FLOW] > first[IR_FLOW]
    assert 0 < later[IR_PRESSURE] / SCALE_PRESSURE <= PUMP_BOUNDS["pressure_bar"][1]
    assert 0 < later[IR_FLOW] / SCALE_FLOW <= PUMP_BOUNDS["flow_lpm"][1]
    assert (await client.read_discrete_inputs(DI_TURNING, count=1)).bits[0] is True
    assert sim.model.speed_setpoint_rpm == 2400

    # Out of range: a Modbus exception, and the setpoint is unchanged.
    assert (await client.write_register(HR_SPEED_SETPOINT, 4000)).isError()
    assert (await client.read_holding_registers(HR_SPEED_SETPOINT, count=1)).registers == [2400]
    # Unmapped addresses answer an exception rather than zeros.
    assert (await client.read_input_registers(0, count=6)).isError()


async def test_modbus_fault_injection_raises_vibration(
    pump: tuple[ModbusPumpSimulator, AsyncModbusTcpClient],
) -> None:
    sim, client = pump
    await client.write_register(HR_SPEED_SETPOINT, 3000)
    await client.write_coil(COIL_RUNNING, True)
    healthy = await eventually(lambda: _inputs(client), lambda r: r[IR_SPEED] > 2000)
    await client.write_coil(COIL_FAULT_INJECT, True)
    faulty = await eventually(lambda: _inputs(client), lambda r: r[IR_VIBRATION] > 3 * healthy[IR_VIBRATION])
    assert faulty[IR_VIBRATION] / SCALE_VIBRATION <= PUMP_BOUNDS["vibration_mm_s"][1]
    assert (await client.read_discrete_inputs(DI_FAULT, count=1)).bits[0] is True
    assert sim.model.fault


async def test_modbus_port_in_use_is_a_simulator_error() -> None:
    async with ModbusPumpSimulator(port=0) as first:
        taken = ModbusPumpSimulator(port=first.port)
        with pytest.raises(SimulatorError) as err:
            await taken.start()
        assert err.value.port == first.port and err.value.protocol == "modbus"


# --- OPC UA --------------------------------------------------------------------------------------


async def test_opcua_line_follows_commands() -> None:
    async with OpcUaLineSimulator(port=0, seed=1) as sim, Client(sim.endpoint) as client:
        assert sim.port != 0 and sim.endpoint.endswith("/fleetops/")
        assert await client.get_namespace_index(NAMESPACE_URI) == 2

        def node(name: str) -> Awaitable[object]:
            return client.get_node(node_id(name)).read_value()

        assert await node("ActualSpeed") == 0.0
        start_temp = await node("Temperature")
        assert isinstance(start_temp, float) and 20 <= start_temp <= 30

        await client.get_node(node_id("Speed")).write_value(ua.Variant(1800.0, ua.VariantType.Double))
        await client.get_node(node_id("Running")).write_value(True)
        assert await node("Speed") == 1800.0 and await node("Running") is True

        await eventually(lambda: node("ActualSpeed"), lambda v: isinstance(v, float) and v > 1000)
        await eventually(lambda: node("Count"), lambda v: isinstance(v, int) and v >= 1)
        pressure = await node("Pressure")
        assert isinstance(pressure, float) and 0 < pressure <= MOTOR_BOUNDS["pressure_bar"][1]
        assert sim.model.speed_setpoint_rpm == 1800.0

        # An out-of-range setpoint is clamped by the model and the clamped value read back.
        await client.get_node(node_id("Speed")).write_value(ua.Variant(5000.0, ua.VariantType.Double))
        await eventually(lambda: node("Speed"), lambda v: v == 1800.0)
        # A write of the wrong type is refused by the server.
        with pytest.raises(UaStatusCodeError):
            await client.get_node(node_id("Speed")).write_value(3)
        # Measurements are read-only.
        with pytest.raises(UaStatusCodeError):
            await client.get_node(node_id("Temperature")).write_value(1.0)


# --- CLI -------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _sim_cli(protocol: str, listening: str) -> AsyncIterator[str]:
    """``fleetops sim PROTOCOL --port 0`` as a child process (through ``app.cli``, as the entry point runs
    it): yields what the ``listening`` pattern's group matched in its log, then sends SIGTERM and expects
    a clean exit (0) within 10 s."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "sim",
        protocol,
        "--port",
        "0",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        address = ""
        async with asyncio.timeout(15):
            while not address:
                line = (await proc.stderr.readline()).decode()
                assert line, "the simulator exited before listening"
                if m := re.search(listening, line):
                    address = m.group(1)
        yield address
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_cli_runs_modbus_simulator_until_sigterm() -> None:
    async with _sim_cli("modbus", r"listening on 127\.0\.0\.1:(\d+)") as port:
        client = AsyncModbusTcpClient("127.0.0.1", port=int(port))
        assert await client.connect()
        try:
            assert len(await _inputs(client)) == 5
        finally:
            client.close()


async def test_cli_runs_opcua_simulator_until_sigterm() -> None:
    async with _sim_cli("opcua", r"listening on (opc\.tcp://\S+)") as endpoint:
        assert re.fullmatch(r"opc\.tcp://127\.0\.0\.1:[1-9]\d*/fleetops/", endpoint), endpoint
        async with Client(endpoint) as client:
            assert await client.get_namespace_index(NAMESPACE_URI) == 2
            temperature = await client.get_node(node_id("Temperature")).read_value()
            assert isinstance(temperature, float) and 20 <= temperature <= 30

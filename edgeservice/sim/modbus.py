"""A Modbus TCP pump: a real pymodbus server whose registers follow :class:`~.physics.PumpModel`.

Register map (device manifests reference it; offsets are 0-based protocol addresses, as in the requests;
every register is big-endian 16 bits, one value per register)::

    table     offset  name               type    scale  unit   access
    coil      0       running            bool    -      -      read/write  run (1) / stop (0)
    coil      1       fault_inject       bool    -      -      read/write  force the fault mode
    discrete  0       turning            bool    -      -      read        speed > 1% of rated
    discrete  1       fault              bool    -      -      read        fault mode active
    holding   0       speed_setpoint     uint16  1      rpm    read/write  0..3000, else ILLEGAL_VALUE
    input     0       flow               uint16  10     l/min  read        value = raw / 10
    input     1       pressure           uint16  100    bar    read        value = raw / 100
    input     2       motor_temperature  int16   10     °C     read        value = raw / 10
    input     3       vibration          uint16  100    mm/s   read        value = raw / 100
    input     4       speed              uint16  1      rpm    read        actual shaft speed

Any unit (device) id is answered. Other addresses answer ILLEGAL_ADDRESS.

Design: the model is stepped by one task every ``period`` seconds (100 ms by default) with the real
elapsed time; the registers are refreshed from the latest step whenever a request touches them (the
pymodbus 3.16 ``SimDevice`` action hook, which receives the live register list), so a read always returns
the newest sample without a second copy loop. A write goes through the same hook: it is validated, applied
to the model, then stored by pymodbus, so a written setpoint reads back at once and moves the pump over
the following ticks.

Deliberately not done: serial/RTU, 32-bit or float registers (scaled 16-bit integers are what most
field devices expose), persistence of setpoints across restarts, function codes 22/23 semantics beyond
"a write to the holding table".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edgeservice.sim import SimulatorError
from edgeservice.sim.physics import PumpModel, PumpReading

log = logging.getLogger(__name__)

# Coil offsets.
COIL_RUNNING = 0
COIL_FAULT_INJECT = 1
# Discrete input offsets.
DI_TURNING = 0
DI_FAULT = 1
# Holding register offsets.
HR_SPEED_SETPOINT = 0
# Input register offsets, and the scale each raw value is multiplied by.
IR_FLOW = 0
IR_PRESSURE = 1
IR_MOTOR_TEMP = 2
IR_VIBRATION = 3
IR_SPEED = 4
SCALE_FLOW = 10
SCALE_PRESSURE = 100
SCALE_MOTOR_TEMP = 10
SCALE_VIBRATION = 100
SCALE_SPEED = 1

_N_BITS = 2
_N_INPUT = 5
# Function codes grouped by the table they address (Modbus application protocol v1.1b3).
_FC_COILS = frozenset({1, 5, 15})
_FC_DISCRETE = frozenset({2})
_FC_HOLDING = frozenset({3, 6, 16, 22, 23})
_FC_INPUT = frozenset({4})
_TURNING_RATIO = 0.01  # "turning" when above 1% of rated speed


def _u16(value: float, scale: int) -> int:
    return max(0, min(0xFFFF, round(value * scale)))


def _i16(value: float, scale: int) -> int:
    """Two's complement in a 16-bit register, saturated to the int16 range."""
    raw = max(-0x8000, min(0x7FFF, round(value * scale)))
    return raw & 0xFFFF


def input_registers(r: PumpReading) -> list[int]:
    """The input table (offsets 0..4) for one reading."""
    return [
        _u16(r.flow_lpm, SCALE_FLOW),
        _u16(r.pressure_bar, SCALE_PRESSURE),
        _i16(r.motor_temp_c, SCALE_MOTOR_TEMP),
        _u16(r.vibration_mm_s, SCALE_VIBRATION),
        _u16(r.speed_rpm, SCALE_SPEED),
    ]


class ModbusPumpSimulator:
    """A pump behind a Modbus TCP server. ``async with`` it, or ``start()`` / ``stop()``.

    ``port=0`` binds a free port; :attr:`port` is the bound one after :meth:`start`."""

    protocol = "modbus"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 502,
        *,
        seed: int = 0,
        period: float = 0.1,
        model: PumpModel | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.period = period
        self.model = model or PumpModel(seed)
        self._clock = clock
        self._server: ModbusTcpServer | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._ticker: asyncio.Task[None] | None = None

    def _device(self) -> SimDevice:
        return SimDevice(
            id=0,  # 0: answer every unit id
            simdata=(
                [SimData(address=0, count=1, values=[False] * _N_BITS, datatype=DataType.BITS)],
                [SimData(address=0, count=1, values=[False] * _N_BITS, datatype=DataType.BITS)],
                [SimData(address=HR_SPEED_SETPOINT, values=[0], datatype=DataType.UINT16)],
                [SimData(address=0, values=[0] * _N_INPUT, datatype=DataType.UINT16, readonly=True)],
            ),
            action=self._on_request,
        )

    async def start(self) -> None:
        """Listen, and start stepping the model every ``period`` seconds."""
        server = ModbusTcpServer(self._device(), address=(self.host, self.port))
        try:
            await server.serve_forever(background=True)
        except (RuntimeError, OSError) as exc:  # pymodbus reports a failed listen as RuntimeError
            raise SimulatorError(str(exc), protocol=self.protocol, host=self.host, port=self.port) from exc
        self._server = server
        # The listener is the asyncio.Server pymodbus created; its socket tells the port bound for port 0.
        listener = server.transport
        if isinstance(listener, asyncio.Server) and listener.sockets:
            self._listener = listener
            self.port = int(listener.sockets[0].getsockname()[1])
        self._ticker = asyncio.create_task(self._tick(), name=f"sim.modbus[{self.port}].tick")
        log.info("modbus pump simulator listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stop the ticker, close every connection and the listener. Idempotent."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._server is not None:
            self._server.close()  # closes the listener and every client connection
            self._server = None
        if self._listener is not None:
            await self._listener.wait_closed()
            self._listener = None
        log.info("modbus pump simulator on %s:%d stopped", self.host, self.port)

    async def __aenter__(self) -> ModbusPumpSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set (the CLI's entry)."""
        async with self:
            await stop.wait()

    async def _tick(self) -> None:
        last = self._clock()
        was_faulty = self.model.fault
        while True:
            await asyncio.sleep(self.period)
            now = self._clock()
            reading = self.model.step(now - last)
            last = now
            if reading.fault != was_faulty:
                was_faulty = reading.fault
                log.info("modbus pump simulator on port %d: fault mode %s", self.port, reading.fault)

    async def _on_request(  # noqa: PLR0917 (the positional signature is pymodbus' SimAction)
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus' SimDevice action: apply a write to the model, then refresh the addressed table.

        ``registers`` is the table's live list starting at ``start_address`` (bit tables hold 16 bits a
        register); pymodbus stores ``values`` after this returns, and a non-None return is sent back as
        a Modbus exception."""
        if values is not None:
            error = self._apply_write(function_code, address, values)
            if error is not None:
                return error
        self._refresh(function_code, start_address, registers)
        return None

    def _apply_write(
        self, function_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        if function_code in _FC_HOLDING:
            for offset, raw in enumerate(values, start=address):
                if offset == HR_SPEED_SETPOINT:
                    if not 0 <= int(raw) <= self.model.params.max_speed_rpm:
                        return ExcCodes.ILLEGAL_VALUE
                    self.model.set_speed_setpoint(int(raw))
                    log.info("modbus pump simulator on port %d: speed setpoint %d rpm", self.port, int(raw))
        elif function_code in _FC_COILS:
            for offset, bit in enumerate(values, start=address):
                if offset == COIL_RUNNING:
                    self.model.set_running(bool(bit))
                    log.info("modbus pump simulator on port %d: running %s", self.port, bool(bit))
                elif offset == COIL_FAULT_INJECT:
                    self.model.set_fault(bool(bit))
        return None

    def _refresh(self, function_code: int, start_address: int, registers: list[int]) -> None:
        # Commands (holding, coils) come from the model's live state, so a write reads back before the
        # next tick; measurements come from the latest step.
        m, r = self.model, self.model.last
        if function_code in _FC_INPUT:
            table = input_registers(r)
        elif function_code in _FC_HOLDING:
            table = [_u16(m.speed_setpoint_rpm, 1)]
        elif function_code in _FC_COILS:
            table = [_pack_bits([m.running, m.forced_fault])]
        elif function_code in _FC_DISCRETE:
            turning = r.speed_rpm > _TURNING_RATIO * m.params.rated_speed_rpm
            table = [_pack_bits([turning, r.fault])]
        else:
            return
        # The table starts at address 0 (bit tables: register 0 holds bits 0..15); pymodbus appends a
        # sentinel register after the block, which is left alone.
        for offset, raw in enumerate(table):
            index = offset - start_address
            if 0 <= index < len(registers):
                registers[index] = raw


def _pack_bits(bits: list[bool]) -> int:
    """Bit 0 first, as pymodbus packs bit tables into registers."""
    return sum(1 << i for i, bit in enumerate(bits) if bit)

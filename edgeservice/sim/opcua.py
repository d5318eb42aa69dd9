"""An OPC UA line: a real asyncua server whose ``Line1`` object follows :class:`~.physics.MotorModel`.

Endpoint ``opc.tcp://HOST:PORT/fleetops/``, no security (``None`` policy, anonymous), as a bench PLC would
be before commissioning. Address space (namespace URI ``urn:fleetops:sim``, registered first, so its index
is 2; every identifier is a string)::

    node id                      browse name   type     unit  access
    ns=2;s=Line1                 Line1         Object
    ns=2;s=Line1.Temperature     Temperature   Double   °C    read        winding temperature
    ns=2;s=Line1.Pressure        Pressure      Double   bar   read        hydraulic pressure
    ns=2;s=Line1.Speed           Speed         Double   rpm   read/write  speed setpoint, 0..1800
    ns=2;s=Line1.ActualSpeed     ActualSpeed   Double   rpm   read        shaft speed, lags the setpoint
    ns=2;s=Line1.Running         Running       Boolean  -     read/write  run (true) / stop (false)
    ns=2;s=Line1.Count           Count         UInt32   parts read        parts produced since start
    ns=2;s=Line1.Fault           Fault         Boolean  -     read        fault mode active

Browse paths: ``0:Objects/2:Line1/2:Temperature`` and so on.

Design: one task steps the model every ``period`` seconds (100 ms by default) and publishes the
measurements with ``write_attribute_value`` (which feeds subscriptions). The writable variables are the
source of truth for the commands: each tick reads them back from the address space and hands them to the
model, so a client's write reads back at once and moves the line over the following ticks. A setpoint
outside 0..1800 is clamped by the model and the clamped value is written back on the next tick; writes
of the wrong type are refused by asyncua itself (BadTypeMismatch).

Deliberately not done: security policies and users, methods, alarms and conditions, history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from asyncua import ua
from asyncua.server.server import Server

from edgeservice.sim import SimulatorError
from edgeservice.sim.physics import MotorModel, MotorReading

log = logging.getLogger(__name__)

NAMESPACE_URI = "urn:fleetops:sim"
OBJECT = "Line1"
PATH = "/fleetops/"

# name -> (variant type, writable)
VARIABLES: dict[str, tuple[ua.VariantType, bool]] = {
    "Temperature": (ua.VariantType.Double, False),
    "Pressure": (ua.VariantType.Double, False),
    "Speed": (ua.VariantType.Double, True),
    "ActualSpeed": (ua.VariantType.Double, False),
    "Running": (ua.VariantType.Boolean, True),
    "Count": (ua.VariantType.UInt32, False),
    "Fault": (ua.VariantType.Boolean, False),
}


def node_id(name: str, ns: int = 2) -> str:
    """The node id string of ``Line1`` (``name=""``) or one of its variables."""
    return f"ns={ns};s={OBJECT}.{name}" if name else f"ns={ns};s={OBJECT}"


def _measurements(r: MotorReading) -> dict[str, float | int | bool]:
    return {
        "Temperature": round(r.temperature_c, 2),
        "Pressure": round(r.pressure_bar, 2),
        "ActualSpeed": round(r.speed_rpm, 1),
        "Count": r.count,
        "Fault": r.fault,
    }


class OpcUaLineSimulator:
    """A line motor behind an OPC UA server. ``async with`` it, or ``start()`` / ``stop()``.

    ``port=0`` binds a free port; :attr:`port` and :attr:`endpoint` are the bound ones after
    :meth:`start`."""

    protocol = "opcua"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 4840,
        *,
        seed: int = 0,
        period: float = 0.1,
        model: MotorModel | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.period = period
        self.model = model or MotorModel(seed)
        self._clock = clock
        self._server: Server | None = None
        self._nodes: dict[str, ua.NodeId] = {}
        self._ticker: asyncio.Task[None] | None = None

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}{PATH}"

    async def start(self) -> None:
        """Build the address space, listen, and start stepping the model."""
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("FleetOps simulated line")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ns = await server.register_namespace(NAMESPACE_URI)
        line = await server.nodes.objects.add_object(node_id("", ns), OBJECT)
        initial: dict[str, float | int | bool] = {
            **_measurements(self.model.last),
            "Speed": self.model.speed_setpoint_rpm,
            "Running": self.model.running,
        }
        for name, (vtype, writable) in VARIABLES.items():
            var = await line.add_variable(node_id(name, ns), name, ua.Variant(initial[name], vtype))
            if writable:
                await var.set_writable()
            self._nodes[name] = var.nodeid
        try:
            await server.start()
        except OSError as exc:
            raise SimulatorError(str(exc), protocol=self.protocol, host=self.host, port=self.port) from exc
        self._server = server
        if server.bserver is not None:  # the socket actually bound: differs from the request for port 0
            self.port = int(server.bserver.port)
        self._ticker = asyncio.create_task(self._tick(), name=f"sim.opcua[{self.port}].tick")
        log.info("opcua line simulator listening on %s", self.endpoint)

    async def stop(self) -> None:
        """Stop the ticker, then the server (closing client sessions). Idempotent."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._server is not None:
            await self._server.stop()
            self._server = None
            log.info("opcua line simulator on %s stopped", self.endpoint)

    async def __aenter__(self) -> OpcUaLineSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set (the CLI's entry)."""
        async with self:
            await stop.wait()

    def _read(self, name: str) -> object:
        assert self._server is not None
        variant = self._server.read_attribute_value(self._nodes[name]).Value
        return None if variant is None else variant.Value

    async def _write(self, name: str, value: float | int | bool) -> None:
        assert self._server is not None
        vtype = VARIABLES[name][0]
        await self._server.write_attribute_value(self._nodes[name], ua.DataValue(ua.Variant(value, vtype)))

    async def _tick(self) -> None:
        last = self._clock()
        was_faulty = self.model.fault
        while True:
            await asyncio.sleep(self.period)
            await self._apply_commands()
            now = self._clock()
            reading = self.model.step(now - last)
            last = now
            for name, value in _measurements(reading).items():
                await self._write(name, value)
            if reading.fault != was_faulty:
                was_faulty = reading.fault
                log.info("opcua line simulator on port %d: fault mode %s", self.port, reading.fault)

    async def _apply_commands(self) -> None:
        """Hand what clients wrote to the writable variables to the model."""
        running = bool(self._read("Running"))
        if running != self.model.running:
            self.model.set_running(running)
            log.info("opcua line simulator on port %d: running %s", self.port, running)
        wanted = self._read("Speed")
        if isinstance(wanted, float | int) and wanted != self.model.speed_setpoint_rpm:
            accepted = self.model.set_speed_setpoint(wanted)
            log.info("opcua line simulator on port %d: speed setpoint %.1f rpm", self.port, accepted)
            if accepted != wanted:
                await self._write("Speed", accepted)

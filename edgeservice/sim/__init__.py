"""Device simulators: a Modbus TCP pump and an OPC UA line motor, for the demo and the tests.

They stand in for the PLCs a field site would have, so that protocol adapters, device twins and the
anomaly detector can be exercised end to end on loopback with real protocol stacks (pymodbus, asyncua).
The plant behaviour lives in :mod:`edgeservice.sim.physics` (pure and seeded); :mod:`.modbus` and
:mod:`.opcua` only expose it. Run them with ``fleetops sim modbus|opcua --port P``.

This package imports neither protocol library at import time: each simulator module pulls in its own.
"""

from __future__ import annotations

from edgeservice.errors import EdgeError


class SimulatorError(EdgeError):
    """A simulator could not do what was asked (typically: listen on its address)."""

    def __init__(self, message: str, *, protocol: str, host: str, port: int) -> None:
        super().__init__(f"{protocol} simulator on {host}:{port}: {message}")
        self.message = message
        self.protocol = protocol
        self.host = host
        self.port = port

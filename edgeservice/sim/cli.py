"""``fleetops sim modbus|opcua``: run a device simulator until SIGTERM (registered as an entry point).

The protocol libraries are imported only for the simulator asked for, so ``fleetops sim modbus`` does not
load asyncua's address space code and vice versa.
"""

from __future__ import annotations

import argparse

from app.cli import run_until_signalled

_DEFAULT_PORTS = {"modbus": 502, "opcua": 4840}  # the protocols' registered ports


class SimCommand:
    name = "sim"
    help = "run a device simulator: a Modbus TCP pump or an OPC UA line, on loopback by default"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("protocol", choices=sorted(_DEFAULT_PORTS), help="which simulator to run")
        parser.add_argument(
            "--port",
            type=int,
            default=None,
            help="TCP port (default 502 for modbus, 4840 for opcua; 0 picks a free one, logged)",
        )
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        parser.add_argument("--seed", type=int, default=0, help="random seed of the plant model (default 0)")
        parser.add_argument(
            "--period", type=float, default=0.1, help="seconds between model updates (default 0.1)"
        )

    def run(self, args: argparse.Namespace) -> int:
        port = _DEFAULT_PORTS[args.protocol] if args.port is None else args.port
        if args.protocol == "modbus":
            from edgeservice.sim.modbus import ModbusPumpSimulator

            modbus = ModbusPumpSimulator(args.host, port, seed=args.seed, period=args.period)
            return run_until_signalled(modbus.run)
        from edgeservice.sim.opcua import OpcUaLineSimulator

        opcua = OpcUaLineSimulator(args.host, port, seed=args.seed, period=args.period)
        return run_until_signalled(opcua.run)


sim_command = SimCommand()

"""The ``fleetops`` command.

app/ may not import the services (DESIGN.md's layering), so the CLI knows no service by name: each
package contributes its subcommands through the ``fleetops.commands`` entry point group (see
pyproject.toml), and this module only discovers and dispatches them. A subcommand is any object with a
``name``, a ``help`` line, ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from importlib.metadata import entry_points
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Command(Protocol):
    name: str
    help: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_until_signalled(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> int:
    """Run a service until SIGTERM or SIGINT, then let it stop cleanly."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())
    return 0


def host_port(value: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[::1]:PORT`` for IPv6) for argparse."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def labels(value: str) -> dict[str, str]:
    """Parse ``k=v,k2=v2`` for argparse."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        key, sep, val = part.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"label {part!r} is not key=value")
        out[key] = val
    return out


def discover(argv: list[str]) -> list[Command]:
    """The subcommands to offer. Only the one named on the command line is imported when there is one:
    an edge process must not pay the cloud's imports in memory (its footprint is a product target)."""
    eps = list(entry_points(group="fleetops.commands"))
    wanted = next((a for a in argv if not a.startswith("-")), None)
    chosen = [ep for ep in eps if ep.name == wanted] or eps
    return sorted((ep.load() for ep in chosen), key=lambda c: c.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleetops", description="KubeEdge-style cloud and edge, in Python.")
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error (default info)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    for cmd in discover(argv):
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_command=cmd)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    chosen: Command = args._command
    return chosen.run(args)


if __name__ == "__main__":
    sys.exit(main())

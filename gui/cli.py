"""``fleetops gui``: the control-room GUI (registered as an entry point). Qt is imported in ``run`` only."""

from __future__ import annotations

import argparse
import sys


class GuiCommand:
    name = "gui"
    help = "the control-room GUI: fleet overview, camera wall, device twins, rollouts"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        where = parser.add_mutually_exclusive_group()
        where.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: as kubectl)")
        where.add_argument("--server", default=None, help="API server URL (with --token)")
        parser.add_argument("--token", default="", help="bearer token for --server")

    def run(self, args: argparse.Namespace) -> int:
        sys.stderr.write("fleetops gui: not built yet\n")
        return 2


gui_command = GuiCommand()

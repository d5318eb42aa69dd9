"""``fleetops tui``: the field engineer's terminal UI (registered as an entry point).

Textual, aiohttp and the app are imported inside ``run`` so that ``fleetops --help`` and the other subcommands
never pay for them, and the first screen appears while the first LIST is still in flight (< 1 s).
Where to connect, in order: ``--edge`` (the node's local API, no credentials), ``--server``/``--token``,
else a kubeconfig (``--kubeconfig``, ``$KUBECONFIG``'s first file, ``~/.kube/config``), as kubectl does.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

DEFAULT_EDGE_URL = "http://127.0.0.1:10550"


def default_kubeconfig() -> str:
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), "")
    return first or str(Path.home() / ".kube" / "config")


class TuiCommand:
    name = "tui"
    help = "the terminal UI: nodes, pods, deployments, devices and events, live (k9s-style keys)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        where = parser.add_mutually_exclusive_group()
        where.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: as kubectl)")
        where.add_argument("--server", default=None, help="API server URL (with --token)")
        where.add_argument("--edge", action="store_true", help="attach to this node's local edge API")
        parser.add_argument("--context", default=None, help="kubeconfig context (default: current)")
        parser.add_argument("--token", default="", help="bearer token for --server")
        parser.add_argument("--certificate-authority", default=None, help="CA file for --server")
        parser.add_argument(
            "--insecure-skip-tls-verify", action="store_true", help="do not verify --server's certificate"
        )
        parser.add_argument(
            "--edge-url", default=DEFAULT_EDGE_URL, help=f"with --edge (default {DEFAULT_EDGE_URL})"
        )
        parser.add_argument("--readonly", action="store_true", help="hide and refuse every write action")
        parser.add_argument("--namespace", "-n", default=None, help="show one namespace (default: all)")
        parser.add_argument(
            "--view", default="pods", help="first view: nodes, pods, deploy, devices or events (default pods)"
        )
        parser.add_argument("--apply", default=None, metavar="FILE", help="open the deploy screen on FILE")
        parser.add_argument("--log-file", default=None, help="write logs here (the screen is the terminal)")

    def run(self, args: argparse.Namespace) -> int:
        from app.client import AsyncClient
        from app.kubeconfig import KubeconfigError
        from tui.app import FleetApp
        from tui.data import ALIASES, CloudSource, Source

        view = ALIASES.get(args.view)
        if view is None:
            sys.stderr.write(
                f"fleetops tui: unknown view {args.view!r}: nodes, pods, deploy, devices or events\n"
            )
            return 2

        source: Source
        if args.edge:
            from tui.edge import EdgeSource

            source = EdgeSource(args.edge_url)
        elif args.server:
            client = AsyncClient(
                args.server,
                args.token,
                ca_file=args.certificate_authority,
                insecure=args.insecure_skip_tls_verify,
            )
            source = CloudSource(client, description=args.server)
        else:
            path = args.kubeconfig or default_kubeconfig()
            try:
                client = AsyncClient.from_kubeconfig(path, args.context)
            except KubeconfigError as exc:
                sys.stderr.write(f"fleetops tui: {exc}\n")
                return 2
            source = CloudSource(client, description=f"{client.server}", kubeconfig=path)
        _quiet_logging(args.log_file)
        app = FleetApp(
            source,
            readonly=args.readonly,
            view=view,
            namespace=args.namespace,
            apply_path=args.apply,
        )
        app.run()
        return 0


def _quiet_logging(log_file: str | None) -> None:
    """Log records must not be written over the screen: send them to ``log_file`` or drop them."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
    if log_file:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        root.addHandler(handler)
    else:
        root.addHandler(logging.NullHandler())


tui_command = TuiCommand()

"""``fleetops cloud`` and ``fleetops token``: the cloud's subcommands (registered as entry points)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.cli import host_port, run_until_signalled
from cloudservice.auth import TokenStore
from cloudservice.core import CloudConfig, CloudCore


class CloudCommand:
    name = "cloud"
    help = "run the cloud service (API, store, controllers, hub)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data-dir", type=Path, required=True, help="state: store, tokens, kubeconfig")
        parser.add_argument("--api-addr", type=host_port, default=("127.0.0.1", 6443), metavar="HOST:PORT")
        parser.add_argument("--hub-addr", type=host_port, default=("0.0.0.0", 10000), metavar="HOST:PORT")
        parser.add_argument("--store", default="", help="SQLAlchemy URL (default: SQLite in the data dir)")
        parser.add_argument(
            "--node-grace-period",
            type=float,
            default=40.0,
            help="seconds without a heartbeat before a node is NotReady (default 40, as Kubernetes)",
        )
        parser.add_argument("--hub-ping-interval", type=float, default=10.0, help="tunnel keepalive seconds")

    def run(self, args: argparse.Namespace) -> int:
        config = CloudConfig(
            data_dir=args.data_dir,
            api_host=args.api_addr[0],
            api_port=args.api_addr[1],
            hub_host=args.hub_addr[0],
            hub_port=args.hub_addr[1],
            store_url=args.store,
            node_grace_period=args.node_grace_period,
            hub_ping_interval=args.hub_ping_interval,
        )
        return run_until_signalled(CloudCore(config).run)


class TokenCommand:
    name = "token"
    help = "manage node join tokens"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="print a new join token")
        create.add_argument("--data-dir", type=Path, required=True)
        create.add_argument(
            "--ttl", type=float, default=None, help="seconds until it expires (default never)"
        )

    def run(self, args: argparse.Namespace) -> int:
        token = TokenStore(args.data_dir / "tokens.json").create("join", "nodes", ttl=args.ttl)
        sys.stdout.write(token + "\n")
        return 0


cloud_command = CloudCommand()
token_command = TokenCommand()

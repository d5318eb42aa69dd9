"""``fleetops edge``: run an edge node (registered as an entry point)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from app.cli import host_port, labels, run_until_signalled
from edgeservice.core import EdgeConfig, EdgeCore


class EdgeCommand:
    name = "edge"
    help = "run an edge node: join the cloud and run the pods bound to it"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--name", required=True, help="node name (DNS-1123)")
        parser.add_argument("--cloud", required=True, help="hub URL, ws://HOST:PORT or wss://HOST:PORT")
        parser.add_argument("--token", default="", help="join token (or --token-file)")
        parser.add_argument("--token-file", type=Path, default=None)
        parser.add_argument("--data-dir", type=Path, required=True, help="cache, pod state and logs")
        parser.add_argument("--labels", type=labels, default={}, help="k=v,... added to the Node")
        parser.add_argument("--status-interval", type=float, default=10.0, help="node heartbeat seconds")
        parser.add_argument("--ping-interval", type=float, default=10.0, help="tunnel keepalive seconds")
        parser.add_argument(
            "--restart-backoff", type=float, default=10.0, help="CrashLoopBackOff base seconds"
        )
        parser.add_argument(
            "--stop-pods-on-exit",
            action="store_true",
            help="stop every pod when the service stops (default: leave them running, as a kubelet does)",
        )
        parser.add_argument(
            "--mqtt",
            default="",
            metavar="URL",
            help=(
                "this node's MQTT broker for devices and pods, tcp://HOST:PORT; one broker serves one node "
                "(default: an embedded broker, started with the first device or pod)"
            ),
        )
        parser.add_argument(
            "--local-api-addr",
            type=host_port,
            default=("127.0.0.1", 10550),
            metavar="HOST:PORT",
            help="the node's local API (default 127.0.0.1:10550; port 0 picks one)",
        )
        parser.add_argument("--address", default="", help="node IP to report (default: the default route's)")

    def run(self, args: argparse.Namespace) -> int:
        token = args.token
        if not token and args.token_file is not None:
            token = args.token_file.read_text().strip()
        if not token:
            sys.stderr.write("fleetops edge: a join token is required (--token or --token-file)\n")
            return 2
        config = EdgeConfig(
            name=args.name,
            cloud_url=args.cloud,
            token=token,
            data_dir=args.data_dir,
            labels=args.labels,
            status_interval=args.status_interval,
            ping_interval=args.ping_interval,
            ping_timeout=args.ping_interval,
            restart_backoff=args.restart_backoff,
            address=args.address,
            stop_pods_on_exit=args.stop_pods_on_exit,
            local_api=args.local_api_addr,
            mqtt=args.mqtt or None,
        )
        return run_until_signalled(EdgeCore(config).run)


edge_command = EdgeCommand()


class BrokerCommand:
    name = "broker"
    help = (
        "run an MQTT broker for one edge (mosquitto, configured for low latency) until stopped; "
        "give it to that edge with --mqtt (a broker serves one node)"
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--port", type=int, default=1883, help="TCP port on 127.0.0.1 (default 1883)")

    def run(self, args: argparse.Namespace) -> int:
        from edgeservice.broker import BrokerError, EmbeddedBroker

        async def serve(stop: asyncio.Event) -> None:
            broker = EmbeddedBroker(port=args.port)
            await broker.start()
            try:
                await stop.wait()
            finally:
                await broker.stop()

        try:
            return run_until_signalled(serve)
        except BrokerError as exc:
            sys.stderr.write(f"fleetops broker: {exc}\n")
            return 1


broker_command = BrokerCommand()

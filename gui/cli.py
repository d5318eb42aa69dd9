"""``fleetops gui``: the control-room GUI (registered as an entry point). Qt is imported in ``run`` only,
so ``fleetops --help`` and the other subcommands never load it.

Where to connect, in order: ``--server`` (with ``--token``, ``--certificate-authority`` or
``--insecure-skip-tls-verify``), ``--kubeconfig`` (with ``--context``), else the server used last
(remembered in QSettings, without its token), else the default kubeconfig as kubectl finds it
(``$KUBECONFIG``'s first file, ``~/.kube/config``). A server that cannot be reached does not stop the
window from opening: the banner says why, and the watches keep retrying.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from PySide6.QtWidgets import QWidget

    from gui.target import Target


def target_from_args(args: argparse.Namespace, last: Target | None) -> Target:
    """The :class:`Target` the arguments name (``last``: the server used last, from the settings)."""
    from gui.target import Target

    timeout = float(getattr(args, "connect_timeout", 0.0) or 0.0)
    if args.server:
        target = Target(
            server=args.server,
            token=args.token,
            ca_file=args.certificate_authority,
            insecure=args.insecure_skip_tls_verify,
        )
    elif args.kubeconfig or args.context:
        target = Target(kubeconfig=args.kubeconfig or "", context=args.context)
    else:
        target = last or Target()
    return replace(target, connect_timeout=timeout) if timeout else target


def _seconds(text: str) -> float:
    """argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


class GuiCommand:
    name = "gui"
    help = "the control-room GUI: fleet overview, camera wall, device twins, rollouts"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        where = parser.add_mutually_exclusive_group()
        where.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: as kubectl)")
        where.add_argument("--server", default=None, help="API server URL (with --token)")
        parser.add_argument("--context", default=None, help="kubeconfig context (default: current)")
        parser.add_argument("--token", default="", help="bearer token for --server")
        parser.add_argument("--certificate-authority", default=None, help="CA file for --server")
        parser.add_argument(
            "--insecure-skip-tls-verify", action="store_true", help="do not verify --server's certificate"
        )
        parser.add_argument(
            "--connect-timeout",
            type=_seconds,
            default=None,
            metavar="SECONDS",
            help="how long connecting (TCP and TLS) may take before the server counts as unreachable "
            "(default: 10)",
        )
        parser.add_argument(
            "--page",
            default=None,
            help="first page: overview, nodes, pods, deploy, devices, events, cameras, apply (default: last)",
        )

    def run(self, args: argparse.Namespace) -> int:
        from PySide6.QtWidgets import QApplication

        from gui.bridge import AsyncBridge
        from gui.settings import APPLICATION, ORGANIZATION, Settings
        from gui.window import MainWindow

        app = QApplication.instance() or QApplication(sys.argv[:1])
        app.setOrganizationName(ORGANIZATION)
        app.setApplicationName(APPLICATION)
        settings = Settings()
        target = target_from_args(args, settings.last_server())
        bridge = AsyncBridge()
        bridge.start()
        try:
            window = MainWindow(bridge, settings, target=target)
            if args.page:
                window.show_page(args.page)
            window.show()
            restore = _close_on_signals(window)
            try:
                return int(app.exec())
            finally:
                restore()
        finally:
            bridge.stop()


def _close_on_signals(window: QWidget) -> Callable[[], None]:
    """Close the window (saving its settings) on Ctrl+C or SIGTERM; answers what restores the previous
    handlers. Python runs signal handlers only between bytecodes, and Qt's event loop runs none while
    idle, so a timer wakes the interpreter a few times a second to let them run."""
    from PySide6.QtCore import QTimer

    def close(_signum: int, _frame: object) -> None:
        window.close()

    previous = {sig: signal.signal(sig, close) for sig in (signal.SIGINT, signal.SIGTERM)}
    timer = QTimer(window)
    timer.timeout.connect(lambda: None)
    timer.start(250)

    def restore() -> None:
        timer.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


gui_command = GuiCommand()

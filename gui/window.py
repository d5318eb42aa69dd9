"""The main window: navigation, the pages, and the connection state that is always in sight.

Layout: a navigation list on the left (Overview, the five resource tables, the camera wall, Deploy), the
page on the right, a red banner above the page while the cloud cannot be reached (with the reason; the
watches retry by themselves and the tables keep the last state they saw), and the status bar's permanent
connection indicator and counts.

Everything the window shows lives in a :class:`~gui.session.Session`; "Connect to" (recent servers from
QSettings, or another URL) closes the session and builds the pages again on a new one at once: the old
session's sockets close on the I/O thread meanwhile (a server that hangs cannot stall the switch). The window
restores and saves its geometry, dock state, splitters, table headers, filters and last page
(:mod:`gui.settings`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from gui.bridge import AsyncBridge
from gui.camera import FrameFeed
from gui.errors import TargetError
from gui.fleet import Connection, StaticSource
from gui.rows import KINDS, SPECS, Kind
from gui.session import CLOSE_TIMEOUT, Session, wait_all
from gui.settings import Settings
from gui.target import Target
from gui.views.cameras import CameraPage
from gui.views.deploy import DeployPage
from gui.views.overview import OverviewPage
from gui.views.resources import ResourcePage

logger = logging.getLogger(__name__)

PAGES: tuple[tuple[str, str], ...] = (
    ("overview", "Overview"),
    ("nodes", "Nodes"),
    ("pods", "Pods"),
    ("deploy", "Deployments"),
    ("devices", "Devices"),
    ("events", "Events"),
    ("cameras", "Cameras"),
    ("apply", "Deploy"),
)
_STATE_COLOURS = {
    "connected": "#2e7d32",
    "connecting": "#666666",
    "reconnecting": "#b26a00",
    "unreachable": "#c62828",
    "failed": "#c62828",
    "offline": "#c62828",
}

# What the banner adds to the status text, per state that gets a banner.
_BANNERS = {
    "reconnecting": "Retrying by itself; the tables show the last state seen.",
    "unreachable": "Retrying by itself.",
    "failed": "Retrying every few seconds; check the credentials.",
    "offline": "Use File > Connect to.",
}


def connection_text(conn: Connection, where: str) -> str:
    """The status bar's words for a connection state."""
    if conn.state == "connected":
        return f"Connected to {where}"
    if conn.state == "connecting":
        return f"Connecting to {where}..."
    if conn.state == "reconnecting":
        return f"Reconnecting to {where}: {conn.reason}"
    if conn.state == "unreachable":
        return f"Cannot reach {where}: {conn.reason}"
    if conn.state == "offline":
        return f"Not connected: {conn.reason}"
    return f"Refused by {where}: {conn.reason}"


class MainWindow(QMainWindow):
    """See the module docstring. Give it a ``session`` (tests) or a ``target`` to connect to."""

    def __init__(
        self,
        bridge: AsyncBridge,
        settings: Settings,
        *,
        session: Session | None = None,
        target: Target | None = None,
        camera_feed: FrameFeed | None = None,
    ) -> None:
        super().__init__()
        self.bridge = bridge
        self.settings = settings
        self.camera_feed = camera_feed
        self.setWindowTitle("FleetOps control room")
        self.resize(1360, 860)
        self.pages: dict[str, QWidget] = {}
        self.session: Session | None = None
        self._closing: list[Session] = []  # closed sessions whose sockets may still be closing

        central = QWidget()
        outer = QVBoxLayout(central)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet(
            "QLabel { background:#c62828; color:white; font-weight:bold; padding:6px 12px; }"
        )
        self.banner.hide()
        outer.addWidget(self.banner)
        body = QHBoxLayout()
        body.setContentsMargins(0, 0, 0, 0)
        body.setSpacing(0)
        outer.addLayout(body, 1)
        self.nav = QListWidget()
        self.nav.setFixedWidth(150)
        self.nav.setStyleSheet(
            "QListWidget { background:#263238; color:#eceff1; border:none; font-size:13px; }"
            "QListWidget::item { padding:9px 14px; }"
            "QListWidget::item:selected { background:#37474f; color:white; border-left:3px solid #4fc3f7; }"
        )
        for name, title in PAGES:
            item = QListWidgetItem(title)
            item.setData(Qt.ItemDataRole.UserRole, name)
            self.nav.addItem(item)
        body.addWidget(self.nav)
        self.stack = QStackedWidget()
        body.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self.nav.currentRowChanged.connect(self._nav_changed)

        self.connection_label = QLabel()
        self.counts_label = QLabel()
        self.counts_label.setStyleSheet("color:#555555; padding:0 8px;")
        self.statusBar().addPermanentWidget(self.counts_label)
        self.statusBar().addPermanentWidget(self.connection_label)
        self._menus()

        geometry = settings.blob("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        state = settings.blob("window/state")
        if state is not None:
            self.restoreState(state)

        if session is not None:
            self.use_session(session)
        elif target is not None:
            self.connect_to(target)
        else:
            self.use_session(self._offline_session("no server given"))
        self.show_page(settings.page("overview"))

    # -- menus ----------------------------------------------------------------------------------------

    def _menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.servers_menu = file_menu.addMenu("&Connect to")
        self.servers_menu.aboutToShow.connect(self._fill_servers)
        file_menu.addSeparator()
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)
        view_menu = self.menuBar().addMenu("&View")
        for i, (name, title) in enumerate(PAGES):
            action = QAction(title, self)
            action.setShortcut(QKeySequence(f"Ctrl+{i + 1}"))
            action.triggered.connect(self._page_action(name))
            view_menu.addAction(action)

    def _page_action(self, name: str) -> Callable[[], None]:
        return lambda: self.show_page(name)

    def _fill_servers(self) -> None:
        self.servers_menu.clear()
        for target in self.settings.servers():
            action = self.servers_menu.addAction(target.label)
            action.triggered.connect(self._server_action(target))
        if self.settings.servers():
            self.servers_menu.addSeparator()
        other = self.servers_menu.addAction("Other server...")
        other.triggered.connect(self._ask_server)

    def _server_action(self, target: Target) -> Callable[[], None]:
        return lambda: self.connect_to(target)

    def _ask_server(self) -> None:
        url, ok = QInputDialog.getText(self, "Connect to", "API server URL (https://host:6443):")
        if ok and url.strip():
            self.connect_to(Target(server=url.strip()))

    # -- sessions -------------------------------------------------------------------------------------

    def connect_to(self, target: Target) -> None:
        """Close the current session and open one on ``target`` (asking for a token when it needs one)."""
        if target.needs_token:
            token, ok = QInputDialog.getText(
                self, "Token", f"Bearer token for {target.server}:", QLineEdit.EchoMode.Password
            )
            if not ok:
                return
            target = target.with_token(token.strip())
        try:
            session = Session.open(self.bridge, target)
        except TargetError as exc:
            logger.warning("cannot connect to %s: %s", target.label, exc)
            self.use_session(self._offline_session(str(exc)))
            return
        if self.camera_feed is not None:
            session.camera_feed = self.camera_feed
        self.settings.remember(target)
        self.use_session(session)

    def _offline_session(self, reason: str) -> Session:
        source = StaticSource({}, description="no connection", connection=Connection("offline", reason))
        return Session(self.bridge, source)

    def use_session(self, session: Session) -> None:
        """Show ``session``'s data: the pages are rebuilt on it and the previous session is closed."""
        page = self.current_page()
        self._close_session()
        self.session = session
        session.setParent(self)
        session.fleet.connection_changed.connect(self._connection_changed)
        session.fleet.updated.connect(self._update_counts)
        self._build_pages(session)
        session.start()
        self._connection_changed(session.fleet.connection)
        if page:
            self.show_page(page)

    def _close_session(self) -> None:
        for page in self.pages.values():
            if isinstance(page, ResourcePage | CameraPage | DeployPage):
                page.save()
            if isinstance(page, CameraPage | DeployPage):
                page.close_streams()
            if isinstance(page, ResourcePage):
                page.detail.suspend()
        for widget in list(self.pages.values()):
            self.stack.removeWidget(widget)
            widget.deleteLater()
        self.pages.clear()
        if self.session is not None:
            self.session.close()  # returns at once: the sockets close on the I/O thread
            self._closing = [s for s in self._closing if not s.closed]
            self._closing.append(self.session)
            self.session.deleteLater()
            self.session = None

    def _build_pages(self, session: Session) -> None:
        for name, _title in PAGES:
            widget: QWidget
            if name == "overview":
                overview = OverviewPage(session)
                overview.navigate.connect(self._navigate)
                widget = overview
            elif name == "cameras":
                widget = CameraPage(session, self.settings, feed=self.camera_feed)
            elif name == "apply":
                widget = DeployPage(session, self.settings)
            else:
                kind: Kind = next(k for k in KINDS if k == name)
                widget = ResourcePage(session, kind, self.settings)
            self.pages[name] = widget
            self.stack.addWidget(widget)

    # -- pages ----------------------------------------------------------------------------------------

    def current_page(self) -> str:
        item = self.nav.currentItem()
        return str(item.data(Qt.ItemDataRole.UserRole)) if item is not None else ""

    def show_page(self, name: str) -> None:
        names = [n for n, _ in PAGES]
        if name not in names:
            name = "overview"
        self.nav.setCurrentRow(names.index(name))
        self._nav_changed(names.index(name))

    def page(self, name: str) -> QWidget:
        return self.pages[name]

    def _nav_changed(self, row: int) -> None:
        if 0 <= row < len(PAGES) and PAGES[row][0] in self.pages:
            self.stack.setCurrentWidget(self.pages[PAGES[row][0]])
            self.settings.set_page(PAGES[row][0])

    def _navigate(self, kind: str, text: str) -> None:
        page = self.pages.get(kind)
        if isinstance(page, ResourcePage):
            page.set_filter_text(text)
            self.show_page(kind)

    # -- status ---------------------------------------------------------------------------------------

    def _connection_changed(self, conn: Connection) -> None:
        where = self.session.description if self.session is not None else "?"
        text = connection_text(conn, where)
        colour = _STATE_COLOURS.get(conn.state, "#666666")
        self.connection_label.setText(f"<span style='color:{colour}'>●</span> {text}")
        self.connection_label.setToolTip(text)
        if conn.state in _BANNERS:
            self.banner.setText(f"{text}. {_BANNERS[conn.state]}")
            self.banner.show()
        else:
            self.banner.hide()

    def _update_counts(self, _kinds: frozenset[str] | None = None) -> None:
        if self.session is None:
            return
        models = self.session.fleet.models
        parts = [f"{models[k].total():,} {SPECS[k].title.lower()}" for k in ("nodes", "pods", "devices")]
        self.counts_label.setText("  ·  ".join(parts))

    def connection_status(self) -> str:
        """The status bar's connection text (plain)."""
        return self.connection_label.toolTip()

    # -- closing --------------------------------------------------------------------------------------

    def save_settings(self) -> None:
        self.settings.set_blob("window/geometry", self.saveGeometry())
        self.settings.set_blob("window/state", self.saveState())
        page = self.current_page()
        if page:
            self.settings.set_page(page)
        for widget in self.pages.values():
            if isinstance(widget, ResourcePage | CameraPage | DeployPage):
                widget.save()
        self.settings.sync()

    def closeEvent(self, event: QCloseEvent) -> None:
        """Save the settings and close the sessions, waiting (up to :data:`CLOSE_TIMEOUT` in all) for
        their sockets to close. This is the one place the UI thread waits for the network, and on
        purpose: a closed window is followed by the I/O loop's stop (``fleetops gui`` returns), which
        cancels whatever is still running, so without the wait a close would be cut off half-way and the
        server would see connections reset instead of ended. The bound keeps a server that does not
        answer from holding the window open."""
        self.save_settings()
        self._close_session()
        wait_all(self._closing, CLOSE_TIMEOUT)
        self._closing.clear()
        super().closeEvent(event)

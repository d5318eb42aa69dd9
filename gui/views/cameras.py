"""The camera wall page: a grid of live tiles, each with its fps and latency; double-click to enlarge.

The streams and decoding are :class:`gui.camera.CameraWall` (off the UI thread, newest frame wins); a
tile only paints the picture it is handed, letterboxed, with its name, frame rate and latency over it.
The cameras are the Devices whose protocol is ``camera`` (from the live devices table), narrowed by the
filter box; at most :data:`MAX_TILES` are shown at once. "Inference overlay" asks every stream (or one
tile, from its context menu) for the overlay variant: the inference workload's frames with its results
drawn on them. The wall's streams are open only while the page is on screen.
"""

from __future__ import annotations

import math
import time

from PySide6.QtCore import QRect, Qt, QTimer, Signal
from PySide6.QtGui import (
    QColor,
    QContextMenuEvent,
    QFont,
    QHideEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QResizeEvent,
    QShowEvent,
)
from PySide6.QtWidgets import (
    QCheckBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from app.camera import is_camera
from gui.camera import CameraRef, CameraWall, FrameFeed, Picture, TileStats
from gui.session import Session
from gui.settings import Settings
from gui.views.common import InlineMessage

MAX_TILES = 16
STATS_REFRESH_MS = 1000  # the fps / latency captions are repainted at least this often


class CameraTile(QWidget):
    """One camera: the newest picture, its caption, its state. ``activated(tile_id)`` on double-click."""

    activated = Signal(str)
    overlay_toggled = Signal(str, bool)

    def __init__(self, wall: CameraWall, tile_id: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.wall = wall
        self.tile_id = tile_id
        self.ref = wall.ref(tile_id)
        self.picture: Picture | None = None
        self.stats = TileStats()
        self.status = wall.tile_status(tile_id)
        self.enlarged = False
        self.setMinimumSize(160, 120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setToolTip(
            f"{tile_id} on {self.ref.node or '?'}: double-click to enlarge, right-click for options"
        )

    def take_picture(self) -> None:
        picture = self.wall.take(self.tile_id)
        if picture is not None:
            self.picture = picture
            self.stats.record(picture, time.time())
            self.update()

    def set_status(self, text: str) -> None:
        self.status = text
        self.update()

    def caption(self, now: float) -> str:
        fps = self.stats.fps(now)
        latency = f"{self.stats.latency_ms:.0f} ms" if self.stats.latency_ms is not None else "- ms"
        return f"{fps:.1f} fps · {latency}"

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self.wall.set_size(self.tile_id, self.width(), self.height())

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        self.activated.emit(self.tile_id)
        event.accept()

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:
        menu = QMenu(self)
        overlay = menu.addAction("Inference overlay")
        overlay.setCheckable(True)
        overlay.setChecked(self.wall.overlay(self.tile_id))
        enlarge = menu.addAction("Back to the wall" if self.enlarged else "Enlarge")
        chosen = menu.exec(event.globalPos())
        if chosen is overlay:
            self.overlay_toggled.emit(self.tile_id, overlay.isChecked())
        elif chosen is enlarge:
            self.activated.emit(self.tile_id)

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("#101214"))
        if self.picture is not None:
            image = self.picture.image
            scale = min(self.width() / image.width(), self.height() / image.height())
            w, h = round(image.width() * scale), round(image.height() * scale)
            target = QRect((self.width() - w) // 2, (self.height() - h) // 2, w, h)
            if abs(scale - 1.0) > 0.01:
                p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
            p.drawImage(target, image)
        font = QFont(self.font())
        font.setPointSize(max(8, font.pointSize()))
        p.setFont(font)
        strip = 22
        p.fillRect(QRect(0, self.height() - strip, self.width(), strip), QColor(0, 0, 0, 160))
        p.setPen(QColor("#ffffff"))
        text_rect = QRect(8, self.height() - strip, self.width() - 16, strip)
        overlay = "  [overlay]" if self.wall.overlay(self.tile_id) else ""
        p.drawText(
            text_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, self.tile_id + overlay
        )
        p.drawText(
            text_rect, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, self.caption(time.time())
        )
        if self.status != "live" or self.picture is None:
            p.setPen(QColor("#ffb74d") if self.status.startswith("no ") else QColor("#cccccc"))
            words = self.status if self.status != "live" else "waiting for the first frame"
            p.drawText(
                self.rect().adjusted(10, 0, -10, -strip),
                Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                words,
            )
        p.end()


class CameraPage(QWidget):
    """See the module docstring."""

    def __init__(
        self,
        session: Session,
        settings: Settings,
        parent: QWidget | None = None,
        *,
        feed: FrameFeed | None = None,
        cameras: list[CameraRef] | None = None,
    ) -> None:
        super().__init__(parent)
        self.session = session
        self.settings = settings
        self.wall = CameraWall(session.bridge, feed or session.camera_feed, self)
        self.tiles: dict[str, CameraTile] = {}
        self.enlarged: str | None = None
        self._fixed = cameras  # a fixed list (tests, benchmarks) instead of the devices table
        self._all: list[CameraRef] = []

        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 4)
        top = QHBoxLayout()
        title = QLabel("Camera wall")
        title.setStyleSheet("font-size:15px; font-weight:bold;")
        top.addWidget(title)
        self.filter = QLineEdit(settings.text("cameras/filter"))
        self.filter.setPlaceholderText("Filter cameras by name or node")
        self.filter.setClearButtonEnabled(True)
        top.addWidget(self.filter, 1)
        self.overlay = QCheckBox("Inference overlay")
        self.overlay.setToolTip("Show the inference workload's results drawn on the frames")
        top.addWidget(self.overlay)
        self.back = QPushButton("Back to the wall")
        self.back.setVisible(False)
        top.addWidget(self.back)
        self.count = QLabel()
        self.count.setStyleSheet("color:#555555;")
        top.addWidget(self.count)
        layout.addLayout(top)
        self.message = InlineMessage()
        layout.addWidget(self.message)
        self.grid_host = QWidget()
        self.grid = QGridLayout(self.grid_host)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(4)
        layout.addWidget(self.grid_host, 1)
        self.empty = QLabel("No cameras: Devices whose protocol is 'camera' appear here.")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setStyleSheet("color:#777777;")
        self.grid.addWidget(self.empty, 0, 0)

        self.wall.picture.connect(self._picture)
        self.wall.status.connect(self._status)
        self.filter.textChanged.connect(lambda _t: self._arrange())
        self.overlay.toggled.connect(self._overlay_all)
        self.back.clicked.connect(lambda: self.enlarge(None))
        session.fleet.updated.connect(self._fleet_updated)
        self._timer = QTimer(self)
        self._timer.setInterval(STATS_REFRESH_MS)
        self._timer.timeout.connect(self._repaint)
        self.wall.set_active(False)
        if self.wall.feed is None:
            self.message.show_message(
                "warning",
                "This connection cannot stream cameras (its client has no camera_frames): no video.",
            )
        self.refresh_cameras()

    # -- cameras --------------------------------------------------------------------------------------

    def refresh_cameras(self) -> None:
        if self._fixed is not None:
            cameras = list(self._fixed)
        else:
            rows = [r for r in self.session.fleet.models["devices"].all_rows() if is_camera(r.raw)]
            cameras = [CameraRef(r.namespace, r.name, r.node) for r in sorted(rows, key=lambda r: r.key)]
        if cameras != self._all:
            self._all = cameras
            self._arrange()

    def _fleet_updated(self, kinds: frozenset[str]) -> None:
        if "devices" in kinds and self._fixed is None:
            self.refresh_cameras()

    def shown_cameras(self) -> list[CameraRef]:
        needle = self.filter.text().strip().lower()
        chosen = [c for c in self._all if not needle or needle in c.id.lower() or needle in c.node.lower()]
        return chosen[:MAX_TILES]

    def _arrange(self) -> None:
        cameras = self.shown_cameras()
        self.wall.set_cameras(cameras, overlay=self.overlay.isChecked())
        wanted = {c.id for c in cameras}
        for tile_id in [t for t in self.tiles if t not in wanted]:
            tile = self.tiles.pop(tile_id)
            tile.setParent(None)
            tile.deleteLater()
        for c in cameras:
            if c.id not in self.tiles:
                tile = CameraTile(self.wall, c.id)
                tile.activated.connect(self._activated)
                tile.overlay_toggled.connect(self._overlay_one)
                self.tiles[c.id] = tile
        if self.enlarged not in self.tiles:
            self.enlarged = None
        total = len(self._all)
        self.count.setText(
            f"{len(cameras)} of {total} cameras"
            if len(cameras) < total
            else f"{total} camera{'s' * (total != 1)}"
        )
        self._layout_tiles([c.id for c in cameras])

    def _layout_tiles(self, order: list[str]) -> None:
        while self.grid.count():
            item = self.grid.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.hide()
        shown = [self.enlarged] if self.enlarged else order
        self.empty.setVisible(not shown)
        if not shown:
            self.grid.addWidget(self.empty, 0, 0)
            return
        columns = max(1, math.ceil(math.sqrt(len(shown))))
        for i, tile_id in enumerate(shown):
            tile = self.tiles[tile_id]
            self.grid.addWidget(tile, i // columns, i % columns)
            tile.show()
        for tile_id, tile in self.tiles.items():
            visible = tile_id in shown
            tile.enlarged = tile_id == self.enlarged
            self.wall.set_visible(tile_id, visible)
        self.back.setVisible(self.enlarged is not None)

    def enlarge(self, tile_id: str | None) -> None:
        """Show ``tile_id`` alone (None: back to the whole wall)."""
        self.enlarged = tile_id if tile_id in self.tiles else None
        self._layout_tiles([c.id for c in self.shown_cameras()])

    def _activated(self, tile_id: str) -> None:
        self.enlarge(None if self.enlarged == tile_id else tile_id)

    def _overlay_all(self, on: bool) -> None:
        for tile_id in self.tiles:
            self.wall.set_overlay(tile_id, on)
        self._repaint()

    def _overlay_one(self, tile_id: str, on: bool) -> None:
        self.wall.set_overlay(tile_id, on)
        self.tiles[tile_id].update()

    # -- frames ---------------------------------------------------------------------------------------

    def _picture(self, tile_id: str) -> None:
        tile = self.tiles.get(tile_id)
        if tile is not None:
            tile.take_picture()

    def _status(self, tile_id: str, text: str) -> None:
        tile = self.tiles.get(tile_id)
        if tile is not None:
            tile.set_status(text)

    def _repaint(self) -> None:
        for tile in self.tiles.values():
            tile.update()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.wall.set_active(True)
        self._timer.start()

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        self.wall.set_active(False)
        self._timer.stop()

    def save(self) -> None:
        self.settings.set_text("cameras/filter", self.filter.text())

    def close_streams(self) -> None:
        self.wall.close()

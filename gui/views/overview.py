"""The overview page: the fleet at a glance (see :mod:`gui.overview` for what is counted and listed).

Counts are cards whose numbers open the matching table, filtered; below them, the nodes whose link is
lost (since when, and why), the link changes seen since the window connected, and the newest events.
The page re-summarises at most once a second, and only while it is shown.
"""

from __future__ import annotations

import datetime as dt
import time

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.describe import NO_TIME, age_text
from gui.overview import Summary, summarize
from gui.session import Session
from gui.views.common import CountCard

REFRESH_MS = 1000

_NODE_FILTERS = {"Ready": "ready", "NotReady": "notready", "Unknown": "notready"}


def _clock(epoch: float) -> str:
    if epoch == NO_TIME:
        return "<unknown>"
    return dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _table(headers: list[str]) -> QTableWidget:
    t = QTableWidget(0, len(headers))
    t.setHorizontalHeaderLabels(headers)
    t.verticalHeader().hide()
    t.verticalHeader().setDefaultSectionSize(22)
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
    t.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    t.setWordWrap(False)
    t.setShowGrid(False)
    t.setAlternatingRowColors(True)
    t.horizontalHeader().setStretchLastSection(True)
    t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    return t


def _fill(table: QTableWidget, rows: list[list[str]], colours: list[str | None] | None = None) -> None:
    table.setRowCount(len(rows))
    for i, cells in enumerate(rows):
        colour = colours[i] if colours else None
        for j, text in enumerate(cells):
            item = table.item(i, j)
            if item is None:
                item = QTableWidgetItem()
                table.setItem(i, j, item)
            item.setText(text)
            item.setToolTip(text if len(text) > 40 else "")
            if colour and j < 2:
                item.setForeground(QColor(colour))
            elif j < 2:
                item.setData(Qt.ItemDataRole.ForegroundRole, None)


class OverviewPage(QWidget):
    """See the module docstring. ``navigate(kind, filter)`` asks the window to open a filtered table."""

    navigate = Signal(str, str)

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.summary: Summary | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 10, 10, 6)
        self.heading = QLabel()
        self.heading.setStyleSheet("font-size:16px; font-weight:bold;")
        layout.addWidget(self.heading)

        cards = QGridLayout()
        cards.setHorizontalSpacing(10)
        self.nodes = CountCard("Nodes", [("Ready", "ok"), ("NotReady", "bad"), ("Unknown", "warn")])
        self.nodes.setToolTip("Unknown: the cloud stopped hearing from the node (its link is down)")
        self.pods = CountCard(
            "Pods",
            [
                ("Running", "ok"),
                ("Pending", "warn"),
                ("Failed", "bad"),
                ("Succeeded", ""),
                ("Unknown", "warn"),
            ],
        )
        self.devices = CountCard("Devices", [("online", "ok"), ("offline", "bad"), ("unknown", "warn")])
        for i, card in enumerate((self.nodes, self.pods, self.devices)):
            cards.addWidget(card, 0, i)
        layout.addLayout(cards)
        self.nodes.picked.connect(lambda label: self.navigate.emit("nodes", _NODE_FILTERS.get(label, "")))
        self.pods.picked.connect(lambda label: self.navigate.emit("pods", label.lower()))
        self.devices.picked.connect(lambda label: self.navigate.emit("devices", label))

        split = QSplitter(Qt.Orientation.Vertical)
        split.setChildrenCollapsible(False)
        layout.addWidget(split, 1)
        top = QWidget()
        top_row = QHBoxLayout(top)
        top_row.setContentsMargins(0, 6, 0, 0)
        lost_box = QVBoxLayout()
        self.lost_title = QLabel("Link lost")
        self.lost_title.setStyleSheet("font-weight:bold;")
        lost_box.addWidget(self.lost_title)
        self.lost = _table(["NODE", "STATE", "SINCE", "FOR", "REASON"])
        for i, w in enumerate((150, 80, 150, 60)):
            self.lost.setColumnWidth(i, w)
        lost_box.addWidget(self.lost)
        top_row.addLayout(lost_box, 3)
        changes_box = QVBoxLayout()
        title = QLabel("Link changes seen")
        title.setStyleSheet("font-weight:bold;")
        changes_box.addWidget(title)
        self.changes = _table(["WHEN", "NODE", "CHANGE"])
        for i, w in enumerate((150, 140)):
            self.changes.setColumnWidth(i, w)
        changes_box.addWidget(self.changes)
        top_row.addLayout(changes_box, 2)
        split.addWidget(top)
        bottom = QWidget()
        events_box = QVBoxLayout(bottom)
        events_box.setContentsMargins(0, 6, 0, 0)
        title = QLabel("Recent events")
        title.setStyleSheet("font-weight:bold;")
        events_box.addWidget(title)
        self.events = _table(["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"])
        for i, w in enumerate((80, 70, 140, 220)):
            self.events.setColumnWidth(i, w)
        events_box.addWidget(self.events)
        split.addWidget(bottom)
        split.setSizes([260, 300])

        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        self._dirty = True
        self._last = 0.0
        self._soon = QTimer(self)
        self._soon.setSingleShot(True)
        self._soon.timeout.connect(self.refresh)
        session.fleet.updated.connect(self._updated)
        self.refresh()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._timer.start()
        self.refresh()

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        self._timer.stop()

    def _updated(self, _kinds: frozenset[str]) -> None:
        self._dirty = True
        if self.isVisible() and not self._soon.isActive():
            # Soon, but at most once a second: a burst of changes is one re-summary.
            wait = max(0.0, self._last + REFRESH_MS / 1000 - time.monotonic())
            self._soon.start(int(wait * 1000))

    def refresh(self) -> None:
        fleet = self.session.fleet
        now = time.time()
        self._last = time.monotonic()
        if self._dirty or self.summary is None:
            self._dirty = False
            self.summary = summarize(
                groups=fleet.groups,
                nodes=fleet.models["nodes"].all_rows(),
                devices=fleet.models["devices"].all_rows(),
                events=fleet.models["events"].all_rows(),
                link_changes=list(fleet.link_changes),
            )
        s = self.summary
        loaded = all(fleet.loaded(k) for k in ("nodes", "pods", "devices"))
        where = self.session.description
        self.heading.setText(f"Fleet at {where}" + ("" if loaded else "  ·  loading..."))
        self.nodes.set_counts(dict(s.nodes), s.node_total)
        self.pods.set_counts(dict(s.pods), s.pod_total)
        self.devices.set_counts(dict(s.devices), s.device_total)
        self.devices.title.setText(f"Devices  ·  {s.device_total:,}  ·  {s.cameras} camera(s)")
        self.lost_title.setText(f"Link lost  ·  {len(s.offline)}" if s.offline else "Link lost  ·  none")
        _fill(
            self.lost,
            [[o.name, o.state, _clock(o.since), age_text(o.since, now), o.reason] for o in s.offline],
            ["#c62828" if o.state == "Unknown" else "#b26a00" for o in s.offline],
        )
        _fill(
            self.changes,
            [
                [_clock(c.at), c.node, f"link lost ({c.state})" if c.lost else "link restored"]
                for c in s.link_changes
            ],
            ["#c62828" if c.lost else "#2e7d32" for c in s.link_changes],
        )
        _fill(
            self.events,
            [[age_text(r.since, now), *r.cells[1:5]] for r in s.events],
            ["#b26a00" if r.group == "Warning" else None for r in s.events],
        )

"""A resource page: the live table of one kind, its filter, and the detail pane of the selected object.

The table is a ``QTableView`` (``gui.views.common.TableView``: it paints with the I/O thread stepped
aside) on the kind's :class:`~gui.tablemodel.ResourceTableModel`, with fixed-height rows, no vertical
header and preset column widths (``ResizeToContents`` would measure all 100,000 rows), so scrolling and
painting cost only the rows on screen. Column widths, order and sort, the splitter and the filter are
saved in the settings. The selection is kept by object, not by row number: when the model is reset (a
relist, a new filter) the page re-selects the same key; the first row is selected when a table first
loads, so the detail pane is never blank on arrival.

The detail pane's tabs are Describe and YAML for every kind, Logs (followed) for pods, Twin for devices
and Rollout for deployments. A tab's stream runs only while it is shown: the logs, the twin's watch and
history poll, the rollout's watches stop when another tab, page or object is picked.
"""

from __future__ import annotations

import logging
import time

from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt, QTimer
from PySide6.QtGui import QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.describe import describe, to_yaml
from app.query import FilterError, parse_filter
from gui.describe import events_for
from gui.logs import MAX_LINES, LogFollower
from gui.rollout import RolloutController
from gui.rows import SPECS, Key, Kind, Row
from gui.session import Session
from gui.settings import Settings
from gui.twin import TwinController
from gui.views.common import CodeView, InlineMessage, TableView
from gui.views.rollout import RolloutPanel
from gui.views.twin import TwinPanel

logger = logging.getLogger(__name__)

ROW_HEIGHT = 22
FILTER_DELAY_MS = 150  # typing pauses this long before the filter is applied
DETAIL_REFRESH_MS = 300  # the detail pane re-renders a changing object at most this often


class LogPane(QWidget):
    """A followed log: state line, reopen, auto-scroll, the lines (the newest 10,000)."""

    def __init__(self, follower: LogFollower, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.follower = follower
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        bar = QHBoxLayout()
        self.state = QLabel("no pod selected")
        self.reopen = QPushButton("Reopen")
        self.reopen.setEnabled(False)
        self.autoscroll = QCheckBox("Follow")
        self.autoscroll.setChecked(True)
        clear = QPushButton("Clear")
        bar.addWidget(self.state, 1)
        bar.addWidget(self.autoscroll)
        bar.addWidget(self.reopen)
        bar.addWidget(clear)
        layout.addLayout(bar)
        self.text = CodeView()
        self.text.setMaximumBlockCount(MAX_LINES)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        layout.addWidget(self.text, 1)
        self.message = InlineMessage()
        layout.addWidget(self.message)
        clear.clicked.connect(self.text.clear)
        follower.lines.connect(self._lines)
        follower.state_changed.connect(self._state)
        self._target: tuple[str, str] | None = None
        self.reopen.clicked.connect(self._reopen)

    def follow(self, namespace: str, name: str) -> None:
        if self._target == (namespace, name) and self.follower.state in ("opening", "following"):
            return
        self._target = (namespace, name)
        self.text.clear()
        self.message.clear_message()
        self.follower.follow(namespace, name)

    def stop(self) -> None:
        self.follower.stop()
        self._target = None

    def _reopen(self) -> None:
        if self._target is not None:
            ns, name = self._target
            self._target = None
            self.follow(ns, name)

    def _lines(self, lines: list[str]) -> None:
        bar = self.text.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 2
        self.text.appendPlainText("\n".join(lines))
        if self.autoscroll.isChecked() or at_end:
            bar.setValue(bar.maximum())

    def _state(self, state: str, reason: str) -> None:
        target = "/".join(self._target) if self._target else ""
        words = {
            "opening": f"opening the log of {target}...",
            "following": f"following {target}",
            "ended": f"{target}: stream ended",
            "failed": f"{target}: no log",
        }
        self.state.setText(words.get(state, state))
        self.reopen.setEnabled(state in ("ended", "failed"))
        if state in ("ended", "failed") and reason:
            self.message.show_message("warning" if state == "ended" else "error", reason)
        else:
            self.message.clear_message()


class DetailPane(QTabWidget):
    """The selected object's tabs (see the module docstring)."""

    def __init__(self, session: Session, kind: Kind, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.kind = kind
        self.model = session.fleet.models[kind]
        self.key: Key | None = None
        self._shown: dict[str, object] = {}  # tab -> the object it last rendered
        self._suspended = True  # until the page is first shown: a hidden page opens no stream
        self.describe = CodeView()
        self.yaml = CodeView()
        bridge, client = session.bridge, session.client
        self.logs: LogPane | None = None
        self.twin: TwinPanel | None = None
        self.rollout: RolloutPanel | None = None
        if kind == "devices":
            self.twin = TwinPanel(TwinController(bridge, client, self))
            self.addTab(self.twin, "Twin")
        if kind == "deploy":
            self.rollout = RolloutPanel(RolloutController(bridge, client, self))
            self.addTab(self.rollout, "Rollout")
        self.addTab(self.describe, "Describe")
        self.addTab(self.yaml, "YAML")
        if kind == "pods":
            self.logs = LogPane(LogFollower(bridge, client, self))
            self.addTab(self.logs, "Logs")
        self.placeholder = "Select a row to see its details."
        self.describe.setPlaceholderText(self.placeholder)
        self.yaml.setPlaceholderText(self.placeholder)
        self.currentChanged.connect(lambda _i: self.refresh())
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DETAIL_REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        session.fleet.updated.connect(self._fleet_updated)

    def show_key(self, key: Key | None) -> None:
        if key == self.key:
            return
        self.key = key
        self._shown.clear()
        self.refresh()

    def suspend(self) -> None:
        """Stop the current tab's streams (the page is hidden)."""
        self._suspended = True
        self._stop_streams(keep=None)

    def resume(self) -> None:
        self._suspended = False
        self._shown.clear()
        self.refresh()

    def _fleet_updated(self, kinds: frozenset[str]) -> None:
        if self.key is not None and (self.kind in kinds or "events" in kinds) and not self._timer.isActive():
            self._timer.start()

    def _stop_streams(self, keep: QWidget | None) -> None:
        if self.logs is not None and keep is not self.logs:
            self.logs.stop()
        if self.twin is not None and keep is not self.twin:
            self.twin.controller.close()
        if self.rollout is not None and keep is not self.rollout:
            self.rollout.controller.close()

    def refresh(self) -> None:
        current = self.currentWidget()
        if self._suspended:
            return
        self._stop_streams(keep=current)
        row = self.model.get(self.key) if self.key is not None else None
        if row is None:
            self._show_nothing(current)
            return
        if current is self.describe:
            events = list(self.session.fleet.models["events"].all_rows())
            raw_events = events_for(self.kind, row.raw, events) if self.kind != "events" else []
            seen = (row.raw, len(raw_events), raw_events[-1] if raw_events else None)
            if self._shown.get("describe") != seen:
                self._shown["describe"] = seen
                pods = self.session.fleet.pods_per_node[row.name] if self.kind == "nodes" else 0
                self.describe.set_text(describe(self.kind, row.raw, raw_events, time.time(), pods=pods))
        elif current is self.yaml:
            if self._shown.get("yaml") is not row.raw:
                self._shown["yaml"] = row.raw
                self.yaml.set_text(to_yaml(row.raw))
        elif current is self.logs and self.logs is not None:
            self.logs.follow(row.namespace, row.name)
        elif current is self.twin and self.twin is not None:
            self.twin.controller.open(row.namespace, row.name)
        elif current is self.rollout and self.rollout is not None:
            self.rollout.controller.follow(row.namespace, row.name)

    def _show_nothing(self, current: QWidget) -> None:
        if current is self.describe:
            self.describe.set_text("")
        elif current is self.yaml:
            self.yaml.set_text("")
        self._stop_streams(keep=None)
        self._shown.clear()


class ResourcePage(QWidget):
    """One kind's table, filter and detail pane."""

    def __init__(
        self, session: Session, kind: Kind, settings: Settings, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.session = session
        self.kind = kind
        self.settings = settings
        self.spec = SPECS[kind]
        self.model = session.fleet.models[kind]
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 4)
        top = QHBoxLayout()
        title = QLabel(self.spec.title)
        title.setStyleSheet("font-size:15px; font-weight:bold;")
        top.addWidget(title)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter: text or regex, -l key=value for labels")
        self.filter.setClearButtonEnabled(True)
        top.addWidget(self.filter, 1)
        self.count = QLabel()
        self.count.setStyleSheet("color:#555555;")
        top.addWidget(self.count)
        layout.addLayout(top)
        self.filter_error = InlineMessage()
        layout.addWidget(self.filter_error)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setChildrenCollapsible(False)
        layout.addWidget(self.splitter, 1)
        self.table = TableView()
        self._setup_table()
        self.splitter.addWidget(self.table)
        self.detail = DetailPane(session, kind)
        self.splitter.addWidget(self.detail)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)

        self._selected: Key | None = None
        self._restore_key: Key | None = None
        self._restore_scroll = 0
        self._auto_selected = False
        self._filter_timer = QTimer(self)
        self._filter_timer.setSingleShot(True)
        self._filter_timer.setInterval(FILTER_DELAY_MS)
        self._filter_timer.timeout.connect(self.apply_filter)
        self.filter.textChanged.connect(lambda _t: self._filter_timer.start())
        self.model.modelAboutToBeReset.connect(self._remember_selection)
        self.model.modelReset.connect(self._restore_selection)
        self.model.modelReset.connect(self._update_count)  # a filter applied off the UI thread lands
        self.model.layoutChanged.connect(self._update_count)
        session.fleet.updated.connect(self._fleet_updated)
        self.restore()
        self._update_count()

    def _setup_table(self) -> None:
        t = self.table
        t.setModel(self.model)
        t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        t.setWordWrap(False)
        t.setShowGrid(False)
        t.setAlternatingRowColors(True)
        t.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        vh = t.verticalHeader()
        vh.hide()
        vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vh.setDefaultSectionSize(ROW_HEIGHT)
        hh = t.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hh.setStretchLastSection(True)
        hh.setHighlightSections(False)
        for i, column in enumerate(self.spec.columns):
            t.setColumnWidth(i, column.width)
        hh.setSortIndicator(self.spec.sort_column, Qt.SortOrder.AscendingOrder)
        t.setSortingEnabled(True)
        selection = t.selectionModel()
        selection.currentRowChanged.connect(self._current_changed)

    # -- state ----------------------------------------------------------------------------------------

    def restore(self) -> None:
        header = self.settings.blob(f"layout/{self.kind}/header")
        if header is not None:
            self.table.horizontalHeader().restoreState(header)
        splitter = self.settings.blob(f"layout/{self.kind}/splitter")
        if splitter is not None:
            self.splitter.restoreState(splitter)
        else:
            # The twin and rollout panels need room; a describe text less.
            self.splitter.setSizes([600, 600] if self.kind in ("devices", "deploy") else [760, 440])
        text = self.settings.text(f"filters/{self.kind}")
        if text:
            self.filter.setText(text)
            self.apply_filter()

    def save(self) -> None:
        self.settings.set_blob(f"layout/{self.kind}/header", self.table.horizontalHeader().saveState())
        self.settings.set_blob(f"layout/{self.kind}/splitter", self.splitter.saveState())
        self.settings.set_text(f"filters/{self.kind}", self.filter.text())

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.detail.resume()

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        self.detail.suspend()

    # -- filter, sort, selection ----------------------------------------------------------------------

    def set_filter_text(self, text: str) -> None:
        """Type ``text`` into the filter and apply it now (navigation from the overview, tests)."""
        self.filter.setText(text)
        self._filter_timer.stop()
        self.apply_filter()

    def apply_filter(self) -> None:
        text = self.filter.text()
        try:
            flt = parse_filter(text)
        except FilterError as exc:
            self.filter_error.show_message("error", str(exc))
            return
        self.filter_error.clear_message()
        self.model.set_filter(flt)
        self._update_count()

    def _current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        key = self.model.key_at(current.row()) if current.isValid() else None
        self._selected = key
        self.detail.show_key(key)

    def select_key(self, key: Key) -> bool:
        """Select the row of ``key`` (False when it is not shown)."""
        pos = self.model.position(key)
        if pos is None:
            return False
        index = self.model.index(pos, 0)
        self.table.selectionModel().setCurrentIndex(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows
        )
        return True

    def selected_row(self) -> Row | None:
        return self.model.get(self._selected) if self._selected is not None else None

    def _remember_selection(self) -> None:
        self._restore_key = self._selected
        self._restore_scroll = self.table.verticalScrollBar().value()

    def _restore_selection(self) -> None:
        key = self._restore_key
        if key is not None and self.select_key(key):
            return
        self.table.verticalScrollBar().setValue(self._restore_scroll)
        if key is not None:
            self._selected = None
            self.detail.show_key(None)

    def _fleet_updated(self, kinds: frozenset[str]) -> None:
        if self.kind in kinds:
            self._update_count()
            if self._selected is None and not self._auto_selected and self.model.rowCount():
                # A first row selected once the table loads, so the detail pane is never blank on arrival.
                self._auto_selected = True
                self.select_key(self.model.table.at(0).key)

    def _update_count(self) -> None:
        shown, total = self.model.rowCount(), self.model.total()
        noun = self.spec.title.lower()
        if not self.model.loaded:
            self.count.setText("loading...")
        elif shown == total:
            self.count.setText(f"{total:,} {noun}")
        else:
            self.count.setText(f"{shown:,} of {total:,} {noun}")

"""The rollout panel: progress bars against the desired count, ``kubectl rollout status``'s sentence,
conditions, the history (newest first, the current revision marked) and the pods with their revision;
a rollback to the previous revision or to the one selected in the history, after an inline confirmation.

What it shows is :class:`gui.rollout.RolloutController`'s view; this module only lays it out.
"""

from __future__ import annotations

from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gui.rollout import RolloutController
from gui.views.common import InlineMessage


def _table(headers: list[str]) -> QTableWidget:
    t = QTableWidget(0, len(headers))
    t.setHorizontalHeaderLabels(headers)
    t.verticalHeader().hide()
    t.verticalHeader().setDefaultSectionSize(22)
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    t.horizontalHeader().setStretchLastSection(True)
    t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    return t


def _fill(table: QTableWidget, rows: list[list[str]]) -> None:
    table.setRowCount(len(rows))
    for i, cells in enumerate(rows):
        for j, text in enumerate(cells):
            item = table.item(i, j)
            if item is None:
                table.setItem(i, j, QTableWidgetItem(text))
            elif item.text() != text:
                item.setText(text)


def _fit_rows(table: QTableWidget, most: int) -> None:
    """Make ``table`` as tall as its rows (one at least, ``most`` at most; it scrolls beyond), so the
    short tables leave the room to the pods table."""
    rows = min(max(table.rowCount(), 1), most)
    height = (
        table.horizontalHeader().sizeHint().height()
        + rows * table.verticalHeader().defaultSectionSize()
        + 2 * table.frameWidth()
        + 2
    )
    table.setFixedHeight(height)


class RolloutPanel(QWidget):
    """Lays out a :class:`RolloutController`."""

    def __init__(self, controller: RolloutController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.title = QLabel()
        self.title.setStyleSheet("font-weight:bold;")
        layout.addWidget(self.title)
        bars = QGridLayout()
        self.bars: dict[str, QProgressBar] = {}
        for i, name in enumerate(("Updated", "Ready", "Available")):
            bars.addWidget(QLabel(name), i, 0)
            bar = QProgressBar()
            bar.setFormat("%v / %m")
            bar.setTextVisible(True)
            bars.addWidget(bar, i, 1)
            self.bars[name.lower()] = bar
        layout.addLayout(bars)
        self.status = QLabel()
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.message = InlineMessage()
        layout.addWidget(self.message)

        actions = QHBoxLayout()
        self.rollback_button = QPushButton("Roll back to previous revision")
        self.rollback_selected = QPushButton("Roll back to selected revision")
        self.rollback_button.setToolTip(
            "kubectl rollout undo: the previous revision's template, as a new revision"
        )
        actions.addWidget(self.rollback_button)
        actions.addWidget(self.rollback_selected)
        actions.addStretch(1)
        layout.addLayout(actions)
        self.confirm = QFrame()
        self.confirm.setStyleSheet(
            "QFrame { background:#fff4e5; border:1px solid #ffd8a8; border-radius:3px; }"
        )
        confirm_row = QHBoxLayout(self.confirm)
        self.confirm_text = QLabel()
        self.confirm_yes = QPushButton("Roll back")
        self.confirm_no = QPushButton("Cancel")
        confirm_row.addWidget(self.confirm_text, 1)
        confirm_row.addWidget(self.confirm_yes)
        confirm_row.addWidget(self.confirm_no)
        self.confirm.hide()
        layout.addWidget(self.confirm)

        layout.addWidget(QLabel("Conditions"))
        self.conditions = _table(["TYPE", "STATUS", "REASON", "MESSAGE", "LAST UPDATE"])
        layout.addWidget(self.conditions)
        layout.addWidget(QLabel("History"))
        self.history = _table(["REVISION", "REPLICASET", "PODS", "IMAGES", "CHANGE-CAUSE"])
        layout.addWidget(self.history)
        layout.addWidget(QLabel("Pods"))
        self.pods = _table(["NAME", "READY", "STATUS", "RESTARTS", "NODE", "REVISION"])
        layout.addWidget(self.pods, 1)

        self._pending: int | None = None
        self.rollback_button.clicked.connect(lambda: self.ask_rollback(None))
        self.rollback_selected.clicked.connect(self._ask_selected)
        self.confirm_yes.clicked.connect(self._confirmed)
        self.confirm_no.clicked.connect(self.confirm.hide)
        self.history.itemSelectionChanged.connect(self._refresh_buttons)
        controller.changed.connect(self.refresh)
        controller.message.connect(self.message.show_message)
        self.refresh()

    def selected_revision(self) -> int | None:
        rows = {i.row() for i in self.history.selectedIndexes()}
        view = self.controller.view
        if len(rows) != 1:
            return None
        row = rows.pop()
        return view.history[row].number if row < len(view.history) else None

    def ask_rollback(self, revision: int | None) -> None:
        """Show the inline confirmation for a rollback to ``revision`` (None: the previous one)."""
        target = revision or self.controller.view.previous
        if target is None:
            self.message.show_message(
                "warning", f"{self.controller.name} has no previous revision to roll back to"
            )
            return
        self._pending = revision
        self.confirm_text.setText(
            f"Roll deployment {self.controller.name} back to revision {target}? Every pod is replaced."
        )
        self.confirm.show()

    def _ask_selected(self) -> None:
        revision = self.selected_revision()
        if revision is not None:
            self.ask_rollback(revision)

    def _confirmed(self) -> None:
        self.confirm.hide()
        self.controller.rollback(self._pending)

    def _refresh_buttons(self) -> None:
        view = self.controller.view
        selected = self.selected_revision()
        self.rollback_button.setEnabled(view.previous is not None)
        self.rollback_selected.setEnabled(selected is not None and selected != view.current)

    def refresh(self) -> None:
        view = self.controller.view
        images = ", ".join(view.images)
        revision = f"  ·  revision {view.current}" if view.current else ""
        self.title.setText(f"{view.title}{revision}{'  ·  ' + images if images else ''}")
        st = view.status
        for name, bar in self.bars.items():
            total = max(st.desired, 1) if st else 1
            value = {"updated": st.updated, "ready": st.ready, "available": st.available}[name] if st else 0
            bar.setRange(0, total)
            bar.setValue(min(value, total))
        if st is None:
            self.status.setText("")
        else:
            colour = "#2e7d32" if st.done else "#b26a00"
            self.status.setText(st.message)
            self.status.setStyleSheet(f"color:{colour};")
        _fill(self.conditions, [list(c) for c in view.conditions])
        _fit_rows(self.conditions, 4)
        _fill(
            self.history,
            [
                [
                    f"{'* ' if r.number == view.current else ''}{r.number}",
                    r.replicaset,
                    f"{r.ready}/{r.replicas}",
                    ", ".join(r.images),
                    r.change_cause,
                ]
                for r in view.history
            ],
        )
        _fit_rows(self.history, 5)
        for i, r in enumerate(view.history):
            item = self.history.item(i, 0)
            if item is not None:
                font = item.font()
                font.setBold(r.number == view.current)
                item.setFont(font)
        _fill(
            self.pods,
            [[p.name, p.ready, p.status, str(p.restarts), p.node, str(p.revision or "")] for p in view.pods],
        )
        for i, p in enumerate(view.pods):
            item = self.pods.item(i, 2)
            if item is not None:
                item.setForeground(QColor("#2e7d32" if p.status == "Running" else "#b26a00"))
        self._refresh_buttons()

"""The resource tables' ``QAbstractTableModel``: a thin Qt face on :class:`gui.rows.RowIndex`.

The model owns the sorted, filtered index itself instead of sitting under a ``QSortFilterProxyModel``:
a proxy sorts and filters by calling ``data()`` back into Python once per comparison, which for 100,000
rows is millions of calls (seconds) on every relist and every filter keystroke. Here sorting is one
``list.sort`` with a key, filtering one comprehension, and a live change costs a binary search.

Changes arrive in batches (``gui.fleet`` drains its buffers on a UI tick): :meth:`apply` announces the
rows that kept their place as one ``dataChanged`` range and each move as a row removal and insertion, so a
burst of 10,000 MODIFIED pods is one signal, not 10,000. A RESYNC, a new filter or a new sort column
replaces the visible rows wholesale (``modelReset``, or ``layoutChanged`` with the persistent indexes
moved for a sort, so the selection follows its object). Views keep their selection across a reset by key:
``key_at`` / ``position`` (``gui.views.resources`` does it).

Age cells are formatted at paint time from ``now`` (set by :meth:`tick_ages`, once a second), so time
passing is one ``dataChanged`` per age column, painted only for the rows on screen.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor

from app.query import Filter
from gui.rows import Key, Row, RowIndex, TableSpec, age_text

ROW_ROLE = int(Qt.ItemDataRole.UserRole) + 1  # data(index, ROW_ROLE) is the Row
KEY_ROLE = int(Qt.ItemDataRole.UserRole) + 2  # data(index, KEY_ROLE) is its (namespace, name)

TONES: dict[str, QColor] = {
    "ok": QColor("#2e7d32"),
    "warn": QColor("#b26a00"),
    "bad": QColor("#c62828"),
}
_DISPLAY = int(Qt.ItemDataRole.DisplayRole)
_TOOLTIP = int(Qt.ItemDataRole.ToolTipRole)
_FOREGROUND = int(Qt.ItemDataRole.ForegroundRole)
_ALIGN = int(Qt.ItemDataRole.TextAlignmentRole)
_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
_ROOT = QModelIndex()

ModelIndex = QModelIndex | QPersistentModelIndex


class ResourceTableModel(QAbstractTableModel):
    """One kind's rows (see the module docstring). Only the UI thread touches it."""

    def __init__(self, spec: TableSpec, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.spec = spec
        self.table = RowIndex(spec)
        self.now = time.time()
        self.generation = 0  # grows with every change: views and the overview compare it
        self.loaded = False  # the first RESYNC has been applied
        self._columns = spec.columns
        self._age_columns = frozenset(i for i, c in enumerate(spec.columns) if c.kind == "age")
        self._number_columns = frozenset(i for i, c in enumerate(spec.columns) if c.kind == "number")
        self._brushes = {tone: QBrush(color) for tone, color in TONES.items()}

    # -- Qt's model API -------------------------------------------------------------------------------

    def rowCount(self, parent: ModelIndex = _ROOT) -> int:
        return 0 if parent.isValid() else len(self.table)

    def columnCount(self, parent: ModelIndex = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._columns)

    def data(self, index: ModelIndex, role: int = _DISPLAY) -> Any:
        # A painted cell asks for ~10 roles; the ones answered None without looking at the row go first
        # (this method runs ~3,000 times per repaint of a full screen).
        if role == _DISPLAY:
            row = self._row(index.row())
            if row is None:
                return None
            c = index.column()
            if c in self._age_columns:
                return age_text(row.values[c], self.now)
            return row.cells[c]
        if role == _ALIGN:
            return _RIGHT if index.column() in self._number_columns else None
        if role == _FOREGROUND:
            if index.column() != self.spec.status_column:
                return None
            row = self._row(index.row())
            return self._brushes.get(row.tone) if row is not None and row.tone else None
        if role == _TOOLTIP:
            row = self._row(index.row())
            text = row.cells[index.column()] if row is not None else ""
            return text if len(text) > 40 else None
        if role == ROW_ROLE:
            return self._row(index.row())
        if role == KEY_ROLE:
            row = self._row(index.row())
            return row.key if row is not None else None
        return None

    def _row(self, position: int) -> Row | None:
        return self.table.at(position) if 0 <= position < len(self.table) else None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = _DISPLAY) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(self._columns):
            return None
        if role == _DISPLAY:
            return self._columns[section].title
        if role == _TOOLTIP:
            return self._columns[section].tip or None
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        descending = order == Qt.SortOrder.DescendingOrder
        if column == self.table.sort_column and descending == self.table.descending:
            return
        self.layoutAboutToBeChanged.emit()
        persistent = self.persistentIndexList()
        keys = [self._key_at(p.row()) for p in persistent]
        self.table.set_sort(column, descending)
        moved = []
        for p, key in zip(persistent, keys, strict=True):
            pos = self.table.position(key) if key is not None else None
            moved.append(self.index(pos, p.column()) if pos is not None else QModelIndex())
        self.changePersistentIndexList(persistent, moved)
        self.layoutChanged.emit()
        self.generation += 1

    # -- reading --------------------------------------------------------------------------------------

    def _key_at(self, position: int) -> Key | None:
        return self.table.at(position).key if 0 <= position < len(self.table) else None

    def key_at(self, position: int) -> Key | None:
        return self._key_at(position)

    def position(self, key: Key) -> int | None:
        return self.table.position(key)

    def get(self, key: Key) -> Row | None:
        return self.table.rows.get(key)

    def all_rows(self) -> Iterable[Row]:
        return self.table.rows.values()

    def total(self) -> int:
        """Rows held, before the filter."""
        return len(self.table.rows)

    # -- changing -------------------------------------------------------------------------------------

    def reset(
        self, rows: Iterable[Row], *, presorted: bool = False, by_key: dict[Key, Row] | None = None
    ) -> dict[Key, Row]:
        """Show ``rows`` instead of the current ones; answers the previous rows by key (still alive:
        see ``Fleet._bury``)."""
        self.now = time.time()
        self.beginResetModel()
        previous = self.table.reset(rows, presorted=presorted, by_key=by_key)
        self.endResetModel()
        self.loaded = True
        self.generation += 1
        return previous

    def apply(self, changes: Sequence[tuple[Key, Row | None]]) -> None:
        if changes:
            self.now = time.time()
            self.table.apply(changes, self)
            self.generation += 1

    def set_filter(self, flt: Filter) -> None:
        self.beginResetModel()
        self.table.set_filter(flt)
        self.endResetModel()
        self.generation += 1

    def tick_ages(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now
        n = len(self.table)
        if n:
            for c in self._age_columns:
                self.dataChanged.emit(self.index(0, c), self.index(n - 1, c), [_DISPLAY])

    # -- IndexHooks (called by RowIndex.apply) --------------------------------------------------------

    def begin_insert(self, position: int) -> None:
        self.beginInsertRows(_ROOT, position, position)

    def end_insert(self) -> None:
        self.endInsertRows()

    def begin_remove(self, position: int) -> None:
        self.beginRemoveRows(_ROOT, position, position)

    def end_remove(self) -> None:
        self.endRemoveRows()

    def changed(self, first: int, last: int) -> None:
        self.dataChanged.emit(self.index(first, 0), self.index(last, len(self._columns) - 1))

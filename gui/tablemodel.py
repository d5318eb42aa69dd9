"""The resource tables' ``QAbstractTableModel``: a thin Qt face on :class:`gui.rows.RowIndex`.

The model owns the sorted, filtered index itself instead of sitting under a ``QSortFilterProxyModel``:
a proxy sorts and filters by calling ``data()`` back into Python once per comparison, which for 100,000
rows is millions of calls (seconds) on every relist and every filter keystroke. Here sorting is one
``list.sort`` with a key, filtering one comprehension, and a live change costs a binary search.

Changes arrive in batches (``gui.fleet`` drains its buffers on a UI tick): :meth:`apply` announces the
rows that kept their place as one ``dataChanged`` range and each move as a row removal and insertion, so a
burst of 10,000 MODIFIED pods is one signal, not 10,000. A RESYNC, a new filter or a new sort column
replaces the visible rows wholesale (``modelReset``, or ``layoutChanged`` with the persistent indexes
moved for a sort, so the selection follows its object). Views keep their selection across a reset by
key: ``key_at`` / ``position`` (``gui.views.resources`` does it).

Sorting 100,000 rows by another column is ~100 ms of ``list.sort`` (a key per row, tuple comparisons):
too long for the UI thread. A model with a :attr:`~ResourceTableModel.sorter` (the Fleet sets one) hands
a header click on a table larger than :data:`ELSEWHERE_ABOVE` rows to it instead: the rows are
snapshotted (a list copy), sorted on the I/O thread in slices that step aside for painting, the way a
relist is prepared, and :meth:`~ResourceTableModel.finish_sort` swaps the result in, bringing the rows
changed meanwhile up to date (``RowIndex.adopt_sort``). Until then the old order stays on screen (the
header already shows the new indicator). A filter on such a table is applied the same way by the
:attr:`~ResourceTableModel.filterer` (a regex or a label selector over 100,000 rows is 50-110 ms).

Age cells are formatted at paint time from ``now`` (set by :meth:`tick_ages`, once a second), so time
passing is one ``dataChanged`` per age column, painted only for the rows on screen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor

from app.describe import age_text
from app.query import Filter
from gui.rows import Key, Row, RowIndex, TableSpec

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
# Tables with more rows than this are sorted and filtered off the UI thread when a sorter and a filterer
# are set (20,000 rows sort in about 20 ms and filter in 5-25 ms; see the module docstring).
ELSEWHERE_ABOVE = 20_000

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
        # Asked to sort ``(model, column, descending)`` off the UI thread; it calls finish_sort later.
        self.sorter: Callable[[ResourceTableModel, int, bool], None] | None = None
        # Asked to filter ``(model, filter)`` off the UI thread; it calls finish_filter later.
        self.filterer: Callable[[ResourceTableModel, Filter], None] | None = None
        self.elsewhere_above = ELSEWHERE_ABOVE
        self.sorting: tuple[int, bool] | None = None  # the order being prepared elsewhere
        self.filtering: Filter | None = None  # the filter being applied elsewhere

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
        if (column, descending) == self.sorting:
            return
        if column == self.table.sort_column and descending == self.table.descending and self.sorting is None:
            return
        if (
            column != self.table.sort_column
            and self.sorter is not None
            and len(self.table.rows) > self.elsewhere_above
        ):
            self.sorting = (column, descending)
            self.sorter(self, column, descending)
            return
        self.sorting = None
        self._relayout(lambda: self.table.set_sort(column, descending))

    def finish_sort(
        self,
        ticket: int,
        column: int,
        descending: bool,
        ordered: list[Row],
        kept: tuple[Filter, list[Row]] | None = None,
    ) -> None:
        """Show the order the sorter prepared (``ordered``: the snapshot of ``ticket`` sorted by
        ``column``; ``kept``: the filter and the rows of ``ordered`` it keeps). Ignored when another
        order was asked for since; asked for again when the rows were replaced meanwhile (a relist)."""
        if self.sorting != (column, descending):
            return
        adopted = False

        def adopt() -> None:
            nonlocal adopted
            adopted = self.table.adopt_sort(ticket, column, descending, ordered, kept)

        self._relayout(adopt)
        if adopted:
            self.sorting = None
        elif self.sorter is not None:
            self.sorter(self, column, descending)

    def _relayout(self, change: Callable[[], None]) -> None:
        """Run ``change`` (which reorders the rows) with the persistent indexes following their rows."""
        self.layoutAboutToBeChanged.emit()
        persistent = self.persistentIndexList()
        keys = [self._key_at(p.row()) for p in persistent]
        change()
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
        """Show the rows ``flt`` keeps: now, or on a large table once the filterer has applied it."""
        if flt == self.filtering:
            return
        if self.filterer is not None and not flt.empty and len(self.table.rows) > self.elsewhere_above:
            self.filtering = flt
            self.filterer(self, flt)
            return
        self.filtering = None
        self.beginResetModel()
        self.table.set_filter(flt)
        self.endResetModel()
        self.generation += 1

    def finish_filter(self, ticket: int, flt: Filter, kept: list[Row]) -> None:
        """Show ``kept``, the rows of the snapshot of ``ticket`` that ``flt`` keeps (from the
        filterer). Ignored when another filter was asked for since; asked for again when the rows were
        replaced or reordered meanwhile."""
        if flt != self.filtering:
            return
        self.beginResetModel()
        adopted = self.table.adopt_filter(ticket, flt, kept)
        self.endResetModel()
        if adopted:
            self.filtering = None
            self.generation += 1
        elif self.filterer is not None:
            self.filterer(self, flt)

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

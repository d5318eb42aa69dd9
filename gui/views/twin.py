"""The device twin panel: desired vs reported, desired values edited in the table, live charts.

The charts are pyqtgraph's, not QtCharts': pyqtgraph draws thousands of points per curve at interactive
rates (it hands numpy arrays straight to QPainter paths), it runs on the PySide6-Essentials wheel the GUI
depends on, whereas QtCharts is a separate add-on module (PySide6-Addons, ~200 MB more) and slows down
well before a day of telemetry. Each numeric property gets one small plot: the window means as a line,
the min-max band behind it, and the desired value as a dashed line, on a shared time axis.

What the panel shows and does is :class:`gui.twin.TwinController` (validation, writes, history) and
:class:`gui.twin.TwinTableModel`; this module only lays it out.
"""

from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QScrollArea,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from gui.twin import DESIRED_COLUMN, TwinController, TwinTableModel
from gui.views.common import InlineMessage

pg.setConfigOptions(antialias=True, background="w", foreground="#444444")

_MEAN = "#1565c0"
_BAND = (21, 101, 192, 45)
_DESIRED = "#b26a00"
MIN_SPAN_S = 120.0  # the time axis shows at least two minutes


class PropertyChart(QWidget):
    """One numeric property's history."""

    def __init__(self, name: str, unit: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.name = name
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.title = QLabel()
        self.title.setStyleSheet("font-weight:bold; color:#333333;")
        layout.addWidget(self.title)
        self.unit = unit
        self.plot = pg.PlotWidget(axisItems={"bottom": pg.DateAxisItem(orientation="bottom")})
        self.plot.setMinimumHeight(150)
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        self.plot.setMouseEnabled(x=True, y=False)
        self.plot.getPlotItem().hideButtons()
        layout.addWidget(self.plot)
        self._low = self.plot.plot(pen=None)
        self._high = self.plot.plot(pen=None)
        self.plot.addItem(pg.FillBetweenItem(self._low, self._high, brush=pg.mkBrush(*_BAND)))
        self.curve = self.plot.plot(pen=pg.mkPen(_MEAN, width=2), symbol=None)
        self.desired = pg.InfiniteLine(angle=0, pen=pg.mkPen(_DESIRED, width=1, style=Qt.PenStyle.DashLine))
        self.desired.setVisible(False)
        self.plot.addItem(self.desired)
        self.points = 0
        now = time.time()
        self.plot.setXRange(now - MIN_SPAN_S, now, padding=0.02)  # until data comes: the last minutes
        self.set_title(None)

    def set_title(self, last: float | None) -> None:
        unit = f" ({self.unit})" if self.unit else ""
        value = "no data yet" if last is None else f"last {last:g} {self.unit}".rstrip()
        self.title.setText(f"{self.name}{unit}  ·  {value}")

    def set_series(self, ends: list[float], means: list[float], mins: list[float], maxs: list[float]) -> None:
        x = np.asarray(ends, dtype=float)
        self.points = len(x)
        symbol = "o" if len(x) < 3 else None
        self.curve.setData(x, np.asarray(means, dtype=float), symbol=symbol, symbolSize=6, symbolBrush=_MEAN)
        self._low.setData(x, np.asarray(mins, dtype=float))
        self._high.setData(x, np.asarray(maxs, dtype=float))
        if len(x):
            # The time axis follows the data (the band's empty start would otherwise pull it to 1970), and
            # spans at least WINDOW_S so a few points do not fill the width.
            low, high = float(x[0]), float(x[-1])
            if high - low < MIN_SPAN_S:
                low = high - MIN_SPAN_S
            self.plot.setXRange(low, high, padding=0.02)
        self.set_title(means[-1] if means else None)

    def set_desired(self, value: str) -> None:
        try:
            number = float(value)
        except ValueError:
            self.desired.setVisible(False)
            return
        self.desired.setValue(number)
        self.desired.setVisible(True)


class TwinPanel(QWidget):
    """Lays out a :class:`TwinController`: header, message, twin table, charts."""

    def __init__(self, controller: TwinController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.model = TwinTableModel(controller, self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.header = QLabel()
        self.header.setStyleSheet("font-weight:bold;")
        self.header.setWordWrap(True)
        layout.addWidget(self.header)
        self.message = InlineMessage()
        layout.addWidget(self.message)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.setChildrenCollapsible(False)
        layout.addWidget(splitter, 1)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked
            | QAbstractItemView.EditTrigger.EditKeyPressed
            | QAbstractItemView.EditTrigger.AnyKeyPressed
        )
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(24)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        splitter.addWidget(self.table)
        charts = QWidget()
        self.charts_layout = QVBoxLayout(charts)
        self.charts_layout.setContentsMargins(0, 4, 0, 0)
        self.no_charts = QLabel("No numeric properties to chart.")
        self.no_charts.setStyleSheet("color:#777777;")
        self.charts_layout.addWidget(self.no_charts)
        self.charts_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(charts)
        splitter.addWidget(scroll)
        splitter.setSizes([220, 420])
        self.splitter = splitter
        self.charts: dict[str, PropertyChart] = {}
        controller.changed.connect(self._changed)
        controller.history_changed.connect(self._history)
        controller.message.connect(self._message)
        self._changed()

    def _message(self, severity: str, text: str) -> None:
        self.message.show_message(severity, text)

    def _changed(self) -> None:
        c = self.controller
        if not c.name:
            self.header.setText("Select a device to see its twin.")
        else:
            parts = [f"Device {c.namespace}/{c.name}"]
            if c.device is not None:
                parts += [
                    f"model {c.device.model_ref}",
                    f"node {c.device.node_name or '-'}",
                    f"state {c.device.status.state or 'unknown'}",
                ]
            else:
                parts.append(c.state)
            self.header.setText("  ·  ".join(parts))
        numeric = [r for r in c.rows if r.numeric]
        names = [r.name for r in numeric]
        if list(self.charts) != names:
            for chart in self.charts.values():
                chart.setParent(None)
                chart.deleteLater()
            self.charts = {}
            for r in numeric:
                chart = PropertyChart(r.name, r.unit)
                self.charts_layout.insertWidget(self.charts_layout.count() - 1, chart)
                self.charts[r.name] = chart
            self._history()
        for r in numeric:
            self.charts[r.name].set_desired(r.desired)
        self.no_charts.setVisible(not numeric)

    def _history(self) -> None:
        for name, chart in self.charts.items():
            series = self.controller.history.get(name)
            if series is not None and series.ends:
                chart.set_series(series.ends, series.means, series.mins, series.maxs)

    def edit(self, name: str) -> None:
        """Open the DESIRED cell of property ``name`` for editing (keyboard users, tests)."""
        for i in range(self.model.rowCount()):
            row = self.model.row(i)
            if row is not None and row.name == name:
                index = self.model.index(i, DESIRED_COLUMN)
                self.table.setCurrentIndex(index)
                self.table.edit(index)
                return

"""GUI table: 100,000 pods shown (model filled, view painted) and the longest UI-thread stall during a
burst of 10,000 updates (target: none over 50 ms), each next to a baseline measured in the same run.

Runs offscreen. "Shown" is timed two ways: the model alone (rows already projected, as the I/O thread
hands them over: ``ResourceTableModel.reset`` + the view's first paint), and end to end through the Fleet
(100,000 pod objects in a ``StaticSource``: the I/O thread projects and sorts them, the UI tick applies
them, the view paints). Baseline: a bare ``QStandardItemModel`` filled with the same cells and painted.

A relist (what a 410 Gone causes: every pod projected again with the table full) is measured the same
way. Stalls are the longest gap between beats of a 5 ms ``QTimer`` heartbeat on the UI thread while
10,000 MODIFIED pod events go through the whole pipeline (I/O thread projection, the coalescing buffer,
the 10 Hz tick with its 5 ms budget per turn, ``gui.fleet.BUDGET_S``, the model's signals, the view's
repaints): once in the default order (every change keeps its row: in place) and once sorted by STATUS
with every change moving its row. Baselines: the heartbeat of an idle event loop over the same time (the
timer's own jitter on this machine), and the naive way, the same 10,000 updates written into the
``QStandardItemModel`` one ``setText`` at a time in one go, as a per-event slot would.

Sort and filter at 100,000 rows, as a person does them on the UI thread: a header click (the call
``QTableView.sortByColumn`` makes into the model, and the repaint) and filter keystrokes (parse, filter,
repaint), each timed on the UI thread against the 50 ms target. At this size the sort and a non-empty
filter run on the I/O thread (``gui.tablemodel``), so the UI-thread part is small; how long until the
result is shown, and the longest heartbeat gap meanwhile, are reported too, next to the baseline of the
same sort done on the UI thread (no sorter). The figures are printed, not asserted.
"""

from __future__ import annotations

import os
import time
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from bench.common import table

PODS = 100_000
BURST = 10_000
HEARTBEAT_MS = 5
STALL_TARGET_MS = 50.0
UI_TARGET_MS = 50.0  # a click or a keystroke
# Filter keystrokes, typed one after the other: narrowing, a backspace, a selector, a regex, cleared.
KEYSTROKES = ("w", "we", "web", "web-0", "web-01", "web-0", "web-0.*7$", "-l app=app-1", "")


def pod(i: int, phase: str = "Running") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "namespace": f"ns-{i % 50}",
            "name": f"web-{i:06d}-abcde",
            "labels": {"app": f"app-{i % 100}"},
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "uid": f"uid-{i}",
        },
        "spec": {"nodeName": f"edge-{i % 1000}", "containers": [{"name": "main", "image": "example/web:1"}]},
        "status": {
            "phase": phase,
            "podIP": "10.0.0.1",
            "containerStatuses": [
                {"name": "main", "ready": True, "restartCount": 0, "state": {"running": {}}}
            ],
        },
    }


class Heartbeat:
    """Beats every HEARTBEAT_MS on the UI thread; ``gaps`` are the times between beats (ms)."""

    def __init__(self) -> None:
        from PySide6.QtCore import Qt, QTimer

        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(HEARTBEAT_MS)
        self.timer.timeout.connect(self._beat)
        self.last = 0.0
        self.gaps: list[float] = []

    def _beat(self) -> None:
        now = time.perf_counter()
        self.gaps.append((now - self.last) * 1000)
        self.last = now

    def run_until(self, done: Any, timeout: float = 120.0) -> float:
        """Beat while the event loop runs until ``done()``; answers the elapsed seconds."""
        from PySide6.QtCore import QEventLoop, QTimer

        loop = QEventLoop()
        check = QTimer()
        check.setInterval(HEARTBEAT_MS)
        start = time.perf_counter()

        def poll() -> None:
            if done() or time.perf_counter() - start > timeout:
                loop.quit()

        check.timeout.connect(poll)
        self.last, self.gaps = start, []  # the first gap counts from the start: a stall at once is one
        self.timer.start()
        check.start()
        loop.exec()
        check.stop()
        self.timer.stop()
        return time.perf_counter() - start


def painted(view: Any) -> None:
    """Paint the view now (what a frame costs after the model changed)."""
    view.viewport().repaint()


async def run() -> dict[str, Any]:
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QStandardItem, QStandardItemModel
    from PySide6.QtWidgets import QApplication, QHeaderView, QTableView

    import gui  # noqa: F401  (applies the Qt workaround before the first Qt call)
    from app.client import WatchEvent
    from app.query import parse_filter
    from gui.bridge import AsyncBridge
    from gui.fleet import Fleet, StaticSource, prepare_resync
    from gui.rows import SPECS, project_pod, row_key
    from gui.tablemodel import ResourceTableModel
    from gui.views.common import TableView

    app = QApplication.instance() or QApplication([])
    objects = [pod(i) for i in range(PODS)]
    spec = SPECS["pods"]

    def view_of(model: Any, cls: type[QTableView] = TableView) -> QTableView:
        view = cls()
        view.setModel(model)
        view.verticalHeader().hide()
        view.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        view.verticalHeader().setDefaultSectionSize(22)
        view.resize(1200, 800)
        view.show()
        app.processEvents()
        return view

    # -- 100,000 pods shown ----------------------------------------------------------------------------
    t = time.perf_counter()
    rows = sorted((project_pod(o) for o in objects), key=row_key)
    project_s = time.perf_counter() - t

    # What the UI thread pays for a RESYNC the I/O thread prepared (sorted rows, keyed, counted).
    prepared = prepare_resync(rows, spec.sort_column)
    model = ResourceTableModel(spec)
    view = view_of(model)
    t = time.perf_counter()
    model.reset(prepared.rows, presorted=True, by_key=prepared.by_key)
    painted(view)
    ours_fill_s = time.perf_counter() - t
    view.close()

    baseline = QStandardItemModel(0, len(spec.columns))
    base_view = view_of(baseline, QTableView)
    t = time.perf_counter()
    for r in rows:
        baseline.appendRow([QStandardItem(c) for c in r.cells])
    painted(base_view)
    base_fill_s = time.perf_counter() - t

    # The naive burst: 10,000 setText calls in one go, as one slot per watch event would do.
    t = time.perf_counter()
    for i in range(BURST):
        item = baseline.item(i * (PODS // BURST), 3)
        if item is not None:
            item.setText("Failed")
    painted(base_view)
    naive_burst_ms = (time.perf_counter() - t) * 1000
    base_view.close()
    del baseline, base_view

    # -- end to end, through the Fleet -----------------------------------------------------------------
    bridge = AsyncBridge()
    bridge.start()
    try:
        source = StaticSource({"pods": objects})
        fleet = Fleet(bridge, source)
        fleet_view = view_of(fleet.models["pods"])
        beat = Heartbeat()
        t = time.perf_counter()
        fleet.start()
        beat.run_until(lambda: fleet.models["pods"].total() == PODS)
        painted(fleet_view)
        fleet_fill_s = time.perf_counter() - t
        load_stall_ms = max(beat.gaps, default=0.0)

        idle = Heartbeat()
        idle_s = 2.0
        deadline = time.perf_counter() + idle_s
        idle.run_until(lambda: time.perf_counter() > deadline)
        idle_max = max(idle.gaps)

        # -- sort and filter at 100,000 rows, on the UI thread -------------------------------------------
        pods = fleet.models["pods"]
        header = fleet_view.horizontalHeader()
        header.setSortIndicator(spec.sort_column, Qt.SortOrder.AscendingOrder)
        fleet_view.setSortingEnabled(True)

        def click(column: int, order: Qt.SortOrder) -> tuple[float, float, float]:
            """A header click: UI-thread ms of the call and repaint, s until shown, longest gap (ms)."""
            t = time.perf_counter()
            fleet_view.sortByColumn(column, order)
            painted(fleet_view)
            ui_ms = (time.perf_counter() - t) * 1000
            beat = Heartbeat()
            shown_s = beat.run_until(lambda: pods.sorting is None) + ui_ms / 1000
            painted(fleet_view)
            return ui_ms, shown_s, max([ui_ms, *beat.gaps])

        sorts: dict[str, tuple[float, float, float]] = {}
        sorts["STATUS"] = click(3, Qt.SortOrder.AscendingOrder)
        sorts["STATUS, reversed"] = click(3, Qt.SortOrder.DescendingOrder)
        sorts["AGE"] = click(len(spec.columns) - 1, Qt.SortOrder.AscendingOrder)
        sorts["NAMESPACE (default)"] = click(spec.sort_column, Qt.SortOrder.AscendingOrder)
        sorter, pods.sorter = pods.sorter, None  # baseline: the same sort on the UI thread
        sorts["STATUS on the UI thread (baseline)"] = click(3, Qt.SortOrder.AscendingOrder)
        pods.sort(spec.sort_column, Qt.SortOrder.AscendingOrder)
        pods.sorter = sorter
        keystrokes: dict[str, tuple[float, float, float]] = {}
        for text in KEYSTROKES:
            t = time.perf_counter()
            pods.set_filter(parse_filter(text))
            painted(fleet_view)
            ui_ms = (time.perf_counter() - t) * 1000
            beat = Heartbeat()
            shown_s = beat.run_until(lambda: pods.filtering is None) + ui_ms / 1000
            painted(fleet_view)
            keystrokes[text] = (ui_ms, shown_s, max([ui_ms, *beat.gaps]))
        fleet_view.setSortingEnabled(False)

        results: dict[str, Any] = {}
        for name, column, phase in (("in place", None, "Pending"), ("rows move", 3, "Failed")):
            if column is not None:
                pods.sort(column, Qt.SortOrder.AscendingOrder)
                Heartbeat().run_until(lambda: pods.sorting is None)
            target = fleet.groups["pods"][phase] + BURST
            events = [WatchEvent("MODIFIED", pod(i * (PODS // BURST), phase)) for i in range(BURST)]
            beat = Heartbeat()
            source.push("pods", *events)
            took = beat.run_until(
                lambda t=target, p=phase: fleet.groups["pods"][p] >= t and not fleet.pending()
            )
            painted(fleet_view)
            gaps = sorted(beat.gaps)
            results[name] = {
                "max_stall_ms": gaps[-1],
                "p99_gap_ms": gaps[int(0.99 * (len(gaps) - 1))],
                "beats": len(gaps),
                "applied_in_s": took,
            }
        # A relist (after a 410 Gone) with the table full: 100,000 pods projected again, the old rows freed.
        gen = fleet.models["pods"].generation
        beat = Heartbeat()
        source.push("pods", WatchEvent("RESYNC", {}, tuple(objects)))
        relist_s = beat.run_until(lambda: fleet.models["pods"].generation > gen)
        relist_stall_ms = max(beat.gaps)
        fleet.stop()
        fleet_view.close()
    finally:
        bridge.stop()

    result = {
        "pods": PODS,
        "burst": BURST,
        "project_s": project_s,
        "shown_model_s": ours_fill_s,
        "shown_fleet_s": fleet_fill_s,
        "shown_baseline_qstandarditemmodel_s": base_fill_s,
        "load_max_stall_ms": load_stall_ms,
        "relist_s": relist_s,
        "relist_max_stall_ms": relist_stall_ms,
        "burst_in_place": results["in place"],
        "burst_rows_move": results["rows move"],
        "idle_heartbeat_max_gap_ms": idle_max,
        "naive_burst_stall_ms": naive_burst_ms,
        "stall_target_ms": STALL_TARGET_MS,
        "sort_click_ms": {k: v[0] for k, v in sorts.items()},
        "sort_shown_s": {k: v[1] for k, v in sorts.items()},
        "sort_max_stall_ms": {k: v[2] for k, v in sorts.items()},
        "filter_keystroke_ms": {k: v[0] for k, v in keystrokes.items()},
        "filter_shown_s": {k: v[1] for k, v in keystrokes.items()},
        "filter_max_stall_ms": {k: v[2] for k, v in keystrokes.items()},
        "ui_target_ms": UI_TARGET_MS,
    }
    ip, mv = results["in place"], results["rows move"]
    table(
        [
            ("100k pods shown: ResourceTableModel, UI thread's part", f"{ours_fill_s * 1000:.0f} ms", ""),
            ("100k pods shown: baseline QStandardItemModel", f"{base_fill_s * 1000:.0f} ms", "baseline"),
            ("100k pods shown: end to end through the Fleet", f"{fleet_fill_s:.2f} s", "incl. projection"),
            ("  of which projecting 100k pods (I/O thread)", f"{project_s:.2f} s", ""),
            ("  longest UI stall while loading", f"{load_stall_ms:.0f} ms", ""),
            ("relist of 100k pods with the table shown", f"{relist_s:.2f} s", ""),
            ("  longest UI stall during the relist", f"{relist_stall_ms:.0f} ms", ""),
            ("10k-update burst, in place: longest stall", f"{ip['max_stall_ms']:.1f} ms", "< 50 ms"),
            ("10k-update burst, in place: all applied in", f"{ip['applied_in_s']:.2f} s", ""),
            ("10k-update burst, rows move: longest stall", f"{mv['max_stall_ms']:.1f} ms", "< 50 ms"),
            ("10k-update burst, rows move: all applied in", f"{mv['applied_in_s']:.2f} s", ""),
            ("idle event loop: longest heartbeat gap", f"{idle_max:.1f} ms", "baseline"),
            ("naive: 10k setText in one slot", f"{naive_burst_ms:.0f} ms", "baseline"),
            *(
                (
                    f"sort click, 100k, {name}: UI thread / shown in / longest stall",
                    f"{ui:.1f} ms / {shown * 1000:.0f} ms / {stall:.0f} ms",
                    "baseline" if "baseline" in name else f"< {UI_TARGET_MS:.0f} ms",
                )
                for name, (ui, shown, stall) in sorts.items()
            ),
            *(
                (
                    f"filter keystroke, 100k, {text!r}: UI thread / shown in / longest stall",
                    f"{ui:.1f} ms / {shown * 1000:.0f} ms / {stall:.0f} ms",
                    f"< {UI_TARGET_MS:.0f} ms",
                )
                for text, (ui, shown, stall) in keystrokes.items()
            ),
        ]
    )
    return result

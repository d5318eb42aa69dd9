"""The Qt side without a server: the table model under Qt's model tester, the bridge between the threads,
and the Fleet's batching of watch events into model updates."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt

from app.client import WatchEvent
from app.query import parse_filter
from gui.bridge import AsyncBridge, BridgeStopped, Mailbox
from gui.fleet import BUDGET_S, Fleet, StaticSource
from gui.rows import SPECS, Key, Row, project_pod, sort_key
from gui.tablemodel import KEY_ROLE, ResourceTableModel

from .conftest import fixed_objects, pod, wait_until

STATUS = 3  # the pods table's STATUS column


def _rows(n: int, status: str = "Running") -> list[Row]:
    return [project_pod(pod(f"web-{i:05d}", f"edge-{i % 7}", phase=status)) for i in range(n)]


class Signals:
    """Counts a model's change signals."""

    def __init__(self, model: ResourceTableModel) -> None:
        self.counts = {"changed": 0, "inserted": 0, "removed": 0, "reset": 0}
        model.dataChanged.connect(lambda *_: self._bump("changed"))
        model.rowsInserted.connect(lambda *_: self._bump("inserted"))
        model.rowsRemoved.connect(lambda *_: self._bump("removed"))
        model.modelReset.connect(lambda: self._bump("reset"))

    def _bump(self, name: str) -> None:
        self.counts[name] += 1


def test_model_passes_qts_model_tester_through_changes(qtmodeltester: Any) -> None:
    model = ResourceTableModel(SPECS["pods"])
    model.reset(_rows(50))
    qtmodeltester.check(model)
    model.sort(STATUS, Qt.SortOrder.DescendingOrder)
    model.set_filter(parse_filter("web-000"))
    changes: list[tuple[Key, Row | None]] = []
    for i in range(0, 60, 4):
        r = project_pod(pod(f"web-{i:05d}", "edge-1", phase="Pending" if i % 8 else "Failed"))
        changes.append((r.key, r))
    changes.append((("default", "web-00001"), None))
    model.apply(changes)
    qtmodeltester.check(model)
    assert model.rowCount() == len(model.table.visible())
    assert model.data(model.index(0, 1)) == model.table.at(0).name


def test_a_burst_in_place_is_one_signal_and_moves_are_row_signals() -> None:
    model = ResourceTableModel(SPECS["pods"])
    model.reset(_rows(2000))
    signals = Signals(model)
    burst = [(r.key, r) for r in _rows(1000, status="Running")]
    changed = [(k, project_pod(pod(r.name, "edge-9", phase="Running"))) for k, r in burst]
    model.apply(changed)
    assert signals.counts == {"changed": 1, "inserted": 0, "removed": 0, "reset": 0}
    model.sort(STATUS, Qt.SortOrder.AscendingOrder)
    moved = [(r.key, r) for r in _rows(10, status="Failed")]
    model.apply(moved)
    assert signals.counts["inserted"] == signals.counts["removed"] == 10
    assert [model.data(model.index(i, STATUS)) for i in range(10)] == ["Failed"] * 10


def test_sort_keeps_the_selection_on_its_object(qtmodeltester: Any) -> None:
    from PySide6.QtCore import QPersistentModelIndex

    model = ResourceTableModel(SPECS["pods"])
    model.reset(_rows(30))
    qtmodeltester.check(model)
    held = QPersistentModelIndex(model.index(3, 0))
    key = model.data(held, KEY_ROLE)
    model.sort(1, Qt.SortOrder.DescendingOrder)
    assert held.isValid() and model.data(held, KEY_ROLE) == key
    assert held.row() == 26


def test_ages_are_painted_from_now() -> None:
    model = ResourceTableModel(SPECS["pods"])
    model.reset([project_pod(pod("a", "n", age=30))])
    age = len(SPECS["pods"].columns) - 1
    model.tick_ages(model.table.at(0).values[age] + 45)
    assert model.data(model.index(0, age)) == "45s"
    assert model.data(model.index(0, 4), int(Qt.ItemDataRole.TextAlignmentRole)) is not None
    assert model.data(model.index(5, 0)) is None
    assert model.rowCount(model.index(0, 0)) == 0 and model.columnCount(QModelIndex()) == len(
        SPECS["pods"].columns
    )


# -- bridge -----------------------------------------------------------------------------------------------


def test_results_and_errors_come_back_on_the_ui_thread(qtbot: Any, bridge: AsyncBridge) -> None:
    seen: list[tuple[str, Any, bool]] = []

    async def work() -> int:
        assert bridge.in_io_thread()
        return 42

    async def fail() -> int:
        raise ValueError("nope")

    ui = threading.current_thread()
    bridge.submit(work(), on_result=lambda v: seen.append(("ok", v, threading.current_thread() is ui)))
    bridge.submit(fail(), on_error=lambda e: seen.append(("error", str(e), threading.current_thread() is ui)))
    wait_until(qtbot, lambda: len(seen) == 2, "both callbacks")
    assert sorted(seen) == [("error", "nope", True), ("ok", 42, True)]


def test_a_cancelled_job_delivers_nothing(qtbot: Any, bridge: AsyncBridge) -> None:
    import asyncio

    seen: list[str] = []
    started = threading.Event()

    async def slow() -> str:
        started.set()
        await asyncio.sleep(30)
        return "late"

    job = bridge.submit(slow(), on_result=seen.append, on_error=lambda e: seen.append(repr(e)))
    assert started.wait(5)
    job.cancel()
    done = bridge.submit(asyncio.sleep(0), on_result=lambda _: seen.append("next"))
    wait_until(qtbot, lambda: done.done() and seen, "the next job")
    assert seen == ["next"] and job.cancelled


def test_mailbox_wakes_the_ui_once_per_drain(qtbot: Any, bridge: AsyncBridge) -> None:
    wakes: list[list[int]] = []
    box: Mailbox[int] = Mailbox(bridge, lambda: wakes.append(box.drain()), maxlen=500)

    async def produce() -> None:
        for i in range(1000):
            box.put(i)

    bridge.submit(produce())
    wait_until(qtbot, lambda: wakes and wakes[-1] and wakes[-1][-1] == 999, "the last item")
    assert len(wakes) < 10  # one wake-up per UI turn, not one per item
    assert sum(len(w) for w in wakes) + box.dropped == 1000


def test_stop_cancels_and_joins(qapp: Any) -> None:
    import asyncio

    b = AsyncBridge()
    b.start()
    cleaned = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.set()

    b.submit(forever())
    time.sleep(0.05)
    b.stop()
    assert cleaned.is_set() and not b.running
    with pytest.raises(BridgeStopped):
        b.submit(asyncio.sleep(0))


# -- fleet ------------------------------------------------------------------------------------------------


def test_fleet_applies_watch_events_and_keeps_the_counters(qtbot: Any, bridge: AsyncBridge) -> None:
    source = StaticSource(fixed_objects())
    fleet = Fleet(bridge, source)
    fleet.start()
    try:
        wait_until(qtbot, lambda: fleet.loaded("pods") and fleet.loaded("nodes"), "the first lists")
        pods, nodes = fleet.models["pods"], fleet.models["nodes"]
        assert pods.total() == 5 and fleet.groups["pods"]["Pending"] == 1
        assert nodes.get(("", "edge-a")) is not None
        assert nodes.get(("", "edge-a")).cells[3] == "2"  # type: ignore[union-attr]
        with qtbot.waitSignal(fleet.updated, timeout=5000):
            source.push("pods", WatchEvent("ADDED", pod("new-1", "edge-a", phase="Failed")))
        assert pods.get(("default", "new-1")) is not None and fleet.groups["pods"]["Failed"] == 1
        wait_until(qtbot, lambda: nodes.get(("", "edge-a")).cells[3] == "3", "edge-a's pod count")  # type: ignore[union-attr]
        lost = fixed_objects()["nodes"][0]
        lost["status"]["conditions"][0].update(status="Unknown", reason="NodeStatusUnknown")
        with qtbot.waitSignal(fleet.updated, timeout=5000):
            source.push("nodes", WatchEvent("MODIFIED", lost))
        assert fleet.link_changes[0].node == "edge-a" and fleet.link_changes[0].lost
        assert fleet.groups["nodes"]["Unknown"] == 2
    finally:
        fleet.stop()


def test_a_large_burst_is_worked_off_in_bounded_slices(qtbot: Any, bridge: AsyncBridge) -> None:
    objects = [pod(f"web-{i:06d}", f"edge-{i % 100}") for i in range(20_000)]
    source = StaticSource({"pods": objects})
    fleet = Fleet(bridge, source)
    fleet.start()
    try:
        wait_until(qtbot, lambda: fleet.models["pods"].total() == 20_000, "20,000 pods", timeout=60)
        fleet.models["pods"].sort(STATUS, Qt.SortOrder.AscendingOrder)  # every change below moves its row
        events = [
            WatchEvent("MODIFIED", pod(o["metadata"]["name"], "edge-1", phase="Failed"))
            for o in objects[:5000]
        ]
        slices: list[float] = []
        real_pump = fleet.pump

        def timed(budget: float = BUDGET_S) -> None:
            t = time.perf_counter()
            real_pump(budget)
            slices.append(time.perf_counter() - t)

        fleet.pump = timed  # type: ignore[method-assign]
        source.push("pods", *events)
        wait_until(
            qtbot, lambda: fleet.groups["pods"]["Failed"] == 5000 and not fleet.pending(), "the burst", 60
        )
        assert len(slices) > 1
        # Each slice stops soon after its budget (one chunk of changes may overrun it a little).
        assert max(slices) < 0.2, slices
    finally:
        fleet.stop()


def test_a_large_table_is_sorted_off_the_ui_thread_and_keeps_the_changes_made_meanwhile(
    qtbot: Any, bridge: AsyncBridge
) -> None:
    objects = [pod(f"web-{i:05d}", f"edge-{i % 7}") for i in range(300)]
    source = StaticSource({"pods": objects})
    fleet = Fleet(bridge, source)
    fleet.start()
    try:
        wait_until(qtbot, lambda: fleet.models["pods"].total() == 300, "300 pods")
        model = fleet.models["pods"]
        model.elsewhere_above = 100  # as large as 100,000 rows, for this test
        held = QPersistentModelIndex(model.index(model.position(("default", "web-00005")) or 0, 0))
        with qtbot.waitSignal(model.layoutChanged, timeout=10_000):
            model.sort(STATUS, Qt.SortOrder.DescendingOrder)
            # The old order stays until the new one is ready; the table keeps changing meanwhile (the
            # result can only be delivered once this test yields to the event loop).
            assert model.sorting == (STATUS, True) and model.table.sort_column != STATUS
            failed = project_pod(pod("web-00005", "edge-1", phase="Failed"))
            added = project_pod(pod("zzz-new", "edge-1", phase="Pending"))
            model.apply([(failed.key, failed), (added.key, added), (("default", "web-00007"), None)])
        assert model.sorting is None and model.table.sort_column == STATUS and model.table.descending
        expected = sorted(model.all_rows(), key=sort_key(SPECS["pods"], STATUS), reverse=True)
        assert model.table.visible() == expected and model.total() == 300
        assert (
            model.get(("default", "web-00007")) is None and model.position(("default", "zzz-new")) is not None
        )
        assert held.isValid() and model.data(held, KEY_ROLE) == ("default", "web-00005")
        assert model.data(model.index(held.row(), STATUS)) == "Failed"

        # A relist lands while a sort is prepared: the prepared order is stale, so it is asked for again.
        with qtbot.waitSignal(model.layoutChanged, timeout=10_000):
            model.sort(1, Qt.SortOrder.AscendingOrder)
            model.reset(_rows(250))
        wait_until(qtbot, lambda: model.sorting is None, "the sort asked for again")
        assert model.table.sort_column == 1 and model.total() == 250
        assert model.table.visible() == sorted(model.all_rows(), key=sort_key(SPECS["pods"], 1))

        # A filter is applied off the UI thread the same way, changes made meanwhile included.
        with qtbot.waitSignal(model.modelReset, timeout=10_000):
            model.set_filter(parse_filter("web-001"))
            assert model.filtering is not None and model.rowCount() == 250  # not filtered yet
            moved = project_pod(pod("web-00150", "edge-1", phase="Failed"))
            model.apply([(moved.key, moved), (("default", "web-00100"), None)])
        assert model.filtering is None and model.rowCount() == 99
        kept = [r for r in sorted(model.all_rows(), key=sort_key(SPECS["pods"], 1)) if "web-001" in r.name]
        assert model.table.visible() == kept and moved in kept
    finally:
        fleet.stop()

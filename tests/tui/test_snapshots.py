"""SVG snapshots of each main screen with fixed data (``StaticSource``) and a fixed clock.

Regenerate after a deliberate change with ``pytest tests/tui/test_snapshots.py --snapshot-update`` and look
at the SVGs (``tests/tui/__snapshots__/``) before committing them.
"""

from __future__ import annotations

from typing import Any

import pytest

from tui.app import FleetApp
from tui.data import Connection, Kind, NodeUsage, StaticSource

from .conftest import fixed_clock, fixed_objects, until

SIZE = (140, 24)


def make_app(view: Kind, *, edge: bool = False, readonly: bool = False) -> FleetApp:
    source = StaticSource(
        fixed_objects(),  # type: ignore[arg-type]
        description="https://cloud.example:6443",
        connection=Connection("connected", cloud_connected=False if edge else None),
        logs=["tick 0", "tick 1"],
        usage={"edge-a": NodeUsage(1.5, 3 * 2**30), "edge-b": NodeUsage(0.25, 512 * 2**20)},
    )
    if edge:
        source.edge = True
        source.description = "http://127.0.0.1:10550"
    return FleetApp(source, view=view, clock=fixed_clock, readonly=readonly)


def loaded(app: FleetApp) -> Any:
    async def run_before(pilot: Any) -> None:
        await until(
            lambda: all(s.loaded for s in app.stores.values()) and app.shown_rows and app.node_usage, pilot
        )
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("view", ["pods", "nodes", "deploy", "devices", "events"])
def test_main_views(snap_compare: Any, view: Kind) -> None:
    app = make_app(view)
    assert snap_compare(app, terminal_size=SIZE, run_before=loaded(app))


def test_filtered_pods(snap_compare: Any) -> None:
    app = make_app("pods")
    assert snap_compare(app, press=["slash", "w", "e", "b"], terminal_size=SIZE, run_before=loaded(app))


def test_pod_describe(snap_compare: Any) -> None:
    app = make_app("pods", readonly=True)
    assert snap_compare(app, press=["enter"], terminal_size=SIZE, run_before=loaded(app))


def test_edge_banner(snap_compare: Any) -> None:
    app = make_app("pods", edge=True)
    assert snap_compare(app, terminal_size=SIZE, run_before=loaded(app))


def test_help(snap_compare: Any) -> None:
    app = make_app("pods")
    assert snap_compare(app, press=["question_mark"], terminal_size=(140, 40), run_before=loaded(app))

"""The TUI: the data layer's pure parts, the app on fixed data, and the app against a real cloud and edge."""

from __future__ import annotations

from typing import Any

import pytest
from textual.command import CommandPalette
from textual.widgets import Input, OptionList, RichLog, Static

from app.client import AsyncClient, WatchEvent
from app.clientmodels import format_bytes, parse_quantity
from app.describe import describe_pod
from app.kubeconfig import load_kubeconfig
from app.launcher import LocalCluster
from app.query import Filter, FilterError, parse_filter, parse_selector
from app.twinview import twin_summary
from tests.cluster import deployment_manifest, edge_url
from tui.app import FleetApp, ViewState
from tui.data import (
    VIEWS,
    CloudSource,
    Corpus,
    NodeUsage,
    PerNode,
    StaticSource,
    Store,
    cell_text,
    filter_rows,
    parse_node_metrics,
    project_node,
    project_pod,
    visible_rows,
)
from tui.edge import EdgeSource
from tui.pod import PodScreen
from tui.views import ConfirmScreen, HelpScreen

from .conftest import (
    NOW,
    closed_port,
    deployment,
    device,
    fixed_clock,
    fixed_objects,
    node,
    pod,
    until,
)

SIZE = (160, 48)

# -- data layer -----------------------------------------------------------------------------------------


def rows_of(*pods: Any) -> list[Any]:
    store = Store(VIEWS["pods"])
    store.apply(WatchEvent("RESYNC", {}, tuple(pods)))
    return store.rows()


def names(rows: list[Any]) -> list[str]:
    return [r.name for r in rows]


def test_pod_rows_follow_kubectls_columns() -> None:
    row = project_pod(pod("crash-1", "edge-b", restarts=7, ready=False, reason="CrashLoopBackOff"))
    assert row.cells[:6] == ("default", "crash-1", "0/1", "CrashLoopBackOff", "7", "edge-b")
    assert row.tone == "bad"
    terminating = pod("x", "n")
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert project_pod(terminating).cells[3] == "Terminating"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["crash-1", "db-0", "web-7d4f-abcde", "web-7d4f-fghij", "sensor-reader"]),
        ("web", ["web-7d4f-abcde", "web-7d4f-fghij"]),
        ("WEB-7D4F-A", ["web-7d4f-abcde"]),  # case-insensitive
        ("^factory", ["sensor-reader"]),  # a regex over the row text (namespace first)
        ("crash|db", ["crash-1", "db-0"]),
        ("^DEFAULT.*FGHIJ", ["web-7d4f-fghij"]),  # upper case in a regex too
        ("\\SFGHIJ", ["web-7d4f-fghij"]),  # \S keeps its meaning (not lower-cased to \s)
        ("edge-a", ["db-0", "web-7d4f-abcde"]),  # the NODE column is searched too
        ("-l app=web", ["web-7d4f-abcde", "web-7d4f-fghij"]),
        ("-l app!=web", ["crash-1", "db-0", "sensor-reader"]),
        ("fghij -l app=web", ["web-7d4f-fghij"]),
        ("-l app=web,tier", []),
        ("-l !tier", ["crash-1", "db-0", "web-7d4f-abcde", "web-7d4f-fghij", "sensor-reader"]),
    ],
)
def test_filter_regex_and_label_selector(query: str, expected: list[str]) -> None:
    rows = rows_of(*fixed_objects()["pods"])
    assert names(filter_rows(rows, parse_filter(query))) == expected


@pytest.mark.parametrize(
    "query",
    [
        "web",
        "7d4f-",
        "^default",
        "^factory sensor",
        "edge-a$",
        "<none>$",
        "\\s",
        "[^x]",
        "a*",
        "b\\s*$",
        "0/1 .*",
        "zzz",
    ],
)
def test_the_corpus_scan_agrees_with_the_per_row_filter(query: str) -> None:
    rows = rows_of(*fixed_objects()["pods"], *(pod(f"p-{i}", f"edge-{i % 3}") for i in range(50)))
    flt = parse_filter(query)
    assert filter_rows(rows, flt, Corpus(rows)) == filter_rows(rows, flt)


@pytest.mark.parametrize("query", ["web(", "[a-", "-l =x", "-l !"])
def test_an_invalid_filter_is_an_error_not_a_crash(query: str) -> None:
    with pytest.raises(FilterError):
        parse_filter(query)


def test_selector_forms() -> None:
    reqs = parse_selector("a=1, b==2,c!=3,d,!e")
    assert [(r.key, r.op, r.value) for r in reqs] == [
        ("a", "=", "1"),
        ("b", "=", "2"),
        ("c", "!=", "3"),
        ("d", "exists", ""),
        ("e", "!exists", ""),
    ]


def test_narrowing_is_only_claimed_when_it_holds() -> None:
    assert parse_filter("web-7").narrows(parse_filter("web"))
    assert not parse_filter("web").narrows(parse_filter("web-7"))
    assert not parse_filter("we.b").narrows(parse_filter("web"))
    assert parse_filter("web -l app=x").narrows(Filter())


def test_store_coalesces_changes_and_keeps_order() -> None:
    store = Store(VIEWS["pods"])
    store.apply(WatchEvent("RESYNC", {}, (pod("b", "n"), pod("d", "n"))))
    assert names(store.rows()) == ["b", "d"]
    gen = store.generation
    store.apply(WatchEvent("ADDED", pod("c", "n")))
    store.apply(WatchEvent("ADDED", pod("a", "n")))
    store.apply(WatchEvent("DELETED", pod("d", "n")))
    store.apply(WatchEvent("MODIFIED", pod("b", "n", restarts=3)))
    assert store.generation == gen + 4
    rows = store.rows()
    assert names(rows) == ["a", "b", "c"]
    assert rows[1].cells[4] == "3"
    assert store.rows() is rows  # nothing changed: no work


def test_scope_and_namespace() -> None:
    rows = rows_of(*fixed_objects()["pods"])
    from tui.data import Scope, deployment_scope

    assert names(visible_rows(rows, namespace="factory", scope=None, flt=Filter())) == ["sensor-reader"]
    on_a = visible_rows(rows, namespace=None, scope=Scope("node/edge-a", node="edge-a"), flt=Filter())
    assert names(on_a) == ["db-0", "web-7d4f-abcde"]
    web = visible_rows(rows, namespace=None, scope=deployment_scope(deployment("web", 2, 2)), flt=Filter())
    assert names(web) == ["web-7d4f-abcde", "web-7d4f-fghij"]


def test_twin_summary() -> None:
    assert twin_summary(device("p", "n", state="online", desired="40", reported="40")) == "1/1 synced"
    assert (
        twin_summary(device("p", "n", state="online", desired="55", reported="38"))
        == "0/1 synced; setpoint 38->55"
    )


def test_describe_shows_the_pod_and_its_events() -> None:
    text = describe_pod(
        pod("crash-1", "edge-b", restarts=7, reason="CrashLoopBackOff"),
        fixed_objects()["events"][:1],
        NOW.timestamp(),
    )
    assert "Name:           crash-1" in text
    assert "Node:           edge-b" in text
    assert "Restart Count:  7" in text
    assert "BackOff" in text


# -- the app on fixed data --------------------------------------------------------------------------------


def static_app(**kwargs: Any) -> tuple[FleetApp, StaticSource]:
    source = StaticSource(fixed_objects(), logs=["hello", "world"])  # type: ignore[arg-type]
    return FleetApp(source, clock=fixed_clock, **kwargs), source


async def command(pilot: Any, text: str) -> None:
    await pilot.press("colon")
    for ch in text:
        await pilot.press(ch if ch != " " else "space")
    await pilot.press("enter")
    await pilot.pause()


def kind_of(app: FleetApp) -> str:
    """The view shown now (a call, so that mypy does not narrow it across key presses)."""
    return app.state.kind


async def test_views_filter_drill_down_and_back() -> None:
    app, _ = static_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: len(app.shown_rows) == 5, pilot, what="pods")
        await command(pilot, "nodes")
        assert kind_of(app) == "nodes"
        assert app.rows_text() == ["edge-a", "edge-b", "edge-c"]
        await pilot.press("slash", "e", "d", "g", "e", "-", "b")
        assert app.rows_text() == ["edge-b"]
        await pilot.press("enter")  # closes the prompt, keeps the filter
        await pilot.press("escape")  # clears the filter
        assert app.rows_text() == ["edge-a", "edge-b", "edge-c"]
        await pilot.press("enter")  # the cursor stayed on edge-b: drill into it
        assert kind_of(app) == "pods" and app.rows_text() == ["crash-1", "web-7d4f-fghij"]
        await pilot.press("tab")
        assert kind_of(app) == "devices" and app.rows_text() == ["pump-2"]
        await pilot.press("escape")
        assert kind_of(app) == "nodes"
        await command(pilot, "deploy")
        await pilot.press("down", "enter")  # "web" (after "crash")
        assert app.rows_text() == ["web-7d4f-abcde", "web-7d4f-fghij"]
        await command(pilot, "ns factory")
        await command(pilot, "pods")
        assert app.rows_text() == ["sensor-reader"]
        await pilot.press("slash", "minus", "l", "space", "a", "p", "p", "equals_sign", "x")
        assert app.rows_text() == []
        await pilot.press("escape")
        await command(pilot, "q")
    assert app.return_code == 0


async def test_invalid_regex_notifies_and_keeps_the_rows() -> None:
    app, _ = static_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: len(app.shown_rows) == 5, pilot)
        await pilot.press("slash", "w", "e", "b", "left_parenthesis")
        assert app.rows_text() == ["web-7d4f-abcde", "web-7d4f-fghij"]
        assert any("invalid regex" in str(n.message) for n in app._notifications)


async def test_help_lists_the_keys_and_unknown_commands_are_explained() -> None:
    app, _ = static_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one("#help-text", Static).render())
        for key in (":nodes", "/", "enter", "ctrl+d", "ctrl+p"):
            assert key in text
        await pilot.press("escape")
        await command(pilot, "bogus")
        assert any("unknown command" in str(n.message) for n in app._notifications)


async def test_pod_screen_panes_and_readonly() -> None:
    app, source = static_app(readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: len(app.shown_rows) == 5, pilot)
        await pilot.press("enter")  # crash-1
        assert isinstance(app.screen, PodScreen)
        await pilot.press("y")
        assert "name: crash-1" in str(app.screen.query_one("#pod-text", Static).render())
        await pilot.press("l")
        await until(lambda: len(app.screen.log_lines) == 2, pilot)  # type: ignore[attr-defined]
        await pilot.press("ctrl+d", "r")
        assert not isinstance(app.screen, ConfirmScreen)
        assert source.actions == []


async def test_delete_asks_first() -> None:
    app, source = static_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: len(app.shown_rows) == 5, pilot)
        await pilot.press("enter", "ctrl+d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert source.actions == []
        await pilot.press("ctrl+d", "y")
        await until(lambda: source.actions == ["delete default/crash-1"], pilot)


async def test_watch_events_change_the_rows_and_the_cursor_stays_on_its_row() -> None:
    app, source = static_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: len(app.shown_rows) == 5, pilot)
        await pilot.press("down")  # crash-1 -> db-0
        assert app.table.current is not None and app.table.current.name == "db-0"
        source.push("pods", WatchEvent("ADDED", pod("aaa-new", "edge-a")))  # sorts above the cursor
        await until(lambda: "aaa-new" in app.rows_text(), pilot, what="the added pod")
        assert app.table.current.name == "db-0" and app.table.cursor == 2
        source.push("pods", WatchEvent("MODIFIED", pod("db-0", "edge-a", app="db", restarts=3)))
        await until(lambda: app.shown_rows[2].cells[4] == "3", pilot, what="the new restart count")
        assert app.table.current.name == "db-0"
        source.push("pods", WatchEvent("DELETED", pod("aaa-new", "edge-a")))
        source.push("pods", WatchEvent("DELETED", pod("crash-1", "edge-b")))
        await until(lambda: "crash-1" not in app.rows_text(), pilot, what="the deleted pods gone")
        assert app.rows_text() == ["db-0", "web-7d4f-abcde", "web-7d4f-fghij", "sensor-reader"]
        assert app.table.current.name == "db-0" and app.table.cursor == 0
        # The nodes view counts pods per node as they come and go.
        await command(pilot, "nodes")
        counts = app.table.per_node.pods
        assert (counts["edge-a"], counts["edge-b"], counts["edge-c"]) == (2, 1, 1)
        source.push("pods", WatchEvent("ADDED", pod("late", "edge-b")))
        source.push("pods", WatchEvent("MODIFIED", pod("db-0", "edge-c")))  # moved to another node
        await until(lambda: app.table.per_node.pods["edge-b"] == 2, pilot, what="edge-b's new pod")
        assert app.table.per_node.pods["edge-a"] == 1 and app.table.per_node.pods["edge-c"] == 2


def test_pods_per_node_follows_events_and_resyncs() -> None:
    store = Store(VIEWS["pods"])
    store.apply(WatchEvent("RESYNC", {}, (pod("a", "n1"), pod("b", "n1"), pod("c", "n2"))))
    assert dict(store.pods_per_node()) == {"n1": 2, "n2": 1}
    store.apply(WatchEvent("MODIFIED", pod("a", "n2")))
    store.apply(WatchEvent("DELETED", pod("c", "n2")))
    store.apply(WatchEvent("DELETED", pod("never-seen", "n1")))
    store.apply(WatchEvent("ADDED", pod("d", "")))
    assert dict(store.pods_per_node()) == {"n1": 1, "n2": 1, "": 1}
    store.apply(WatchEvent("DELETED", pod("b", "n1")))
    assert "n1" not in store.pods_per_node()
    store.apply(WatchEvent("RESYNC", {}, (pod("x", "n3"),)))
    assert dict(store.pods_per_node()) == {"n3": 1}


def log_text(screen: Any) -> list[str]:
    return [strip.text.rstrip() for strip in screen.query_one("#pod-logs", RichLog).lines]


async def test_log_wrap_timestamps_and_search() -> None:
    app, source = static_app()
    source.log_lines = ["hello", "world", "hello again"]
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: len(app.shown_rows) == 5, pilot)
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, PodScreen)
        assert "wrap" not in bound_actions(screen)  # log keys act on the log pane only
        await pilot.press("l")
        await until(lambda: log_text(screen) == ["hello", "world", "hello again"], pilot, what="the log")
        assert "wrap" in bound_actions(screen)

        def title() -> str:
            return str(screen.query_one("#pod-title", Static).render())

        assert "wrap on" in title() and screen.query_one("#pod-logs", RichLog).wrap
        await pilot.press("w")
        assert not screen.wrap and not screen.query_one("#pod-logs", RichLog).wrap and "wrap off" in title()
        assert log_text(screen) == ["hello", "world", "hello again"]
        await pilot.press("t")
        await until(
            lambda: (
                log_text(screen)
                == [
                    "2026-01-01T00:00:00Z hello",
                    "2026-01-01T00:00:00Z world",
                    "2026-01-01T00:00:00Z hello again",
                ]
            ),
            pilot,
            what="timestamped lines",
        )
        assert "timestamps on" in title()
        await pilot.press("slash")
        search = screen.query_one("#pod-search", Input)
        assert search.display and search.has_focus
        await pilot.press("H", "e", "l", "l", "o", "enter")
        assert screen.search == "Hello" and not screen.query_one("#pod-search", Input).display
        assert log_text(screen) == ["2026-01-01T00:00:00Z hello", "2026-01-01T00:00:00Z hello again"]
        assert "search 'Hello'" in title()
        await pilot.press("slash", "escape")  # Esc in the search box clears the search, and only that
        await until(lambda: len(log_text(screen)) == 3, pilot, what="every line back")
        assert screen.search == "" and isinstance(app.screen, PodScreen)


async def test_command_palette_switches_the_view() -> None:
    app, _ = static_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: len(app.shown_rows) == 5, pilot)
        await pilot.press("ctrl+p")
        await until(lambda: isinstance(app.screen, CommandPalette), pilot, what="the palette")
        for ch in "View Nodes":
            await pilot.press(ch if ch != " " else "space")

        def offered() -> bool:
            found = app.screen.query("CommandList")
            return bool(found) and found.first(OptionList).option_count > 0

        await until(offered, pilot, what="the palette's matches")
        await pilot.press("enter")
        await until(lambda: app.state.kind == "nodes", pilot, what="the nodes view")
        assert app.rows_text() == ["edge-a", "edge-b", "edge-c"]
        assert app.screen is app.list_screen


# -- against a real cloud and edge ------------------------------------------------------------------------


def cloud_app(c: LocalCluster, **kwargs: Any) -> FleetApp:
    client = AsyncClient.from_kubeconfig(c.kubeconfig)
    return FleetApp(CloudSource(client, kubeconfig=str(c.kubeconfig)), **kwargs)


def shown_text(app: FleetApp, selector: str) -> str:
    """What a Static of the current screen shows ("" while it is not mounted: a slow machine's frame)."""
    found = app.screen.query(selector)
    return str(found.first(Static).render()) if found else ""


@pytest.mark.slow
async def test_live_views_logs_and_delete(live: LocalCluster) -> None:
    app = cloud_app(live)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: any(n.startswith("printer-") for n in app.rows_text()), pilot, what="printer pod")
        await until(lambda: app.connection.state == "connected", pilot, what="every watch connected")
        header = str(app.list_screen.query_one("#header", Static).render())  # type: ignore[union-attr]
        assert "● connected" in header
        await command(pilot, "nodes")
        await until(lambda: app.rows_text() == ["edge-1"], pilot, what="node")
        await pilot.press("enter")
        await until(lambda: len(app.shown_rows) == 1, pilot)
        pod_name = app.rows_text()[0]
        await pilot.press("enter")
        assert isinstance(app.screen, PodScreen)
        await pilot.press("d")
        await until(
            lambda: f"Name:           {pod_name}" in shown_text(app, "#pod-text"), pilot, what="describe"
        )
        await pilot.press("l")
        await until(lambda: bool(app.screen.query("#pod-logs")), pilot, what="the log pane")
        log = app.screen.query_one("#pod-logs", RichLog)
        await until(lambda: any("tick" in line for line in app.screen.log_lines), pilot, what="a log line")  # type: ignore[attr-defined]
        assert log.lines
        await pilot.press("ctrl+d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        gone = f"/api/v1/namespaces/default/pods/{pod_name}"

        async def deleted() -> bool:
            try:
                obj = await live.request("GET", gone)
            except Exception:
                return True
            return bool(obj.get("metadata", {}).get("deletionTimestamp"))

        flag = {"done": False}

        async def check() -> None:
            flag["done"] = await deleted()

        for _ in range(100):
            await check()
            if flag["done"]:
                break
            await pilot.pause(0.1)
        assert flag["done"], "the pod was not deleted at the API"
        await until(lambda: not isinstance(app.screen, PodScreen), pilot)


def bound_actions(screen: Any) -> set[str]:
    """The actions the screen's footer offers now (shown and enabled)."""
    return {b.binding.action for b in screen.active_bindings.values() if b.binding.show and b.enabled}


@pytest.mark.slow
async def test_live_readonly_refuses_delete(live: LocalCluster) -> None:
    app = cloud_app(live, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: any(n.startswith("printer-") for n in app.rows_text()), pilot)
        pod_name = app.rows_text()[0]
        pushed: list[str] = []
        original_push = app.push_screen

        def recording_push(screen: Any, *args: Any, **kwargs: Any) -> Any:
            pushed.append(type(screen).__name__)
            return original_push(screen, *args, **kwargs)

        app.push_screen = recording_push  # type: ignore[method-assign]
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, PodScreen), pilot, what="the pod screen")
        await pilot.pause()
        offered = bound_actions(app.screen)
        assert {"pane('describe')", "pane('logs')"} <= offered
        assert not offered & {"delete", "restart", "shell"}, offered
        footer_keys = {b.binding.description for b in app.screen.active_bindings.values() if b.enabled}
        assert not footer_keys & {"Delete", "Restart", "Shell"}, footer_keys
        await pilot.press("ctrl+d", "y", "r", "s")
        await pilot.pause()
        assert isinstance(app.screen, PodScreen)
        assert pushed == ["PodScreen"]  # no ConfirmScreen was ever shown
        obj = await live.request("GET", f"/api/v1/namespaces/default/pods/{pod_name}")
        assert not obj["metadata"].get("deletionTimestamp")
        assert "[read-only]" in str(app.list_screen.query_one("#header", Static).render())  # type: ignore[union-attr]


def header_text(app: FleetApp) -> str:
    screen = app.list_screen
    return str(screen.query_one("#header", Static).render()) if screen is not None else ""


def notified(app: FleetApp, text: str) -> bool:
    return any(text in str(n.message) or text in n.title for n in app._notifications)


@pytest.mark.slow
async def test_live_reconnects_after_the_cloud_restarts_and_keeps_updating(live: LocalCluster) -> None:
    app = cloud_app(live)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: any(n.startswith("printer-") for n in app.rows_text()), pilot, what="printer pod")
        await until(lambda: app.connection.state == "connected", pilot, what="every watch connected")
        assert live.cloud is not None
        await live.cloud.stop()
        await until(lambda: "reconnecting" in header_text(app), pilot, timeout=20, what="reconnecting")
        assert "✕ reconnecting" in header_text(app)
        assert any(n.startswith("printer-") for n in app.rows_text()), "the rows went away"
        assert notified(app, "server reconnecting")
        assert not notified(app, "connection restored")
        await live.start_cloud()
        await until(lambda: "● connected" in header_text(app), pilot, timeout=30, what="connected again")
        await until(lambda: notified(app, "connection restored"), pilot, what="the restored notice")
        await live.request(
            "POST",
            "/apis/apps/v1/namespaces/default/deployments",
            deployment_manifest("hello", ["sh", "-c", "sleep 3600"]),
        )
        await until(
            lambda: any(n.startswith("hello-") for n in app.rows_text()),
            pilot,
            timeout=30,
            what="the new deployment's pod, from the watch",
        )
        assert any(n.startswith("printer-") for n in app.rows_text())


@pytest.mark.slow
async def test_a_bad_token_is_reported_and_the_ui_stays_usable(cloud: LocalCluster) -> None:
    kc = load_kubeconfig(cloud.kubeconfig)
    app = FleetApp(CloudSource(AsyncClient(kc.server, "bad-token", ca_file=kc.certificate_authority)))
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.connection.state == "failed", pilot, what="the failed state")
        assert "✕ failed: " in header_text(app) and "nauthorized" in header_text(app)
        await until(lambda: notified(app, "server failed"), pilot, what="a notification")
        assert any(n.severity == "error" and "nauthorized" in str(n.message) for n in app._notifications)
        assert app.rows_text() == []
        await command(pilot, "nodes")
        assert app.state == ViewState("nodes") and app.screen is app.list_screen
        await command(pilot, "pods")
        assert app.state == ViewState("pods")


@pytest.mark.slow
async def test_live_restart_brings_the_pod_back(live: LocalCluster) -> None:
    app = cloud_app(live)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: any(n.startswith("printer-") for n in app.rows_text()), pilot, what="printer pod")
        old = app.rows_text()[0]
        await pilot.press("enter")
        assert isinstance(app.screen, PodScreen)
        await pilot.press("r")
        await until(lambda: notified(app, f"deleted pod default/{old}"), pilot, what="the restart notice")

        def replaced() -> bool:
            rows = [r for r in app.shown_rows if r.name.startswith("printer-") and r.name != old]
            return bool(rows) and rows[0].cells[3] == "Running"

        await until(replaced, pilot, timeout=30, what="a new printer pod running")


async def test_unreachable_server_shows_in_the_header_and_notifies() -> None:
    port = closed_port()
    client = AsyncClient(f"https://127.0.0.1:{port}", "t", insecure=True)
    app = FleetApp(CloudSource(client))
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.connection.state == "unreachable", pilot, what="unreachable")
        header = str(app.list_screen.query_one("#header", Static).render())  # type: ignore[union-attr]
        assert "unreachable" in header and f"127.0.0.1:{port}" in header
        await until(lambda: any(n.severity == "error" for n in app._notifications), pilot)
        await command(pilot, "nodes")  # the view keeps working
        assert app.state.kind == "nodes"


@pytest.mark.slow
async def test_edge_mode_with_the_cloud_stopped_shows_the_banner_and_pods(live: LocalCluster) -> None:
    url = edge_url(live)
    assert live.cloud is not None
    await live.cloud.stop()
    app = FleetApp(EdgeSource(url, poll_interval=0.3))
    async with app.run_test(size=SIZE) as pilot:
        await until(
            lambda: any(n.startswith("printer-") for n in app.rows_text()), pilot, what="pods from the edge"
        )
        screen = app.list_screen
        assert screen is not None
        await until(lambda: screen.query_one("#banner", Static).display, pilot, timeout=20, what="banner")
        assert "EDGE-LOCAL: cloud unreachable" in str(screen.query_one("#banner", Static).render())
        await command(pilot, "nodes")
        await until(lambda: app.rows_text() == ["edge-1"], pilot)
        await command(pilot, "pods")
        await pilot.press("enter", "l")
        await until(lambda: any("tick" in line for line in app.screen.log_lines), pilot, what="edge log")  # type: ignore[attr-defined]
        assert isinstance(app.screen.query_one("#pod-search", Input), Input)


async def test_screens_that_need_the_cloud_say_so_without_one() -> None:
    app, _ = static_app(view="devices")
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: len(app.shown_rows) == 2, pilot)
        await pilot.press("enter")
        await command(pilot, "deploy")
        await pilot.press("o")
        messages = [str(n.message) for n in app._notifications]
        assert any("device pump-1 needs the cloud" in m for m in messages), messages
        assert any("rollout screen needs the cloud" in m for m in messages), messages


@pytest.mark.slow
async def test_live_device_deploy_and_rollout_screens_open(live: LocalCluster) -> None:
    app = cloud_app(live, view="deploy")
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.rows_text() == ["printer"], pilot, what="the printer deployment")
        await pilot.press("o")
        assert type(app.screen).__name__ == "RolloutScreen"
        await pilot.press("escape")
        await until(lambda: app.screen is app.list_screen, pilot, what="back to the list")
        await pilot.press("a")
        assert type(app.screen).__name__ == "DeployScreen"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("250m", 0.25),
        ("4", 4.0),
        ("8056928Ki", 8056928 * 1024.0),
        ("1.5Gi", 1.5 * 2**30),
        ("1e3", 1000.0),
        ("100n", 1e-7),
        ("2M", 2e6),
        (".5", 0.5),
        ("12x", None),
        ("", None),
        ("Gi", None),
        (None, None),
        (True, None),
    ],
)
def test_quantities(text: object, value: float | None) -> None:
    assert parse_quantity(text) == (pytest.approx(value) if value is not None else None)


def test_bytes_as_kubectl_prints_them() -> None:
    assert [format_bytes(n) for n in (512, 3 * 2**20, 7.7 * 2**30, 20 * 2**30)] == [
        "512",
        "3.0Mi",
        "7.7Gi",
        "20Gi",
    ]


def test_node_usage_shows_as_a_share_of_allocatable() -> None:
    node_obj = node("edge-a")
    node_obj["status"]["allocatable"] = {"cpu": "2", "memory": "4Gi"}
    usage = parse_node_metrics(
        {
            "items": [
                {"metadata": {"name": "edge-a"}, "usage": {"cpu": "500m", "memory": "1Gi"}},
                {"metadata": {"name": "bad"}, "usage": {"cpu": "lots"}},
                "junk",
            ]
        }
    )
    assert usage == {"edge-a": NodeUsage(0.5, 2.0**30)}
    row = project_node(node_obj)
    spec = VIEWS["nodes"]
    cells = {
        c.title: cell_text(c, row, i, NOW, PerNode({"edge-a": 3}, usage)) for i, c in enumerate(spec.columns)
    }
    assert (cells["%CPU"], cells["%MEM"], cells["PODS"], cells["MEM"]) == ("25%", "25%", "3", "7.7Gi")
    assert cell_text(spec.columns[8], row, 8, NOW, PerNode()) == "n/a"

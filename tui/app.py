"""The TUI application: k9s-style list views over live watches, drill-down, filter, command mode.

Data flow (see ``tui.data``): one feed worker per kind drains its source's event stream into a
:class:`~tui.data.Store` as fast as events come; a 10 Hz tick compares store generations with what the
table shows and, when the current view's store changed, rebuilds its visible rows once. A burst of watch
events therefore costs one redraw per tick, and the table (``tui.views.ResourceTable``) renders only the
lines on screen. Typing a filter recomputes the visible rows at once (narrowing the previous result when
the new text extends the old one) so each keystroke shows its result on the next frame.

The header shows the source and its link state (connected / reconnecting / unreachable, with the reason);
a transition to trouble is also a notification. Attached to an edge, a banner says when the edge reports
that its cloud is unreachable. ``readonly`` hides every write key here and on the pod screen.

The device, camera, deploy and rollout screens live in ``tui.device``, ``tui.camera``, ``tui.deploy`` and
``tui.rollout``; they are imported when first used, and need the cloud's client, except the device screen,
which with ``--edge`` shows this node's own twin state from the local API, read-only.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from app.camera import is_camera
from app.client import ClientError
from app.query import Filter, FilterError, parse_filter
from app.resources import JSONObject
from tui.data import (
    ALIASES,
    KINDS,
    VIEWS,
    Connection,
    Corpus,
    Kind,
    NodeUsage,
    PerNode,
    Row,
    Scope,
    Source,
    Store,
    TuiError,
    deployment_scope,
    describe_error,
    filter_rows,
    make_stores,
    scoped_rows,
    utcnow,
)
from tui.edge import EdgeSource
from tui.views import HelpScreen, ResourceTable

logger = logging.getLogger(__name__)

TICK = 0.1  # seconds between checks for new data (10 Hz: events are coalesced per tick)
USAGE_POLL = 10.0  # seconds between node usage reads (the edges send usage with their heartbeat)
FREEZE_ABOVE = 20_000  # objects held before the GC is told to leave them alone (see _freeze_after_load)

HELP: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "Views",
        [
            (":nodes  :pods  :deploy  :devices  :events", "switch view (kubectl short names work too)"),
            (":ns NAME  /  :ns all", "only one namespace / every namespace"),
            (":q", "quit"),
            ("ctrl+p", "command palette"),
        ],
    ),
    (
        "Lists",
        [
            ("/", "filter: a regex over the row, plus -l k=v,k2!=v for labels"),
            ("esc", "clear the filter, then go back"),
            ("enter", "drill down: node -> its pods (tab: its devices), deploy -> pods, pod -> pod screen"),
            ("o", "deployments: rollout screen"),
            ("a", "deployments: apply a manifest"),
            ("tab", "in a node's view: switch between its pods and devices"),
            ("j / k, pgup / pgdn, g / G", "move"),
        ],
    ),
    (
        "Pod",
        [
            ("d / y / l", "describe / YAML / logs (follow)"),
            ("w / t / /", "logs: wrap / timestamps / search"),
            ("s", "shell (kubectl exec -it, needs a kubeconfig)"),
            ("r", "restart (delete; its Deployment recreates it; at the edge: local restart)"),
            ("ctrl+d", "delete, after confirmation"),
            ("esc", "back"),
        ],
    ),
    (
        "Device",
        [
            ("e", "edit a desired value (checked against the model's type and range)"),
            ("enter on a camera", "live picture in the terminal; o: inference overlay on/off"),
        ],
    ),
    ("Anywhere", [("?", "this help"), ("ctrl+q", "quit")]),
]


@dataclass(frozen=True, slots=True)
class ViewState:
    kind: Kind
    scope: Scope | None = None
    filter_text: str = ""


class ListScreen(Screen[None]):
    """The main screen: header, banner, breadcrumb, the table, the prompt."""

    DEFAULT_CSS = """
    #header { height: 1; width: 100%; background: $primary; color: $text; padding: 0 1; }
    #banner { height: 1; width: 100%; background: $error; color: $text; text-style: bold; padding: 0 1;
        display: none; }
    #crumbs { height: 1; width: 100%; background: $panel; color: $text; padding: 0 1; }
    #prompt-bar { display: none; height: 1; }
    #prompt-mark { width: 2; padding: 0 0 0 1; color: $accent; text-style: bold; }
    #prompt { border: none; height: 1; padding: 0; width: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield Static(id="header", markup=False)
        yield Static(id="banner", markup=False)
        yield Static(id="crumbs", markup=False)
        table = ResourceTable(id="table", clock=self.fleet.clock)
        yield table
        with Horizontal(id="prompt-bar"):
            yield Static(id="prompt-mark", markup=False)
            yield Input(id="prompt", select_on_focus=False)
        yield Footer()

    @property
    def fleet(self) -> FleetApp:
        app = self.app
        assert isinstance(app, FleetApp)
        return app


class FleetApp(App[None]):
    """See the module docstring. ``source`` supplies data (cloud, edge or static); ``clock`` the ages."""

    TITLE = "FleetOps"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS: ClassVar[list[BindingType]] = [
        # Priority: resolved as the key arrives, before it is forwarded to the focused table, so that the
        # keys typed right after ":" or "/" (typed ahead, pasted, tmux send-keys) reach the prompt.
        Binding("colon", "prompt('command')", "Command", key_display=":", priority=True),
        Binding("slash", "prompt('filter')", "Filter", key_display="/", priority=True),
        Binding("escape", "go_back", "Back"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("tab", "toggle_node_kind", "Pods/Devices", priority=True),
        Binding("o", "rollout", "Rollout", show=False),
        Binding("a", "apply", "Apply", show=False),
        Binding("ctrl+q", "quit", "Quit", show=False),
    ]

    def __init__(
        self,
        source: Source,
        *,
        readonly: bool = False,
        view: Kind = "pods",
        namespace: str | None = None,
        clock: Any = utcnow,
        apply_path: str | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.readonly = readonly
        self.clock = clock
        self.namespace = namespace
        self.apply_path = apply_path
        self.stores: dict[Kind, Store] = make_stores()
        self.state = ViewState(view)
        self.history: list[ViewState] = []
        self.filter = Filter()
        self.prompt_mode = ""
        self.connection = Connection("connecting")
        self._shown: tuple[Any, ...] = ()
        self._shown_rows: list[Row] = []
        self._last_age_refresh = 0.0
        self._frozen_at = 0
        self._base_cache: tuple[tuple[Any, ...], Sequence[Row]] | None = None
        self._corpus: Corpus | None = None
        self._corpus_base: Sequence[Row] | None = None  # the rows a corpus would be built from next
        self.node_usage: dict[str, NodeUsage] = {}
        self._usage_generation = 0

    # -- lifecycle -----------------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.push_screen(ListScreen())
        self.call_after_refresh(self._started)

    def _started(self) -> None:
        for kind in KINDS:
            self.run_worker(self._feed(kind), name=f"feed-{kind}", group="feeds", exit_on_error=False)
        self.run_worker(self._poll_usage(), name="usage", group="feeds", exit_on_error=False)
        self.set_interval(TICK, self._tick)
        self._show_view()
        if self.apply_path is not None:
            self.action_apply()

    async def on_unmount(self) -> None:
        self.workers.cancel_group(self, "feeds")
        await self.source.aclose()

    async def _feed(self, kind: Kind) -> None:
        stream = self.source.events(kind)
        store = self.stores[kind]
        try:
            async for ev in stream:
                store.apply(ev)
        except (ClientError, TuiError) as exc:
            self.notify(f"{kind}: {describe_error(exc)}", title="watch failed", severity="error", timeout=10)
        finally:
            await stream.aclose()

    async def _poll_usage(self) -> None:
        """Node usage for %CPU / %MEM, every USAGE_POLL seconds (the edges report it with their heartbeat,
        so polling faster shows nothing new)."""
        while True:
            usage = await self.source.node_usage()
            if usage != self.node_usage:
                self.node_usage = usage
                self._usage_generation += 1
            await asyncio.sleep(USAGE_POLL)

    # -- widgets -------------------------------------------------------------------------------------

    @property
    def list_screen(self) -> ListScreen | None:
        """The list screen once its widgets are there (a tick can come between its push and its compose
        on a slow machine)."""
        for screen in self.screen_stack:
            if isinstance(screen, ListScreen):
                return screen if screen.query("#table") else None
        return None

    @property
    def table(self) -> ResourceTable:
        screen = self.list_screen
        assert screen is not None
        return screen.query_one("#table", ResourceTable)

    # -- the tick ------------------------------------------------------------------------------------

    def _tick(self) -> None:
        self._update_connection()
        if self.list_screen is None:
            return
        kind = self.state.kind
        store = self.stores[kind]
        marker = (
            kind,
            store.generation,
            (self.stores["pods"].generation, self._usage_generation) if kind == "nodes" else 0,
        )
        if marker != self._shown[:3]:
            self._refresh_rows()
        now = self.clock().timestamp()
        if now - self._last_age_refresh >= 1.0:  # ages move once a second
            self._last_age_refresh = now
            self.table.refresh()

    def _update_connection(self) -> None:
        conn = self.source.connection()
        if conn == self.connection:
            return
        before, self.connection = self.connection, conn
        if conn.state in ("reconnecting", "unreachable", "failed") and conn.state != before.state:
            self.notify(conn.reason or conn.state, title=f"server {conn.state}", severity="error", timeout=8)
        elif conn.state == "connected" and before.state in ("reconnecting", "unreachable"):
            self.notify("connection restored")
        self._update_header()

    def _update_header(self) -> None:
        screen = self.list_screen
        if screen is None:
            return
        conn = self.connection
        mark = {"connected": "●", "connecting": "○"}.get(conn.state, "✕")
        state = f"{mark} {conn.state}" + (f": {conn.reason}" if conn.reason else "")
        mode = "  [read-only]" if self.readonly else ""
        where = "edge " if self.source.edge else ""
        screen.query_one("#header", Static).update(
            layout=False, content=f"FleetOps  {where}{self.source.description}  {state}{mode}"
        )
        banner = screen.query_one("#banner", Static)
        offline = self.source.edge and conn.cloud_connected is False
        banner.display = offline
        if offline:
            banner.update("EDGE-LOCAL: cloud unreachable — showing this node's own cache; writes are limited")

    # -- rows ----------------------------------------------------------------------------------------

    def _show_view(self) -> None:
        spec = VIEWS[self.state.kind]
        hidden = (
            frozenset({spec.namespace_column})
            if self.namespace is not None and spec.namespace_column >= 0
            else frozenset()
        )
        self.table.set_columns(spec.columns, hidden)
        self._shown = ()
        self._refresh_rows()
        self._update_header()

    def _refresh_rows(self, *, narrowing: bool = False, keystroke: bool = False) -> None:
        kind = self.state.kind
        store = self.stores[kind]
        table = self.table
        keep = table.current.key if table.current is not None else None
        base = self._base()
        if narrowing and self._shown[:3] == self._marker() and len(self._shown_rows) * 2 < len(base):
            rows = filter_rows(self._shown_rows, self.filter)  # typing on: narrow what is shown
        else:
            rows = filter_rows(base, self.filter, self._typing_corpus(base, keystroke=keystroke))
        if kind == "nodes":
            table.per_node = PerNode(self.stores["pods"].pods_per_node(), self.node_usage)
        table.placeholder = "" if store.loaded else "loading…"
        table.set_rows(rows, keep=keep)
        self._shown = (*self._marker(), self.filter)
        self._shown_rows = rows
        self._update_crumbs(len(rows), len(store.objects), store.loaded)
        self._freeze_after_load()

    def _freeze_after_load(self) -> None:
        """After a big list arrived, move what exists to the collector's permanent generation: a full
        collection over 100,000 pods' dicts takes ~0.5 s and would land in the middle of some keystroke.
        Objects freed later are still freed (reference counting); only cycles among them would linger."""
        total = sum(len(s.objects) for s in self.stores.values())
        if total >= FREEZE_ABOVE and total > self._frozen_at * 1.5:
            self._frozen_at = total
            gc.collect()
            gc.freeze()

    def _base(self) -> Sequence[Row]:
        """The view's rows before the user's filter, recomputed only when they change."""
        key = (*self._marker(), self.namespace, self.state.scope)
        if self._base_cache is None or self._base_cache[0] != key:
            store = self.stores[self.state.kind]
            self._base_cache = (
                key,
                scoped_rows(store.rows(), namespace=self.namespace, scope=self.state.scope),
            )
            self._corpus = None
        return self._base_cache[1]

    def _typing_corpus(self, base: Sequence[Row], *, keystroke: bool) -> Corpus | None:
        """The joined text of ``base`` while a filter is being typed (each keystroke scans it). Built at
        the second keystroke on unchanged rows: building it (~40 ms for 100,000 rows) pays off over
        several keystrokes on the same rows, not when watch events change the rows between keys (then a
        per-row pass is cheaper than a new corpus each time). Watch ticks use it, never build it."""
        if self.prompt_mode != "filter" or not self.filter.text:
            return None
        if self._corpus is not None and self._corpus.rows is base:
            return self._corpus
        if not keystroke:
            return None
        if self._corpus_base is not base:
            self._corpus_base = base  # first sight of these rows: wait for a second keystroke
            return None
        self._corpus = Corpus(base)
        return self._corpus

    def _marker(self) -> tuple[Any, ...]:
        kind = self.state.kind
        return (kind, self.stores[kind].generation, self.stores["pods"].generation if kind == "nodes" else 0)

    def _update_crumbs(self, shown: int, total: int, loaded: bool) -> None:
        screen = self.list_screen
        if screen is None:
            return
        spec = VIEWS[self.state.kind]
        parts = [f"{spec.title} ({shown:,}/{total:,})" if loaded else f"{spec.title} (loading…)"]
        parts.append(f"ns: {self.namespace if self.namespace is not None else 'all'}")
        if self.state.scope is not None:
            parts.append(f"scope: {self.state.scope.title}")
        if self.filter.text or self.filter.selector:
            parts.append(f"filter: {self.state.filter_text}")
        # One fixed line: no layout pass needed (it would cost a frame on every keystroke of a filter).
        screen.query_one("#crumbs", Static).update("  │  ".join(parts), layout=False)

    def set_filter(self, text: str) -> None:
        """Apply a filter now (each keystroke in the filter prompt comes here)."""
        try:
            flt = parse_filter(text)
        except FilterError as exc:
            self.notify(str(exc), title="filter", severity="error", timeout=4)
            return
        previous = self.filter
        self.filter = flt
        self.state = replace(self.state, filter_text=text)
        self._refresh_rows(narrowing=flt.narrows(previous) and previous == self._shown[3], keystroke=True)

    # -- navigation ----------------------------------------------------------------------------------

    def go(self, kind: Kind, scope: Scope | None = None, *, push: bool = True) -> None:
        if push:
            self.history.append(self.state)
        self.state = ViewState(kind, scope)
        self.filter = Filter()
        self._show_view()

    def action_go_back(self) -> None:
        if self.prompt_mode:
            self._close_prompt(clear=self.prompt_mode == "filter")
            return
        if self.state.filter_text:
            self.set_filter("")
            return
        if self.history:
            self.state = self.history.pop()
            try:
                self.filter = parse_filter(self.state.filter_text)
            except FilterError:
                self.filter = Filter()
            self._show_view()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(HELP))

    def action_prompt(self, mode: str) -> None:
        screen = self.list_screen
        if screen is None or self.screen is not screen:
            return
        prompt = screen.query_one("#prompt", Input)
        self.prompt_mode = mode
        screen.query_one("#prompt-bar").display = True
        screen.query_one("#prompt-mark", Static).update(":" if mode == "command" else "/")
        prompt.placeholder = (
            "nodes | pods | deploy | devices | events | ns NAME | q"
            if mode == "command"
            else "regex [-l k=v]"
        )
        prompt.value = self.state.filter_text if mode == "filter" else ""
        # Focus now, not after a refresh (Widget.focus defers it): keys typed ahead (a paste, tmux
        # send-keys, a fast typist over SSH) must land in the prompt, not in the table.
        screen.set_focus(prompt)

    def _close_prompt(self, *, clear: bool = False) -> None:
        screen = self.list_screen
        if screen is None:
            return
        prompt = screen.query_one("#prompt", Input)
        mode, self.prompt_mode = self.prompt_mode, ""
        screen.query_one("#prompt-bar").display = False
        prompt.value = ""
        screen.set_focus(self.table)
        if clear and mode == "filter":
            self.set_filter("")

    @on(Input.Changed, "#prompt")
    def _prompt_changed(self, event: Input.Changed) -> None:
        if self.prompt_mode == "filter":
            self.set_filter(event.value)

    @on(Input.Submitted, "#prompt")
    def _prompt_submitted(self, event: Input.Submitted) -> None:
        mode = self.prompt_mode
        self._close_prompt()
        if mode == "command":
            self.run_command(event.value)

    def run_command(self, text: str) -> None:
        """``:`` commands: a view name, ``ns NAME`` / ``ns all``, ``q``."""
        words = text.strip().removeprefix(":").split()
        if not words:
            return
        head = words[0].lower()
        if head in ("q", "q!", "quit", "exit"):
            self.exit()
        elif head in ("ns", "namespace"):
            target = words[1] if len(words) > 1 else "all"
            self.namespace = None if target in ("all", "-", "*") else target
            self._show_view()
        elif head in ALIASES:
            self.go(ALIASES[head], None)
        else:
            self.notify(f"unknown command {text.strip()!r}; press ? for the keys", severity="warning")

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for kind in KINDS:
            yield SystemCommand(f"View {VIEWS[kind].title}", f":{kind}", lambda k=kind: self.go(k, None))
        yield SystemCommand("All namespaces", ":ns all", lambda: self.run_command("ns all"))
        yield SystemCommand("Help", "the keys", self.action_help)

    # -- drill-down ----------------------------------------------------------------------------------

    @on(ResourceTable.Selected)
    def _selected(self, event: ResourceTable.Selected) -> None:
        row = event.row
        kind = self.state.kind
        if kind == "nodes":
            self.go("pods", Scope(f"node/{row.name}", node=row.name))
        elif kind == "deploy":
            self.go("pods", deployment_scope(row.raw))
        elif kind == "pods":
            self.open_pod(row.raw)
        elif kind == "devices" and is_camera(row.raw):
            self._open_screen(
                "tui.camera",
                "CameraScreen",
                row.namespace,
                row.name,
                what=f"camera {row.name}",
                edge_reason="camera streams come to the viewer through the cloud",
            )
        elif kind == "devices" and isinstance(self.source, EdgeSource):
            from tui.device import DeviceScreen

            screen = DeviceScreen(None, row.namespace, row.name, readonly=self.readonly, edge=self.source)
            self.push_screen(screen)
        elif kind == "devices":
            self._open_screen(
                "tui.device", "DeviceScreen", row.namespace, row.name, what=f"device {row.name}"
            )
        elif kind == "events":
            involved = row.raw.get("involvedObject") or {}
            if involved.get("kind") == "Pod":
                pod = self.stores["pods"].objects.get(
                    (str(involved.get("namespace") or row.namespace), str(involved.get("name") or ""))
                )
                if pod is not None:
                    self.open_pod(pod)

    def open_pod(self, pod: JSONObject) -> None:
        from tui.pod import PodScreen

        m = pod.get("metadata") or {}
        events = [
            e
            for e in self.stores["events"].objects.values()
            if (e.get("involvedObject") or {}).get("name") == m.get("name")
            and (e.get("involvedObject") or {}).get("kind") == "Pod"
            and (e.get("metadata") or {}).get("namespace") == m.get("namespace")
        ]
        self.push_screen(PodScreen(self.source, pod, readonly=self.readonly, events=events))

    def action_toggle_node_kind(self) -> None:
        scope = self.state.scope
        if scope is None or not scope.node:
            return
        other: Kind = "devices" if self.state.kind == "pods" else "pods"
        self.state = ViewState(other, scope)
        self.filter = Filter()
        self._show_view()

    def action_rollout(self) -> None:
        row = self.table.current
        if self.state.kind != "deploy" or row is None:
            return
        self._open_screen("tui.rollout", "RolloutScreen", row.namespace, row.name, what="rollout screen")

    def action_apply(self) -> None:
        # In readonly mode the deploy screen itself offers view and diff only.
        self._open_screen("tui.deploy", "DeployScreen", what="deploy screen", path=self.apply_path)
        self.apply_path = None

    def _open_screen(
        self, module: str, cls: str, *args: str, what: str, edge_reason: str = "", **kwargs: Any
    ) -> None:
        client = self.source.client
        if client is None:
            why = f": {edge_reason}" if edge_reason else ""
            self.notify(f"the {what} needs the cloud{why} (not available with --edge)", severity="warning")
            return
        try:
            screen_cls = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError):
            self.notify(f"the {what} is not yet available", severity="warning")
            return
        self.push_screen(screen_cls(client, *args, readonly=self.readonly, **kwargs))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "prompt":
            return not self.prompt_mode and self.screen is self.list_screen
        if action in ("rollout", "apply"):
            return self.state.kind == "deploy" and self.screen is self.list_screen
        if action == "toggle_node_kind":
            return self.state.scope is not None and bool(self.state.scope.node)
        return True

    @property
    def shown_rows(self) -> list[Row]:
        """The rows the table shows now (tests and benchmarks read this)."""
        return self._shown_rows

    def rows_text(self) -> list[str]:
        """Each shown row's name (tests)."""
        return [r.name for r in self._shown_rows]

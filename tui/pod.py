"""The pod screen: describe, YAML, logs that follow, exec, restart and delete.

One screen with three panes (describe, YAML, logs) switched by key, as k9s does: the engineer goes back
and forth between "why is it failing" (describe, events) and the logs without leaving the pod. I/O runs
in workers; a failure is a notification and the screen stays. Logs are streamed from the source
(the cloud's ``/log?follow=true``, or the edge's local API) into a bounded buffer (``MAX_LOG_LINES``), so
a chatty pod cannot grow the TUI's memory; wrap and search re-render from that buffer, timestamps re-open
the stream with ``timestamps=true`` (the server adds them, as ``kubectl logs --timestamps``).

Exec suspends the TUI and runs ``kubectl exec -it`` with the same kubeconfig: the cloud's exec is a
WebSocket/SPDY stream kubectl already speaks, and a real terminal needs the real tty. Restart deletes the
pod (its Deployment makes a new one) at the cloud, or asks the edge to restart its containers when
attached with ``--edge``. ``readonly`` hides and refuses every write key (restart, delete, exec).

The describe text is ``app.describe``'s (shared with the GUI): the fields an engineer reads first, then
the pod's events. Deliberately not done: container selection for multi-container logs (the first
container is followed; ``c`` cycles through them) and previous logs.
"""

from __future__ import annotations

import collections
import logging
import shutil
import subprocess
import time
from collections.abc import Iterable
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, RichLog, Static

from app.client import ClientError
from app.describe import describe_pod, to_yaml
from app.resources import JSONObject
from tui.data import Source, TuiError, describe_error
from tui.views import ConfirmScreen

logger = logging.getLogger(__name__)

MAX_LOG_LINES = 10_000
WRITE_ACTIONS = frozenset({"restart", "delete", "shell"})


def _d(value: Any) -> JSONObject:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


class PodScreen(Screen[None]):
    """One pod: ``d`` describe, ``y`` YAML, ``l`` logs (``w`` wrap, ``t`` timestamps, ``/`` search),
    ``s`` shell, ``r`` restart, ``ctrl+d`` delete, Esc back. See the module docstring."""

    DEFAULT_CSS = """
    PodScreen #pod-title { height: 1; background: $panel; color: $text; padding: 0 1; text-style: bold; }
    PodScreen #pod-text-scroll { height: 1fr; }
    PodScreen #pod-logs { height: 1fr; }
    PodScreen #pod-search { display: none; border: none; height: 1; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("d", "pane('describe')", "Describe"),
        Binding("y", "pane('yaml')", "YAML"),
        Binding("l", "pane('logs')", "Logs"),
        Binding("w", "wrap", "Wrap"),
        Binding("t", "timestamps", "Timestamps"),
        Binding("slash", "search", "Search"),
        Binding("s", "shell", "Shell"),
        Binding("r", "restart", "Restart"),
        Binding("ctrl+d", "delete", "Delete"),
    ]

    def __init__(
        self,
        source: Source,
        pod: JSONObject,
        *,
        readonly: bool = False,
        events: Iterable[JSONObject] = (),
    ) -> None:
        super().__init__()
        self.source = source
        self.pod = pod
        self.readonly = readonly
        self.events = list(events)
        m = _d(pod.get("metadata"))
        self.namespace = str(m.get("namespace") or "")
        self.pod_name = str(m.get("name") or "")
        self.pane = "describe"
        self.wrap = True
        self.timestamps = False
        self.search = ""
        self.log_lines: collections.deque[str] = collections.deque(maxlen=MAX_LOG_LINES)
        self._logs_started = False

    def _now(self) -> float:
        """The app's clock (a fixed one in snapshot tests), in epoch seconds."""
        clock = getattr(self.app, "clock", None)
        return clock().timestamp() if callable(clock) else time.time()

    def compose(self) -> ComposeResult:
        yield Static(f"pod {self.namespace}/{self.pod_name}", id="pod-title")
        with VerticalScroll(id="pod-text-scroll"):
            yield Static(id="pod-text", markup=False)
        yield RichLog(id="pod-logs", wrap=self.wrap, max_lines=MAX_LOG_LINES, markup=False)
        yield Input(
            placeholder="search the log (Enter to apply, Esc to clear)",
            id="pod-search",
            select_on_focus=False,
        )
        yield Footer()

    def on_mount(self) -> None:
        self._show()
        self.refresh_pod()

    # -- readonly: hide and refuse write actions -----------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in WRITE_ACTIONS and self.readonly:
            return False
        if action in ("wrap", "timestamps", "search") and self.pane != "logs":
            return None  # shown disabled: they act on the log pane
        return True

    # -- panes ---------------------------------------------------------------------------------------

    def _show(self) -> None:
        text = self.query_one("#pod-text", Static)
        scroll = self.query_one("#pod-text-scroll", VerticalScroll)
        logs = self.query_one("#pod-logs", RichLog)
        scroll.display = self.pane != "logs"
        logs.display = self.pane == "logs"
        title = f"pod {self.namespace}/{self.pod_name} — {self.pane}"
        if self.pane == "logs":
            flags = [
                f"wrap {'on' if self.wrap else 'off'}",
                f"timestamps {'on' if self.timestamps else 'off'}",
            ]
            if self.search:
                flags.append(f"search {self.search!r}")
            title += " (" + ", ".join(flags) + ")"
            logs.focus()
        else:
            text.update(
                describe_pod(self.pod, self.events, self._now())
                if self.pane == "describe"
                else to_yaml(self.pod)
            )
            scroll.focus()
        self.query_one("#pod-title", Static).update(title)
        self.refresh_bindings()

    def action_pane(self, pane: str) -> None:
        self.pane = pane
        if pane == "logs" and not self._logs_started:
            self._logs_started = True
            self.follow_logs()
        self._show()

    def action_back(self) -> None:
        search = self.query_one("#pod-search", Input)
        if search.display:
            search.display = False
            self._set_search("")
            return
        self.app.pop_screen()

    @work(exclusive=True, group="pod-refresh")
    async def refresh_pod(self) -> None:
        try:
            self.pod = await self.source.get("pods", self.namespace, self.pod_name)
        except (ClientError, TuiError) as exc:
            self.notify(f"pod {self.pod_name}: {describe_error(exc)}", severity="error")
            return
        if self.pane != "logs":
            self._show()

    # -- logs ----------------------------------------------------------------------------------------

    @work(exclusive=True, group="pod-logs")
    async def follow_logs(self) -> None:
        containers = [str(_d(c).get("name")) for c in _l(_d(self.pod.get("spec")).get("containers"))]
        container = containers[0] if len(containers) > 1 else None
        stream = self.source.logs(
            self.namespace, self.pod_name, container=container, timestamps=self.timestamps
        )
        log = self.query_one("#pod-logs", RichLog)
        try:
            async for line in stream:
                self.log_lines.append(line)
                if self._matches(line):
                    log.write(self._render_line(line))
        except (ClientError, TuiError) as exc:
            self.notify(f"logs of {self.pod_name}: {describe_error(exc)}", severity="error")
        finally:
            await stream.aclose()

    def _matches(self, line: str) -> bool:
        return not self.search or self.search.lower() in line.lower()

    def _render_line(self, line: str) -> Text:
        text = Text(line)
        if self.search:
            text.highlight_words([self.search], style="reverse", case_sensitive=False)
        return text

    def _rerender(self) -> None:
        log = self.query_one("#pod-logs", RichLog)
        log.clear()
        log.wrap = self.wrap
        for line in self.log_lines:
            if self._matches(line):
                log.write(self._render_line(line))

    def action_wrap(self) -> None:
        self.wrap = not self.wrap
        self._rerender()
        self._show()

    def action_timestamps(self) -> None:
        self.timestamps = not self.timestamps
        self.log_lines.clear()
        self.query_one("#pod-logs", RichLog).clear()
        self.follow_logs()
        self._show()

    def action_search(self) -> None:
        search = self.query_one("#pod-search", Input)
        search.display = True
        search.value = self.search
        search.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "pod-search":
            event.input.display = False
            self._set_search(event.value.strip())

    def _set_search(self, text: str) -> None:
        self.search = text
        self._rerender()
        self._show()

    # -- writes --------------------------------------------------------------------------------------

    def _refuse_readonly(self) -> bool:
        if self.readonly:
            self.notify("read-only mode: writes are disabled", severity="warning")
        return self.readonly

    def action_shell(self) -> None:
        if self._refuse_readonly():
            return
        kubeconfig = self.source.kubeconfig
        if kubeconfig is None:
            why = "the edge's local API has no exec" if self.source.edge else "no kubeconfig in use"
            self.notify(f"exec needs kubectl with a kubeconfig: {why}", severity="warning")
            return
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            self.notify("exec needs kubectl on PATH", severity="error")
            return
        args = [
            kubectl,
            "--kubeconfig",
            kubeconfig,
            "exec",
            "-it",
            "-n",
            self.namespace,
            self.pod_name,
            "--",
            "sh",
        ]
        with self.app.suspend():
            code = subprocess.call(args)
        if code != 0:
            self.notify(f"kubectl exec ended with status {code}", severity="warning")

    def action_restart(self) -> None:
        if self._refuse_readonly():
            return
        self._restart()

    @work(exclusive=True, group="pod-write")
    async def _restart(self) -> None:
        try:
            message = await self.source.restart_pod(self.namespace, self.pod_name)
        except (ClientError, TuiError) as exc:
            self.notify(f"restart {self.pod_name}: {describe_error(exc)}", severity="error")
            return
        self.notify(message)

    def action_delete(self) -> None:
        if self._refuse_readonly():
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._delete()

        self.app.push_screen(ConfirmScreen(f"Delete pod {self.namespace}/{self.pod_name}?"), answered)

    @work(exclusive=True, group="pod-write")
    async def _delete(self) -> None:
        try:
            await self.source.delete_pod(self.namespace, self.pod_name)
        except (ClientError, TuiError) as exc:
            self.notify(f"delete {self.pod_name}: {describe_error(exc)}", severity="error")
            return
        self.notify(f"deleted pod {self.namespace}/{self.pod_name}")
        if self.app.screen is self:
            self.app.pop_screen()

"""The deploy screen: edit or load a manifest, see what it would change, apply it.

The editor is a plain :class:`~textual.widgets.TextArea` holding YAML (loaded from a file, or a small
Deployment to start from). ``ctrl+r`` (or ``d`` outside the editor) shows the diff against what is running;
``ctrl+s`` (or ``a``) validates, shows the same diff for confirmation and applies; ``ctrl+o`` (or ``w``)
opens the rollout screen of the manifest's first Deployment. Parsing, validation and the
diff are :mod:`app.manifest` (pure); the apply is :meth:`app.client.AsyncClient.apply`, one object after the
other in manifest order (a Namespace or ConfigMap before the Deployment that needs it), each failure
reported with the server's reason and field causes while the others still go through, as ``kubectl apply``
does. The editor's text is never touched by a failure, and the cursor jumps to the first bad line.

Read-only mode keeps the editor and the diff (a field engineer may check what a manifest would change)
and hides the apply.

Deliberately not done: saving the editor back to the file (this is an apply tool, not an editor; the file
is read once), syntax highlighting (Textual's YAML highlighting needs tree-sitter, which is not a
dependency), and pruning objects absent from the manifest (``kubectl apply --prune``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Static, TextArea

from app.client import ApiError, AsyncClient, ClientError, NotFound
from app.manifest import STARTER_MANIFEST, ManifestError, ManifestObject, diff_against_live, parse
from app.resources import DEPLOYMENTS, JSONObject
from tui.rollout import RolloutScreen

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Planned:
    """One manifest object with the live object it would change (None: it would be created)."""

    manifest: ManifestObject
    live: JSONObject | None
    diff: str

    @property
    def verb(self) -> str:
        if self.live is None:
            return "created"
        return "configured" if self.diff else "unchanged"


def _kind_ref(p: ManifestObject) -> str:
    """kubectl's ``deployment.apps/web`` spelling."""
    group = f".{p.rt.group}" if p.rt.group else ""
    return f"{p.rt.singular or p.rt.kind.lower()}{group}/{p.name or '(generated)'}"


def render_diff(diff: str) -> Text:
    """A unified diff coloured as ``git diff`` does: additions green, removals red, hunks cyan."""
    text = Text()
    for line in diff.splitlines(keepends=True):
        if line.startswith(("+++", "---")):
            style = "bold"
        elif line.startswith("+"):
            style = "green"
        elif line.startswith("-"):
            style = "red"
        elif line.startswith("@@"):
            style = "cyan"
        else:
            style = ""
        text.append(line, style=style)
    return text


class DiffScreen(ModalScreen[bool]):
    """The diff of a manifest against the cluster; answers True when the person chose to apply it."""

    DEFAULT_CSS = """
    DiffScreen { align: center middle; }
    DiffScreen > Vertical { width: 90%; height: 90%; border: thick $accent; background: $surface; }
    DiffScreen #diff-title { height: 1; padding: 0 1; background: $boost; }
    DiffScreen VerticalScroll { height: 1fr; padding: 0 1; }
    DiffScreen Horizontal { height: auto; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Apply"),
        Binding("n,escape,q", "answer(False)", "Close"),
    ]

    def __init__(self, plans: list[Planned], *, can_apply: bool) -> None:
        super().__init__()
        self.plans = plans
        self.can_apply = can_apply
        self.text = "".join(p.diff for p in plans)

    def compose(self) -> ComposeResult:
        summary = ", ".join(f"{_kind_ref(p.manifest)} {p.verb}" for p in self.plans)
        with Vertical():
            yield Static(f"Diff: {summary}", id="diff-title")
            with VerticalScroll():
                yield Static(render_diff(self.text) if self.text else "No changes.", id="diff")
            with Horizontal():
                if self.can_apply:
                    yield Button("Apply (y)", id="apply", variant="primary")
                yield Button("Close (n)", id="close")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "answer" and parameters == (True,):
            return self.can_apply
        return True

    def action_answer(self, apply: bool) -> None:
        self.dismiss(apply and self.can_apply)

    @on(Button.Pressed, "#apply")
    def _apply(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.dismiss(False)


class DeployScreen(Screen[None]):
    """Edit, diff and apply a manifest."""

    DEFAULT_CSS = """
    DeployScreen #title { height: 1; background: $boost; padding: 0 1; }
    DeployScreen #editor { height: 1fr; }
    DeployScreen #problems { height: auto; max-height: 8; padding: 0 1; }
    DeployScreen #problems.error { color: $error; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "apply", "Apply", priority=True),
        Binding("ctrl+r", "diff", "Diff", priority=True),
        Binding("ctrl+o", "rollout", "Rollout", priority=True),
        Binding("a", "apply", "Apply", show=False),
        Binding("w", "rollout", "Rollout", show=False),
        Binding("d", "diff", "Diff", show=False),
        Binding("escape", "back", "Back", priority=True),
    ]

    def __init__(self, client: AsyncClient, *, readonly: bool, path: str | None = None) -> None:
        super().__init__()
        self.client = client
        self.readonly = readonly
        self.path = path
        self.applied: list[str] = []

    def compose(self) -> ComposeResult:
        where = self.path or "new manifest"
        mode = "  ·  read-only: diff only" if self.readonly else ""
        yield Static(f"Deploy  ·  {where}{mode}", id="title")
        yield TextArea(
            "" if self.path else STARTER_MANIFEST, id="editor", show_line_numbers=True, tab_behavior="indent"
        )
        yield Static("", id="problems")
        yield Footer()

    def on_mount(self) -> None:
        self.editor.focus()
        if self.path:
            self._load(self.path)

    @property
    def editor(self) -> TextArea:
        return self.query_one("#editor", TextArea)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "apply":
            return not self.readonly
        return True

    @work(exclusive=True, group="deploy-load")
    async def _load(self, path: str) -> None:
        try:
            text = await asyncio.to_thread(Path(path).read_text, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.notify(f"cannot read {path}: {exc}", severity="error", timeout=10)
            return
        self.editor.load_text(text)

    def _problems(self, lines: list[str], *, error: bool) -> None:
        box = self.query_one("#problems", Static)
        box.update("\n".join(lines))
        box.set_class(error, "error")

    # -- actions --------------------------------------------------------------------------------------

    def action_back(self) -> None:
        if self.focused is self.editor:
            self.set_focus(None)  # first Esc leaves the editor (so a/d work), the second goes back
            return
        if self.app.screen is self and len(self.app.screen_stack) > 1:
            self.app.pop_screen()

    def action_diff(self) -> None:
        self._review(apply=False)

    def action_apply(self) -> None:
        if not self.readonly:
            self._review(apply=True)

    def action_rollout(self) -> None:
        """Watch the rollout of the manifest's first Deployment (the one just applied, typically)."""
        objects = self._parse()
        if objects is None:
            return
        target = next((o for o in objects if o.rt is DEPLOYMENTS and o.name), None)
        if target is None:
            self.notify("the manifest has no named Deployment to follow", severity="warning")
            return
        self.app.push_screen(
            RolloutScreen(self.client, target.namespace, target.name, readonly=self.readonly)
        )

    def _parse(self) -> list[ManifestObject] | None:
        try:
            return parse(self.editor.text, default_namespace=self.client.namespace or "default")
        except ManifestError as exc:
            lines = [str(e) for e in exc.errors]
            self._problems(lines, error=True)
            more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
            self.notify(f"manifest error: {lines[0]}{more}", severity="error", timeout=10)
            first = exc.errors[0].line - 1
            self.editor.move_cursor((max(0, min(first, self.editor.document.line_count - 1)), 0))
            return None

    @work(exclusive=True, group="deploy-review")
    async def _review(self, *, apply: bool) -> None:
        objects = self._parse()
        if objects is None:
            return
        plans: list[Planned] = []
        for obj in objects:
            live: JSONObject | None = None
            if obj.name:
                try:
                    live = await self.client.get(obj.rt, obj.name, obj.namespace)
                except NotFound:
                    live = None
                except ClientError as exc:
                    self._problems([f"{obj.ref}: {exc}"], error=True)
                    self.notify(f"cannot read {obj.ref}: {exc}", severity="error", timeout=10)
                    return
            plans.append(Planned(obj, live, diff_against_live(live, obj)))
        self._problems([f"{_kind_ref(p.manifest)}: would be {p.verb}" for p in plans], error=False)
        confirmed = await self.app.push_screen_wait(DiffScreen(plans, can_apply=apply and not self.readonly))
        if confirmed and apply and not self.readonly:
            await self._apply(plans)

    async def _apply(self, plans: list[Planned]) -> None:
        done: list[str] = []
        failed: list[str] = []
        for p in plans:
            ref = _kind_ref(p.manifest)
            if p.verb == "unchanged":
                done.append(f"{ref} unchanged")
                continue
            try:
                await self.client.apply(p.manifest.obj)
            except ApiError as exc:
                causes = "; ".join(exc.field_errors)
                reason = f"{exc.reason}: {exc.message}" if exc.reason else exc.message
                failed.append(f"{ref}: {reason}" + (f" ({causes})" if causes else ""))
                continue
            except ClientError as exc:
                failed.append(f"{ref}: {exc}")
                continue
            done.append(f"{ref} {p.verb}")
            if p.manifest.rt is DEPLOYMENTS:
                self.applied.append(f"{p.manifest.namespace}/{p.manifest.name}")
        self._problems(failed + done, error=bool(failed))
        for line in failed:
            self.notify(f"apply failed: {line}", severity="error", timeout=10)
        if done:
            self.notify("\n".join(done))
        logger.info("applied: %s; failed: %s", done, failed)

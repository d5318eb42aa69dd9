"""The rollout screen: one Deployment's rollout, live, with its history and a rollback.

Three reflectors feed it: the Deployment (field selector on its name), its ReplicaSets (one per revision;
the controller names them ``<deployment>-<pod-template-hash>`` and annotates each with its revision) and
its pods (the Deployment's ``matchLabels``). Progress is two bars against the desired replica count,
*updated* (pods of the newest template) and *available*, with ``kubectl rollout status``'s sentence and
the Deployment's conditions below; the history table lists the revisions with their images, the current
one marked. ``u`` rolls back to the previous revision (``kubectl rollout undo``) after a confirmation;
read-only mode hides it. The decisions (status, history, rollback plan) are :mod:`app.rollout`.

Deliberately not done: rolling back to an arbitrary revision from the screen (``app.rollout.rollback``
takes ``to_revision``; the screen offers the common case), pause/resume, and restart
(``kubectl rollout restart``).
"""

from __future__ import annotations

import logging
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Label, ProgressBar, Static

from app.client import AsyncClient, ClientError, pod_view
from app.resources import DEPLOYMENTS, PODS, REPLICASETS, JSONObject, ResourceType
from app.rollout import (
    POD_TEMPLATE_HASH,
    Revision,
    RolloutError,
    revision_of,
    revisions,
    rollback,
    rollout_status,
)

logger = logging.getLogger(__name__)


def _d(value: object) -> JSONObject:
    return value if isinstance(value, dict) else {}


def _template_hash(rs: JSONObject) -> str:
    labels = _d(_d(_d(_d(rs.get("spec")).get("template")).get("metadata")).get("labels"))
    return str(labels.get(POD_TEMPLATE_HASH) or "")


class ConfirmRollback(ModalScreen[bool]):
    """Asks before a rollback: it replaces every pod of the Deployment."""

    DEFAULT_CSS = """
    ConfirmRollback { align: center middle; }
    ConfirmRollback > Vertical {
        width: 70; height: auto; border: thick $warning; background: $surface; padding: 1 2;
    }
    ConfirmRollback Horizontal { height: auto; margin-top: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Roll back"),
        Binding("n,escape", "answer(False)", "Cancel"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question, id="question")
            with Horizontal():
                yield Button("Roll back (y)", id="yes", variant="warning")
                yield Button("Cancel (n)", id="no")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def _no(self) -> None:
        self.dismiss(False)


class RolloutScreen(Screen[None]):
    """A Deployment's rollout progress, conditions, history and pods; ``u`` rolls back."""

    DEFAULT_CSS = """
    RolloutScreen #title { height: 1; background: $boost; padding: 0 1; }
    RolloutScreen .bar-row { height: 1; padding: 0 1; }
    RolloutScreen .bar-label { width: 26; }
    RolloutScreen #status { height: auto; padding: 0 1; margin-bottom: 1; }
    RolloutScreen #status.done { color: $success; }
    RolloutScreen .section { height: 1; padding: 0 1; color: $text-muted; }
    RolloutScreen DataTable { height: auto; max-height: 12; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("u", "undo", "Roll back"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, client: AsyncClient, namespace: str, name: str, *, readonly: bool) -> None:
        super().__init__()
        self.client = client
        self.namespace = namespace
        self.deployment_name = name
        self.readonly = readonly
        self.deployment: JSONObject | None = None
        self.replicasets: dict[str, JSONObject] = {}
        self.pods: dict[str, JSONObject] = {}
        self.history: list[Revision] = []
        self._selector: str | None = None
        self._state = "loading"

    def compose(self) -> ComposeResult:
        yield Static(self._title(), id="title")
        with Horizontal(classes="bar-row"):
            yield Label("Updated", id="updated-label", classes="bar-label")
            yield ProgressBar(total=None, show_eta=False, id="updated")
        with Horizontal(classes="bar-row"):
            yield Label("Available", id="available-label", classes="bar-label")
            yield ProgressBar(total=None, show_eta=False, id="available")
        yield Static("", id="status")
        yield Static("Conditions", classes="section")
        conditions: DataTable[str] = DataTable(id="conditions", cursor_type="none")
        conditions.add_columns("TYPE", "STATUS", "REASON", "MESSAGE", "LAST UPDATE")
        yield conditions
        yield Static("History", classes="section")
        history: DataTable[str] = DataTable(id="history", cursor_type="row")
        history.add_columns("REVISION", "REPLICASET", "PODS", "IMAGES", "CHANGE-CAUSE")
        yield history
        yield Static("Pods", classes="section")
        pods: DataTable[str] = DataTable(id="pods", cursor_type="row")
        pods.add_columns("NAME", "READY", "STATUS", "RESTARTS", "NODE", "REVISION")
        yield pods
        yield Footer()

    def on_mount(self) -> None:
        self._watch_deployment()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "undo":
            return not self.readonly
        return True

    def _title(self) -> str:
        parts = [f"Deployment {self.namespace}/{self.deployment_name}"]
        if self.deployment is not None:
            parts.append(f"revision {revision_of(self.deployment) or '-'}")
            containers = _d(_d(_d(self.deployment.get("spec")).get("template")).get("spec")).get("containers")
            images = [str(c.get("image") or "") for c in containers or [] if isinstance(c, dict)]
            parts.append(", ".join(images) or "no containers")
        else:
            parts.append(self._state)
        if self.readonly:
            parts.append("read-only")
        return "  ·  ".join(parts)

    # -- watches --------------------------------------------------------------------------------------

    @work(exclusive=True, group="rollout-deployment")
    async def _watch_deployment(self) -> None:
        selector = f"metadata.name={self.deployment_name}"
        try:
            async with self.client.list_watch(
                DEPLOYMENTS, self.namespace, field_selector=selector
            ) as reflector:
                async for event in reflector:
                    if event.type == "RESYNC":
                        self.deployment = event.items[0] if event.items else None
                        if self.deployment is None:
                            self._state = "not found"
                    elif event.type == "DELETED":
                        self.deployment, self._state = None, "deleted"
                    else:
                        self.deployment = event.object
                    self._follow_children()
                    self._refresh_view()
        except ClientError as exc:
            self._state = "unavailable"
            self.notify(f"deployment {self.deployment_name}: {exc}", severity="error", timeout=10)
            self._refresh_view()

    def _follow_children(self) -> None:
        """(Re)start the ReplicaSet and pod watches when the Deployment's selector is first known or
        changes (a selector is immutable in apps/v1, so in practice once)."""
        if self.deployment is None:
            return
        match = _d(_d(_d(self.deployment.get("spec")).get("selector")).get("matchLabels"))
        selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
        if selector == self._selector:
            return
        self._selector = selector
        self._watch_children(REPLICASETS, selector, self.replicasets)
        self._watch_children(PODS, selector, self.pods)

    @work(group="rollout-children")
    async def _watch_children(self, rt: ResourceType, selector: str, into: dict[str, JSONObject]) -> None:
        try:
            async with self.client.list_watch(rt, self.namespace, label_selector=selector) as reflector:
                async for _event in reflector:
                    if selector != self._selector:
                        return  # superseded by a newer selector's watch
                    into.clear()
                    into.update({name: obj for (_, name), obj in reflector.items.items()})
                    self._refresh_view()
        except ClientError as exc:
            self.notify(f"{rt.plural} of {self.deployment_name}: {exc}", severity="error", timeout=10)

    # -- rendering ------------------------------------------------------------------------------------

    def show(self, deployment: JSONObject, replicasets: list[JSONObject], pods: list[JSONObject]) -> None:
        """Show the given objects as if the watches had just delivered them (fixed-data snapshots)."""
        self.deployment = deployment
        self.replicasets = {str(_d(o.get("metadata")).get("name")): o for o in replicasets}
        self.pods = {str(_d(o.get("metadata")).get("name")): o for o in pods}
        self._refresh_view()

    def _refresh_view(self) -> None:
        self.query_one("#title", Static).update(self._title())
        d = self.deployment
        status_box = self.query_one("#status", Static)
        if d is None:
            status_box.update(f"Deployment {self.deployment_name}: {self._state}")
            return
        st = rollout_status(d)
        total = max(st.desired, 1)
        self.query_one("#updated", ProgressBar).update(total=total, progress=min(st.updated, total))
        self.query_one("#available", ProgressBar).update(total=total, progress=min(st.available, total))
        self.query_one("#updated-label", Label).update(f"Updated   {st.updated}/{st.desired}")
        self.query_one("#available-label", Label).update(f"Available {st.available}/{st.desired}")
        status_box.update(st.message)
        status_box.set_class(st.done, "done")

        conditions = self.query_one("#conditions", DataTable)
        conditions.clear()
        for c in _d(d.get("status")).get("conditions") or []:
            if isinstance(c, dict):
                conditions.add_row(
                    str(c.get("type", "")),
                    str(c.get("status", "")),
                    str(c.get("reason", "")),
                    str(c.get("message", "")),
                    str(c.get("lastUpdateTime") or c.get("lastTransitionTime") or ""),
                )

        self.history = revisions(d, self.replicasets.values())
        current = revision_of(d)
        history = self.query_one("#history", DataTable)
        history.clear()
        for r in reversed(self.history):
            mark = "*" if r.number == current else " "
            history.add_row(
                f"{mark}{r.number}",
                r.replicaset,
                f"{r.ready}/{r.replicas}",
                ", ".join(r.images),
                r.change_cause,
                key=str(r.number),
            )

        by_hash = {_template_hash(rs): revision_of(rs) for rs in self.replicasets.values()}
        pods = self.query_one("#pods", DataTable)
        pods.clear()
        for name in sorted(self.pods):
            v = pod_view(self.pods[name])
            pod_hash = str(_d(_d(self.pods[name].get("metadata")).get("labels")).get(POD_TEMPLATE_HASH) or "")
            revision = by_hash.get(pod_hash)
            pods.add_row(
                v.name, v.ready, v.status, str(v.restarts), v.node or "", str(revision or ""), key=name
            )

    # -- actions --------------------------------------------------------------------------------------

    def action_back(self) -> None:
        if self.app.screen is self and len(self.app.screen_stack) > 1:
            self.app.pop_screen()

    def action_undo(self) -> None:
        if self.readonly or self.deployment is None:
            return
        previous = self.history[-2].number if len(self.history) >= 2 else None
        if previous is None:
            self.notify(f"{self.deployment_name} has no previous revision", severity="warning")
            return
        question = f"Roll deployment {self.deployment_name} back to revision {previous}?"

        def answered(yes: bool | None) -> None:
            if yes:
                self._undo()

        self.app.push_screen(ConfirmRollback(question), answered)

    @work(exclusive=True, group="rollout-undo")
    async def _undo(self) -> None:
        try:
            plan = await rollback(self.client, self.namespace, self.deployment_name)
        except (RolloutError, ClientError) as exc:
            self.notify(f"rollback failed: {exc}", severity="error", timeout=10)
            return
        self.notify(plan.message, severity="information" if plan.patch is not None else "warning")

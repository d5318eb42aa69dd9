"""A Deployment's rollout, live: progress, conditions, history, pods, and the rollback.

Three Reflectors on the bridge's loop feed it, as in the TUI: the Deployment (a ``metadata.name`` field
selector), its ReplicaSets (one per revision, annotated with it) and its pods (the Deployment's
``matchLabels``); the children's watches start once the selector is known. Every change puts a fresh
:class:`RolloutData` in a one-slot mailbox (the newest wins), and :func:`rollout_view` turns it into
what the page shows: ``kubectl rollout status``'s verdict (``app.rollout.rollout_status``), the history
newest first with the current revision marked, and each pod with the revision it runs.

The rollback is ``app.rollout.rollback`` (kubectl's ``rollout undo``: the wanted revision's template
copied back under a new revision, refused on a paused Deployment, re-planned on a Conflict), to the
previous revision or to one picked in the history.

Deliberately not done: pause/resume and ``rollout restart``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, Signal

from app.client import AsyncClient, ClientError, pod_view
from app.resources import DEPLOYMENTS, PODS, REPLICASETS, JSONObject, ResourceType
from app.rollout import (
    POD_TEMPLATE_HASH,
    Revision,
    RolloutStatus,
    revision_of,
    revisions,
    rollback,
    rollout_status,
)
from gui.bridge import AsyncBridge, Job, Mailbox
from gui.errors import describe_error

logger = logging.getLogger(__name__)


def _d(value: Any) -> JSONObject:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class RolloutData:
    """What the watches hold: the Deployment (None: not found or deleted) and its children by name."""

    deployment: JSONObject | None
    replicasets: dict[str, JSONObject] = field(default_factory=dict)
    pods: dict[str, JSONObject] = field(default_factory=dict)
    state: str = "loading"


@dataclass(frozen=True, slots=True)
class PodLine:
    name: str
    ready: str
    status: str
    restarts: int
    node: str
    revision: int | None


@dataclass(frozen=True, slots=True)
class RolloutView:
    """The page's content, a pure function of :class:`RolloutData`."""

    title: str
    status: RolloutStatus | None
    conditions: tuple[tuple[str, str, str, str, str], ...]
    history: tuple[Revision, ...]  # newest first
    current: int
    pods: tuple[PodLine, ...]
    images: tuple[str, ...]

    @property
    def previous(self) -> int | None:
        """The revision a plain rollback goes to (the one before the newest)."""
        return self.history[1].number if len(self.history) >= 2 else None


def _template_hash(obj: JSONObject) -> str:
    return str(_d(_d(obj.get("metadata")).get("labels")).get(POD_TEMPLATE_HASH) or "")


def rollout_view(data: RolloutData, name: str) -> RolloutView:
    d = data.deployment
    if d is None:
        return RolloutView(f"Deployment {name}: {data.state}", None, (), (), 0, (), ())
    template = _d(_d(d.get("spec")).get("template"))
    images = tuple(str(_d(c).get("image") or "") for c in _d(template.get("spec")).get("containers") or [])
    conditions = tuple(
        (
            str(c.get("type", "")),
            str(c.get("status", "")),
            str(c.get("reason", "")),
            str(c.get("message", "")),
            str(c.get("lastUpdateTime") or c.get("lastTransitionTime") or ""),
        )
        for c in _d(d.get("status")).get("conditions") or []
        if isinstance(c, dict)
    )
    history = tuple(reversed(revisions(d, data.replicasets.values())))
    by_hash = {
        _template_hash(_d(_d(rs.get("spec")).get("template"))): revision_of(rs)
        for rs in data.replicasets.values()
    }
    pods = []
    for pname in sorted(data.pods):
        obj = data.pods[pname]
        v = pod_view(obj)
        pods.append(PodLine(v.name, v.ready, v.status, v.restarts, v.node, by_hash.get(_template_hash(obj))))
    m = _d(d.get("metadata"))
    title = f"Deployment {m.get('namespace', '')}/{m.get('name', name)}"
    return RolloutView(title, rollout_status(d), conditions, history, revision_of(d), tuple(pods), images)


class RolloutController(QObject):
    """Follows one Deployment's rollout; ``changed`` when the view changes, ``message(severity, text)``."""

    changed = Signal()
    message = Signal(str, str)

    def __init__(
        self, bridge: AsyncBridge, client: AsyncClient | None, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self._bridge = bridge
        self._client = client
        self.namespace = ""
        self.name = ""
        self.data = RolloutData(None, state="idle")
        self.view = rollout_view(self.data, "")
        self.rolling_back = False
        self._job: Job[None] | None = None
        self._box: Mailbox[RolloutData] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    def follow(self, namespace: str, name: str) -> None:
        if (namespace, name) == self.key and self._job is not None:
            return
        self.close()
        self.namespace, self.name = namespace, name
        self.data = RolloutData(None, state="loading" if self._client is not None else "no connection")
        self.view = rollout_view(self.data, name)
        self.changed.emit()
        if self._client is None:
            self.message.emit("error", "rollouts need a connection to the cloud")
            return
        box: Mailbox[RolloutData] = Mailbox(self._bridge, lambda: self._take(box), owner=self, maxlen=1)
        self._box = box
        self._job = self._bridge.submit(
            self._watch(self._client, namespace, name, box),
            name=f"gui.rollout[{namespace}/{name}]",
            owner=self,
        )

    def close(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self._job = None
        self._box = None
        self.namespace = self.name = ""

    def rollback(self, to_revision: int | None = None) -> None:
        """``kubectl rollout undo`` (to ``to_revision``, or the previous one); the outcome is a message."""
        if self._client is None or not self.name or self.rolling_back:
            return
        self.rolling_back = True
        ns, name = self.namespace, self.name

        def done(plan: Any) -> None:
            self.rolling_back = False
            severity = "info" if plan.patch is not None else "warning"
            self.message.emit(severity, str(plan.message))

        def failed(exc: BaseException) -> None:
            self.rolling_back = False
            self.message.emit("error", f"rollback failed: {describe_error(exc)}")

        self.message.emit(
            "info", f"rolling {name} back to revision {to_revision or self.view.previous or '?'}..."
        )
        self._bridge.submit(
            rollback(self._client, ns, name, to_revision),
            on_result=done,
            on_error=failed,
            owner=self,
            name=f"gui.rollback[{ns}/{name}]",
        )

    def _take(self, box: Mailbox[RolloutData]) -> None:
        if box is not self._box:
            return
        for data in box.drain():
            self.data = data
            self.view = rollout_view(data, self.name)
        self.changed.emit()

    # -- I/O thread -----------------------------------------------------------------------------------

    async def _watch(self, client: AsyncClient, namespace: str, name: str, box: Mailbox[RolloutData]) -> None:
        deployment: JSONObject | None = None
        replicasets: dict[str, JSONObject] = {}
        pods: dict[str, JSONObject] = {}
        children: list[asyncio.Task[None]] = []
        selector: str | None = None
        status = "loading"

        def publish() -> None:
            box.put(RolloutData(deployment, dict(replicasets), dict(pods), status))

        async def watch_children(rt: ResourceType, sel: str, into: dict[str, JSONObject]) -> None:
            try:
                async with client.list_watch(rt, namespace, label_selector=sel) as reflector:
                    async for _ in reflector:
                        into.clear()
                        into.update({n: obj for (_, n), obj in reflector.items.items()})
                        publish()
            except ClientError as exc:
                logger.warning("%s of deployment %s/%s: %s", rt.plural, namespace, name, exc)

        try:
            async with client.list_watch(
                DEPLOYMENTS, namespace, field_selector=f"metadata.name={name}"
            ) as refl:
                async for event in refl:
                    if event.type == "RESYNC":
                        deployment = event.items[0] if event.items else None
                        status = "not found" if deployment is None else "found"
                    elif event.type == "DELETED":
                        deployment, status = None, "deleted"
                    else:
                        deployment, status = event.object, "found"
                    if deployment is not None:
                        match = _d(_d(_d(deployment.get("spec")).get("selector")).get("matchLabels"))
                        new = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
                        if new != selector:
                            selector = new
                            for t in children:
                                t.cancel()
                            replicasets.clear()
                            pods.clear()
                            children = [
                                asyncio.create_task(
                                    watch_children(REPLICASETS, new, replicasets),
                                    name=f"gui.rollout-rs[{name}]",
                                ),
                                asyncio.create_task(
                                    watch_children(PODS, new, pods), name=f"gui.rollout-pods[{name}]"
                                ),
                            ]
                    publish()
        except ClientError as exc:
            status = f"unavailable: {describe_error(exc)}"
            publish()
        finally:
            for t in children:
                t.cancel()
            if children:
                await asyncio.gather(*children, return_exceptions=True)

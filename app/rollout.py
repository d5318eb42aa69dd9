"""Rollouts of a Deployment, as ``kubectl rollout status|history|undo`` see them, for the TUI and the GUI.

The cloud's deployment controller (like Kubernetes') keeps one ReplicaSet per pod template it has run,
each annotated with ``deployment.kubernetes.io/revision``; the Deployment's own annotation mirrors the
current revision. A rollback is therefore a client-side step, exactly as kubectl does it: find the
ReplicaSet of the wanted revision (by default the one before the newest), copy its pod template (without
the ``pod-template-hash`` label the controller added) into the Deployment, and let the controller roll
forward to it under a new revision. The same cloud thus works with ``kubectl rollout undo`` and with
:func:`rollback`, and their histories agree.

The decisions are pure functions of the objects (:func:`revisions`, :func:`plan_rollback`,
:func:`rollout_status`) with table-driven tests; :func:`rollback` is the thin I/O around them. Unlike
kubectl, the patch it sends carries the Deployment's ``resourceVersion`` read for the plan, so a rollback
planned from a stale view (someone else changed the template meanwhile) is refused by the server with a
Conflict, and :func:`rollback` re-reads and re-plans (a few times) rather than overwriting that change.

Deliberately not done: ``progressDeadlineSeconds`` (the cloud does not compute ProgressDeadlineExceeded,
so :func:`rollout_status` never reports a timed-out rollout), ``minReadySeconds``, and rollbacks of
StatefulSets and DaemonSets (not served).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from app.client import AsyncClient, Conflict
from app.clientmodels import deployment_view
from app.errors import FleetOpsError
from app.resources import DEPLOYMENTS, REPLICASETS, JSONObject

logger = logging.getLogger(__name__)

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
POD_TEMPLATE_HASH = "pod-template-hash"
# Annotations of a ReplicaSet that are its own bookkeeping, never copied back onto the Deployment by a
# rollback (kubectl's annotationsToSkip).
_SKIPPED_ANNOTATIONS = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION_ANNOTATION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)
# How many times :func:`rollback` re-plans after a Conflict: each one means the Deployment changed between
# the read and the write, which the controller does often during a rollout (status, annotation).
_CONFLICT_RETRIES = 5


class RolloutError(FleetOpsError):
    """A rollout operation that cannot be done; the message says why, for a notification."""


class RevisionNotFound(RolloutError):
    """The wanted revision has no ReplicaSet (never existed, or pruned by ``revisionHistoryLimit``)."""

    def __init__(self, deployment: str, revision: int) -> None:
        if revision:
            message = f'unable to find revision {revision} of deployment "{deployment}"'
        else:
            message = f'no previous revision of deployment "{deployment}" to roll back to'
        super().__init__(message)
        self.deployment = deployment
        self.revision = revision


class DeploymentPaused(RolloutError):
    """kubectl refuses to roll back a paused Deployment, and so do we: the controller would not act."""

    def __init__(self, deployment: str) -> None:
        super().__init__(f'deployment "{deployment}" is paused; resume it before rolling back')
        self.deployment = deployment


def _d(value: Any) -> JSONObject:
    return value if isinstance(value, dict) else {}


def revision_of(obj: JSONObject) -> int:
    """The revision annotation of a Deployment or ReplicaSet; 0 when absent or malformed."""
    annotations = _d(_d(obj.get("metadata")).get("annotations"))
    try:
        return int(annotations.get(REVISION_ANNOTATION, 0))
    except (TypeError, ValueError):
        return 0


def _controller_uid(obj: JSONObject) -> str:
    for ref in _d(obj.get("metadata")).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return str(ref.get("uid") or "")
    return ""


def owned_replicasets(deployment: JSONObject, replicasets: Iterable[JSONObject]) -> list[JSONObject]:
    """The ReplicaSets whose controller is ``deployment`` (by ownerReference uid, as the controller sets)."""
    uid = str(_d(deployment.get("metadata")).get("uid") or "")
    return [rs for rs in replicasets if uid and _controller_uid(rs) == uid]


def template_without_hash(template: JSONObject) -> JSONObject:
    """A pod template without the ``pod-template-hash`` label the controller adds to its ReplicaSets."""
    out = copy.deepcopy(template)
    labels = _d(out.get("metadata")).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH, None)
    return out


def _images(template: JSONObject) -> tuple[str, ...]:
    containers = _d(template.get("spec")).get("containers") or []
    return tuple(str(c.get("image") or "") for c in containers if isinstance(c, dict))


@dataclass(frozen=True, slots=True)
class Revision:
    """One entry of a Deployment's rollout history: a ReplicaSet and the template it runs."""

    number: int
    replicaset: str
    replicas: int
    ready: int
    images: tuple[str, ...]
    change_cause: str
    template: JSONObject


def revisions(deployment: JSONObject, replicasets: Iterable[JSONObject]) -> list[Revision]:
    """The Deployment's history (``kubectl rollout history``), oldest first."""
    out = []
    for rs in owned_replicasets(deployment, replicasets):
        m, spec, status = _d(rs.get("metadata")), _d(rs.get("spec")), _d(rs.get("status"))
        template = _d(spec.get("template"))
        out.append(
            Revision(
                number=revision_of(rs),
                replicaset=str(m.get("name") or ""),
                replicas=int(spec.get("replicas") or 0),
                ready=int(status.get("readyReplicas") or 0),
                images=_images(template),
                change_cause=str(_d(m.get("annotations")).get("kubernetes.io/change-cause") or ""),
                template=template,
            )
        )
    return sorted(out, key=lambda r: r.number)


@dataclass(frozen=True, slots=True)
class RollbackPlan:
    """What :func:`plan_rollback` decided: the revision to go back to and the JSON patch that does it, or
    ``patch`` None when the Deployment already runs that template (kubectl's "skipped rollback")."""

    deployment: str
    to_revision: int
    patch: list[JSONObject] | None

    @property
    def message(self) -> str:
        if self.patch is None:
            return (
                f'skipped rollback of deployment "{self.deployment}": '
                f"its template already matches revision {self.to_revision}"
            )
        return f'deployment "{self.deployment}" rolled back to revision {self.to_revision}'


def plan_rollback(
    deployment: JSONObject, replicasets: Sequence[JSONObject], to_revision: int | None = None
) -> RollbackPlan:
    """The rollback of ``deployment`` to ``to_revision`` (None or 0: the revision before the newest).

    Raises :class:`DeploymentPaused` or :class:`RevisionNotFound`."""
    m = _d(deployment.get("metadata"))
    name = str(m.get("name") or "")
    if _d(deployment.get("spec")).get("paused"):
        raise DeploymentPaused(name)
    history = revisions(deployment, replicasets)
    if to_revision:
        target = next((r for r in history if r.number == to_revision), None)
    else:
        # The newest revision is the current one (or the one being rolled out); go to the one before it.
        target = history[-2] if len(history) >= 2 else None
    if target is None:
        raise RevisionNotFound(name, to_revision or 0)
    template = template_without_hash(target.template)
    current = template_without_hash(_d(_d(deployment.get("spec")).get("template")))
    if template == current:
        return RollbackPlan(name, target.number, None)
    rs = next((r for r in owned_replicasets(deployment, replicasets) if revision_of(r) == target.number), {})
    rs_annotations = _d(_d(rs.get("metadata")).get("annotations"))
    annotations = dict(_d(m.get("annotations")))
    annotations.update({k: v for k, v in rs_annotations.items() if k not in _SKIPPED_ANNOTATIONS})
    patch: list[JSONObject] = [
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "add", "path": "/metadata/annotations", "value": annotations},
    ]
    rv = str(m.get("resourceVersion") or "")
    if rv:
        # The server compares a resourceVersion in the patched object with the stored one: a Conflict
        # instead of rolling back over a change made since the plan was read.
        patch.append({"op": "replace", "path": "/metadata/resourceVersion", "value": rv})
    return RollbackPlan(name, target.number, patch)


def _selector(deployment: JSONObject) -> str:
    """The label selector of the Deployment's matchLabels ("" when it uses matchExpressions: then every
    ReplicaSet of the namespace is listed and ownership alone decides)."""
    selector = _d(_d(deployment.get("spec")).get("selector"))
    if selector.get("matchExpressions"):
        return ""
    return ",".join(f"{k}={v}" for k, v in sorted(_d(selector.get("matchLabels")).items()))


async def history(client: AsyncClient, namespace: str, name: str) -> list[Revision]:
    """The rollout history of a Deployment, oldest first."""
    deployment = await client.get(DEPLOYMENTS, name, namespace)
    ns = str(_d(deployment.get("metadata")).get("namespace") or namespace)
    replicasets = await client.list(REPLICASETS, ns, label_selector=_selector(deployment))
    return revisions(deployment, replicasets.items)


async def rollback(
    client: AsyncClient, namespace: str, name: str, to_revision: int | None = None
) -> RollbackPlan:
    """``kubectl rollout undo deployment/NAME [--to-revision=N]``: answers the plan that was carried out.

    Raises :class:`RolloutError` (paused, no such revision) and the client's errors (NotFound...)."""
    for attempt in range(_CONFLICT_RETRIES + 1):
        deployment = await client.get(DEPLOYMENTS, name, namespace)
        ns = str(_d(deployment.get("metadata")).get("namespace") or namespace)
        replicasets = await client.list(REPLICASETS, ns, label_selector=_selector(deployment))
        plan = plan_rollback(deployment, replicasets.items, to_revision)
        if plan.patch is None:
            logger.info("%s", plan.message)
            return plan
        try:
            await client.patch(DEPLOYMENTS, name, plan.patch, ns, type="json")
        except Conflict:
            if attempt == _CONFLICT_RETRIES:
                raise
            logger.debug("rollback of %s/%s: the deployment changed meanwhile, re-planning", ns, name)
            continue
        logger.info("%s", plan.message)
        return plan
    raise AssertionError("unreachable")  # pragma: no cover


# -- status -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    """Where a rollout stands, in ``kubectl rollout status`` words."""

    done: bool
    message: str
    desired: int
    updated: int
    ready: int
    available: int
    current: int
    revision: int


def rollout_status(deployment: JSONObject) -> RolloutStatus:
    """``kubectl rollout status``'s verdict on a Deployment (pure; ``done`` ends its wait)."""
    v = deployment_view(deployment)
    name = v.name
    if not v.observed:
        message = "Waiting for deployment spec update to be observed..."
        done = False
    elif v.updated < v.replicas:
        message = (
            f'Waiting for deployment "{name}" rollout to finish: '
            f"{v.updated} out of {v.replicas} new replicas have been updated..."
        )
        done = False
    elif v.current > v.updated:
        message = (
            f'Waiting for deployment "{name}" rollout to finish: '
            f"{v.current - v.updated} old replicas are pending termination..."
        )
        done = False
    elif v.available < v.updated:
        message = (
            f'Waiting for deployment "{name}" rollout to finish: '
            f"{v.available} of {v.updated} updated replicas are available..."
        )
        done = False
    else:
        message = f'deployment "{name}" successfully rolled out'
        done = True
    return RolloutStatus(
        done=done,
        message=message,
        desired=v.replicas,
        updated=v.updated,
        ready=v.ready,
        available=v.available,
        current=v.current,
        revision=revision_of(deployment),
    )

"""The deployment controller: a Deployment becomes ReplicaSets, one per pod template, rolled over.

The decision is :func:`plan_deployment`, a pure function from (Deployment, its ReplicaSets, their pods)
to actions; it follows Kubernetes' deployment controller step for step so that kubectl's ``rollout
status|undo|history`` read what they expect:

* Each template gets a ReplicaSet ``<deployment>-<pod-template-hash>``; the hash label is added to the RS
  selector and its template's labels. The RS carries ``deployment.kubernetes.io/revision``: a new template,
  or an old RS brought back by ``rollout undo``, takes ``max(old revisions) + 1``. The Deployment's own
  annotation mirrors the current revision.
* RollingUpdate: the new RS grows while the pod count stays within ``replicas + maxSurge``; old RSes
  shrink (unhealthy ones first, oldest first) while availability stays above ``replicas - maxUnavailable``.
  Surge rounds up, unavailability rounds down, and when both resolve to 0 unavailability becomes 1.
  One step per sync, as Kubernetes does (grow, or else shrink); the next sync comes from the pod and RS
  events the step causes.
* Counting differs from Kubernetes on purpose in one way: availability and footprint come from the pods
  themselves (Ready, not being deleted), not from ReplicaSet status, and an RS whose pods have not yet
  caught up with its ``spec.replicas`` counts ``max(spec, pods)`` towards the surge and ``min(spec, ready)``
  towards availability. This keeps both bounds exact even while the RS controller lags behind.
* Recreate: scale every old RS to 0, wait until their pods are gone (Terminating included), then create
  or scale the new RS.
* ``spec.paused``: no new RS and no rollout step; a paused Deployment with a single RS is still scaled.
* ``revisionHistoryLimit`` (default 10): old RSes at 0 replicas with no pods left are deleted, oldest
  revisions first.

Not done: ``minReadySeconds`` (a Ready pod is available at once), ``progressDeadlineSeconds`` (no
ProgressDeadlineExceeded), proportional scaling of several active RSes while paused or mid-rollout,
hash-collision handling (``collisionCount``), adoption of orphaned ReplicaSets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.resources import (
    DEPLOYMENTS,
    PODS,
    REPLICASETS,
    JSONObject,
    ResourceType,
    meta,
    name_of,
    namespace_of,
)
from cloudservice.store.base import EventType

from .actions import Action, Create, Delete, Event, Patch
from .controller import Controller
from .errors import InvalidSpec
from .informer import ObjKey, key_of
from .objects import (
    POD_TEMPLATE_HASH,
    REVISION_ANNOTATION,
    controller_ref,
    deep_copy,
    is_deleting,
    make_controller_ref,
    pod_is_active,
    pod_is_ready,
    replicas_of,
    sort_key_created,
    spec_of,
    status_of,
    uid_of,
    with_condition,
)

# Kubernetes' defaults for a RollingUpdate strategy and for the number of old ReplicaSets kept.
DEFAULT_MAX_SURGE = "25%"
DEFAULT_MAX_UNAVAILABLE = "25%"
DEFAULT_REVISION_HISTORY_LIMIT = 10
# Annotations a Deployment does not hand down to its ReplicaSets (kubectl's own bookkeeping).
_NOT_COPIED = ("kubectl.kubernetes.io/last-applied-configuration", REVISION_ANNOTATION)
# Kubernetes' SafeEncodeString alphabet: no vowels (no words) and no look-alike characters.
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def pod_template_hash(template: JSONObject) -> str:
    """A short, stable, DNS-safe hash of a pod template (ignoring any pod-template-hash label)."""
    t = deep_copy(template)
    labels = meta(t).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH, None)
    digest = hashlib.sha256(json.dumps(t, sort_keys=True, separators=(",", ":")).encode()).digest()
    # 32 bits as Kubernetes' fnv32a gives, spelled in the safe alphabet.
    value = int.from_bytes(digest[:4], "big")
    out = []
    while True:
        value, rem = divmod(value, len(_SAFE_ALPHABET))
        out.append(_SAFE_ALPHABET[rem])
        if value == 0:
            break
    return "".join(out)


def _without_hash(template: Any) -> Any:
    if not isinstance(template, dict):
        return template
    t = deep_copy(template)
    labels = meta(t).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH, None)
        if not labels:
            meta(t).pop("labels")
    if not meta(t):
        t.pop("metadata")
    return t


def _scaled(value: Any, total: int, *, round_up: bool, field: str, d: JSONObject) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.endswith("%") and value[:-1].isdigit():
        pct = int(value[:-1])
        return -(-pct * total // 100) if round_up else pct * total // 100
    raise InvalidSpec(
        "Deployment",
        namespace_of(d),
        name_of(d),
        field,
        f"{value!r} is not a non-negative int or a percentage",
    )


def resolve_fenceposts(deploy: JSONObject) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as pod counts for a RollingUpdate Deployment, rounded as Kubernetes:
    surge up, unavailable down, unavailable 1 when both are 0, unavailable at most ``replicas``."""
    replicas = replicas_of(deploy)
    ru = (spec_of(deploy).get("strategy") or {}).get("rollingUpdate") or {}
    surge = _scaled(
        ru.get("maxSurge", DEFAULT_MAX_SURGE),
        replicas,
        round_up=True,
        field="spec.strategy.rollingUpdate.maxSurge",
        d=deploy,
    )
    unavailable = _scaled(
        ru.get("maxUnavailable", DEFAULT_MAX_UNAVAILABLE),
        replicas,
        round_up=False,
        field="spec.strategy.rollingUpdate.maxUnavailable",
        d=deploy,
    )
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


def revision_of(obj: JSONObject) -> int:
    annotations = meta(obj).get("annotations") or {}
    try:
        return int(annotations.get(REVISION_ANNOTATION, 0))
    except (TypeError, ValueError):
        return 0


@dataclass(slots=True)
class _RS:
    """One ReplicaSet as the planner sees it; ``replicas`` is updated as the plan scales it."""

    obj: JSONObject
    replicas: int
    active: int  # pods not being deleted and not finished
    ready: int  # of those, Ready
    pods: int  # every pod, Terminating included

    @property
    def name(self) -> str:
        return name_of(self.obj)

    @property
    def available(self) -> int:
        return min(self.ready, self.replicas)

    @property
    def footprint(self) -> int:
        return max(self.replicas, self.active)


def _view(rs: JSONObject, pods: Sequence[JSONObject]) -> _RS:
    mine = [p for p in pods if (controller_ref(p) or {}).get("uid") == uid_of(rs)]
    active = [p for p in mine if pod_is_active(p)]
    return _RS(rs, replicas_of(rs), len(active), sum(1 for p in active if pod_is_ready(p)), len(mine))


class _Plan:
    def __init__(self, d: JSONObject) -> None:
        self.d = d
        self.actions: list[Action] = []

    def scale(self, rs: _RS, to: int) -> None:
        if to == rs.replicas:
            return
        verb = "up" if to > rs.replicas else "down"
        self.actions.append(
            Patch(REPLICASETS, namespace_of(rs.obj), rs.name, uid_of(rs.obj), {("spec", "replicas"): to})
        )
        self.actions.append(
            Event(
                DEPLOYMENTS,
                self.d,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled {verb} replica set {rs.name} from {rs.replicas} to {to}",
            )
        )
        rs.replicas = to


def _new_rs_object(d: JSONObject, template: JSONObject, h: str, replicas: int, revision: int) -> JSONObject:
    t = deep_copy(template)
    t_meta = meta(t)
    t_meta["labels"] = {**(t_meta.get("labels") or {}), POD_TEMPLATE_HASH: h}
    selector = deep_copy(spec_of(d).get("selector") or {})
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), POD_TEMPLATE_HASH: h}
    annotations = {k: v for k, v in (meta(d).get("annotations") or {}).items() if k not in _NOT_COPIED}
    annotations[REVISION_ANNOTATION] = str(revision)
    spec: JSONObject = {"replicas": replicas, "selector": selector, "template": t}
    if "minReadySeconds" in spec_of(d):
        spec["minReadySeconds"] = spec_of(d)["minReadySeconds"]
    return {
        "apiVersion": REPLICASETS.api_version,
        "kind": REPLICASETS.kind,
        "metadata": {
            "name": f"{name_of(d)}-{h}",
            "namespace": namespace_of(d),
            "labels": dict(t_meta["labels"]),
            "annotations": annotations,
            "ownerReferences": [make_controller_ref(DEPLOYMENTS, d)],
        },
        "spec": spec,
    }


def plan_deployment(
    deploy: JSONObject, rses: Sequence[JSONObject], pods: Sequence[JSONObject], *, now: str
) -> list[Action]:
    """One sync of a Deployment: the actions that move it one step towards its spec, then its status.

    ``rses`` are the ReplicaSets it controls and ``pods`` any pods (those of its ReplicaSets are picked out
    by controller ownerReference). ``now`` stamps condition transitions. Raises InvalidSpec."""
    d = deploy
    if is_deleting(d):
        return []
    spec = spec_of(d)
    template = spec.get("template")
    if not isinstance(template, dict):
        raise InvalidSpec("Deployment", namespace_of(d), name_of(d), "spec.template", "required")
    replicas = replicas_of(d)
    if replicas < 0:
        raise InvalidSpec("Deployment", namespace_of(d), name_of(d), "spec.replicas", "must be >= 0")
    strategy = str((spec.get("strategy") or {}).get("type") or "RollingUpdate")
    surge, unavailable = resolve_fenceposts(d) if strategy == "RollingUpdate" else (0, 0)
    paused = bool(spec.get("paused"))

    owned = sorted(
        (rs for rs in rses if (controller_ref(rs) or {}).get("uid") == uid_of(d)), key=sort_key_created
    )
    wanted = _without_hash(template)
    views = [_view(rs, pods) for rs in owned]
    new = next((v for v in views if _without_hash(spec_of(v.obj).get("template")) == wanted), None)
    old = [v for v in views if v is not new]
    plan = _Plan(d)
    new_revision = max((revision_of(v.obj) for v in old), default=0) + 1
    created = False

    if new is not None and revision_of(new.obj) < new_revision:
        plan.actions.append(
            Patch(
                REPLICASETS,
                namespace_of(new.obj),
                new.name,
                uid_of(new.obj),
                {("metadata", "annotations", REVISION_ANNOTATION): str(new_revision)},
            )
        )

    def create_new(size: int) -> _RS:
        h = pod_template_hash(template)
        obj = _new_rs_object(d, template, h, size, new_revision)
        plan.actions.append(Create(REPLICASETS, obj))
        if size:
            plan.actions.append(
                Event(
                    DEPLOYMENTS,
                    d,
                    "Normal",
                    "ScalingReplicaSet",
                    f"Scaled up replica set {name_of(obj)} from 0 to {size}",
                )
            )
        return _RS(obj, size, 0, 0, 0)

    if paused:
        # Scaling while paused: only when a single RS is active (no proportional scaling).
        active = [v for v in ([new] if new else []) + old if v.replicas]
        if len(active) == 1:
            plan.scale(active[0], replicas)
        elif not active and new is not None:
            plan.scale(new, replicas)
    elif strategy == "Recreate":
        if any(v.replicas for v in old):
            for v in old:
                plan.scale(v, 0)
        elif not any(v.pods for v in old):
            if new is None:
                new = create_new(replicas)
                created = True
            else:
                plan.scale(new, replicas)
    elif strategy == "RollingUpdate":
        max_total = replicas + surge
        if new is None:
            current = sum(v.footprint for v in old)
            new = create_new(max(0, min(max_total - current, replicas)))
            created = True
            scaled_up = False
        else:
            scaled_up = _reconcile_new(plan, new, old, replicas, max_total)
        if not scaled_up:
            _reconcile_old(plan, new, old, replicas - unavailable)
    else:
        raise InvalidSpec(
            "Deployment", namespace_of(d), name_of(d), "spec.strategy.type", f"unsupported value {strategy!r}"
        )

    _cleanup_history(plan, old, spec.get("revisionHistoryLimit", DEFAULT_REVISION_HISTORY_LIMIT))
    current_revision = new_revision if new is not None else 0
    if current_revision and (meta(d).get("annotations") or {}).get(REVISION_ANNOTATION) != str(
        current_revision
    ):
        plan.actions.append(
            Patch(
                DEPLOYMENTS,
                namespace_of(d),
                name_of(d),
                uid_of(d),
                {("metadata", "annotations", REVISION_ANNOTATION): str(current_revision)},
            )
        )
    status = deployment_status(d, new, old, unavailable, paused=paused, created=created, now=now)
    if status != status_of(d):
        plan.actions.append(Patch(DEPLOYMENTS, namespace_of(d), name_of(d), uid_of(d), {("status",): status}))
    return plan.actions


def _reconcile_new(plan: _Plan, new: _RS, old: list[_RS], replicas: int, max_total: int) -> bool:
    """Grow (or trim) the new RS within the surge; True when it grew (the sync then stops there)."""
    if new.replicas == replicas:
        return False
    if new.replicas > replicas:
        plan.scale(new, replicas)
        return False
    current = new.footprint + sum(v.footprint for v in old)
    if current >= max_total:
        return False
    plan.scale(new, new.replicas + min(max_total - current, replicas - new.replicas))
    return True


def _reconcile_old(plan: _Plan, new: _RS, old: list[_RS], min_available: int) -> None:
    """Shrink old RSes while availability stays at or above ``min_available`` (Kubernetes'
    reconcileOldReplicaSets: first the pods that are not available, then available ones, oldest first)."""
    if not any(v.replicas for v in old):
        return
    all_pods = new.footprint + sum(v.footprint for v in old)
    new_unavailable = new.replicas - new.available
    max_scaled_down = all_pods - min_available - new_unavailable
    if max_scaled_down <= 0:
        return
    cleaned = 0
    for v in old:
        if cleaned >= max_scaled_down:
            break
        unhealthy = v.replicas - v.available
        if v.replicas == 0 or unhealthy <= 0:
            continue
        step = min(max_scaled_down - cleaned, unhealthy)
        plan.scale(v, v.replicas - step)
        cleaned += step
    available = new.available + sum(v.available for v in old)
    if available <= min_available:
        return
    budget = available - min_available
    for v in old:
        if budget <= 0:
            break
        if v.replicas == 0:
            continue
        step = min(v.replicas, budget)
        plan.scale(v, v.replicas - step)
        budget -= step


def _cleanup_history(plan: _Plan, old: list[_RS], limit: Any) -> None:
    try:
        keep = max(0, int(limit))
    except (TypeError, ValueError):
        keep = DEFAULT_REVISION_HISTORY_LIMIT
    idle = sorted((v for v in old if v.replicas == 0 and v.pods == 0), key=lambda v: revision_of(v.obj))
    for v in idle[: max(0, len(idle) - keep)]:
        plan.actions.append(Delete(REPLICASETS, v.obj))


def deployment_status(
    d: JSONObject,
    new: _RS | None,
    old: list[_RS],
    max_unavailable: int,
    *,
    paused: bool,
    created: bool,
    now: str,
) -> JSONObject:
    """The status ``kubectl rollout status`` reads, computed from the pods."""
    replicas = replicas_of(d)
    everyone = ([new] if new else []) + old
    total = sum(v.active for v in everyone)
    ready = sum(v.ready for v in everyone)
    updated = new.active if new else 0
    prev = status_of(d)
    conditions = [c for c in prev.get("conditions") or [] if isinstance(c, dict)]
    if ready >= replicas - max_unavailable:
        conditions = with_condition(
            conditions,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            now=now,
            update_time_field="lastUpdateTime",
        )
    else:
        conditions = with_condition(
            conditions,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            now=now,
            update_time_field="lastUpdateTime",
        )
    complete = new is not None and updated == replicas and total == replicas and new.ready >= replicas
    if paused:
        progressing = ("Unknown", "DeploymentPaused", "Deployment is paused")
    elif new is None:
        progressing = ("True", "ReplicaSetUpdated", "Deployment is progressing.")
    elif created:
        progressing = ("True", "NewReplicaSetCreated", f'Created new replica set "{new.name}"')
    elif complete:
        progressing = (
            "True",
            "NewReplicaSetAvailable",
            f'ReplicaSet "{new.name}" has successfully progressed.',
        )
    else:
        progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{new.name}" is progressing.')
    conditions = with_condition(
        conditions, "Progressing", *progressing, now=now, update_time_field="lastUpdateTime"
    )
    status: JSONObject = {
        "observedGeneration": int(meta(d).get("generation") or 0),
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": max(0, replicas - ready),
        "conditions": conditions,
    }
    if "collisionCount" in prev:
        status["collisionCount"] = prev["collisionCount"]
    return status


class DeploymentController(Controller):
    """Keys are Deployments; ReplicaSet and pod events wake the Deployment that owns them."""

    name = "deployment"

    def on_event(self, etype: EventType, rt: ResourceType, obj: JSONObject, prev: JSONObject | None) -> None:
        if rt == DEPLOYMENTS:
            self.queue.add(key_of(rt, obj))
            return
        ref = controller_ref(obj)
        if ref is None:
            return
        if rt == REPLICASETS and ref.get("kind") == DEPLOYMENTS.kind:
            self.queue.add((DEPLOYMENTS.plural, namespace_of(obj), str(ref.get("name", ""))))
        elif rt == PODS and ref.get("kind") == REPLICASETS.kind:
            rs = self.informer.get(REPLICASETS, namespace_of(obj), str(ref.get("name", "")))
            owner = controller_ref(rs) if rs is not None else None
            if owner is not None and owner.get("kind") == DEPLOYMENTS.kind:
                self.queue.add((DEPLOYMENTS.plural, namespace_of(obj), str(owner.get("name", ""))))

    async def plan(self, key: ObjKey) -> list[Action]:
        d = self.informer.get(DEPLOYMENTS, key[1], key[2])
        if d is None:
            return []
        uid = uid_of(d)
        rses = [
            rs
            for rs in self.informer.objects(REPLICASETS, key[1])
            if (controller_ref(rs) or {}).get("uid") == uid
        ]
        rs_uids = {uid_of(rs) for rs in rses}
        pods = [
            p for p in self.informer.objects(PODS, key[1]) if (controller_ref(p) or {}).get("uid") in rs_uids
        ]
        return plan_deployment(d, rses, pods, now=self.now())

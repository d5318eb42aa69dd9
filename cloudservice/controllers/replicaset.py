"""The ReplicaSet controller: keep ``spec.replicas`` pods alive from the RS's template.

:func:`plan_replicaset` is the pure decision: the pods it controls (by controller ownerReference) that are
active (not being deleted, not finished) are compared with ``spec.replicas``; missing ones are created as
``<rs>-<5 random characters>``, extra ones deleted least useful first (Kubernetes' ActivePods ordering:
unscheduled, then Pending before Running, then not Ready, then the newest), through graceful deletion so
a bound pod's edge stops it first. A pod being deleted no longer counts, so a replacement is created while
the old one terminates, as in Kubernetes.

Not done: adoption of orphan pods that match the selector and release of pods that stop matching it;
slow-start batching of creations (they are few here); the ReplicaFailure condition.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Sequence

from app.resources import (
    PODS,
    REPLICASETS,
    JSONObject,
    ResourceType,
    meta,
    name_of,
    namespace_of,
    parse_rfc3339,
)
from cloudservice.store.base import EventType, Store

from .actions import Action, Create, Delete, Event, Patch
from .clock import Clock
from .controller import Controller
from .informer import Informer, ObjKey, key_of
from .objects import (
    controller_ref,
    deep_copy,
    is_deleting,
    labels_of,
    make_controller_ref,
    pod_is_active,
    pod_is_ready,
    replicas_of,
    spec_of,
    status_of,
    uid_of,
)

# Kubernetes' name-suffix alphabet (no vowels, no look-alikes); 5 characters as its generateName uses.
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
SUFFIX_LENGTH = 5
_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def random_suffix() -> str:
    return "".join(random.choice(_SUFFIX_ALPHABET) for _ in range(SUFFIX_LENGTH))


def _created(pod: JSONObject) -> float:
    stamp = meta(pod).get("creationTimestamp")
    try:
        return (parse_rfc3339(str(stamp)) - _EPOCH).total_seconds() if stamp else 0.0
    except ValueError:
        return 0.0


def scale_down_order(pods: Sequence[JSONObject]) -> list[JSONObject]:
    """Pods sorted most deletable first: unscheduled, Pending/Unknown before Running, not Ready, newest."""

    def key(p: JSONObject) -> tuple[int, int, int, float, str]:
        return (
            1 if spec_of(p).get("nodeName") else 0,
            _PHASE_RANK.get(str(status_of(p).get("phase", "Pending")), 0),
            1 if pod_is_ready(p) else 0,
            -_created(p),
            name_of(p),
        )

    return sorted(pods, key=key)


def pod_from_template(rs: JSONObject, name: str) -> JSONObject:
    template = spec_of(rs).get("template") or {}
    t_meta = template.get("metadata") or {}
    pod_meta: JSONObject = {
        "name": name,
        "namespace": namespace_of(rs),
        "labels": dict(t_meta.get("labels") or {}),
        "ownerReferences": [make_controller_ref(REPLICASETS, rs)],
    }
    if t_meta.get("annotations"):
        pod_meta["annotations"] = dict(t_meta["annotations"])
    return {
        "apiVersion": PODS.api_version,
        "kind": PODS.kind,
        "metadata": pod_meta,
        "spec": deep_copy(template.get("spec") or {}),
        "status": {"phase": "Pending"},
    }


def replicaset_status(rs: JSONObject, active: Sequence[JSONObject]) -> JSONObject:
    template_labels = ((spec_of(rs).get("template") or {}).get("metadata") or {}).get("labels") or {}
    ready = sum(1 for p in active if pod_is_ready(p))
    status: JSONObject = {
        "replicas": len(active),
        "fullyLabeledReplicas": sum(
            1 for p in active if all(labels_of(p).get(k) == v for k, v in template_labels.items())
        ),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "observedGeneration": int(meta(rs).get("generation") or 0),
    }
    return status


def plan_replicaset(
    rs: JSONObject, pods: Sequence[JSONObject], *, suffix: Callable[[], str] = random_suffix
) -> list[Action]:
    """One sync of a ReplicaSet. ``pods`` may be any pods; those it controls are picked out by uid."""
    if is_deleting(rs):
        return []
    mine = [p for p in pods if (controller_ref(p) or {}).get("uid") == uid_of(rs)]
    active = [p for p in mine if pod_is_active(p)]
    diff = len(active) - replicas_of(rs)
    actions: list[Action] = []
    if diff < 0:
        taken = {name_of(p) for p in pods}
        for _ in range(-diff):
            name = f"{name_of(rs)}-{suffix()}"
            while name in taken:
                name = f"{name_of(rs)}-{suffix()}"
            taken.add(name)
            actions.append(Create(PODS, pod_from_template(rs, name)))
            actions.append(Event(REPLICASETS, rs, "Normal", "SuccessfulCreate", f"Created pod: {name}"))
    elif diff > 0:
        for pod in scale_down_order(active)[:diff]:
            actions.append(Delete(PODS, pod))
            actions.append(
                Event(REPLICASETS, rs, "Normal", "SuccessfulDelete", f"Deleted pod: {name_of(pod)}")
            )
    status = {**status_of(rs), **replicaset_status(rs, active)}
    if status != status_of(rs):
        actions.append(Patch(REPLICASETS, namespace_of(rs), name_of(rs), uid_of(rs), {("status",): status}))
    return actions


class ReplicaSetController(Controller):
    """Keys are ReplicaSets; a pod event wakes the ReplicaSet that controls it."""

    name = "replicaset"

    def __init__(
        self, store: Store, informer: Informer, clock: Clock, *, suffix: Callable[[], str] = random_suffix
    ) -> None:
        super().__init__(store, informer, clock)
        self._suffix = suffix

    def on_event(self, etype: EventType, rt: ResourceType, obj: JSONObject, prev: JSONObject | None) -> None:
        if rt == REPLICASETS:
            self.queue.add(key_of(rt, obj))
        elif rt == PODS:
            ref = controller_ref(obj)
            if ref is not None and ref.get("kind") == REPLICASETS.kind:
                self.queue.add((REPLICASETS.plural, namespace_of(obj), str(ref.get("name", ""))))

    async def plan(self, key: ObjKey) -> list[Action]:
        rs = self.informer.get(REPLICASETS, key[1], key[2])
        if rs is None:
            return []
        uid = uid_of(rs)
        pods = [p for p in self.informer.objects(PODS, key[1]) if (controller_ref(p) or {}).get("uid") == uid]
        return plan_replicaset(rs, pods, suffix=self._suffix)

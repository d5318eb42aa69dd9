"""The scheduler: bind each pod without ``spec.nodeName`` to a node that can run it.

:func:`schedule` is the pure decision, Kubernetes' filter-then-score in miniature. A node is filtered out,
with the first reason that applies (the order Kubernetes' plugins run in), when it is
``spec.unschedulable``, not Ready (status False or Unknown, which is how an edge that stopped reporting
looks), does not match ``spec.nodeSelector`` or a required nodeAffinity (``matchExpressions`` only), or
already runs ``status.allocatable.pods`` pods. Among the nodes left, the one with the fewest pods of the
same owner wins (spreading a Deployment's replicas over sites), then the least loaded, then by name so that
the result is deterministic. When nothing fits, the message reads as Kubernetes' does:
``0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 node(s) were not ready.``

Not done: resources (cpu/memory) fit, taints and tolerations, inter-pod affinity, preemption,
``schedulerName`` other than the default (such pods are left alone).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from app.resources import NODES, PODS, JSONObject, ResourceType, name_of, namespace_of
from cloudservice.store.base import EventType

from .actions import Action, Event, Patch
from .controller import Controller
from .informer import ObjKey, key_of
from .objects import (
    controller_ref,
    expression_matches,
    labels_of,
    node_ready_status,
    spec_of,
    status_of,
    uid_of,
    with_condition,
)

# Kubernetes' kubelet default for how many pods a node takes when the node does not say.
DEFAULT_MAX_PODS = 110
DEFAULT_SCHEDULER = "default-scheduler"

REASON_UNSCHEDULABLE = "node(s) were unschedulable"
REASON_NOT_READY = "node(s) were not ready"
REASON_SELECTOR = "node(s) didn't match Pod's node affinity/selector"
REASON_TOO_MANY_PODS = "Too many pods"


@dataclass(frozen=True, slots=True)
class Decision:
    """``node`` to bind to, or None with ``message`` saying why no node fits."""

    node: str | None
    message: str


def wants_scheduling(pod: JSONObject) -> bool:
    spec = spec_of(pod)
    return (
        not spec.get("nodeName")
        and spec.get("schedulerName", DEFAULT_SCHEDULER) == DEFAULT_SCHEDULER
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
        and status_of(pod).get("phase") not in ("Succeeded", "Failed")
    )


def _matches_affinity(pod: JSONObject, labels: dict[str, str]) -> bool:
    spec = spec_of(pod)
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    # Terms are ORed, the expressions within one term ANDed (matchFields is not supported: no match).
    return any(
        not term.get("matchFields")
        and all(expression_matches(e, labels) for e in term.get("matchExpressions") or [])
        for term in terms
    )


def _capacity(node: JSONObject) -> int:
    value = (status_of(node).get("allocatable") or {}).get("pods")
    try:
        return int(value) if value is not None else DEFAULT_MAX_PODS
    except (TypeError, ValueError):
        return DEFAULT_MAX_PODS


def _filter_reason(pod: JSONObject, node: JSONObject, load: int) -> str | None:
    if spec_of(node).get("unschedulable"):
        return REASON_UNSCHEDULABLE
    if node_ready_status(node) != "True":
        return REASON_NOT_READY
    if not _matches_affinity(pod, labels_of(node)):
        return REASON_SELECTOR
    if load >= _capacity(node):
        return REASON_TOO_MANY_PODS
    return None


def unschedulable_message(total: int, reasons: Counter[str]) -> str:
    if total == 0:
        return "no nodes available to schedule pods"
    parts = sorted(f"{count} {reason}" for reason, count in reasons.items())
    return f"0/{total} nodes are available: {', '.join(parts)}."


def schedule(pod: JSONObject, nodes: Sequence[JSONObject], pods: Sequence[JSONObject]) -> Decision:
    """Pick a node for ``pod`` given every node and every pod (to count load and siblings)."""
    load: Counter[str] = Counter()
    siblings: Counter[str] = Counter()
    owner = (controller_ref(pod) or {}).get("uid")
    for p in pods:
        node = spec_of(p).get("nodeName")
        if not node or status_of(p).get("phase") in ("Succeeded", "Failed"):
            continue
        load[node] += 1
        if owner and (controller_ref(p) or {}).get("uid") == owner:
            siblings[node] += 1
    reasons: Counter[str] = Counter()
    fits: list[str] = []
    for node in nodes:
        name = name_of(node)
        reason = _filter_reason(pod, node, load[name])
        if reason:
            reasons[reason] += 1
        else:
            fits.append(name)
    if not fits:
        return Decision(None, unschedulable_message(len(nodes), reasons))
    best = min(fits, key=lambda n: (siblings[n], load[n], n))
    return Decision(best, "")


def plan_schedule(
    pod: JSONObject, nodes: Sequence[JSONObject], pods: Sequence[JSONObject], *, now: str
) -> list[Action]:
    """Bind the pod (``spec.nodeName`` + PodScheduled=True + a Scheduled event), or mark it
    PodScheduled=False/Unschedulable with a FailedScheduling event when the reason changed."""
    if not wants_scheduling(pod):
        return []
    decision = schedule(pod, nodes, pods)
    conditions = [c for c in status_of(pod).get("conditions") or [] if isinstance(c, dict)]
    ns, name, uid = namespace_of(pod), name_of(pod), uid_of(pod)
    if decision.node:
        conditions = with_condition(conditions, "PodScheduled", "True", "", "", now=now)
        return [
            Patch(
                PODS,
                ns,
                name,
                uid,
                {("spec", "nodeName"): decision.node, ("status", "conditions"): conditions},
            ),
            Event(PODS, pod, "Normal", "Scheduled", f"Successfully assigned {ns}/{name} to {decision.node}"),
        ]
    new = with_condition(conditions, "PodScheduled", "False", "Unschedulable", decision.message, now=now)
    if new == conditions:
        return []
    return [
        Patch(PODS, ns, name, uid, {("status", "conditions"): new}),
        Event(PODS, pod, "Warning", "FailedScheduling", decision.message),
    ]


def _node_facts(node: JSONObject | None) -> tuple[object, ...]:
    """What about a node can change a scheduling decision (heartbeats alone do not)."""
    if node is None:
        return ()
    return (
        node_ready_status(node),
        bool(spec_of(node).get("unschedulable")),
        tuple(sorted(labels_of(node).items())),
        _capacity(node),
    )


class SchedulerController(Controller):
    """Keys are pods waiting for a node. Nodes changing what matters, and pods leaving a node, retry all
    waiting pods (Kubernetes' scheduling queue moves them from "unschedulable" to "active" the same way)."""

    name = "scheduler"

    def on_event(self, etype: EventType, rt: ResourceType, obj: JSONObject, prev: JSONObject | None) -> None:
        if rt == NODES:
            if etype == "DELETED" or _node_facts(obj) != _node_facts(prev):
                self._retry_waiting()
        elif rt == PODS:
            if etype != "DELETED" and wants_scheduling(obj):
                self.queue.add(key_of(rt, obj))
            freed = etype == "DELETED" or (
                status_of(obj).get("phase") in ("Succeeded", "Failed")
                and (prev is None or status_of(prev).get("phase") != status_of(obj).get("phase"))
            )
            if freed and spec_of(obj).get("nodeName"):
                self._retry_waiting()

    def _retry_waiting(self) -> None:
        for pod in self.informer.objects(PODS):
            if wants_scheduling(pod):
                self.queue.add(key_of(PODS, pod))

    async def plan(self, key: ObjKey) -> list[Action]:
        pod = self.informer.get(PODS, key[1], key[2])
        if pod is None:
            return []
        return plan_schedule(pod, self.informer.objects(NODES), self.informer.objects(PODS), now=self.now())

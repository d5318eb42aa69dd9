"""Node lifecycle: notice edges that stopped reporting, and say so on the node and its pods.

:func:`plan_node` is the pure decision. The hub refreshes a node's ``Ready`` condition
``lastHeartbeatTime`` while its edge is connected; when that heartbeat is older than the grace period
(40 s by default, Kubernetes' ``node-monitor-grace-period``), every condition becomes ``Unknown`` with
reason ``NodeStatusUnknown`` and message "Kubelet stopped posting node status." (kubectl shows NotReady),
a NodeNotReady event is recorded, and the pods bound to a node that is not Ready get their ``Ready`` and
``ContainersReady`` conditions set to False, as Kubernetes' node lifecycle controller does.

Deliberately NOT done: eviction. Kubernetes taints an unreachable node and evicts its pods after five
minutes; KubeEdge's point is that an edge keeps running its pods from its local store while offline, so
nothing here deletes or reschedules them. When the edge reconnects, the hub writes Ready=True again and the
edge reports its pods' real status.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from app.resources import NODES, PODS, JSONObject, ResourceType, meta, name_of, namespace_of, parse_rfc3339
from cloudservice.store.base import EventType, Store

from .actions import Action, Event, Patch
from .clock import Clock
from .controller import Controller
from .informer import Informer, ObjKey, key_of
from .objects import get_condition, rfc3339, spec_of, status_of, uid_of

DEFAULT_GRACE_PERIOD = 40.0
# Kubernetes' node-monitor-period: how often every node's heartbeat is checked.
DEFAULT_MONITOR_PERIOD = 5.0
UNKNOWN_REASON = "NodeStatusUnknown"
UNKNOWN_MESSAGE = "Kubelet stopped posting node status."
NEVER_REASON = "NodeStatusNeverUpdated"
NEVER_MESSAGE = "Kubelet never posted node status."


def _time(value: object) -> dt.datetime | None:
    if not value:
        return None
    try:
        return parse_rfc3339(str(value))
    except ValueError:
        return None


def plan_node(
    node: JSONObject,
    pods: Sequence[JSONObject],
    *,
    now: dt.datetime,
    grace_period: float = DEFAULT_GRACE_PERIOD,
) -> list[Action]:
    """``pods`` are the pods bound to this node (``spec.nodeName``)."""
    actions: list[Action] = []
    stamp = rfc3339(now)
    ready = get_condition(node, "Ready")
    grace = dt.timedelta(seconds=grace_period)
    stale_reason: tuple[str, str] | None = None
    if ready is None:
        created = _time(meta(node).get("creationTimestamp"))
        if created is not None and now - created > grace:
            stale_reason = (NEVER_REASON, NEVER_MESSAGE)
    elif ready.get("status") != "Unknown":
        heartbeat = _time(ready.get("lastHeartbeatTime")) or _time(ready.get("lastTransitionTime"))
        if heartbeat is not None and now - heartbeat > grace:
            stale_reason = (UNKNOWN_REASON, UNKNOWN_MESSAGE)
    ready_status = str(ready.get("status", "Unknown")) if ready else "Unknown"
    if stale_reason:
        reason, message = stale_reason
        conditions = [dict(c) for c in status_of(node).get("conditions") or [] if isinstance(c, dict)]
        if ready is None:
            conditions.append({"type": "Ready", "lastHeartbeatTime": stamp})
        for c in conditions:
            if c.get("status") != "Unknown":
                c["lastTransitionTime"] = stamp
            c.update(status="Unknown", reason=reason, message=message)
        actions.append(Patch(NODES, "", name_of(node), uid_of(node), {("status", "conditions"): conditions}))
        actions.append(
            Event(NODES, node, "Normal", "NodeNotReady", f"Node {name_of(node)} status is now: NodeNotReady")
        )
        ready_status = "Unknown"
    if ready_status != "True":
        for pod in pods:
            actions.extend(_mark_pod_not_ready(pod, stamp))
    return actions


def _mark_pod_not_ready(pod: JSONObject, stamp: str) -> list[Action]:
    conditions = [dict(c) for c in status_of(pod).get("conditions") or [] if isinstance(c, dict)]
    changed = False
    for c in conditions:
        if c.get("type") in ("Ready", "ContainersReady") and c.get("status") != "False":
            c.update(status="False", lastTransitionTime=stamp)
            changed = True
    if not changed:
        return []
    return [
        Patch(PODS, namespace_of(pod), name_of(pod), uid_of(pod), {("status", "conditions"): conditions}),
        Event(PODS, pod, "Warning", "NodeNotReady", "Node is not ready"),
    ]


class NodeLifecycleController(Controller):
    """Keys are nodes. Besides node events, :meth:`monitor` re-checks every node each ``period``
    seconds of the injected clock, since a heartbeat that stops produces no event at all."""

    name = "nodelifecycle"

    def __init__(
        self,
        store: Store,
        informer: Informer,
        clock: Clock,
        *,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        period: float = DEFAULT_MONITOR_PERIOD,
    ) -> None:
        super().__init__(store, informer, clock)
        self.grace_period = grace_period
        self.period = period

    def on_event(self, etype: EventType, rt: ResourceType, obj: JSONObject, prev: JSONObject | None) -> None:
        if rt == NODES and etype != "DELETED":
            self.queue.add(key_of(rt, obj))

    async def monitor(self) -> None:
        await self.informer.synced.wait()
        while True:
            await self.clock.sleep(self.period)
            for node in self.informer.objects(NODES):
                self.queue.add(key_of(NODES, node))

    async def plan(self, key: ObjKey) -> list[Action]:
        node = self.informer.get(NODES, "", key[2])
        if node is None:
            return []
        pods = [p for p in self.informer.objects(PODS) if spec_of(p).get("nodeName") == key[2]]
        return plan_node(node, pods, now=self.clock.now(), grace_period=self.grace_period)

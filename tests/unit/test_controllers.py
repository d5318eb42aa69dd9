"""Table-driven tests of the controllers' pure decisions (no store, no loop)."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
from typing import Any

import pytest

from app.resources import DEPLOYMENTS, NODES, PODS, REPLICASETS, JSONObject
from cloudservice.controllers import (
    InvalidSpec,
    plan_deployment,
    plan_gc_dependent,
    plan_gc_owner,
    plan_node,
    plan_replicaset,
    plan_schedule,
    pod_template_hash,
    resolve_fenceposts,
    scale_down_order,
    schedule,
)
from cloudservice.controllers.actions import Create, Delete, Event, Patch, RemoveFinalizer, set_path
from cloudservice.controllers.objects import REVISION_ANNOTATION
from cloudservice.controllers.queue import WorkQueue

NOW = "2025-01-01T00:00:00Z"


def deployment(
    replicas: int = 3,
    image: str = "app:v1",
    *,
    surge: Any = None,
    unavailable: Any = None,
    strategy: str = "RollingUpdate",
    paused: bool = False,
    history: int | None = None,
) -> JSONObject:
    spec: JSONObject = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"nodeSelector": {"site": "a"}, "containers": [{"name": "web", "image": image}]},
        },
        "strategy": {"type": strategy},
    }
    ru = {}
    if surge is not None:
        ru["maxSurge"] = surge
    if unavailable is not None:
        ru["maxUnavailable"] = unavailable
    if ru:
        spec["strategy"]["rollingUpdate"] = ru
    if paused:
        spec["paused"] = True
    if history is not None:
        spec["revisionHistoryLimit"] = history
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 1},
        "spec": spec,
    }


# --------------------------------------------------------------------------- fenceposts


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable", "expected"),
    [
        (4, None, None, (1, 1)),  # 25 % of 4
        (5, None, None, (2, 1)),  # surge rounds up (1.25 -> 2), unavailable down (1.25 -> 1)
        (3, None, None, (1, 0)),  # 0.75: up to 1, down to 0
        (3, 0, 0, (0, 1)),  # both zero: unavailable becomes 1
        (3, "0%", "10%", (0, 1)),  # 10 % of 3 rounds down to 0, then the both-zero rule
        (4, "50%", "50%", (2, 2)),
        (3, 2, 5, (2, 3)),  # unavailable never above replicas
        (5, 1, 0, (1, 0)),
    ],
)
def test_resolve_fenceposts(replicas: int, surge: Any, unavailable: Any, expected: tuple[int, int]) -> None:
    assert resolve_fenceposts(deployment(replicas, surge=surge, unavailable=unavailable)) == expected


@pytest.mark.parametrize("bad", ["abc", "1", -1, "x%", True])
def test_bad_fencepost_is_invalid_spec(bad: Any) -> None:
    with pytest.raises(InvalidSpec) as info:
        plan_deployment(deployment(surge=bad), [], [], now=NOW)
    assert info.value.field == "spec.strategy.rollingUpdate.maxSurge"


def test_template_hash_is_stable_and_label_independent() -> None:
    t = deployment()["spec"]["template"]
    h = pod_template_hash(t)
    with_label = copy.deepcopy(t)
    with_label["metadata"]["labels"]["pod-template-hash"] = h
    assert pod_template_hash(with_label) == h
    other = copy.deepcopy(t)
    other["spec"]["containers"][0]["image"] = "app:v2"
    assert pod_template_hash(other) != h
    assert h.isalnum() and h == h.lower()


# --------------------------------------------------------------------------- a small world to roll in


class World:
    """RSes and pods under one Deployment; applies the planners' actions like the loops would."""

    def __init__(self, d: JSONObject) -> None:
        self.d = d
        self.rses: dict[str, JSONObject] = {}
        self.pods: dict[str, JSONObject] = {}
        self.clock = itertools.count(1)
        self.names = itertools.count(1)
        self.checks: list[Any] = []

    def stamp(self) -> str:
        return (dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=next(self.clock))).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )

    def apply(self, actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, Create):
                obj = copy.deepcopy(a.obj)
                obj["metadata"]["uid"] = f"uid-{obj['metadata']['name']}"
                obj["metadata"]["creationTimestamp"] = self.stamp()
                (self.rses if a.rt == REPLICASETS else self.pods)[obj["metadata"]["name"]] = obj
            elif isinstance(a, Patch):
                target = {DEPLOYMENTS: {"web": self.d}, REPLICASETS: self.rses, PODS: self.pods}[a.rt][a.name]
                for path, value in a.set.items():
                    set_path(target, path, copy.deepcopy(value))
            elif isinstance(a, Delete):
                if a.rt == REPLICASETS:
                    del self.rses[a.obj["metadata"]["name"]]
                else:  # graceful: the edge finishes it on the next tick
                    self.pods[a.obj["metadata"]["name"]]["metadata"]["deletionTimestamp"] = NOW
            for check in self.checks:
                check(self)

    def deploy_step(self) -> list[Any]:
        actions = plan_deployment(self.d, list(self.rses.values()), list(self.pods.values()), now=NOW)
        self.apply(actions)
        return actions

    def rs_step(self) -> None:
        for rs in list(self.rses.values()):
            self.apply(
                plan_replicaset(rs, list(self.pods.values()), suffix=lambda: f"p{next(self.names):04d}")
            )

    def edge_step(self) -> None:
        """Terminating pods go away; pods that exist become Running and Ready."""
        for name, pod in list(self.pods.items()):
            if pod["metadata"].get("deletionTimestamp"):
                del self.pods[name]
            else:
                pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        for check in self.checks:
            check(self)

    def active(self) -> list[JSONObject]:
        return [p for p in self.pods.values() if not p["metadata"].get("deletionTimestamp")]

    def ready(self) -> int:
        return sum(1 for p in self.active() if p.get("status", {}).get("conditions"))

    def rs_sizes(self) -> dict[str, int]:
        return {
            rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs["spec"]["replicas"]
            for rs in self.rses.values()
        }

    def settle(self, rounds: int = 60) -> None:
        for _ in range(rounds):
            self.deploy_step()
            self.rs_step()
            self.edge_step()
            status = self.d.get("status", {})
            progressing = [c for c in status.get("conditions", []) if c["type"] == "Progressing"]
            if (
                progressing
                and progressing[0]["reason"] == "NewReplicaSetAvailable"
                and len(self.pods) == (self.d["spec"]["replicas"])
            ):
                return
        raise AssertionError(f"did not converge: {self.rs_sizes()}")


def rolled_out(d: JSONObject) -> World:
    w = World(d)
    w.settle()
    return w


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable", "first_new", "first_old"),
    [
        # first_new: the new RS's size on the first sync; first_old: old RS size on the second sync
        # (new pods not Ready yet, so only the maxUnavailable budget lets the old RS shrink).
        (3, 1, 0, 1, 3),
        (3, 0, 1, 0, 2),
        (3, 1, 1, 1, 2),
        (4, None, None, 1, 3),  # 25 %/25 % -> 1/1
        (4, 2, 0, 2, 4),
        (4, "50%", "50%", 2, 2),
        (5, None, None, 2, 4),  # 25 % -> surge 2, unavailable 1
        (5, 0, 2, 0, 3),
        (5, 5, 5, 5, 0),
    ],
)
def test_rolling_update_steps_and_bounds(
    replicas: int, surge: Any, unavailable: Any, first_new: int, first_old: int
) -> None:
    w = rolled_out(deployment(replicas, surge=surge, unavailable=unavailable))
    assert w.rs_sizes() == {"app:v1": replicas}
    max_surge, max_unavailable = resolve_fenceposts(w.d)

    def bounds(world: World) -> None:
        assert len(world.active()) <= replicas + max_surge
        assert world.ready() >= replicas - max_unavailable

    w.checks.append(bounds)
    w.d["spec"]["template"]["spec"]["containers"][0]["image"] = "app:v2"
    w.d["metadata"]["generation"] = 2
    w.deploy_step()
    assert w.rs_sizes()["app:v2"] == first_new
    if first_new == 0 or surge == 5:
        assert w.rs_sizes()["app:v1"] == first_old
    else:
        w.rs_step()
        w.deploy_step()
        assert w.rs_sizes()["app:v1"] == first_old
    w.settle()
    assert w.rs_sizes() == {"app:v1": 0, "app:v2": replicas}
    status = w.d["status"]
    assert status["updatedReplicas"] == status["availableReplicas"] == status["replicas"] == replicas
    assert status["observedGeneration"] == 2
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Available": "True",
        "Progressing": "True",
    }


def test_recreate_stops_old_pods_before_starting_new() -> None:
    w = rolled_out(deployment(3, strategy="Recreate"))
    seen_mixed: list[bool] = []
    w.checks.append(
        lambda world: seen_mixed.append(
            len({p["spec"]["containers"][0]["image"] for p in world.pods.values()}) > 1
        )
    )
    w.d["spec"]["template"]["spec"]["containers"][0]["image"] = "app:v2"
    w.deploy_step()
    assert w.rs_sizes() == {"app:v1": 0}  # no new RS while old pods exist
    w.rs_step()
    w.deploy_step()
    assert w.rs_sizes() == {"app:v1": 0}  # old pods still Terminating
    w.edge_step()
    w.deploy_step()
    assert w.rs_sizes() == {"app:v1": 0, "app:v2": 3}
    w.settle()
    assert not any(seen_mixed)


def revisions(w: World) -> dict[str, str]:
    return {
        rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs["metadata"]["annotations"][
            REVISION_ANNOTATION
        ]
        for rs in w.rses.values()
    }


def test_rollback_reuses_old_replicaset_with_a_new_revision() -> None:
    w = rolled_out(deployment(3))
    assert revisions(w) == {"app:v1": "1"}
    assert w.d["metadata"]["annotations"][REVISION_ANNOTATION] == "1"
    w.d["spec"]["template"]["spec"]["containers"][0]["image"] = "app:v2"
    w.settle()
    assert revisions(w) == {"app:v1": "1", "app:v2": "2"}
    # kubectl rollout undo: the template of revision 1 goes back into the Deployment
    w.d["spec"]["template"]["spec"]["containers"][0]["image"] = "app:v1"
    w.settle()
    assert revisions(w) == {"app:v1": "3", "app:v2": "2"}
    assert w.d["metadata"]["annotations"][REVISION_ANNOTATION] == "3"
    assert w.rs_sizes() == {"app:v1": 3, "app:v2": 0}
    assert len(w.rses) == 2  # the old RS was reused, not duplicated


def test_new_replicaset_shape() -> None:
    d = deployment(2)
    actions = plan_deployment(d, [], [], now=NOW)
    (create,) = [a for a in actions if isinstance(a, Create)]
    rs = create.obj
    h = pod_template_hash(d["spec"]["template"])
    assert rs["metadata"]["name"] == f"web-{h}"
    assert rs["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "web",
            "uid": "d-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": h}
    assert rs["spec"]["template"]["metadata"]["labels"] == {"app": "web", "pod-template-hash": h}
    assert rs["metadata"]["annotations"][REVISION_ANNOTATION] == "1"
    assert rs["spec"]["replicas"] == 2
    events = [a for a in actions if isinstance(a, Event)]
    assert [(e.reason, e.message) for e in events] == [
        ("ScalingReplicaSet", f"Scaled up replica set web-{h} from 0 to 2")
    ]


def test_revision_history_limit_deletes_oldest_idle_replicasets() -> None:
    w = rolled_out(deployment(2, history=1))
    for image in ("app:v2", "app:v3", "app:v4"):
        w.d["spec"]["template"]["spec"]["containers"][0]["image"] = image
        w.settle()
    w.deploy_step()
    assert set(revisions(w)) == {"app:v3", "app:v4"}


def test_paused_deployment_does_not_roll_but_scales() -> None:
    w = rolled_out(deployment(2))
    w.d["spec"]["paused"] = True
    w.d["spec"]["template"]["spec"]["containers"][0]["image"] = "app:v2"
    w.d["spec"]["replicas"] = 4
    w.deploy_step()
    assert w.rs_sizes() == {"app:v1": 4}
    progressing = next(c for c in w.d["status"]["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("Unknown", "DeploymentPaused")


def test_steady_state_writes_nothing() -> None:
    w = rolled_out(deployment(3))
    w.deploy_step()
    assert w.deploy_step() == []


# --------------------------------------------------------------------------- replicaset


def pod(
    name: str,
    *,
    node: str | None = "n1",
    phase: str = "Running",
    ready: bool = True,
    created: str = "2025-01-01T00:00:00Z",
    owner: str = "rs-uid",
    deleting: bool = False,
) -> JSONObject:
    p: JSONObject = {
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"uid-{name}",
            "creationTimestamp": created,
            "labels": {"app": "web"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "rs",
                    "uid": owner,
                    "controller": True,
                }
            ],
        },
        "spec": {"containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }
    if node:
        p["spec"]["nodeName"] = node
    if deleting:
        p["metadata"]["deletionTimestamp"] = NOW
    return p


def replicaset(replicas: int) -> JSONObject:
    return {
        "metadata": {"name": "rs", "namespace": "default", "uid": "rs-uid", "generation": 3},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}},
        },
    }


def test_scale_down_order() -> None:
    pods = [
        pod("ready-old", created="2025-01-01T00:00:00Z"),
        pod("ready-new", created="2025-01-01T00:10:00Z"),
        pod("not-ready", ready=False),
        pod("pending", phase="Pending", ready=False),
        pod("unscheduled", node=None, phase="Pending", ready=False),
    ]
    assert [p["metadata"]["name"] for p in scale_down_order(pods)] == [
        "unscheduled",
        "pending",
        "not-ready",
        "ready-new",
        "ready-old",
    ]


@pytest.mark.parametrize(
    ("replicas", "pods", "created", "deleted"),
    [
        (3, [pod("a")], 2, []),
        (1, [pod("a"), pod("b", ready=False)], 0, ["b"]),
        (1, [pod("a"), pod("gone", deleting=True)], 0, []),  # a Terminating pod does not count
        (2, [pod("a"), pod("gone", deleting=True)], 1, []),  # ...so it is replaced at once
        (2, [pod("a"), pod("done", phase="Succeeded")], 1, []),
        (1, [pod("a"), pod("other", owner="someone-else")], 0, []),  # not ours
        (0, [pod("a"), pod("b", node=None)], 0, ["b", "a"]),
    ],
)
def test_plan_replicaset(replicas: int, pods: list[JSONObject], created: int, deleted: list[str]) -> None:
    suffixes = iter(["aaaaa", "bbbbb", "ccccc"])
    actions = plan_replicaset(replicaset(replicas), pods, suffix=lambda: next(suffixes))
    creates = [a.obj for a in actions if isinstance(a, Create)]
    assert len(creates) == created
    assert [a.obj["metadata"]["name"] for a in actions if isinstance(a, Delete)] == deleted
    for p in creates:
        assert p["metadata"]["name"].startswith("rs-") and len(p["metadata"]["name"]) == len("rs-") + 5
        assert p["metadata"]["labels"] == {"app": "web"}
        assert p["metadata"]["ownerReferences"][0]["uid"] == "rs-uid"
    reasons = [a.reason for a in actions if isinstance(a, Event)]
    assert reasons == ["SuccessfulCreate"] * created + ["SuccessfulDelete"] * len(deleted)
    (status,) = [a.set[("status",)] for a in actions if isinstance(a, Patch)]
    active = [
        p
        for p in pods
        if p["metadata"]["uid"] != "uid-other"
        and not p["metadata"].get("deletionTimestamp")
        and p["status"]["phase"] == "Running"
    ]
    assert status["replicas"] == len(active)
    assert status["observedGeneration"] == 3


# --------------------------------------------------------------------------- scheduler


def node(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    ready: str = "True",
    unschedulable: bool = False,
    max_pods: int | None = None,
) -> JSONObject:
    n: JSONObject = {
        "metadata": {"name": name, "uid": f"uid-{name}", "labels": labels or {}},
        "spec": {"unschedulable": True} if unschedulable else {},
        "status": {"conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": NOW}]},
    }
    if max_pods is not None:
        n["status"]["allocatable"] = {"pods": str(max_pods)}
    return n


def pending(selector: dict[str, str] | None = None, affinity: list[JSONObject] | None = None) -> JSONObject:
    p = pod("new", node=None, phase="Pending", ready=False)
    if selector:
        p["spec"]["nodeSelector"] = selector
    if affinity:
        p["spec"]["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": affinity}]
                }
            }
        }
    return p


A = {"site": "a"}
SIBLINGS = [
    pod("s1", node="a1"),
    pod("s2", node="a1"),
    pod("x1", node="a2", owner="other"),
    pod("x2", node="a2", owner="other"),
    pod("x3", node="a2", owner="other"),
]


@pytest.mark.parametrize(
    ("p", "nodes", "pods", "expected"),
    [
        (pending(A), [node("a1", labels=A), node("b1", labels={"site": "b"})], [], "a1"),
        # spread the owner's pods first, even onto a busier node
        (pending(A), [node("a1", labels=A), node("a2", labels=A)], SIBLINGS, "a2"),
        # then the least loaded
        (pending(), [node("a1"), node("a2")], [pod("x", node="a1", owner="o")], "a2"),
        (
            pending(affinity=[{"key": "site", "operator": "In", "values": ["b", "c"]}]),
            [node("a1", labels=A), node("b1", labels={"site": "b"})],
            [],
            "b1",
        ),
        (
            pending(affinity=[{"key": "gpu", "operator": "Exists"}]),
            [node("a1"), node("g", labels={"gpu": "1"})],
            [],
            "g",
        ),
        (pending(A), [node("a1", labels=A, ready="Unknown"), node("a2", labels=A)], [], "a2"),
        (pending(A), [node("a1", labels=A, unschedulable=True), node("a2", labels=A)], [], "a2"),
        (pending(), [node("a1", max_pods=1), node("a2", max_pods=5)], [pod("x", node="a1", owner="o")], "a2"),
    ],
)
def test_schedule_picks(
    p: JSONObject, nodes: list[JSONObject], pods: list[JSONObject], expected: str
) -> None:
    assert schedule(p, nodes, pods).node == expected


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        (
            [
                node("b1", labels={"site": "b"}),
                node("a1", labels=A, ready="False"),
                node("a2", labels=A, ready="Unknown"),
            ],
            "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
            "2 node(s) were not ready.",
        ),
        (
            [node("a1", labels=A, unschedulable=True), node("a2", labels=A, max_pods=0)],
            "0/2 nodes are available: 1 Too many pods, 1 node(s) were unschedulable.",
        ),
        ([], "no nodes available to schedule pods"),
    ],
)
def test_schedule_failure_message(nodes: list[JSONObject], message: str) -> None:
    decision = schedule(pending(A), nodes, [])
    assert decision.node is None
    assert decision.message == message


def test_plan_schedule_binds_and_reports() -> None:
    actions = plan_schedule(pending(A), [node("a1", labels=A)], [], now=NOW)
    patch, event = actions
    assert isinstance(patch, Patch) and patch.set[("spec", "nodeName")] == "a1"
    assert patch.set[("status", "conditions")][-1]["type"] == "PodScheduled"
    assert patch.set[("status", "conditions")][-1]["status"] == "True"
    assert isinstance(event, Event) and (event.reason, event.message) == (
        "Scheduled",
        "Successfully assigned default/new to a1",
    )

    failing = plan_schedule(pending(A), [node("b1")], [], now=NOW)
    patch, event = failing
    assert isinstance(patch, Patch) and isinstance(event, Event)
    cond = patch.set[("status", "conditions")][-1]
    assert (cond["type"], cond["status"], cond["reason"]) == ("PodScheduled", "False", "Unschedulable")
    assert event.reason == "FailedScheduling" and event.type == "Warning"
    # Same verdict again: nothing to write, no event storm.
    p = pending(A)
    p["status"]["conditions"] = patch.set[("status", "conditions")]
    assert plan_schedule(p, [node("b1")], [], now=NOW) == []
    # Bound or deleting pods are not the scheduler's business.
    assert plan_schedule(pod("bound"), [node("a1")], [], now=NOW) == []


# --------------------------------------------------------------------------- garbage collector


def dependent(*uids: str) -> JSONObject:
    return {
        "metadata": {
            "name": "dep",
            "namespace": "default",
            "uid": "dep-uid",
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": u, "uid": u} for u in uids
            ],
        }
    }


def owner(uid: str, *, deleting: bool = False, finalizers: tuple[str, ...] = ()) -> JSONObject:
    o: JSONObject = {"metadata": {"name": uid, "namespace": "default", "uid": uid}}
    if deleting:
        o["metadata"]["deletionTimestamp"] = NOW
    if finalizers:
        o["metadata"]["finalizers"] = list(finalizers)
    return o


@pytest.mark.parametrize(
    ("dep", "owners", "expected"),
    [
        (dependent("o1"), {"o1": owner("o1")}, "keep"),
        (dependent("o1"), {"o1": None}, "delete"),
        (dependent("o1"), {}, "keep"),  # unknown owner kind: never judged gone
        (dependent("o1", "o2"), {"o1": None, "o2": owner("o2")}, ["o2"]),  # drop the dangling ref only
        (dependent("o1"), {"o1": owner("o1", deleting=True)}, "keep"),  # background: wait for it to go
        (dependent("o1"), {"o1": owner("o1", deleting=True, finalizers=("foregroundDeletion",))}, "delete"),
        (dependent("o1"), {"o1": owner("o1", deleting=True, finalizers=("orphan",))}, []),
        (
            dependent("o1", "o2"),
            {"o1": owner("o1", deleting=True, finalizers=("orphan",)), "o2": None},
            "delete",
        ),
        (dependent("o1"), {"o1": owner("someone-else")}, "delete"),  # same name, new uid: the owner is gone
    ],
)
def test_plan_gc_dependent(dep: JSONObject, owners: dict[str, JSONObject | None], expected: Any) -> None:
    actions = plan_gc_dependent(PODS, dep, owners)
    if expected == "keep":
        assert actions == []
    elif expected == "delete":
        assert [type(a) for a in actions] == [Delete]
    else:
        (patch,) = actions
        assert isinstance(patch, Patch)
        refs = patch.set[("metadata", "ownerReferences")] or []
        assert [r["uid"] for r in refs] == expected


def test_plan_gc_dependent_ignores_terminating() -> None:
    dep = dependent("o1")
    dep["metadata"]["deletionTimestamp"] = NOW
    assert plan_gc_dependent(PODS, dep, {"o1": None}) == []


@pytest.mark.parametrize(
    ("finalizers", "dependents", "removed"),
    [
        (("orphan",), [], ["orphan"]),
        (("orphan",), [dependent("o1")], []),
        (("orphan",), [dependent("o2")], ["orphan"]),
        (("foregroundDeletion",), [dependent("o1")], []),
        (("foregroundDeletion",), [], ["foregroundDeletion"]),
        (("other",), [], []),
    ],
)
def test_plan_gc_owner(finalizers: tuple[str, ...], dependents: list[JSONObject], removed: list[str]) -> None:
    actions = plan_gc_owner(REPLICASETS, owner("o1", deleting=True, finalizers=finalizers), dependents)
    assert [a.finalizer for a in actions if isinstance(a, RemoveFinalizer)] == removed
    assert plan_gc_owner(REPLICASETS, owner("o1", finalizers=finalizers), []) == []


# --------------------------------------------------------------------------- node lifecycle

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def edge_node(heartbeat_age: float | None, status: str = "True") -> JSONObject:
    n: JSONObject = {
        "metadata": {"name": "edge-1", "uid": "n-uid", "creationTimestamp": "2024-12-31T23:00:00Z"},
        "status": {"conditions": []},
    }
    if heartbeat_age is not None:
        beat = (T0 - dt.timedelta(seconds=heartbeat_age)).strftime("%Y-%m-%dT%H:%M:%SZ")
        n["status"]["conditions"] = [
            {
                "type": "Ready",
                "status": status,
                "reason": "EdgeReady",
                "lastHeartbeatTime": beat,
                "lastTransitionTime": beat,
            },
            {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": beat},
        ]
    return n


@pytest.mark.parametrize(
    ("n", "marks_node", "marks_pod"),
    [
        (edge_node(10), None, False),
        (edge_node(40), None, False),  # exactly the grace period: still fine
        (edge_node(41), "NodeStatusUnknown", True),
        (edge_node(500, status="Unknown"), None, True),  # already Unknown: only keep pods not ready
        (edge_node(5, status="False"), None, True),  # the edge itself says NotReady
        (edge_node(None), "NodeStatusNeverUpdated", True),
    ],
)
def test_plan_node(n: JSONObject, marks_node: str | None, marks_pod: bool) -> None:
    pods = [pod("p1", node="edge-1")]
    pods[0]["status"]["conditions"].append({"type": "ContainersReady", "status": "True"})
    actions = plan_node(n, pods, now=T0, grace_period=40)
    node_patches = [a for a in actions if isinstance(a, Patch) and a.rt == NODES]
    pod_patches = [a for a in actions if isinstance(a, Patch) and a.rt == PODS]
    assert not any(isinstance(a, Delete) for a in actions)  # never evicts
    if marks_node:
        (patch,) = node_patches
        ready = next(c for c in patch.set[("status", "conditions")] if c["type"] == "Ready")
        assert ready["status"] == "Unknown" and ready["reason"] == marks_node
        assert all(c["status"] == "Unknown" for c in patch.set[("status", "conditions")])
        assert any(isinstance(a, Event) and a.reason == "NodeNotReady" for a in actions)
        if marks_node == "NodeStatusUnknown":
            assert ready["message"] == "Kubelet stopped posting node status."
    else:
        assert node_patches == []
    if marks_pod:
        (patch,) = pod_patches
        conds = {c["type"]: c["status"] for c in patch.set[("status", "conditions")]}
        assert conds == {"Ready": "False", "ContainersReady": "False"}
    else:
        assert pod_patches == []


# --------------------------------------------------------------------------- work queue


async def test_work_queue_dedups_and_requeues_keys_added_while_processing() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    q.add("b")
    q.add("a")
    assert len(q) == 2
    key = await q.get()
    assert key == "a"
    q.add("a")  # changed while being processed: not handed to a second worker now...
    assert await q.get() == "b"
    assert len(q) == 0
    q.done("a")  # ...but queued again when the first one finishes
    assert await q.get() == "a"
    q.done("a")
    q.done("b")
    q.close()

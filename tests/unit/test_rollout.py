"""app.rollout: history, rollback plans and rollout status as pure functions of the objects."""

from __future__ import annotations

from typing import Any

import pytest

from app.patch import json_patch
from app.rollout import (
    DeploymentPaused,
    RevisionNotFound,
    plan_rollback,
    revisions,
    rollout_status,
    template_without_hash,
)

UID = "d-uid"


def template(image: str, hash_: str = "") -> dict[str, Any]:
    labels = {"app": "web"}
    if hash_:
        labels["pod-template-hash"] = hash_
    return {
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "web", "image": image}]},
    }


def deployment(image: str, revision: int, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "uid": UID,
            "resourceVersion": "77",
            "generation": 4,
            "annotations": {"deployment.kubernetes.io/revision": str(revision), "team": "a"},
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template(image),
            **spec,
        },
    }


def replicaset(
    image: str, revision: int, hash_: str, *, owner: str = UID, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"web-{hash_}",
            "namespace": "default",
            "annotations": {"deployment.kubernetes.io/revision": str(revision), **(annotations or {})},
            "ownerReferences": [{"kind": "Deployment", "name": "web", "uid": owner, "controller": True}],
        },
        "spec": {"replicas": 0, "template": template(image, hash_)},
        "status": {"readyReplicas": 0},
    }


RSES = [
    replicaset("web:1", 1, "aaa"),
    replicaset("web:3", 3, "ccc"),
    replicaset("web:2", 2, "bbb", annotations={"kubernetes.io/change-cause": "bump to 2"}),
    replicaset("other:1", 9, "zzz", owner="someone-else"),
]


def test_history_is_the_owned_replicasets_oldest_first() -> None:
    hist = revisions(deployment("web:3", 3), RSES)
    assert [(r.number, r.replicaset, r.images) for r in hist] == [
        (1, "web-aaa", ("web:1",)),
        (2, "web-bbb", ("web:2",)),
        (3, "web-ccc", ("web:3",)),
    ]
    assert hist[1].change_cause == "bump to 2"


def test_rollback_to_previous_revision_copies_its_template_without_the_hash() -> None:
    d = deployment("web:3", 3)
    plan = plan_rollback(d, RSES)
    assert plan.to_revision == 2 and plan.patch is not None
    after = json_patch(d, plan.patch)
    assert after["spec"]["template"] == template("web:2")
    # The Deployment's annotations kept, the RS's own (non-bookkeeping) ones copied.
    assert after["metadata"]["annotations"] == {
        "deployment.kubernetes.io/revision": "3",
        "team": "a",
        "kubernetes.io/change-cause": "bump to 2",
    }
    assert after["metadata"]["resourceVersion"] == "77"  # the CAS precondition the server checks
    assert plan.message == 'deployment "web" rolled back to revision 2'


def test_rollback_to_a_given_revision() -> None:
    plan = plan_rollback(deployment("web:3", 3), RSES, to_revision=1)
    assert plan.to_revision == 1 and plan.patch is not None
    assert plan.patch[0] == {"op": "replace", "path": "/spec/template", "value": template("web:1")}


def test_rollback_skipped_when_the_template_already_matches() -> None:
    # After an undo to revision 1, the controller renumbers it 4; undoing "to 1" again is a no-op.
    plan = plan_rollback(deployment("web:1", 4), [*RSES[1:], replicaset("web:1", 4, "aaa")], 4)
    assert plan.patch is None and "already matches revision 4" in plan.message


@pytest.mark.parametrize(
    ("d", "rses", "to", "error", "text"),
    [
        (deployment("web:1", 1), [replicaset("web:1", 1, "aaa")], None, RevisionNotFound, "no previous"),
        (deployment("web:3", 3), RSES, 7, RevisionNotFound, "unable to find revision 7"),
        (deployment("web:3", 3), RSES[3:], None, RevisionNotFound, "no previous"),  # nothing owned
        (deployment("web:3", 3, paused=True), RSES, None, DeploymentPaused, "is paused"),
    ],
)
def test_rollback_refusals(
    d: dict[str, Any], rses: list[dict[str, Any]], to: int | None, error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        plan_rollback(d, rses, to)


def test_template_without_hash_leaves_the_input_alone() -> None:
    t = template("x", "hhh")
    assert "pod-template-hash" not in template_without_hash(t)["metadata"]["labels"]
    assert t["metadata"]["labels"]["pod-template-hash"] == "hhh"


def with_status(d: dict[str, Any], observed: int, **status: int) -> dict[str, Any]:
    d["status"] = {"observedGeneration": observed, **status}
    return d


@pytest.mark.parametrize(
    ("status", "done", "message"),
    [
        (
            with_status(deployment("a", 1), 3),
            False,
            "Waiting for deployment spec update to be observed...",
        ),
        (
            with_status(deployment("a", 1), 4, replicas=2, updatedReplicas=1, availableReplicas=1),
            False,
            'Waiting for deployment "web" rollout to finish: 1 out of 2 new replicas have been updated...',
        ),
        (
            with_status(deployment("a", 1), 4, replicas=3, updatedReplicas=2, availableReplicas=2),
            False,
            'Waiting for deployment "web" rollout to finish: 1 old replicas are pending termination...',
        ),
        (
            with_status(deployment("a", 1), 4, replicas=2, updatedReplicas=2, availableReplicas=1),
            False,
            'Waiting for deployment "web" rollout to finish: 1 of 2 updated replicas are available...',
        ),
        (
            with_status(
                deployment("a", 1), 4, replicas=2, updatedReplicas=2, availableReplicas=2, readyReplicas=2
            ),
            True,
            'deployment "web" successfully rolled out',
        ),
    ],
)
def test_rollout_status(status: dict[str, Any], done: bool, message: str) -> None:
    s = rollout_status(status)
    assert (s.done, s.message) == (done, message)
    assert s.desired == 2 and s.revision == 1

"""Edged's pure decisions, table-driven: restart policy, back-off, probe thresholds, actions, phase."""

from __future__ import annotations

from typing import Any

import pytest

from app.model import ExecAction, PodSpec, Probe, parse_pod_spec
from edgeservice.edged.probes import ProbeState, probe_step
from edgeservice.edged.reconcile import (
    ContainerView,
    ExitInfo,
    Kill,
    Start,
    Terminated,
    WaitBackoff,
    container_status,
    decide,
    go_duration,
    next_backoff,
    pod_phase,
    pod_status,
    should_restart,
)

NOW = 1_000_000.0


def spec(policy: str = "Always", containers: tuple[str, ...] = ("a",), init: tuple[str, ...] = ()) -> PodSpec:
    def c(name: str) -> dict[str, Any]:
        return {"name": name, "image": "img", "command": ["true"]}

    return parse_pod_spec(
        {
            "restartPolicy": policy,
            "containers": [c(n) for n in containers],
            "initContainers": [c(n) for n in init],
        }
    )


def exited(name: str, code: int, **kw: Any) -> ContainerView:
    return ContainerView(name, phase="exited", last_exit=ExitInfo(code, "Error", NOW - 5, NOW - 1), **kw)


def running(name: str, **kw: Any) -> ContainerView:
    fields: dict[str, Any] = {"started_at": NOW - 10, "started": True, "ready": True, **kw}
    return ContainerView(name, phase="running", **fields)


@pytest.mark.parametrize(
    ("policy", "code", "restart"),
    [
        ("Always", 0, True),
        ("Always", 1, True),
        ("OnFailure", 0, False),
        ("OnFailure", 137, True),
        ("Never", 0, False),
        ("Never", 1, False),
    ],
)
def test_should_restart(policy: Any, code: int, restart: bool) -> None:
    assert should_restart(policy, code) is restart


@pytest.mark.parametrize(
    ("previous", "ran_for", "expected"),
    [
        (0.0, 1.0, 10.0),  # first crash: base
        (10.0, 1.0, 20.0),  # doubles
        (160.0, 1.0, 300.0),  # capped
        (300.0, 1.0, 300.0),
        (300.0, 599.0, 300.0),
        (300.0, 600.0, 10.0),  # ran 10 minutes: reset
    ],
)
def test_next_backoff(previous: float, ran_for: float, expected: float) -> None:
    assert next_backoff(previous, ran_for, 10.0, 300.0) == expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(10, "10s"), (20, "20s"), (80, "1m20s"), (300, "5m0s"), (0.05, "50ms"), (1.6, "1.6s"), (3600, "1h0m0s")],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


PROBE = Probe(ExecAction(("true",)), success_threshold=2, failure_threshold=3)


@pytest.mark.parametrize(
    ("attempts", "result"),
    [
        ([], None),
        ([True], None),  # one success is below successThreshold=2
        ([True, True], True),
        ([False, False], None),
        ([False, False, False], False),
        ([True, True, False, False], True),  # failures below the threshold keep the last result
        ([True, True, False, False, False], False),
        ([False, False, True, False, False], None),  # a success resets the failure count
        ([False, False, False, True, True], True),
    ],
)
def test_probe_thresholds(attempts: list[bool], result: bool | None) -> None:
    state = ProbeState()
    for ok in attempts:
        state = probe_step(state, PROBE, ok)
    assert state.result is result


DECIDE: list[tuple[str, PodSpec, dict[str, ContainerView], bool, list[Any]]] = [
    ("new container starts", spec(), {}, False, [Start("a")]),
    ("running stays", spec(), {"a": running("a")}, False, []),
    ("starting waits", spec(), {"a": ContainerView("a", phase="starting")}, False, []),
    (
        "changed definition is killed",
        spec(),
        {"a": running("a", hash_matches=False)},
        False,
        [Kill("a", "Killing", "Container a definition changed, will be restarted")],
    ),
    (
        "liveness failure is killed",
        spec(),
        {"a": running("a", probe_failed="Liveness probe failed: x")},
        False,
        [Kill("a", "Unhealthy", "Liveness probe failed: x")],
    ),
    (
        "Always restarts after back-off",
        spec("Always"),
        {"a": exited("a", 0, backoff_until=NOW)},
        False,
        [Start("a")],
    ),
    (
        "Always waits for back-off",
        spec("Always"),
        {"a": exited("a", 1, backoff_until=NOW + 5)},
        False,
        [WaitBackoff("a", NOW + 5)],
    ),
    (
        "definition change skips back-off",
        spec("Never"),
        {"a": exited("a", 137, backoff_until=NOW + 5, restart_now=True)},
        False,
        [Start("a")],
    ),
    ("OnFailure leaves success", spec("OnFailure"), {"a": exited("a", 0)}, False, []),
    ("OnFailure restarts failure", spec("OnFailure"), {"a": exited("a", 2)}, False, [Start("a")]),
    ("Never leaves failure", spec("Never"), {"a": exited("a", 2)}, False, []),
    ("config error waits", spec(), {"a": ContainerView("a", config_error="needs a command")}, False, []),
    ("init runs first", spec(init=("i",)), {}, False, [Start("i")]),
    ("init running blocks app", spec(init=("i",)), {"i": ContainerView("i", phase="running")}, False, []),
    ("init done starts app", spec(init=("i",)), {"i": exited("i", 0)}, False, [Start("a")]),
    ("failed init restarts", spec("Always", init=("i",)), {"i": exited("i", 1)}, False, [Start("i")]),
    ("failed init with Never stops", spec("Never", init=("i",)), {"i": exited("i", 1)}, False, []),
    (
        "removed container is killed",
        spec(),
        {"a": running("a"), "old": running("old")},
        False,
        [Kill("old", "Killing", "Container old is no longer in the pod spec")],
    ),
    (
        "deleting kills running",
        spec(),
        {"a": running("a")},
        True,
        [Kill("a", "Killing", "Stopping container a")],
    ),
    ("deleting waits for stopping", spec(), {"a": ContainerView("a", phase="stopping")}, True, []),
    ("deleting done", spec(), {"a": exited("a", 143)}, True, [Terminated()]),
    ("deleting never started", spec(), {}, True, [Terminated()]),
]


@pytest.mark.parametrize(
    ("pod_spec", "views", "deleting", "expected"), [d[1:] for d in DECIDE], ids=[d[0] for d in DECIDE]
)
def test_decide(
    pod_spec: PodSpec, views: dict[str, ContainerView], deleting: bool, expected: list[Any]
) -> None:
    assert decide(pod_spec, views, NOW, deleting=deleting) == expected


PHASE: list[tuple[str, PodSpec, dict[str, ContainerView], str]] = [
    ("nothing started", spec(), {}, "Pending"),
    ("running", spec(), {"a": running("a")}, "Running"),
    ("one of two waiting", spec(containers=("a", "b")), {"a": running("a")}, "Pending"),
    ("Always crashed", spec("Always"), {"a": exited("a", 1)}, "Running"),
    ("Never succeeded", spec("Never"), {"a": exited("a", 0)}, "Succeeded"),
    ("Never failed", spec("Never"), {"a": exited("a", 1)}, "Failed"),
    ("OnFailure failed", spec("OnFailure"), {"a": exited("a", 1)}, "Running"),
    (
        "OnFailure all done",
        spec("OnFailure", ("a", "b")),
        {"a": exited("a", 0), "b": exited("b", 0)},
        "Succeeded",
    ),
    ("Never one running", spec("Never", ("a", "b")), {"a": exited("a", 1), "b": running("b")}, "Running"),
    (
        "restarting after crash",
        spec(),
        {"a": ContainerView("a", phase="starting", last_exit=ExitInfo(1, "Error", 0, 1))},
        "Running",
    ),
    ("init pending", spec(init=("i",)), {}, "Pending"),
    ("init failed Never", spec("Never", init=("i",)), {"i": exited("i", 1)}, "Failed"),
    ("init failed Always", spec("Always", init=("i",)), {"i": exited("i", 1)}, "Pending"),
]


@pytest.mark.parametrize(("pod_spec", "views", "phase"), [p[1:] for p in PHASE], ids=[p[0] for p in PHASE])
def test_pod_phase(pod_spec: PodSpec, views: dict[str, ContainerView], phase: str) -> None:
    assert pod_phase(pod_spec, views) == phase


def test_crash_loop_status_message() -> None:
    s = spec()
    view = exited("a", 3, backoff_until=NOW + 20, backoff_delay=20.0, restart_count=2)
    status = container_status(s.containers[0], view, policy="Always", pod_ref="web_default(u1)", now=NOW)
    assert status["state"] == {
        "waiting": {
            "reason": "CrashLoopBackOff",
            "message": "back-off 20s restarting failed container=a pod=web_default(u1)",
        }
    }
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert status["restartCount"] == 2
    assert status["ready"] is False


def test_terminated_status_keeps_previous_exit_as_last_state() -> None:
    s = spec("Never")
    view = ContainerView(
        "a",
        phase="exited",
        last_exit=ExitInfo(0, "Completed", NOW - 2, NOW - 1),
        prev_exit=ExitInfo(1, "Error", NOW - 9, NOW - 8),
    )
    status = container_status(s.containers[0], view, policy="Never", pod_ref="p", now=NOW)
    assert status["state"]["terminated"]["reason"] == "Completed"
    assert status["lastState"]["terminated"]["exitCode"] == 1


def test_config_error_is_reported_as_waiting() -> None:
    s = spec()
    view = ContainerView("a", config_error="the process runtime needs a command")
    status = container_status(s.containers[0], view, policy="Always", pod_ref="p", now=NOW)
    assert status["state"]["waiting"]["reason"] == "CreateContainerConfigError"


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_conditions_and_transition_times() -> None:
    s = spec(containers=("a", "b"))
    kw: dict[str, Any] = {"host_ip": "10.0.0.5", "start_time": NOW - 100, "pod_ref": "p"}
    first = pod_status(s, {"a": running("a"), "b": running("b", ready=False)}, now=NOW, **kw)
    assert first["phase"] == "Running"
    assert (first["hostIP"], first["podIP"]) == ("10.0.0.5", "10.0.0.5")
    cond = _conditions(first)
    assert cond["PodScheduled"]["status"] == "True"
    assert cond["Initialized"]["status"] == "True"
    assert cond["Ready"]["status"] == "False"
    assert cond["Ready"]["message"] == "containers with unready status: [b]"
    later = pod_status(
        s, {"a": running("a"), "b": running("b")}, now=NOW + 60, previous_conditions=first["conditions"], **kw
    )
    cond2 = _conditions(later)
    assert cond2["Ready"]["status"] == "True"
    assert cond2["Ready"]["lastTransitionTime"] != cond["Ready"]["lastTransitionTime"]
    assert cond2["PodScheduled"]["lastTransitionTime"] == cond["PodScheduled"]["lastTransitionTime"]


def test_deleting_pod_reports_terminated_states() -> None:
    s = spec("Always")
    status = pod_status(
        s,
        {"a": exited("a", 143, backoff_until=NOW + 10)},
        now=NOW,
        host_ip="127.0.0.1",
        start_time=NOW - 100,
        pod_ref="p",
        deleting=True,
    )
    assert status["phase"] == "Failed"
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 143

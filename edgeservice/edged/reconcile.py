"""Edged's pure decisions: from (pod spec, observed container states, now) to actions and a PodStatus.

Nothing here does I/O or reads a clock; the manager (``manager.py``) observes processes and probes, builds
one ``ContainerView`` per container, asks ``decide`` what to do and ``pod_status`` what to report, and
performs the actions. That keeps the kubelet rules that matter testable with tables:

- restart policy: Always restarts every exit, OnFailure non-zero exits, Never none (``should_restart``);
- CrashLoopBackOff: the delay before a restart starts at ``base`` and doubles up to ``maximum``; it resets
  once the container ran for ``BACKOFF_RESET_SECONDS`` (``next_backoff``);
- a container whose definition hash changed is killed and restarted at once, without back-off;
- a failed liveness or startup probe kills the container, which then restarts per the policy;
- init containers run one at a time, in order, each to a zero exit, before any regular container;
- phase follows the kubelet's ``getPhase``: a container still waiting for its first start makes the pod
  Pending; one running makes it Running; when all stopped, Always is Running (it will restart), all zero
  exits is Succeeded, OnFailure is Running and otherwise Failed.

Deliberately not done: sidecar (restartable init) containers, readiness gates, pod-level back-off.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from app.model import Container, PodSpec, RestartPolicy

JSONObject = dict[str, Any]

ContainerPhase = Literal["new", "starting", "running", "stopping", "exited"]
# FleetOps' own pod condition: whether every volume is mounted at its mountPath (see runtime.py).
VOLUMES_HONOURED = "VolumesHonoured"
# Kubelet resets a container's back-off once it has run this long without crashing (10 minutes).
BACKOFF_RESET_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class ExitInfo:
    """One finished run of a container; times are epoch seconds."""

    exit_code: int
    reason: str
    started_at: float
    finished_at: float
    message: str = ""
    signal: int | None = None
    container_id: str = ""


@dataclass(frozen=True, slots=True)
class ContainerView:
    """What the manager observed about one container, as the decisions need it."""

    name: str
    phase: ContainerPhase = "new"
    hash_matches: bool = True
    container_id: str = ""
    started_at: float | None = None
    started: bool = False  # startup probe passed (or none) while running
    ready: bool = False  # readiness probe passed (or none) while running
    probe_failed: str = ""  # a liveness/startup probe failed: why (the container must be killed)
    restart_count: int = 0
    last_exit: ExitInfo | None = None
    prev_exit: ExitInfo | None = None
    backoff_until: float = 0.0
    backoff_delay: float = 0.0
    restart_now: bool = False  # killed for a definition change: restart without back-off
    config_error: str = ""  # the runtime cannot run this container as specified


@dataclass(frozen=True, slots=True)
class Start:
    container: str


@dataclass(frozen=True, slots=True)
class Kill:
    container: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class WaitBackoff:
    container: str
    until: float


@dataclass(frozen=True, slots=True)
class Terminated:
    """A deleting pod has no container left running."""


Action = Start | Kill | WaitBackoff | Terminated


def should_restart(policy: RestartPolicy, exit_code: int) -> bool:
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return exit_code != 0
    return False


def next_backoff(previous: float, ran_for: float, base: float, maximum: float) -> float:
    """The delay before the next restart, given the previous delay and how long the last run lasted."""
    if previous <= 0 or ran_for >= BACKOFF_RESET_SECONDS:
        return min(base, maximum)
    return min(previous * 2, maximum)


def go_duration(seconds: float) -> str:
    """Format like Go's time.Duration (``10s``, ``1m20s``, ``5m0s``, ``50ms``), as kubelet messages do."""
    if seconds < 1:
        return f"{round(seconds * 1000, 3):g}ms"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    s = f"{round(secs, 3):g}s"
    if hours:
        return f"{hours}h{minutes}m{s}"
    if minutes:
        return f"{minutes}m{s}"
    return s


def _view(views: Mapping[str, ContainerView], name: str) -> ContainerView:
    return views.get(name) or ContainerView(name)


def _succeeded(v: ContainerView) -> bool:
    return v.phase == "exited" and v.last_exit is not None and v.last_exit.exit_code == 0


def _running(v: ContainerView) -> bool:
    return v.phase in ("running", "stopping")


def _restart(v: ContainerView, now: float) -> Action:
    if v.restart_now or now >= v.backoff_until:
        return Start(v.name)
    return WaitBackoff(v.name, v.backoff_until)


def init_done(spec: PodSpec, views: Mapping[str, ContainerView]) -> bool:
    return all(_succeeded(_view(views, ic.name)) for ic in spec.init_containers)


def decide(
    spec: PodSpec, views: Mapping[str, ContainerView], now: float, *, deleting: bool = False
) -> list[Action]:
    """The actions that move the observed containers towards the spec; pure."""
    known = {c.name for c in (*spec.init_containers, *spec.containers)}
    if deleting:
        kills: list[Action] = [
            Kill(v.name, "Killing", f"Stopping container {v.name}")
            for v in views.values()
            if v.phase == "running"
        ]
        if all(v.phase in ("new", "exited") for v in views.values()):
            return [Terminated()]
        return kills
    actions: list[Action] = [
        Kill(v.name, "Killing", f"Container {v.name} is no longer in the pod spec")
        for v in views.values()
        if v.name not in known and v.phase == "running"
    ]
    for ic in spec.init_containers:
        v = _view(views, ic.name)
        if _succeeded(v):
            continue
        if v.config_error:
            return actions
        if v.phase == "new":
            return [*actions, Start(ic.name)]
        if v.phase != "exited":
            return actions
        if spec.restart_policy == "Never":
            return actions  # the pod has failed
        return [*actions, _restart(v, now)]
    for c in spec.containers:
        v = _view(views, c.name)
        if v.config_error:
            continue
        if v.phase == "new":
            actions.append(Start(c.name))
        elif v.phase == "running":
            if not v.hash_matches:
                actions.append(
                    Kill(c.name, "Killing", f"Container {c.name} definition changed, will be restarted")
                )
            elif v.probe_failed:
                actions.append(Kill(c.name, "Unhealthy", v.probe_failed))
        elif (
            v.phase == "exited"
            and v.last_exit is not None
            and (v.restart_now or should_restart(spec.restart_policy, v.last_exit.exit_code))
        ):
            actions.append(_restart(v, now))
    return actions


def pod_phase(spec: PodSpec, views: Mapping[str, ContainerView]) -> str:
    """Kubernetes pod phase from the container states; pure."""
    for ic in spec.init_containers:
        v = _view(views, ic.name)
        if _succeeded(v):
            continue
        if (
            v.phase == "exited"
            and v.last_exit is not None
            and spec.restart_policy == "Never"
            and v.last_exit.exit_code != 0
        ):
            return "Failed"
        return "Pending"
    running = waiting = stopped = succeeded = 0
    for c in spec.containers:
        v = _view(views, c.name)
        if _running(v):
            running += 1
        elif v.last_exit is not None:
            stopped += 1
            succeeded += v.last_exit.exit_code == 0
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if spec.restart_policy == "Always":
        return "Running"
    if stopped == succeeded:
        return "Succeeded"
    if spec.restart_policy == "OnFailure":
        return "Running"
    return "Failed"


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _terminated(e: ExitInfo | None) -> JSONObject:
    if e is None:
        return {}
    term: JSONObject = {
        "exitCode": e.exit_code,
        "reason": e.reason,
        "startedAt": rfc3339(e.started_at),
        "finishedAt": rfc3339(e.finished_at),
    }
    if e.signal is not None:
        term["signal"] = e.signal
    if e.message:
        term["message"] = e.message
    if e.container_id:
        term["containerID"] = e.container_id
    return {"terminated": term}


def container_status(
    c: Container,
    v: ContainerView,
    *,
    policy: RestartPolicy,
    pod_ref: str,
    now: float,
    init: bool = False,
    initializing: bool = False,
) -> JSONObject:
    """One Kubernetes ContainerStatus; ``pod_ref`` is ``name_namespace(uid)`` for messages."""
    running = _running(v)
    state: JSONObject
    last: JSONObject = _terminated(v.last_exit)
    if running:
        state = {"running": {"startedAt": rfc3339(v.started_at)}}
    elif v.phase == "exited" and v.last_exit is not None:
        code = v.last_exit.exit_code
        restarting = v.restart_now or (
            (code != 0 and policy != "Never") if init else should_restart(policy, code)
        )
        if restarting and now < v.backoff_until and not v.restart_now:
            message = (
                f"back-off {go_duration(v.backoff_delay)} restarting failed container={c.name} pod={pod_ref}"
            )
            state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
        elif restarting and v.config_error:
            state = {"waiting": {"reason": "CreateContainerConfigError", "message": v.config_error}}
        elif restarting:
            state = {"waiting": {"reason": "ContainerCreating"}}
        else:
            state = _terminated(v.last_exit)
            last = _terminated(v.prev_exit)
    elif v.config_error:
        state = {"waiting": {"reason": "CreateContainerConfigError", "message": v.config_error}}
    else:
        state = {
            "waiting": {"reason": "PodInitializing" if initializing and not init else "ContainerCreating"}
        }
    return {
        "name": c.name,
        "image": c.image,
        "imageID": "",
        "containerID": v.container_id,
        "ready": running and v.ready,
        "started": running and v.started,
        "restartCount": v.restart_count,
        "state": state,
        "lastState": last,
    }


def _condition(
    kind: str, ok: bool, previous: Mapping[str, JSONObject], now: str, *, reason: str = "", message: str = ""
) -> JSONObject:
    status = "True" if ok else "False"
    prev = previous.get(kind)
    since = prev.get("lastTransitionTime") if prev and prev.get("status") == status else now
    cond: JSONObject = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": since}
    if not ok and reason:
        cond["reason"] = reason
        cond["message"] = message
    return cond


def pod_status(
    spec: PodSpec,
    views: Mapping[str, ContainerView],
    *,
    now: float,
    host_ip: str,
    start_time: float,
    pod_ref: str,
    previous_conditions: Sequence[JSONObject] = (),
    deleting: bool = False,
    volume_problems: Sequence[str] | None = None,
) -> JSONObject:
    """The full Kubernetes PodStatus; ``previous_conditions`` keep lastTransitionTime stable.

    A deleting pod restarts nothing, so it is judged as if its restart policy were Never: its stopped
    containers show their terminated state and the phase ends Succeeded or Failed.

    ``volume_problems`` is None for a pod that mounts no volume; otherwise the pod gets a FleetOps
    condition ``VolumesHonoured``: True, or False with reason ``MountNamespaceUnavailable`` and the
    problems (which mounts of which container are not mounted) joined in its message."""
    if deleting:
        spec = replace(spec, restart_policy="Never")
    phase = pod_phase(spec, views)
    initialized = init_done(spec, views)
    previous = {str(c.get("type")): c for c in previous_conditions}
    stamp = rfc3339(now) or ""
    pending_init = [ic.name for ic in spec.init_containers if not _succeeded(_view(views, ic.name))]
    unready = [
        c.name for c in spec.containers if not (_running(_view(views, c.name)) and _view(views, c.name).ready)
    ]
    completed = phase in ("Succeeded", "Failed")
    ready_reason = "PodCompleted" if completed else "ContainersNotReady"
    ready_message = "" if completed else f"containers with unready status: [{' '.join(unready)}]"
    ready = not unready and not completed
    conditions = [
        _condition("PodScheduled", True, previous, stamp),
        _condition(
            "Initialized",
            initialized,
            previous,
            stamp,
            reason="ContainersNotInitialized",
            message=f"containers with incomplete status: [{' '.join(pending_init)}]",
        ),
        _condition("ContainersReady", ready, previous, stamp, reason=ready_reason, message=ready_message),
        _condition("Ready", ready, previous, stamp, reason=ready_reason, message=ready_message),
    ]
    if volume_problems is not None:
        conditions.append(
            _condition(
                VOLUMES_HONOURED,
                not volume_problems,
                previous,
                stamp,
                reason="MountNamespaceUnavailable",
                message="; ".join(volume_problems),
            )
        )
    status: JSONObject = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": host_ip,
        "podIPs": [{"ip": host_ip}],
        "startTime": rfc3339(start_time),
        "qosClass": "BestEffort",
        "containerStatuses": [
            container_status(
                c,
                _view(views, c.name),
                policy=spec.restart_policy,
                pod_ref=pod_ref,
                now=now,
                initializing=not initialized,
            )
            for c in spec.containers
        ],
    }
    if spec.init_containers:
        status["initContainerStatuses"] = [
            container_status(
                ic, _view(views, ic.name), policy=spec.restart_policy, pod_ref=pod_ref, now=now, init=True
            )
            for ic in spec.init_containers
        ]
    return status

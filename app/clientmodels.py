"""Typed, read-only views of the objects the TUI and GUI show: nodes, pods and deployments.

Objects travel as Kubernetes JSON dicts (``app.resources``); a front end wants a few derived facts from
each (is the node Ready, "1/2" ready containers, how many restarts, is a rollout done) without repeating
the JSON digging in every table. Each view is a frozen dataclass built by a pure function
(:func:`node_view`, :func:`pod_view`, :func:`deployment_view`) that never raises on odd input: a missing
or malformed field becomes an empty/zero/``Unknown`` value, because a table row must render whatever the
server sent. ``.raw`` keeps the JSON the view was built from, for detail panes and YAML views.

The derived fields follow what ``kubectl get`` shows (READY, STATUS, RESTARTS, AGE), so an operator sees
the same words in the TUI as on the command line. Quantities are kept as the strings the server sent
("8Gi", "4"); :func:`parse_quantity` and :func:`format_bytes` turn them into numbers and back where a
table computes with them (a node's %CPU). Deliberately not done: a pod's STATUS covers the common cases
(waiting / terminated reasons, Terminating) rather than every rule kubectl's printer has (init
containers, readiness gates).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from app.resources import JSONObject, parse_rfc3339

NodeReadiness = Literal["Ready", "NotReady", "Unknown"]

# Kubernetes quantity suffixes (resource.Quantity): decimal SI and binary, as multipliers.
_SUFFIXES: Mapping[str, float] = {
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}
_QUANTITY = re.compile(
    r"^([+-]?[0-9]+(?:\.[0-9]*)?|[+-]?\.[0-9]+)"  # the number
    r"(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)$"  # then an exponent, or a suffix
)


def parse_quantity(value: object) -> float | None:
    """A Kubernetes quantity ("250m", "8056928Ki", "4", "1e3") as a number; None when it is not one."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        return None
    m = _QUANTITY.match(value.strip())
    if m is None:
        return None
    number, exponent, suffix = m.groups()
    if exponent:
        return float(number + exponent)
    return float(number) * _SUFFIXES[suffix or ""]


def format_bytes(n: float) -> str:
    """Bytes the way kubectl top prints memory, in binary units: ``512Mi``, ``7.7Gi``."""
    for unit, size in (("Ti", 2.0**40), ("Gi", 2.0**30), ("Mi", 2.0**20), ("Ki", 2.0**10)):
        if n >= size:
            value = n / size
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
    return f"{n:.0f}"


ContainerStateName = Literal["running", "waiting", "terminated", "unknown"]


def _d(value: Any) -> JSONObject:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _str_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in _d(value).items()}


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = parse_rfc3339(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def format_age(delta: dt.timedelta) -> str:
    """kubectl's short age: ``45s``, ``12m``, ``5h``, ``3d`` (negative clock skew shows as ``0s``)."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def _age(created: dt.datetime | None, now: dt.datetime | None) -> str:
    if created is None:
        return "<unknown>"
    return format_age((now or dt.datetime.now(dt.UTC)) - created)


def _meta(obj: JSONObject) -> JSONObject:
    return _d(obj.get("metadata"))


# -- nodes ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeView:
    name: str
    ready: NodeReadiness
    labels: Mapping[str, str]
    last_heartbeat: dt.datetime | None
    cpu: str
    memory: str
    addresses: tuple[tuple[str, str], ...]
    unschedulable: bool
    created: dt.datetime | None
    raw: JSONObject = field(repr=False, compare=False)

    @property
    def status(self) -> str:
        """kubectl's STATUS column: ``Ready``, ``NotReady`` (Unknown shows as NotReady), plus
        ``,SchedulingDisabled`` when cordoned."""
        shown = "Ready" if self.ready == "Ready" else "NotReady"
        return f"{shown},SchedulingDisabled" if self.unschedulable else shown

    def address(self, kind: str = "InternalIP") -> str:
        """The first address of ``kind`` (``InternalIP``, ``Hostname``...), or ""."""
        return next((addr for k, addr in self.addresses if k == kind), "")

    def age(self, now: dt.datetime | None = None) -> str:
        return _age(self.created, now)


_READINESS: dict[str, NodeReadiness] = {"True": "Ready", "False": "NotReady"}


def node_view(obj: JSONObject) -> NodeView:
    status = _d(obj.get("status"))
    ready: NodeReadiness = "Unknown"
    heartbeat: dt.datetime | None = None
    for cond in _l(status.get("conditions")):
        c = _d(cond)
        if c.get("type") == "Ready":
            ready = _READINESS.get(str(c.get("status")), "Unknown")
            heartbeat = _time(c.get("lastHeartbeatTime"))
            break
    capacity = _d(status.get("capacity"))
    addresses = tuple(
        (str(_d(a).get("type", "")), str(_d(a).get("address", "")))
        for a in _l(status.get("addresses"))
        if isinstance(a, dict)
    )
    m = _meta(obj)
    return NodeView(
        name=str(m.get("name", "")),
        ready=ready,
        labels=_str_map(m.get("labels")),
        last_heartbeat=heartbeat,
        cpu=str(capacity.get("cpu", "")),
        memory=str(capacity.get("memory", "")),
        addresses=addresses,
        unschedulable=bool(_d(obj.get("spec")).get("unschedulable", False)),
        created=_time(m.get("creationTimestamp")),
        raw=obj,
    )


# -- pods -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainerView:
    name: str
    image: str
    ready: bool
    restarts: int
    state: ContainerStateName
    # waiting.reason or terminated.reason ("CrashLoopBackOff", "Completed", "Error"); "" when running.
    reason: str
    message: str
    exit_code: int | None


_STATES: tuple[ContainerStateName, ...] = ("running", "waiting", "terminated")


def _container_view(spec: JSONObject, status: JSONObject | None) -> ContainerView:
    st = status or {}
    state_obj = _d(st.get("state"))
    state: ContainerStateName = "unknown"
    detail: JSONObject = {}
    for candidate in _STATES:
        value = state_obj.get(candidate)
        if isinstance(value, dict):
            state, detail = candidate, value
            break
    exit_code = detail.get("exitCode") if state == "terminated" else None
    return ContainerView(
        name=str(spec.get("name") or st.get("name") or ""),
        image=str(spec.get("image") or st.get("image") or ""),
        ready=st.get("ready") is True,
        restarts=_int(st.get("restartCount")),
        state=state,
        reason=str(detail.get("reason") or ""),
        message=str(detail.get("message") or ""),
        exit_code=exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool) else None,
    )


@dataclass(frozen=True, slots=True)
class PodView:
    namespace: str
    name: str
    node: str
    phase: str
    containers: tuple[ContainerView, ...]
    terminating: bool
    created: dt.datetime | None
    labels: Mapping[str, str]
    raw: JSONObject = field(repr=False, compare=False)

    @property
    def ready(self) -> str:
        """kubectl's READY column: ready containers / containers (``1/2``)."""
        return f"{sum(c.ready for c in self.containers)}/{len(self.containers)}"

    @property
    def restarts(self) -> int:
        return sum(c.restarts for c in self.containers)

    @property
    def status(self) -> str:
        """kubectl's STATUS column: Terminating, else the first container's waiting or terminated reason
        (CrashLoopBackOff, Error...), else the phase."""
        if self.terminating:
            return "Terminating"
        for c in self.containers:
            if c.state in ("waiting", "terminated") and c.reason:
                return c.reason
        return self.phase or "Unknown"

    def age(self, now: dt.datetime | None = None) -> str:
        return _age(self.created, now)


def pod_view(obj: JSONObject) -> PodView:
    m, spec, status = _meta(obj), _d(obj.get("spec")), _d(obj.get("status"))
    statuses = {
        str(_d(s).get("name")): _d(s) for s in _l(status.get("containerStatuses")) if isinstance(s, dict)
    }
    specs = [_d(c) for c in _l(spec.get("containers")) if isinstance(c, dict)]
    containers = [_container_view(c, statuses.pop(str(c.get("name")), None)) for c in specs]
    # Statuses without a spec entry (a partial object from a table or a watch) are still shown.
    containers += [_container_view({}, s) for s in statuses.values()]
    return PodView(
        namespace=str(m.get("namespace", "")),
        name=str(m.get("name", "")),
        node=str(spec.get("nodeName") or ""),
        phase=str(status.get("phase") or "Pending"),
        containers=tuple(containers),
        terminating=bool(m.get("deletionTimestamp")),
        created=_time(m.get("creationTimestamp")),
        labels=_str_map(m.get("labels")),
        raw=obj,
    )


class PodRow(NamedTuple):
    """kubectl's READY, STATUS and RESTARTS of a pod, and the colour a table gives it."""

    ready: int
    total: int
    restarts: int
    status: str  # the STATUS column: Terminating, a container's waiting/terminated reason, else the phase
    tone: str  # "ok", "warn", "bad" or "": Running with every container ready is ok, Pending warns


_POD_TONES = {"Running": "ok", "Succeeded": "", "Completed": "", "Pending": "warn", "Terminating": "warn"}


def pod_row(metadata: JSONObject, spec: JSONObject, status: JSONObject) -> PodRow:
    """What :func:`pod_view` says of READY / STATUS / RESTARTS, written out flat for the UIs' tables: at
    100,000 pods a relist computes it for every one, and this is ~4x faster than the typed view (no
    per-container objects)."""
    statuses = _l(status.get("containerStatuses"))
    ready = restarts = 0
    reason = ""
    for cs in statuses:
        if not isinstance(cs, dict):
            continue
        if cs.get("ready") is True:
            ready += 1
        count = cs.get("restartCount")
        if isinstance(count, int):
            restarts += count
        if not reason:
            state = _d(cs.get("state"))
            if "running" not in state:
                reason = str(
                    _d(state.get("waiting")).get("reason") or _d(state.get("terminated")).get("reason") or ""
                )
    total = max(len(_l(spec.get("containers"))), len(statuses))
    shown = (
        "Terminating"
        if metadata.get("deletionTimestamp")
        else reason or str(status.get("phase") or "Pending")
    )
    tone = _POD_TONES.get(shown, "bad")
    if shown == "Running" and ready < total:
        tone = "warn"
    return PodRow(ready, total, restarts, shown, tone)


def node_roles(labels: Mapping[str, str]) -> str:
    """kubectl's ROLES column: the ``node-role.kubernetes.io/`` labels' names, or ``<none>``."""
    prefix = "node-role.kubernetes.io/"
    return ",".join(sorted(k.removeprefix(prefix) for k in labels if k.startswith(prefix))) or "<none>"


# -- deployments ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeploymentView:
    namespace: str
    name: str
    replicas: int  # desired (spec.replicas; the API defaults it to 1)
    current: int  # status.replicas: pods that exist, old and new
    updated: int
    ready: int
    available: int
    generation: int
    observed_generation: int
    created: dt.datetime | None
    raw: JSONObject = field(repr=False, compare=False)

    @property
    def ready_text(self) -> str:
        """kubectl's READY column: ``ready/desired``."""
        return f"{self.ready}/{self.replicas}"

    @property
    def observed(self) -> bool:
        """The controller has seen the latest spec (observedGeneration caught up with generation)."""
        return self.observed_generation >= self.generation

    @property
    def rolled_out(self) -> bool:
        """What ``kubectl rollout status`` waits for: observed, every replica updated and available,
        and no old replica left."""
        return (
            self.observed
            and self.updated == self.replicas
            and self.available == self.replicas
            and self.current == self.replicas
        )

    def age(self, now: dt.datetime | None = None) -> str:
        return _age(self.created, now)


def deployment_view(obj: JSONObject) -> DeploymentView:
    m, spec, status = _meta(obj), _d(obj.get("spec")), _d(obj.get("status"))
    return DeploymentView(
        namespace=str(m.get("namespace", "")),
        name=str(m.get("name", "")),
        replicas=_int(spec.get("replicas"), 1),
        current=_int(status.get("replicas")),
        updated=_int(status.get("updatedReplicas")),
        ready=_int(status.get("readyReplicas")),
        available=_int(status.get("availableReplicas")),
        generation=_int(m.get("generation")),
        observed_generation=_int(status.get("observedGeneration")),
        created=_time(m.get("creationTimestamp")),
        raw=obj,
    )

"""The latest resource usage each edge reported, served as metrics.k8s.io/v1beta1 (``kubectl top``).

Edges measure (``edgeservice.usage``) and send one sample with each heartbeat; this store keeps only the
latest sample per node, in memory, with the time it arrived. That is all metrics-server keeps too: usage is
a gauge of "now", nobody asks for its history here, and a restarted cloud has fresh samples again after one
heartbeat. A sample older than ``max_age`` (three heartbeats at the default 10 s interval) is reported as
missing rather than as stale numbers, so a node that went offline drops out of ``kubectl top`` instead of
showing the load it had when the link went down.

Samples come from the network, so :func:`parse_sample` checks them at the door: a malformed sample raises
:class:`UsageSampleError` naming the field, and :meth:`UsageStore.update` logs and drops it. Reads build
plain JSON objects in the shapes metrics-server serves.

Not done: history or averaging, persistence, sharing samples between cloud replicas (each replica serves
what the edges connected to it reported), and node labels (the edge does not send them; label selectors
on nodes are the API layer's job).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.resources import JSONObject, now_rfc3339, parse_rfc3339
from cloudservice.errors import CloudError

log = logging.getLogger(__name__)

API_VERSION = "metrics.k8s.io/v1beta1"
# Three heartbeats at EdgeConfig.status_interval's default of 10 s: one lost or late heartbeat is not yet
# "missing", a node that is gone is within half a minute.
DEFAULT_MAX_AGE = 30.0
_DEFAULT_WINDOW = "0s"
# What the edge writes: an integer or decimal with one of Kubernetes' suffixes (nanocores "n", "m",
# kibibytes "Ki"...). Narrower than resource.Quantity on purpose: no exponents, no signs.
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(n|u|m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_WINDOW = re.compile(r"^[0-9]+(\.[0-9]+)?s$")


class UsageSampleError(CloudError):
    """A node sent a usage sample that does not have the expected shape; ``field`` names the part."""

    def __init__(self, node: str, field: str, message: str) -> None:
        super().__init__(f"usage sample from node {node!r}: {field}: {message}")
        self.node = node
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Usage:
    cpu: str
    memory: str

    def to_json(self) -> JSONObject:
        return {"cpu": self.cpu, "memory": self.memory}


@dataclass(frozen=True, slots=True)
class PodUsage:
    namespace: str
    name: str
    labels: dict[str, str]
    window: str
    containers: tuple[tuple[str, Usage], ...]


@dataclass(frozen=True, slots=True)
class NodeSample:
    """One parsed sample: the node's usage (None until the edge has two readings) and its pods'."""

    timestamp: str
    window: str
    node: Usage | None
    pods: tuple[PodUsage, ...]


def _usage(node: str, field: str, obj: Any) -> Usage:
    if not isinstance(obj, dict):
        raise UsageSampleError(node, field, "must be an object with cpu and memory")
    values = []
    for key in ("cpu", "memory"):
        value = obj.get(key)
        if not isinstance(value, str) or not _QUANTITY.match(value):
            raise UsageSampleError(node, f"{field}.{key}", f"not a quantity: {value!r}")
        values.append(value)
    return Usage(values[0], values[1])


def _window(node: str, field: str, value: Any) -> str:
    if value is None:
        return _DEFAULT_WINDOW
    if not isinstance(value, str) or not _WINDOW.match(value):
        raise UsageSampleError(node, field, f"not a duration in seconds: {value!r}")
    return value


def _name(node: str, field: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise UsageSampleError(node, field, "must be a non-empty string")
    return value


def parse_sample(node: str, sample: Any) -> NodeSample:
    """Check and convert what ``edgeservice.usage.UsageSampler.sample`` produced. Raises UsageSampleError."""
    if not isinstance(sample, dict):
        raise UsageSampleError(node, "", "must be an object")
    timestamp = sample.get("timestamp")
    try:
        if not isinstance(timestamp, str):
            raise ValueError(timestamp)
        parse_rfc3339(timestamp)
    except ValueError as exc:
        raise UsageSampleError(node, "timestamp", f"not an RFC 3339 time: {timestamp!r}") from exc
    node_usage = None
    window = _window(node, "window", sample.get("window"))
    if sample.get("node") is not None:
        node_usage = _usage(node, "node", sample["node"])
        window = _window(node, "node.window", sample["node"].get("window", window))
    raw_pods = sample.get("pods")
    raw_pods = [] if raw_pods is None else raw_pods
    if not isinstance(raw_pods, list):
        raise UsageSampleError(node, "pods", "must be a list")
    pods = []
    for i, p in enumerate(raw_pods):
        field = f"pods[{i}]"
        if not isinstance(p, dict):
            raise UsageSampleError(node, field, "must be an object")
        labels = p.get("labels")
        labels = {} if labels is None else labels
        if not isinstance(labels, dict):
            raise UsageSampleError(node, f"{field}.labels", "must be an object")
        containers = p.get("containers")
        if not isinstance(containers, list):
            raise UsageSampleError(node, f"{field}.containers", "must be a list")
        parsed = []
        for j, c in enumerate(containers):
            cfield = f"{field}.containers[{j}]"
            if not isinstance(c, dict):
                raise UsageSampleError(node, cfield, "must be an object")
            parsed.append(
                (
                    _name(node, f"{cfield}.name", c.get("name")),
                    _usage(node, f"{cfield}.usage", c.get("usage")),
                )
            )
        pods.append(
            PodUsage(
                namespace=_name(node, f"{field}.namespace", p.get("namespace")),
                name=_name(node, f"{field}.name", p.get("name")),
                labels={str(k): str(v) for k, v in labels.items()},
                window=_window(node, f"{field}.window", p.get("window", window)),
                containers=tuple(parsed),
            )
        )
    return NodeSample(timestamp, window, node_usage, tuple(pods))


@dataclass(frozen=True, slots=True)
class _Entry:
    sample: NodeSample
    arrived: float


class UsageStore:
    """The latest usage sample per node; see the module docstring. Event-loop (single thread) use only.

    ``clock`` is monotonic seconds (the arrival times); ``max_age`` is how old a sample may be before its
    node and pods are reported as missing.
    """

    def __init__(
        self, *, max_age: float = DEFAULT_MAX_AGE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_age = max_age
        self.clock = clock
        self._nodes: dict[str, _Entry] = {}

    def update(self, node: str, sample: Any) -> bool:
        """Keep ``sample`` as ``node``'s latest; a malformed one is logged and dropped (False)."""
        try:
            parsed = parse_sample(node, sample)
        except UsageSampleError as exc:
            log.warning("dropping usage sample node=%s field=%s: %s", node, exc.field, exc.message)
            return False
        self._nodes[node] = _Entry(parsed, self.clock())
        return True

    def forget(self, node: str) -> None:
        """Drop a node's sample (the node was deleted)."""
        self._nodes.pop(node, None)

    def _fresh(self) -> dict[str, NodeSample]:
        oldest = self.clock() - self.max_age
        return {n: e.sample for n, e in self._nodes.items() if e.arrived >= oldest}

    # -- nodes -----------------------------------------------------------------------------------------

    def node_metrics(self, name: str) -> JSONObject | None:
        """NodeMetrics of one node; None when it has no fresh sample with node usage."""
        sample = self._fresh().get(name)
        if sample is None or sample.node is None:
            return None
        return _node_metrics(name, sample, sample.node, now_rfc3339())

    def list_node_metrics(self) -> JSONObject:
        now = now_rfc3339()
        items = [
            _node_metrics(name, s, s.node, now)
            for name, s in sorted(self._fresh().items())
            if s.node is not None
        ]
        return {"kind": "NodeMetricsList", "apiVersion": API_VERSION, "metadata": {}, "items": items}

    # -- pods ------------------------------------------------------------------------------------------

    def _pods(self) -> dict[tuple[str, str], tuple[NodeSample, PodUsage]]:
        """Every fresh pod by (namespace, name). A pod seen on two nodes (it moved) is taken from the
        sample that arrived last."""
        oldest = self.clock() - self.max_age
        by_arrival = sorted((e.arrived, n) for n, e in self._nodes.items() if e.arrived >= oldest)
        out: dict[tuple[str, str], tuple[NodeSample, PodUsage]] = {}
        for _, node in by_arrival:
            sample = self._nodes[node].sample
            for pod in sample.pods:
                out[(pod.namespace, pod.name)] = (sample, pod)
        return out

    def pod_metrics(self, namespace: str, name: str) -> JSONObject | None:
        """PodMetrics of one pod; None when no fresh sample has it."""
        found = self._pods().get((namespace, name))
        if found is None:
            return None
        return _pod_metrics(found[0], found[1], now_rfc3339())

    def list_pod_metrics(self, namespace: str | None = None) -> JSONObject:
        """PodMetricsList of one namespace, or of all when ``namespace`` is None."""
        now = now_rfc3339()
        items = [
            _pod_metrics(sample, pod, now)
            for (ns, _), (sample, pod) in sorted(self._pods().items())
            if namespace is None or ns == namespace
        ]
        return {"kind": "PodMetricsList", "apiVersion": API_VERSION, "metadata": {}, "items": items}


def _node_metrics(name: str, sample: NodeSample, usage: Usage, now: str) -> JSONObject:
    return {
        "kind": "NodeMetrics",
        "apiVersion": API_VERSION,
        # metrics-server stamps creationTimestamp with the time of the request: the object is made then.
        "metadata": {"name": name, "creationTimestamp": now},
        "timestamp": sample.timestamp,
        "window": sample.window,
        "usage": usage.to_json(),
    }


def _pod_metrics(sample: NodeSample, pod: PodUsage, now: str) -> JSONObject:
    meta: JSONObject = {"name": pod.name, "namespace": pod.namespace, "creationTimestamp": now}
    if pod.labels:
        meta["labels"] = dict(pod.labels)
    return {
        "kind": "PodMetrics",
        "apiVersion": API_VERSION,
        "metadata": meta,
        "timestamp": sample.timestamp,
        "window": pod.window,
        "containers": [{"name": n, "usage": u.to_json()} for n, u in pod.containers],
    }

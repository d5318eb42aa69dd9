"""Prometheus metrics for EdgeCore, served by the local API at ``/metrics``.

As on the cloud, nothing is counted here: a scrape reads the live state through a custom collector -- the
tunnel flag and counters in ``EdgeCore.stats``, the persisted outbox, and the cached pods with the newest
status the edge knows (Edged's live one, else the one persisted in the cache, as the local API serves
them). The local API is synchronous (h11 over asyncio streams, routes are plain functions), so
:meth:`EdgeMetrics.render` is too; the two small SQLite reads it makes are the same kind the local API's
pod list already does on the event loop.

Why ``prometheus_client`` and not a formatter of our own: the edge's idle RSS target is 45 MB and it sits
near 43 MB, so the cost was measured first, with bytecode cached as in an install: VmRSS before and after
importing this module (after ``edgeservice.core``) and rendering once grows by 0.85 MB, steady over 9 runs
(``ru_maxrss`` of ``python -c`` with and without the import agrees, within its +-0.5 MB noise). That is
under the 1.5 MB we allowed, and the library buys correct escaping, the exposition format and its parser
(which the tests use).

``fleetops_edge_container_restarts_total`` is a true counter: the pods' ``restartCount`` values are not
(a pod deleted or replaced takes its count with it, which Prometheus would read as a reset), so the edge
adds up the increases it observes per container between scrapes. Restarts of a pod created and deleted
between two scrapes are missed; the count starts, at the first scrape, from the restarts already recorded.

Deliberately not done: per-pod or per-container labels (a box runs few pods, but a label per pod makes
series come and go with every rollout; ``kubectl get pods`` against the local API is the per-pod view) and
process metrics beyond what ``ProcessCollector`` reads from ``/proc``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from app.resources import JSONObject

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")


class Flag(Protocol):
    def is_set(self) -> bool: ...


class EdgeCache(Protocol):
    """What the metrics read of :class:`edgeservice.metamanager.MetaManager`."""

    @property
    def is_open(self) -> bool: ...

    def objects(self, type_: str) -> list[JSONObject]: ...

    def status(self, key: str) -> JSONObject | None: ...

    def outbox_depth(self) -> int: ...


class PodStatuses(Protocol):
    """What the metrics read of :class:`edgeservice.edged.Edged`."""

    def status_of(self, uid: str) -> JSONObject | None: ...


class DeviceTwinView(Protocol):
    """What the metrics read of :class:`edgeservice.devicetwin.DeviceTwin`."""

    @property
    def rejections(self) -> Mapping[str, int]: ...

    @property
    def bus_stats(self) -> Mapping[str, int]: ...


# Categories of rejected MQTT messages (eventbus.RejectCategory), always all exported so a rate is 0, not
# absent, on a healthy node.
REJECT_CATEGORIES = ("malformed", "unknown_device", "invalid")


class EdgeView(Protocol):
    """What the metrics read of :class:`edgeservice.core.EdgeCore`."""

    @property
    def connected(self) -> Flag: ...

    @property
    def stats(self) -> Mapping[str, int]: ...

    @property
    def meta(self) -> EdgeCache: ...

    @property
    def edged(self) -> PodStatuses: ...

    @property
    def devicetwin(self) -> DeviceTwinView | None: ...


def pod_status(core: EdgeView, pod: JSONObject) -> JSONObject:
    """The newest status the edge knows for a cached pod: Edged's live one, else the persisted one."""
    m = pod.get("metadata") or {}
    status = core.edged.status_of(str(m.get("uid", "")))
    if status is None:
        status = core.meta.status(f"{m.get('namespace', '')}/pod/{m.get('name', '')}")
    return status or {}


def restart_counts(pod: JSONObject, status: JSONObject) -> dict[tuple[str, str], int]:
    """``restartCount`` per (pod uid, container name), init containers included."""
    uid = str((pod.get("metadata") or {}).get("uid", ""))
    out: dict[tuple[str, str], int] = {}
    for field in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(field) or []:
            if isinstance(cs, dict):
                out[(uid, str(cs.get("name", "")))] = int(cs.get("restartCount") or 0)
    return out


class _EdgeCollector:
    def __init__(self, core: EdgeView) -> None:
        self.core = core
        self._restarts_seen: dict[tuple[str, str], int] = {}
        self._restarts_total = 0

    def _count_restarts(self, current: dict[tuple[str, str], int]) -> int:
        for key, count in current.items():
            # A count below the last one seen is a new container record (the pod was recreated): all new.
            before = self._restarts_seen.get(key, 0)
            self._restarts_total += count - before if count >= before else count
        self._restarts_seen = current  # forget containers that are gone
        return self._restarts_total

    def collect(self) -> Iterator[Metric]:
        core = self.core
        yield GaugeMetricFamily(
            "fleetops_edge_cloud_connected",
            "1 while the tunnel to the cloud is up and resynced, else 0.",
            value=int(core.connected.is_set()),
        )
        yield CounterMetricFamily(
            "fleetops_edge_connects_total",
            "Tunnel connections made to the cloud.",
            value=core.stats.get("connects", 0),
        )
        yield CounterMetricFamily(
            "fleetops_edge_messages_received_total",
            "Resource messages received from the cloud and persisted.",
            value=core.stats.get("received", 0),
        )
        yield CounterMetricFamily(
            "fleetops_edge_outbox_acked_total",
            "Outbox messages the cloud acknowledged.",
            value=core.stats.get("acked_out", 0),
        )
        twin = core.devicetwin
        bus = twin.bus_stats if twin is not None else {}
        yield CounterMetricFamily(
            "fleetops_edge_mqtt_messages_received_total",
            "Device messages the EventBus received from MQTT.",
            value=bus.get("received", 0),
        )
        rejected = CounterMetricFamily(
            "fleetops_edge_mqtt_messages_rejected_total",
            "Device messages refused (answered on /result, and a Warning Event on the Device), by reason.",
            labels=["reason"],
        )
        for category in REJECT_CATEGORIES:
            rejected.add_metric([category], twin.rejections.get(category, 0) if twin is not None else 0)
        yield rejected
        yield CounterMetricFamily(
            "fleetops_edge_mqtt_handler_failures_total",
            "Device messages whose handling failed with an unexpected error (logged with a traceback).",
            value=bus.get("failed", 0),
        )
        if not core.meta.is_open:  # starting or stopping: the cache-derived families are left out
            return
        yield GaugeMetricFamily(
            "fleetops_edge_outbox_depth",
            "Messages for the cloud persisted and not yet acknowledged.",
            value=core.meta.outbox_depth(),
        )
        phases = dict.fromkeys(POD_PHASES, 0)
        restarts: dict[tuple[str, str], int] = {}
        for pod in core.meta.objects("pod"):
            status = pod_status(core, pod)
            phase = str(status.get("phase") or "Pending")  # nothing reported yet: not started
            phases[phase] = phases.get(phase, 0) + 1
            restarts.update(restart_counts(pod, status))
        pods = GaugeMetricFamily(
            "fleetops_edge_pods", "Pods assigned to this node by phase.", labels=["phase"]
        )
        for phase, n in phases.items():
            pods.add_metric([phase], n)
        yield pods
        yield CounterMetricFamily(
            "fleetops_edge_container_restarts_total",
            "Container restarts observed on this node (see the module docstring).",
            value=self._count_restarts(restarts),
        )


class EdgeMetrics:
    """The edge's metrics in their own registry (several edges may share a process in tests)."""

    def __init__(self, core: EdgeView) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_EdgeCollector(core))
        # process_resident_memory_bytes above all: the edge's footprint is one of its promises.
        ProcessCollector(registry=self.registry)

    def render(self) -> tuple[str, bytes]:
        """The content type and the text exposition, read now."""
        return CONTENT_TYPE, generate_latest(self.registry)

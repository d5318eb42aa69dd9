"""Prometheus metrics for CloudCore: the hub's traffic, the API's running watches, pods and nodes.

Nothing here counts anything itself. The hub already keeps its counters (``CloudHub.stats``, and each live
session's ``Channel.stats``), the store holds the pods and nodes, so a scrape *reads* the live numbers
through custom collectors and formats them with ``prometheus_client``. That keeps the hot paths (the hub's
receive loop, the API's handlers) free of metric calls and makes the metrics impossible to drift from the
state they describe.

Every :class:`CloudMetrics` has its own ``CollectorRegistry``: tests (and the demo) run several clouds in
one process, and the global registry would mix them up or refuse the second one.

Two details keep the counters honest:

* ``CloudHub`` adds a session's channel counts to ``hub.stats`` only when the session ends, so a total is
  ``hub.stats[...]`` plus the live sessions' channel counts. A session replaced by a newer connection of
  the same node leaves ``hub.sessions`` a moment before its counts reach ``hub.stats``; a scrape in that
  window would see a total go *down*, which Prometheus reads as a counter reset (a spurious spike in
  ``rate()``). Each counter is therefore reported as the highest value seen so far. That is sound: every
  observation is at most the true total, which only grows, and the true total is reached again once the
  session's counts are folded in.
* Pods by phase and nodes by readiness are counted from one ``store.list`` each per scrape. At this
  project's scale (thousands of pods) that is a few milliseconds and needs no bookkeeping in the write
  path; an informer-fed cache would be the next step if scrapes ever show up in the store's load. When the
  store cannot be read, the hub and API metrics are still served and ``fleetops_store_up`` is 0.

Running watches are not tracked by the API (``_Api`` keeps no list of them), so :class:`WatchCounter` counts
them as an aiohttp middleware around the handlers: a GET with ``watch=1|true`` is a running watch until its
handler returns, which it does on timeout, on shutdown, or when the client goes away (the server runs with
``handler_cancellation=True``). :func:`install_metrics` appends it to an app built by ``build_app`` and adds
the ``/metrics`` route, which the API's own middleware authenticates like every other non-public path (the
kube-apiserver does the same).

Deliberately not done: per-node message counters (a label per node on every counter multiplies the series
for little gain; the per-node queue depth is the per-node signal that matters), request latency histograms
(they would need a hook in every handler), and OpenMetrics negotiation (the classic text format, content
type ``version=0.0.4``, is what every Prometheus version scrapes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.resources import NODES, PODS, JSONObject
from cloudservice.cameras import CameraStreams
from cloudservice.errors import StoreError
from cloudservice.store.base import Store

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
METRICS_PATH = "/metrics"
# The phases and readiness values always exported (at 0 when none), so a series never vanishes from a graph.
POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
NODE_READY = ("true", "false", "unknown")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ChannelView(Protocol):
    """What the metrics read of an :class:`app.tunnel.Channel`."""

    @property
    def stats(self) -> Mapping[str, int]: ...

    @property
    def queued(self) -> int: ...

    @property
    def in_flight(self) -> int: ...


class SessionView(Protocol):
    @property
    def channel(self) -> ChannelView: ...


class HubView(Protocol):
    """What the metrics read of :class:`cloudservice.hub.CloudHub`."""

    @property
    def stats(self) -> Mapping[str, int]: ...

    @property
    def sessions(self) -> Mapping[str, SessionView]: ...


# Hub counters: (metric name, help, key in hub.stats, key in a live channel's stats or None when the hub
# counts it live itself).
_HUB_COUNTERS = (
    (
        "fleetops_hub_messages_received_total",
        "Tunnel messages received from edges.",
        "messages_in",
        "received",
    ),
    (
        "fleetops_hub_messages_sent_total",
        "Tunnel messages sent to edges, resends included.",
        "messages_out",
        "sent",
    ),
    ("fleetops_hub_resends_total", "Unacknowledged messages sent again to edges.", "resends", "resent"),
    (
        "fleetops_hub_connections_total",
        "Edge connections accepted (authenticated upgrades).",
        "connections",
        None,
    ),
    (
        "fleetops_hub_refused_connections_total",
        "Edge connections refused at the upgrade (bad token or node name).",
        "refused",
        None,
    ),
    (
        "fleetops_hub_rejected_frames_total",
        "Frames from edges the tunnel protocol rejected.",
        "rejected_frames",
        None,
    ),
    (
        "fleetops_hub_duplicates_skipped_total",
        "Edge status writes skipped as redeliveries of an already applied outbox message.",
        "duplicates_skipped",
        None,
    ),
    (
        "fleetops_hub_streams_opened_total",
        "Streams (pod logs, exec, cameras) opened to edges.",
        "streams_opened",
        None,
    ),
    (
        "fleetops_hub_telemetry_summaries_total",
        "Device telemetry window summaries from edges written to the history.",
        "telemetry_summaries",
        None,
    ),
)


class _LiveCollector:
    """Reads the hub and the API at collection time; keeps each counter's high-water mark."""

    def __init__(self, hub: HubView, api_watch_count: Callable[[], int]) -> None:
        self.hub = hub
        self.api_watch_count = api_watch_count
        self._high: dict[str, int] = {}

    def _monotonic(self, name: str, value: int) -> int:
        value = max(value, self._high.get(name, 0))
        self._high[name] = value
        return value

    def collect(self) -> Iterator[Metric]:
        sessions = dict(self.hub.sessions)  # a copy: nothing here awaits, but stay safe for callers that do
        stats = self.hub.stats
        yield GaugeMetricFamily(
            "fleetops_hub_connected_edges", "Edges with a live tunnel session.", value=len(sessions)
        )
        for name, help_text, hub_key, channel_key in _HUB_COUNTERS:
            total = stats.get(hub_key, 0)
            if channel_key is not None:
                total += sum(s.channel.stats.get(channel_key, 0) for s in sessions.values())
            yield CounterMetricFamily(name, help_text, value=self._monotonic(name, total))
        depths = {node: s.channel.queued + s.channel.in_flight for node, s in sessions.items()}
        yield GaugeMetricFamily(
            "fleetops_hub_queue_depth",
            "Messages for edges queued or awaiting acknowledgement, all nodes together.",
            value=sum(depths.values()),
        )
        per_node = GaugeMetricFamily(
            "fleetops_hub_node_queue_depth",
            "Messages for one edge queued or awaiting acknowledgement.",
            labels=["node"],
        )
        for node, depth in sorted(depths.items()):
            per_node.add_metric([node], depth)
        yield per_node
        yield GaugeMetricFamily(
            "fleetops_api_watches", "Watch requests the API is streaming now.", value=self.api_watch_count()
        )


class _StoreCounts:
    """Pods by phase and nodes by readiness, counted from one list of each (or the store's failure)."""

    def __init__(self, pods: list[JSONObject] | None, nodes: list[JSONObject] | None) -> None:
        self.pods = pods
        self.nodes = nodes

    def collect(self) -> Iterator[Metric]:
        ok = self.pods is not None and self.nodes is not None
        yield GaugeMetricFamily(
            "fleetops_store_up", "1 when the last scrape could read the store, else 0.", value=int(ok)
        )
        if self.pods is None or self.nodes is None:
            return
        phases = dict.fromkeys(POD_PHASES, 0)
        for pod in self.pods:
            phase = str((pod.get("status") or {}).get("phase") or "Pending")  # the apiserver's default
            phases[phase] = phases.get(phase, 0) + 1
        pods = GaugeMetricFamily("fleetops_pods", "Pods in the store by phase.", labels=["phase"])
        for phase, n in phases.items():
            pods.add_metric([phase], n)
        yield pods
        ready = dict.fromkeys(NODE_READY, 0)
        for node in self.nodes:
            value = node_ready(node)
            ready[value] += 1
        nodes = GaugeMetricFamily(
            "fleetops_nodes", "Nodes in the store by their Ready condition.", labels=["ready"]
        )
        for value, n in ready.items():
            nodes.add_metric([value], n)
        yield nodes


def node_ready(node: JSONObject) -> str:
    """``true``/``false`` from the node's Ready condition; ``unknown`` when it is Unknown or missing (the
    lifecycle controller sets Unknown when heartbeats stop)."""
    for cond in (node.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == "Ready":
            return {"True": "true", "False": "false"}.get(str(cond.get("status")), "unknown")
    return "unknown"


class _CameraCollector:
    """Live camera feeds (``cloudservice.cameras``): per feed its viewers and the fps and bytes/s it
    receives now; totals over every feed since the start. A label set per watched camera, which is few."""

    def __init__(self, cameras: CameraStreams) -> None:
        self.cameras = cameras

    def collect(self) -> Iterator[Metric]:
        labels = ["namespace", "device", "variant"]
        viewers = GaugeMetricFamily(
            "fleetops_camera_stream_viewers", "Clients watching a camera stream.", labels=labels
        )
        fps = GaugeMetricFamily(
            "fleetops_camera_stream_fps", "Frames per second a camera stream delivers now.", labels=labels
        )
        rate = GaugeMetricFamily(
            "fleetops_camera_stream_bytes_per_second",
            "JPEG bytes per second a camera stream delivers now.",
            labels=labels,
        )
        now = time.monotonic()
        for key, feed in list(self.cameras.feeds.items()):
            values = [key.namespace, key.name, key.variant]
            frames_s, bytes_s = feed.rates(now)
            viewers.add_metric(values, len(feed.viewers))
            fps.add_metric(values, frames_s)
            rate.add_metric(values, bytes_s)
        yield from (viewers, fps, rate)
        stats = self.cameras.stats
        live_skipped = sum(f.skipped for f in self.cameras.feeds.values())
        yield CounterMetricFamily(
            "fleetops_camera_frames", "Camera frames received from edges.", value=stats["frames"]
        )
        yield CounterMetricFamily(
            "fleetops_camera_bytes", "Camera JPEG bytes received from edges.", value=stats["bytes"]
        )
        yield CounterMetricFamily(
            "fleetops_camera_frames_skipped",
            "Frames a viewer did not get because it was still writing an older one (latest frame wins).",
            value=stats["skipped"] + live_skipped,
        )


class _Chain:
    def __init__(self, *parts: Collector) -> None:
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        for part in self.parts:
            yield from part.collect()


class CloudMetrics:
    """The cloud's metrics. ``registry`` holds what can be read synchronously (hub, API, process);
    :meth:`render` adds the store-derived families, which need an await."""

    def __init__(self, hub: HubView, store: Store, api_watch_count: Callable[[], int]) -> None:
        self.store = store
        self.registry = CollectorRegistry()
        self.registry.register(_LiveCollector(hub, api_watch_count))
        # process_resident_memory_bytes, process_cpu_seconds_total, open fds... from /proc (Linux only).
        ProcessCollector(registry=self.registry)

    async def _store_counts(self) -> _StoreCounts:
        try:
            pods, _ = await self.store.list(PODS)
            nodes, _ = await self.store.list(NODES)
        except StoreError as exc:
            log.warning("metrics: cannot read the store: %s", exc)
            return _StoreCounts(None, None)
        return _StoreCounts(pods, nodes)

    async def render(self) -> tuple[str, bytes]:
        """The content type and the text exposition of every metric, read now."""
        counts = await self._store_counts()
        # No await from here on: the live numbers and the store counts are formatted in one go.
        return CONTENT_TYPE, generate_latest(_Chain(self.registry, counts))


def metrics_handler(metrics: CloudMetrics) -> Handler:
    """An aiohttp handler serving ``metrics`` (route it at ``/metrics``)."""

    async def handle(_request: web.Request) -> web.StreamResponse:
        content_type, body = await metrics.render()
        # Set as a header: aiohttp's content_type argument refuses one that carries parameters.
        return web.Response(body=body, headers={"Content-Type": content_type})

    return handle


class WatchCounter:
    """Counts the API's running watches from outside it: see the module docstring. Call it for the count."""

    def __init__(self) -> None:
        self.running = 0

    def __call__(self) -> int:
        return self.running

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # Same test as the API's own (``_query_bool``): watch=1 or watch=true, any case.
        if request.method != "GET" or request.query.get("watch", "").lower() not in ("1", "true"):
            return await handler(request)
        self.running += 1
        try:
            return await handler(request)
        finally:
            self.running -= 1


def install_metrics(
    app: web.Application, hub: HubView, store: Store, *, cameras: CameraStreams | None = None
) -> CloudMetrics:
    """Count ``app``'s watches and serve ``/metrics`` on it; call before the app starts (its middleware list
    and router are frozen then). The watch counter runs inside the API's middleware, so only authenticated
    requests reach it, and ``/metrics`` needs a bearer token like every other API path."""
    watches = WatchCounter()
    app.middlewares.append(watches.middleware)
    metrics = CloudMetrics(hub, store, watches)
    if cameras is not None:
        metrics.registry.register(_CameraCollector(cameras))
    app.router.add_get(METRICS_PATH, metrics_handler(metrics))
    return metrics

"""EdgeCore: the edge service. Wires the hub client, MetaManager and Edged together.

The order of things on the edge is what makes it safe to kill at any instant:

1. A cloud message is made durable in MetaManager (one transaction per received batch), then acknowledged,
   then handed to Edged. A crash before the commit means no ack, so the cloud resends; a crash after it
   means the cache already has it and Edged picks it up from the cache on restart.
2. Every status change Edged reports goes to the persisted outbox first, then onto the tunnel if one is
   up. Rows leave the outbox only when the cloud acknowledges them, so a week offline loses nothing (a
   device's status report only replaces that device's older, superseded one: see MetaManager).
3. On start, Edged adopts the containers still running under the data directory and MetaManager's cached
   pods become the desired state at once — the cloud is not needed to keep running what was running.
   Only when the cache had to be rebuilt does the edge wait for the cloud's resync before removing
   anything, so a lost cache never stops a healthy workload.

The hub client reconnects with jittered exponential backoff (0.5 s doubling to 30 s, as aiomqtt does it),
sends a hello with its inventory and outbox epoch, and resumes from the cloud's answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, WebSocketException

from app.envelope import GROUP_HUB, GROUP_RESOURCE, GROUP_STREAM, Message
from app.model import ConfigKind
from app.resources import PODS, JSONObject, tunnel_resource
from app.tunnel import DEFAULT_MAX_FRAME, Acked, Channel, Delivered, Event, FrameRejected, Replied, hello
from app.tunnelio import ChannelRunner
from edgeservice.edged import Edged
from edgeservice.localapi import LocalApi, LocalApiError
from edgeservice.metamanager import CacheError, Change, MetaManager
from edgeservice.nodeinfo import default_labels, host_ip, node_status
from edgeservice.podexec import PodExecProducer
from edgeservice.podlogs import PodLogProducer
from edgeservice.streams import EdgeStreams, StreamSink
from edgeservice.usage import UsageSampler

if TYPE_CHECKING:
    from edgeservice.broker import NodeBroker
    from edgeservice.camerastream import CameraStreamProducer
    from edgeservice.devicetwin import DeviceTwin
    from edgeservice.metrics import EdgeMetrics

log = logging.getLogger(__name__)

NODE_HEADER = "X-FleetOps-Node"
# Outbox rows beyond which pod events are no longer queued (statuses always are).
MAX_PENDING_EVENTS = 5000
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
# Seconds a camera stream waits for the event bus, which starts with the node's first device.
BUS_START_WAIT_S = 5.0


def backoff_delay(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_MAX) -> float:
    """Full-jitter exponential backoff: a random delay up to base * 2**attempt, capped."""
    return random.uniform(base / 2, min(cap, base * (2**attempt)))


@dataclass
class EdgeConfig:
    name: str
    cloud_url: str
    token: str
    data_dir: Path
    labels: dict[str, str] = field(default_factory=dict)
    status_interval: float = 10.0
    ping_interval: float = 10.0
    ping_timeout: float = 10.0
    max_frame: int = DEFAULT_MAX_FRAME
    restart_backoff: float = 10.0
    address: str = ""
    stop_pods_on_exit: bool = False
    # MQTT broker for the device EventBus (tcp://HOST:PORT); None or unreachable: an embedded one.
    mqtt: str | None = None
    # The node's local API (read paths + offline operations). Port 0 picks a free one; None disables it.
    local_api: tuple[str, int] | None = ("127.0.0.1", 10550)


class EdgeCore:
    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.node = config.name
        self.meta = MetaManager(config.data_dir / "edge.db")
        self.address = config.address or host_ip()
        self.edged = Edged(
            config.data_dir / "pods",
            config.name,
            self,
            host_ip=self.address,
            backoff_base=config.restart_backoff,
            config=CachedConfig(self.meta),
            events=self.pod_event,
            node_env=self._node_env,
        )
        # The node's MQTT broker (one per node, as in KubeEdge), shared by devicetwin and advertised to
        # the pods: made with the first pod or device (see `broker`), so an idle edge does not load it.
        self._broker: NodeBroker | None = None
        # Read before this run rewrites endpoints.json: the embedded broker's port in the last run.
        self._previous_mqtt_port = self._previous_broker_port()
        self._endpoints: dict[str, str] = {}
        self.streams = EdgeStreams(
            self.node,
            {
                "podlog": PodLogProducer(self.meta, self.edged, self.node),
                "podexec": PodExecProducer(self.meta, self.edged, self.node),
                "camera": self._camera_stream,
            },
        )
        self.connected = asyncio.Event()
        self._metrics: EdgeMetrics | None = None
        # Made with the first device (see _twin): an edge without devices carries none of its imports.
        self.devicetwin: DeviceTwin | None = None
        self._cameras: CameraStreamProducer | None = None
        self._tg: asyncio.TaskGroup | None = None
        self.usage = UsageSampler(self.edged, lambda: self.meta.objects("pod"))
        self.local_api: LocalApi | None = None
        if config.local_api is not None:
            self.local_api = LocalApi(
                self.meta,
                self.edged,
                self.node,
                node_status=lambda: node_status(config.data_dir, self.address),
                cloud_connected=self.connected.is_set,
                restart_pod=self._restart_pod,
                metrics=self._render_metrics,
                host=config.local_api[0],
                port=config.local_api[1],
            )
        self._channel: Channel | None = None
        self._runner: ChannelRunner | None = None
        self._hello_id = ""
        self._awaiting: dict[str, int] | None = None
        self._full_sync_pending = False
        # The outbox writer's queue (see _outbox_loop): emitted messages, acked sequence numbers, versions.
        self._unsaved: list[tuple[Message, tuple[str, JSONObject] | None]] = []
        self._acked: list[int] = []
        self._acked_versions: dict[str, int] = {}
        self._outbox_wake = asyncio.Event()
        self._outbox_write: asyncio.Future[list[Message]] | None = None
        # The highest sequence number a resync sent from the outbox on the current connection.
        self._resent_through = 0
        self.stats = {"connects": 0, "received": 0, "acked_out": 0}

    # -- lifecycle --------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self.meta.open()
        log.info(
            "edge %s starting (cache epoch %s, %d cached objects)",
            self.node,
            self.meta.epoch,
            len(self.meta.inventory()),
        )
        await self.edged.start()
        if self.local_api is not None:
            try:
                await self.local_api.start()
            except LocalApiError as exc:
                # The workloads matter more than the field engineer's window onto them: run without it.
                log.error("edge %s: local API not started: %s", self.node, exc)
                self.local_api = None
        if self.local_api is not None:
            self._advertise("localApi", f"http://{self.local_api.host}:{self.local_api.port}")
            log.info("edge %s local API on %s", self.node, self._endpoints["localApi"])
        if self.meta.rebuilt:
            self._full_sync_pending = True
        else:
            self.edged.sync(self.meta.objects("pod"))
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._hub_loop(), name=f"edge[{self.node}].hub")
                tg.create_task(self._heartbeat_loop(), name=f"edge[{self.node}].heartbeat")
                tg.create_task(self._outbox_loop(), name=f"edge[{self.node}].outbox")
                self._tg = tg
                if self._previous_mqtt_port:
                    # The last run's pods may still be running and talking to its broker, which died with
                    # it: bring it back on its port now rather than with the next pod or device.
                    tg.create_task(self._node_env(), name=f"edge[{self.node}].broker")
                if not self.meta.rebuilt and self.meta.objects("device"):
                    self._twin().sync()
                await stop.wait()
                raise _Stop
        except* _Stop:
            pass
        finally:
            if self.local_api is not None:
                await self.local_api.stop()
            if self.config.stop_pods_on_exit:
                await self.edged.stop_all_pods()
            await self.edged.stop()
            if self._broker is not None:
                await self._broker.stop()
            await self._drain_outbox()
            self.meta.close()
            log.info(
                "edge %s stopped%s",
                self.node,
                "" if self.config.stop_pods_on_exit else "; workloads keep running",
            )

    def _render_metrics(self) -> tuple[str, bytes]:
        # Imported on the first scrape: an edge nobody scrapes does not carry prometheus_client (~1 MB of
        # its 45 MB footprint budget).
        if self._metrics is None:
            from edgeservice.metrics import EdgeMetrics

            self._metrics = EdgeMetrics(self)
        return self._metrics.render()

    def _twin(self) -> DeviceTwin:
        if self.devicetwin is None:
            from edgeservice.devicetwin import DeviceTwin

            self.devicetwin = DeviceTwin(self.meta, self.node, self._emit, broker=self.broker)
            assert self._tg is not None, "devices are handled only while the edge runs"
            self._tg.create_task(self.devicetwin.run(), name=f"edge[{self.node}].devicetwin")
        return self.devicetwin

    # -- the node's MQTT broker -------------------------------------------------------------------

    @property
    def broker(self) -> NodeBroker:
        """The node's broker; the embedded one comes back on the port the last run advertised when that
        is free, so pods that kept running while the edge restarted find it again."""
        if self._broker is None:
            from edgeservice.broker import NodeBroker

            self._broker = NodeBroker(
                self.config.mqtt,
                port=self._previous_mqtt_port,
                on_resolved=lambda url: self._advertise("mqtt", url),
            )
        return self._broker

    def _previous_broker_port(self) -> int:
        """The port of the embedded broker the last run advertised (0: none)."""
        from edgeservice.broker import BrokerError, parse_url

        try:
            url = json.loads((self.config.data_dir / "endpoints.json").read_text())["mqtt"]
            if url == self.config.mqtt:
                return 0
            return parse_url(url)[1]
        except (OSError, ValueError, KeyError, TypeError, BrokerError):
            return 0

    def _advertise(self, key: str, value: str) -> None:
        """Record an endpoint of this node in ``endpoints.json`` (local API, MQTT broker), atomically."""
        self._endpoints[key] = value
        path = self.config.data_dir / "endpoints.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self._endpoints) + "\n")
        tmp.replace(path)

    async def _node_env(self) -> dict[str, str]:
        """What Edged sets in every container: ``FLEETOPS_MQTT_URL``, the node's broker (started now if this
        is its first use). Without a usable broker the variable is left out and the pod starts anyway."""
        from app.twin import MQTT_URL_ENV
        from edgeservice.broker import BrokerError

        try:
            url = await self.broker.resolve()
        except BrokerError as exc:
            log.warning("edge %s: no MQTT broker to advertise to pods: %s", self.node, exc)
            return {}
        return {MQTT_URL_ENV: url}

    def _restart_pod(self, uid: str) -> None:
        if self.edged.restart_pod(uid):
            log.info("edge %s: pod %s restarted on request of the local API", self.node, uid)

    # -- Edged's sink -----------------------------------------------------------------------------

    def pod_status_changed(self, pod: JSONObject, status: JSONObject) -> None:
        m = pod.get("metadata", {})
        ns, name = str(m.get("namespace", "")), str(m.get("name", ""))
        key = tunnel_resource(PODS, ns, name)
        # "rv": the version of the spec we hold, so the cloud can tell us whether that is still current.
        content = {"uid": m.get("uid"), "status": status, "rv": self.meta.version(key)}
        msg = Message("update", f"{ns}/podstatus/{name}", content, source=self.node)
        self._emit(msg, status_of=(key, status))

    def pod_event(self, pod: JSONObject, type_: str, reason: str, message: str) -> None:
        """A kubelet-style Event about a pod, kept in the outbox like a status so that what happened
        offline shows up in `kubectl describe pod` afterwards. A node offline for weeks with a crash-looping
        pod must not fill its disk with them: past MAX_PENDING_EVENTS queued, new ones are dropped."""
        if not self.meta.is_open or self.meta.outbox_depth() >= MAX_PENDING_EVENTS:
            return
        m = pod.get("metadata", {})
        content = {"uid": m.get("uid"), "type": type_, "reason": reason, "message": message}
        self._emit(
            Message(
                "insert", f"{m.get('namespace', '')}/event/{m.get('name', '')}", content, source=self.node
            )
        )

    def pod_terminated(self, pod: JSONObject) -> None:
        m = pod.get("metadata", {})
        key = tunnel_resource(PODS, str(m.get("namespace", "")), str(m.get("name", "")))
        self._emit(Message("delete", key, {"uid": m.get("uid")}, source=self.node))

    async def _camera_stream(
        self, namespace: str, name: str, params: JSONObject, sink: StreamSink, msg: Message
    ) -> None:
        """The camera stream producer, imported with the first stream (an edge nobody watches, or one
        with no camera, carries none of it)."""
        if self._cameras is None:
            from edgeservice.camerastream import CameraStreamProducer

            self._cameras = CameraStreamProducer(self.meta, self.node, self._broker_url)
        await self._cameras(namespace, name, params, sink, msg)

    async def _broker_url(self) -> str | None:
        """The MQTT broker the node's devices use (camera streams read it); None without devices. The bus
        starts with the first device, so a stream asked for right after it arrived waits a moment."""
        twin = self.devicetwin
        if twin is None:
            return None
        try:
            await asyncio.wait_for(twin.bus_started.wait(), BUS_START_WAIT_S)
        except TimeoutError:
            return None
        return self.broker.url

    def _emit(self, msg: Message, *, status_of: tuple[str, JSONObject] | None = None) -> None:
        """Queue a message for the cloud: the outbox writer persists it, then sends it (see
        :meth:`_outbox_loop`)."""
        if not self.meta.is_open:  # shutting down: Edged's last words are not worth a crash
            return
        self._unsaved.append((msg, status_of))
        self._outbox_wake.set()

    async def _outbox_loop(self) -> None:
        """The outbox's group commit. Emitted messages and the cloud's acks wait here until the writer is
        free; one transaction in a worker thread then persists all of them (one fsync), and the messages
        go on the tunnel. While a commit waits for the disk the loop keeps taking MQTT and tunnel input,
        so under load each commit carries what arrived during the previous one; when idle a message is
        written alone, at once. A failed write (a full or broken disk) is retried every second with the
        same messages, in order; nothing is sent that is not on disk."""
        loop = asyncio.get_running_loop()
        while True:
            await self._outbox_wake.wait()
            self._outbox_wake.clear()
            batch, self._unsaved = self._unsaved, []
            acked, self._acked = self._acked, []
            versions, self._acked_versions = self._acked_versions, {}
            if not batch and not acked and not versions:
                continue
            self._outbox_write = loop.run_in_executor(None, self.meta.write_outbox, batch, acked, versions)
            try:
                # Shielded: a cancelled edge still lets the commit finish (run() waits for it).
                written = await asyncio.shield(self._outbox_write)
            except CacheError as exc:
                log.error("edge %s: outbox not written, retrying in 1 s: %s", self.node, exc)
                self._unsaved[:0] = batch
                self._acked[:0] = acked
                self._acked_versions = versions | self._acked_versions
                await asyncio.sleep(1.0)
                self._outbox_wake.set()
                continue
            self.stats["acked_out"] += len(acked)
            self._send_persisted(written)

    def _send_persisted(self, messages: list[Message]) -> None:
        """Put freshly committed outbox rows on the tunnel, unkeyed and in sequence order. Not keyed by
        object, although a device status is "latest wins": the Channel's keyed coalescing keeps a key's
        first queue position, so a newer row would overtake older rows of other objects, and the cloud's
        duplicate cursor (the highest sequence applied) would then skip those as replays. The outbox
        coalesces them instead, before they are numbered (``MetaManager.write_outbox``)."""
        channel = self._channel
        if channel is None:
            return  # they wait in the outbox for the next connection
        # A resync that read the outbox after this commit already sent these.
        fresh = [m for m in messages if m.seq > self._resent_through]
        for msg in fresh:
            channel.send_reliable(msg, None)
        if fresh and self._runner is not None:
            self._runner.kick()

    async def _drain_outbox(self) -> None:
        """On the way out: let a commit in flight finish, and persist what is still queued."""
        if self._outbox_write is not None:
            await asyncio.wait([self._outbox_write])
            self._outbox_write = None
        batch, self._unsaved = self._unsaved, []
        acked, self._acked = self._acked, []
        versions, self._acked_versions = self._acked_versions, {}
        try:
            self.meta.write_outbox(batch, acked, versions)
        except CacheError as exc:
            log.error("edge %s: %d outbox messages lost on shutdown: %s", self.node, len(batch), exc)

    # -- the tunnel -------------------------------------------------------------------------------

    async def _hub_loop(self) -> None:
        attempt = 0
        headers = {"Authorization": f"Bearer {self.config.token}", NODE_HEADER: self.node}
        while True:
            try:
                async with connect(
                    self.config.cloud_url,
                    additional_headers=headers,
                    max_size=self.config.max_frame,
                    ping_interval=self.config.ping_interval,
                    ping_timeout=self.config.ping_timeout,
                    open_timeout=10,
                    proxy=None,
                ) as ws:
                    attempt = 0
                    self.stats["connects"] += 1
                    await self._session(ws)
                    log.warning("edge %s: connection to the cloud closed", self.node)
            except InvalidStatus as exc:
                status = exc.response.status_code
                body = exc.response.body.decode(errors="replace").strip() if exc.response.body else ""
                log.error("edge %s: the cloud refused us (HTTP %d: %s)", self.node, status, body)
            except (OSError, TimeoutError, InvalidHandshake, WebSocketException) as exc:
                log.warning(
                    "edge %s: cannot reach the cloud at %s: %s", self.node, self.config.cloud_url, exc
                )
            delay = backoff_delay(attempt)
            attempt += 1
            await asyncio.sleep(delay)

    async def _session(self, ws: ClientConnection) -> None:
        channel = Channel(self.node, max_frame=self.config.max_frame)
        greeting = hello(
            self.node,
            {
                "epoch": self.meta.epoch,
                "inventory": self.meta.inventory(),
                "status": node_status(self.config.data_dir, self.address),
                "labels": {**default_labels(), **self.config.labels},
            },
        )
        self._hello_id = greeting.msg_id
        channel.send(greeting)
        runner = ChannelRunner(
            ws, channel, lambda evs: self._on_events(channel, evs), name=f"edge[{self.node}].hub"
        )
        self._runner = runner
        try:
            await runner.run()
        finally:
            self._channel = None
            self._runner = None
            self.connected.clear()
            await self.streams.close_all()

    async def _on_events(self, channel: Channel, events: list[Event]) -> None:
        acked: list[Acked] = []
        batch: list[Message] = []
        for ev in events:
            if isinstance(ev, Delivered) and ev.message.group == GROUP_STREAM:
                self.streams.on_message(ev.message, lambda m: self._send_now(channel, m))
            elif isinstance(ev, Delivered):
                if ev.message.group == GROUP_RESOURCE and ev.message.operation in (
                    "insert",
                    "update",
                    "delete",
                ):
                    batch.append(ev.message)
                else:
                    channel.reject(
                        ev.message, f"unsupported {ev.message.operation} in group {ev.message.group}"
                    )
            elif isinstance(ev, Replied) and ev.message.parent_msg_id == self._hello_id:
                self._on_resync(channel, ev.message.content)
            elif isinstance(ev, Acked):
                acked.append(ev)
            elif isinstance(ev, FrameRejected):
                log.warning("edge %s: bad frame from the cloud: %s", self.node, ev.reason)
        if acked:
            self._on_acked(acked)
        if batch:
            changes = self.meta.apply(batch)  # durable before any ack goes out
            for msg in batch:
                channel.ack(msg)
            self.stats["received"] += len(batch)
            self._hand_to_edged(changes)
            if self._awaiting is not None:
                for msg in batch:
                    if int(msg.resourceversion or 0) >= self._awaiting.get(msg.resource, 1 << 62):
                        self._awaiting.pop(msg.resource, None)
                self._maybe_full_sync()

    def _on_resync(self, channel: Channel, content: Any) -> None:
        content = content if isinstance(content, dict) else {}
        applied = int(content.get("applied_seq", 0) or 0)
        objects = content.get("objects", {})
        objects = objects if isinstance(objects, dict) else {}
        dropped = self.meta.outbox_done_through(applied)
        if dropped:
            log.info("edge %s: cloud had already applied %d outbox messages", self.node, dropped)
        self._hand_to_edged(self.meta.prune(set(objects)))
        held = self.meta.inventory()
        self._awaiting = {k: int(rv) for k, rv in objects.items() if held.get(k, 0) < int(rv)}
        to_fetch = len(self._awaiting)
        self._maybe_full_sync()
        self._channel = channel
        pending = self.meta.outbox()
        for msg in pending:
            channel.send_reliable(msg, None)
        self._resent_through = max((m.seq for m in pending), default=0)
        log.info(
            "edge %s connected: %d objects assigned, %d to fetch, %d outbox messages to send",
            self.node,
            len(objects),
            to_fetch,
            len(pending),
        )
        self.connected.set()

    def _send_now(self, channel: Channel, msg: Message) -> None:
        channel.send(msg)
        if self._runner is not None:
            self._runner.kick()

    def _maybe_full_sync(self) -> None:
        if self._awaiting is not None and not self._awaiting:
            self._awaiting = None
            if self._full_sync_pending:
                self._full_sync_pending = False
                self.edged.sync(self.meta.objects("pod"))
                if self.meta.objects("device"):
                    self._twin().sync()

    def _on_acked(self, acked: list[Acked]) -> None:
        """The cloud applied these outbox messages: drop them, and note current spec versions (the outbox
        writer does both, with whatever else it commits next)."""
        seqs = [ev.message.seq for ev in acked if ev.message.seq]
        versions: dict[str, int] = {}
        for ev in acked:
            content = ev.reply.content if isinstance(ev.reply.content, dict) else {}
            rv = content.get("resourceversion")
            if rv and "/podstatus/" in ev.message.resource:
                versions[ev.message.resource.replace("/podstatus/", "/pod/")] = int(rv)
        # Written by the outbox writer with the next batch: an ack costs no commit of its own.
        self._acked.extend(seqs)
        self._acked_versions.update(versions)
        self._outbox_wake.set()

    def _hand_to_edged(self, changes: list[Change]) -> None:
        for change in changes:
            if change.type == "device":
                self._twin().device_changed(change.obj, key=change.key)
                continue
            if change.type == "devicemodel":
                namespace, _, name = change.key.split("/")
                self._twin().model_changed(namespace, name)
                continue
            if change.type in CONFIG_TYPES:
                namespace, _, name = change.key.split("/")
                self.edged.config_changed(namespace, CONFIG_TYPES[change.type], name)
                continue
            if change.type != "pod":
                continue
            if change.obj is not None:
                old_uid = (change.previous or {}).get("metadata", {}).get("uid")
                if old_uid and old_uid != change.obj.get("metadata", {}).get("uid"):
                    # Same name, new pod (replaced while we were away): the old one's processes go.
                    self.edged.remove(str(old_uid))
                self.edged.upsert(change.obj)
                # The cloud's copy of the status may have been changed behind our back (a node lifecycle
                # controller marks pods NotReady while we are away): re-assert ours, as a kubelet does.
                local = self.edged.status_of(str(change.obj.get("metadata", {}).get("uid", "")))
                if local is not None and local != change.obj.get("status"):
                    self.pod_status_changed(change.obj, local)
            elif change.previous is not None:
                self.edged.remove(str(change.previous.get("metadata", {}).get("uid", "")))

    async def _heartbeat_loop(self) -> None:
        self.usage.sample()  # the baseline: the first heartbeat already carries rates
        while True:
            await asyncio.sleep(self.config.status_interval)
            # Sampled on every beat, connected or not, so the rate window stays one interval long. Inline:
            # a few ms of /proc reads for 50 containers, cheaper than the memory a worker thread costs.
            usage = self.usage.sample()
            if self._channel is not None:
                status = node_status(self.config.data_dir, self.address)
                content = {"status": status, "usage": usage}
                self._channel.send(Message("update", f"/node/{self.node}", content, group=GROUP_HUB))
                if self._runner is not None:
                    self._runner.kick()


CONFIG_TYPES: dict[str, ConfigKind] = {"configmap": "ConfigMap", "secret": "Secret"}


class CachedConfig:
    """Edged's ConfigSource: the ConfigMaps and Secrets the cloud sent for this node's pods, from the cache
    (so pods that use them start and restart while the cloud is away)."""

    def __init__(self, meta: MetaManager) -> None:
        self.meta = meta

    def configmap(self, namespace: str, name: str) -> JSONObject | None:
        return self.meta.get(f"{namespace}/configmap/{name}")

    def secret(self, namespace: str, name: str) -> JSONObject | None:
        return self.meta.get(f"{namespace}/secret/{name}")


class _Stop(Exception):
    """Raised inside the task group to end it when the service is asked to stop."""

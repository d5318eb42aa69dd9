"""CloudHub: the WebSocket endpoint edges dial into, and the edge controller that feeds it.

Edges sit behind NAT on flaky links, so the cloud never connects to them: each edge keeps one outbound
WebSocket to the hub, authenticated at the HTTP upgrade with its join token (``Authorization: Bearer``) and
its node name (``X-FleetOps-Node``). A refused upgrade costs the hub nothing and affects no other node.

One :class:`NodeSession` per connected node holds the sans-I/O :class:`~app.tunnel.Channel`, the node's
:class:`~cloudservice.auth.Identity` (every message from the edge is authorised against it: a node may only
report on itself and its own pods), and what was last sent per object.

Resync. The edge's first frame is a *hello* carrying its inventory (object key -> resourceVersion held in
its cache) and its outbox epoch. The hub answers with the full set of keys the node should hold and the
last outbox sequence the store has applied, then sends only the objects whose resourceVersion is newer
than the edge's copy. The edge drops what is not in the set. Nothing is resent wholesale.

Edge -> cloud writes (pod status, pod termination) arrive with an outbox sequence number and are applied
in order with a store cursor (``edge-outbox/<node>/<epoch>``) written in the same transaction, so a
redelivery after a lost ack or a crash is skipped: exactly once as far as the store can tell. When a write
fails for a reason other than a conflict, the connection is closed: the edge redelivers from its outbox
in order, which is simpler and safer than skipping ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import weakref
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from app.envelope import GROUP_HUB, GROUP_RESOURCE, GROUP_STREAM, Message
from app.resources import (
    CONFIGMAPS,
    DEVICEMODELS,
    DEVICES,
    NODES,
    PODS,
    SECRETS,
    JSONObject,
    ResourceType,
    now_rfc3339,
    parse_tunnel_resource,
    tunnel_resource,
)
from app.streams import stream_id, window_of
from app.tunnel import DEFAULT_MAX_FRAME, Channel, Delivered, Event, FrameRejected, Replied, is_hello
from app.tunnelio import ChannelRunner
from cloudservice.auth import AuthError, Identity, TokenStore, bearer
from cloudservice.controllers import record_event
from cloudservice.errors import CloudError, Conflict, NotFound, StoreError
from cloudservice.history import History
from cloudservice.store.base import Cursor, Store, WatchEvent
from cloudservice.streams import CloudStream, NodeOffline
from cloudservice.usage import UsageStore

log = logging.getLogger(__name__)

NODE_HEADER = "X-FleetOps-Node"
_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
# Seconds an edge has, after the upgrade, to send its hello before the hub hangs up.
HELLO_TIMEOUT = 10.0


def object_key(rt: ResourceType, obj: JSONObject) -> str:
    m = obj.get("metadata", {})
    return tunnel_resource(rt, str(m.get("namespace", "")), str(m.get("name", "")))


# Kinds bound to one node by spec.nodeName: the node gets them and whatever they reference.
BOUND = (PODS, DEVICES)


def spec_hash(obj: JSONObject) -> str:
    """What the edge cares about in an object: all of it but its version and its status. A status-only
    change, most often the edge's own report coming back through the watch, hashes the same and is not
    sent."""
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k not in ("resourceVersion", "managedFields")}
    rest = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    blob = json.dumps([meta, rest], sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


# Kinds a node receives because its bound objects reference them.
CONFIG_TYPES = (CONFIGMAPS, SECRETS, DEVICEMODELS)


def config_key(rt: ResourceType, obj: JSONObject) -> str:
    m = obj.get("metadata", {})
    return tunnel_resource(rt, str(m.get("namespace", "")), str(m.get("name", "")))


def refs_of(rt: ResourceType, obj: JSONObject) -> set[str]:
    """What a bound object references: a pod its ConfigMaps and Secrets, a device its model."""
    if rt is DEVICES:
        ns = str(obj.get("metadata", {}).get("namespace", ""))
        ref = obj.get("spec", {}).get("deviceModelRef", {})
        name = ref.get("name") if isinstance(ref, dict) else None
        return {f"{ns}/devicemodel/{name}"} if isinstance(name, str) and name else set()
    return config_refs(obj)


def config_refs(pod: JSONObject) -> set[str]:
    """The tunnel keys of the ConfigMaps and Secrets a pod's spec uses (env, envFrom, volumes)."""
    ns = str(pod.get("metadata", {}).get("namespace", ""))
    spec = pod.get("spec", {})
    refs: set[str] = set()

    def add(kind: str, name: Any) -> None:
        if isinstance(name, str) and name:
            refs.add(f"{ns}/{kind}/{name}")

    for c in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        for env in c.get("env", []) or []:
            source = env.get("valueFrom", {}) if isinstance(env, dict) else {}
            add("configmap", (source.get("configMapKeyRef") or {}).get("name"))
            add("secret", (source.get("secretKeyRef") or {}).get("name"))
        for env_from in c.get("envFrom", []) or []:
            if isinstance(env_from, dict):
                add("configmap", (env_from.get("configMapRef") or {}).get("name"))
                add("secret", (env_from.get("secretRef") or {}).get("name"))
    for volume in spec.get("volumes", []) or []:
        if isinstance(volume, dict):
            add("configmap", (volume.get("configMap") or {}).get("name"))
            add("secret", (volume.get("secret") or {}).get("secretName"))
    return refs


def own_usage(sample: JSONObject, pods: dict[str, set[str]]) -> JSONObject:
    """A usage sample restricted to the pods bound to the reporting node: a node reports on itself only."""
    mine = [
        p
        for p in sample.get("pods", []) or []
        if isinstance(p, dict) and f"{p.get('namespace', '')}/pod/{p.get('name', '')}" in pods
    ]
    return {**sample, "pods": mine}


def is_telemetry(msg: Message) -> bool:
    """An edge's device telemetry summary (``namespace/devicedata/name``), which the hub stores in batches."""
    return (
        msg.group == GROUP_RESOURCE
        and msg.operation == "update"
        and msg.resource.count("/") == 2
        and msg.resource.split("/")[1] == "devicedata"
    )


def outbox_cursor(node: str, epoch: str) -> str:
    return f"edge-outbox/{node}/{epoch}"


class HubProtocolError(CloudError):
    """An edge broke the protocol badly enough that its connection is closed."""


@dataclass(eq=False)
class NodeSession:
    node: str
    identity: Identity
    channel: Channel
    ws: ServerConnection
    epoch: str = ""
    synced_revision: int = 0
    sent: dict[str, str] = field(default_factory=dict)
    # Watch events that arrive while the resync list is read; replayed after it, newer ones only.
    backlog: list[WatchEvent] | None = None
    runner: ChannelRunner | None = None
    streams: dict[str, CloudStream] = field(default_factory=dict)
    # pod key -> the ConfigMap/Secret keys its spec references
    refs: dict[str, set[str]] = field(default_factory=dict)

    def wanted_config(self) -> set[str]:
        return set().union(*self.refs.values()) if self.refs else set()

    def kick(self) -> None:
        if self.runner is not None:
            self.runner.kick()


class CloudHub:
    name = "cloudhub"

    def __init__(
        self,
        store: Store,
        tokens: TokenStore,
        *,
        host: str = "0.0.0.0",
        port: int = 10000,
        max_frame: int = DEFAULT_MAX_FRAME,
        ping_interval: float = 10.0,
        ping_timeout: float = 10.0,
        resend_after: float = 5.0,
        usage: UsageStore | None = None,
        history: History | None = None,
    ) -> None:
        self.store = store
        self.usage = usage
        self.history = history
        self.tokens = tokens
        self.host = host
        self.requested_port = port
        self.max_frame = max_frame
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.resend_after = resend_after
        self.sessions: dict[str, NodeSession] = {}
        # Every ConfigMap and Secret by tunnel key, from the same watch as the pods: nodes get the ones
        # their pods reference.
        self._config: dict[str, JSONObject] = {}
        self._config_revision = 0
        # Identity of upgrades that passed authentication, until their handler picks it up; weak, so an
        # upgrade whose handshake fails afterwards leaves nothing behind.
        self._accepted: weakref.WeakKeyDictionary[ServerConnection, tuple[Identity, str]] = (
            weakref.WeakKeyDictionary()
        )
        self._server: Server | None = None
        self._controller: asyncio.Task[None] | None = None
        self.stats: dict[str, int] = {
            "connections": 0,
            "refused": 0,
            "messages_in": 0,
            "messages_out": 0,
            "resends": 0,
            "rejected_frames": 0,
            "duplicates_skipped": 0,
            "streams_opened": 0,
            "oversized": 0,
            "telemetry_summaries": 0,
        }

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._controller = asyncio.create_task(self._edge_controller(), name="cloudhub.edgecontroller")
        self._server = await serve(
            self._handle,
            self.host,
            self.requested_port,
            process_request=self._authenticate,
            # websockets closes with 1009 past this; the channel rejects smaller bad frames one by one.
            max_size=self.max_frame,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
        )
        log.info("hub listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._controller is not None:
            self._controller.cancel()
            await asyncio.gather(self._controller, return_exceptions=True)

    def queue_depth(self) -> int:
        return sum(s.channel.queued + s.channel.in_flight for s in self.sessions.values())

    # -- connection setup ---------------------------------------------------------------------

    def _authenticate(self, connection: ServerConnection, request: Request) -> Response | None:
        node = request.headers.get(NODE_HEADER, "")
        token = bearer(request.headers.get("Authorization"))
        try:
            if not _NODE_NAME.match(node):
                raise AuthError(f"missing or invalid {NODE_HEADER} header: {node!r}")
            if token is None:
                raise AuthError("missing bearer token")
            identity = self.tokens.verify(token, "join")
        except AuthError as exc:
            self.stats["refused"] += 1
            log.warning("hub refused %s (node %r): %s", connection.remote_address, node, exc)
            return Response(
                HTTPStatus.UNAUTHORIZED,
                "Unauthorized",
                Headers({"Content-Type": "text/plain"}),
                f"{exc}\n".encode(),
            )
        self._accepted[connection] = (identity, node)
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        identity, node = self._accepted.pop(ws)
        self.stats["connections"] += 1
        channel = Channel("cloudhub", max_frame=self.max_frame, resend_after=self.resend_after)
        session = NodeSession(node=node, identity=identity, channel=channel, ws=ws)
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                frame = await ws.recv()
            channel.receive_data(frame)
            hello = next(
                (
                    e.message
                    for e in channel.events_received()
                    if isinstance(e, Delivered) and is_hello(e.message)
                ),
                None,
            )
            if hello is None or hello.resource != f"/node/{node}":
                raise HubProtocolError("the first frame must be the node's hello")
            old = self.sessions.get(node)
            if old is not None:  # only now: a connection that never says hello replaces nothing
                log.warning("node %s connected again; closing its previous connection", node)
                await old.ws.close(4000, "replaced by a newer connection")
            session.runner = ChannelRunner(
                ws, channel, lambda evs: self._on_events(session, evs), name=f"hub[{node}]"
            )
            self.sessions[node] = session
            await self._on_hello(session, hello)
            log.info("node %s connected from %s (token %s)", node, ws.remote_address, identity.token_id)
            await session.runner.run()
        except TimeoutError:
            log.warning("node %s sent no hello within %.0fs; closing", node, HELLO_TIMEOUT)
        except HubProtocolError as exc:
            log.warning("node %s: %s; closing", node, exc)
            await ws.close(1002, str(exc)[:120])
        except ConnectionClosed:
            pass
        except StoreError:
            log.exception("node %s: store write failed; closing so the edge redelivers in order", node)
            await ws.close(1011, "store unavailable")
        finally:
            for stream in list(session.streams.values()):
                stream.lost(f"node {node} disconnected")
            if self.sessions.get(node) is session:
                del self.sessions[node]
            self.stats["messages_in"] += channel.stats["received"]
            self.stats["messages_out"] += channel.stats["sent"]
            self.stats["resends"] += channel.stats["resent"]
            log.info("node %s disconnected", node)

    async def _on_hello(self, s: NodeSession, hello: Message) -> None:
        content = hello.content if isinstance(hello.content, dict) else {}
        epoch = content.get("epoch")
        inventory = content.get("inventory", {})
        status = content.get("status", {})
        labels = content.get("labels", {})
        if not isinstance(epoch, str) or not epoch:
            raise HubProtocolError("hello.content.epoch: required string")
        if not isinstance(inventory, dict) or not isinstance(status, dict) or not isinstance(labels, dict):
            raise HubProtocolError("hello.content: inventory, status and labels must be objects")
        s.epoch = epoch
        s.backlog = []
        await self._register_node(s.node, status, {str(k): str(v) for k, v in labels.items()})
        applied = await self.store.read_cursor(outbox_cursor(s.node, epoch))
        desired, revision = await self._bound(s)
        s.synced_revision = revision
        for ref in s.wanted_config():
            if ref in self._config:
                desired[ref] = self._config[ref]
        objects = {key: int(obj["metadata"]["resourceVersion"]) for key, obj in desired.items()}
        s.channel.send(hello.reply(content={"applied_seq": applied, "objects": objects}, source="cloudhub"))
        stale = 0
        for key, obj in desired.items():
            s.sent[key] = spec_hash(obj)
            held = inventory.get(key)
            if not isinstance(held, int) or held < objects[key]:
                stale += 1
                self._send(s, key, obj)
        backlog, s.backlog = s.backlog or [], None
        for ev in backlog:
            self._route(ev)
        log.info(
            "node %s resync: %d objects, %d sent, outbox applied up to %d",
            s.node,
            len(objects),
            stale,
            applied,
        )
        s.kick()

    async def _register_node(self, node: str, status: JSONObject, labels: dict[str, str]) -> None:
        stamped = stamp_heartbeat(status, None)
        base_labels = {
            "kubernetes.io/hostname": node,
            "node-role.kubernetes.io/edge": "",
            "node-role.kubernetes.io/agent": "",
        }
        was_ready: list[bool] = []
        try:

            def merge(obj: JSONObject) -> JSONObject:
                was_ready[:] = [is_ready(obj.get("status"))]
                meta = obj.setdefault("metadata", {})
                # The edge's own labels count at registration only, as a kubelet's --node-labels do: an
                # operator's `kubectl label node` is not undone by the next reconnect.
                meta["labels"] = {**base_labels, **meta.get("labels", {})}
                obj["status"] = stamp_heartbeat(status, obj.get("status"))
                return obj

            stored = await self.store.guaranteed_update(NODES, "", node, merge)
            if stored is not None and was_ready == [False]:
                await record_event(
                    self.store,
                    stored,
                    "Normal",
                    "NodeReady",
                    f"Node {node} is back online",
                    component="cloudhub",
                )
        except NotFound:
            created = await self.store.create(
                NODES,
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": node, "labels": {**base_labels, **labels}},
                    "spec": {},
                    "status": stamped,
                },
            )
            await record_event(
                self.store,
                created,
                "Normal",
                "RegisteredNode",
                f"Node {node} joined the cloud",
                component="cloudhub",
            )

    # -- cloud -> edge ----------------------------------------------------------------------------

    def _send(self, s: NodeSession, key: str, obj: JSONObject) -> None:
        rv = str(obj["metadata"]["resourceVersion"])
        msg = Message("update", key, obj, resourceversion=rv)
        size = len(msg.encode())
        if size > self.max_frame:
            # The edge would close the connection on it, and every resync would send it again.
            self.stats["oversized"] += 1
            log.error(
                "%s (%d bytes) is larger than a tunnel frame (%d); not sent to node %s",
                key,
                size,
                self.max_frame,
                s.node,
            )
            return
        s.channel.send_reliable(msg, key)

    def _send_delete(self, s: NodeSession, key: str, obj: JSONObject, revision: int) -> None:
        s.sent.pop(key, None)
        uid = obj.get("metadata", {}).get("uid")
        s.channel.send_reliable(Message("delete", key, {"uid": uid}, resourceversion=str(revision)), key)

    async def _edge_controller(self) -> None:
        """Forward to each connected node every change of its pods and of the ConfigMaps and Secrets they
        reference (and nothing else: a node sees no other node's pods and no unreferenced secret)."""
        resync = True
        while True:
            watch = None
            try:
                watch = self.store.watch(None)  # subscribed from here on: nothing after this is missed
                if resync:
                    await self._load_config()
                    for s in list(self.sessions.values()):
                        await self._resync_live(s)
                    resync = False
                async for ev in watch:
                    if ev.resource is DEVICES and ev.type == "DELETED" and self.history is not None:
                        meta = ev.object.get("metadata", {})
                        await self.history.forget(str(meta.get("namespace", "")), str(meta.get("name", "")))
                    if ev.resource in BOUND or ev.resource in CONFIG_TYPES:
                        self._route(ev)
            except StoreError as exc:
                log.warning("edge controller watch ended (%s); resyncing connected nodes", exc)
                resync = True
            except Exception:
                # Never die quietly: every node's updates depend on this loop. Log, pause, resync.
                log.exception("edge controller failed; restarting it with a full resync")
                resync = True
                await asyncio.sleep(1.0)
            finally:
                if watch is not None:
                    await watch.aclose()

    async def _load_config(self) -> None:
        self._config.clear()
        for rt in CONFIG_TYPES:
            items, revision = await self.store.list(rt)
            self._config_revision = max(self._config_revision, revision)
            for obj in items:
                self._config[config_key(rt, obj)] = obj

    def _route(self, ev: WatchEvent) -> None:
        if ev.resource in CONFIG_TYPES:
            self._route_config(ev)
            return
        pod = ev.object
        node = pod.get("spec", {}).get("nodeName")
        s = self.sessions.get(node) if isinstance(node, str) else None
        if s is None:
            return
        if s.backlog is not None:  # the node's resync list is being read: decide once it is
            s.backlog.append(ev)
            return
        if ev.revision <= s.synced_revision:
            return
        key = object_key(ev.resource, pod)
        before = s.wanted_config()
        if ev.type == "DELETED":
            s.refs.pop(key, None)
            self._send_delete(s, key, pod, ev.revision)
        else:
            s.refs[key] = refs_of(ev.resource, pod)
            h = spec_hash(pod)
            if s.sent.get(key) != h:
                s.sent[key] = h
                self._send(s, key, pod)
        after = s.wanted_config()
        for ref in after - before:
            if ref in self._config and ref not in s.sent:
                s.sent[ref] = spec_hash(self._config[ref])
                self._send(s, ref, self._config[ref])
        for ref in before - after:
            if ref in s.sent and ref in self._config:
                self._send_delete(s, ref, self._config[ref], ev.revision)
        s.kick()

    def _route_config(self, ev: WatchEvent) -> None:
        if ev.revision <= self._config_revision:
            return
        key = config_key(ev.resource, ev.object)
        if ev.type == "DELETED":
            self._config.pop(key, None)
        else:
            self._config[key] = ev.object
        for s in self.sessions.values():
            # A node in the middle of its resync reads the cache (already updated above) when it finishes;
            # the others are compared by content, not by revision: the pod snapshot's revision says
            # nothing about where the config cache stood.
            if s.backlog is not None or key not in s.wanted_config():
                continue
            if ev.type == "DELETED":
                self._send_delete(s, key, ev.object, ev.revision)
            elif s.sent.get(key) != spec_hash(ev.object):
                s.sent[key] = spec_hash(ev.object)
                self._send(s, key, ev.object)
            s.kick()

    async def _bound(self, s: NodeSession) -> tuple[dict[str, JSONObject], int]:
        """The node's pods and devices (and ``s.refs`` rebuilt from them), with the oldest revision of
        the lists read: events after it are routed, and content hashes drop what was already sent."""
        desired: dict[str, JSONObject] = {}
        s.refs = {}
        revisions = []
        for rt in BOUND:
            items, revision = await self.store.list(rt)
            revisions.append(revision)
            for obj in items:
                if obj.get("spec", {}).get("nodeName") == s.node:
                    key = object_key(rt, obj)
                    desired[key] = obj
                    s.refs[key] = refs_of(rt, obj)
        return desired, min(revisions)

    async def _resync_live(self, s: NodeSession) -> None:
        """Bring a connected node up to date after the watch had a gap: send what changed, and delete
        what went away meanwhile."""
        desired, revision = await self._bound(s)
        s.synced_revision = max(s.synced_revision, revision)
        for ref in s.wanted_config():
            if ref in self._config:
                desired[ref] = self._config[ref]
        for key in [k for k in s.sent if k not in desired]:
            self._send_delete(s, key, {}, revision)
        for key, obj in desired.items():
            if s.sent.get(key) != spec_hash(obj):
                s.sent[key] = spec_hash(obj)
                self._send(s, key, obj)
        s.kick()

    # -- edge -> cloud ----------------------------------------------------------------------------

    # -- streams (pod logs, exec) -----------------------------------------------------------------

    def connected(self, node: str) -> bool:
        """Whether the node has a live, resynced tunnel connection."""
        s = self.sessions.get(node)
        return s is not None and s.backlog is None

    def open_stream(self, node: str, resource: str, params: JSONObject) -> CloudStream:
        """Ask a connected node to start streaming ``resource`` (``ns/podlog/name``...); NodeOffline when
        the node has no connection. The caller awaits ``wait_accepted()`` and must ``aclose()`` it."""
        s = self.sessions.get(node)
        if s is None or s.backlog is not None:
            raise NodeOffline(node)
        request = Message("query", resource, params, source="cloudhub", group=GROUP_STREAM)

        def send(msg: Message) -> None:
            s.channel.send(msg)
            s.kick()

        def forget(sid: str) -> None:
            s.streams.pop(sid, None)

        stream = CloudStream(request.msg_id, send, on_close=forget, window=window_of(params))
        s.streams[request.msg_id] = stream
        send(request)
        self.stats["streams_opened"] += 1
        return stream

    async def _on_events(self, s: NodeSession, events: list[Event]) -> None:
        telemetry: list[Message] = []
        for ev in events:
            if isinstance(ev, (Delivered, Replied)) and ev.message.group == GROUP_STREAM:
                stream = s.streams.get(stream_id(ev.message))
                if stream is not None:
                    stream.on_message(ev.message)
            elif isinstance(ev, FrameRejected):
                self.stats["rejected_frames"] += 1
                log.warning("node %s sent a bad frame: %s (%r)", s.node, ev.reason, ev.excerpt)
            elif isinstance(ev, Delivered) and is_telemetry(ev.message):
                telemetry.append(ev.message)
            elif isinstance(ev, Delivered):
                await self._on_message(s, ev.message)
        if telemetry:
            await self._record_device_data(s, telemetry)

    async def _on_message(self, s: NodeSession, msg: Message) -> None:
        if msg.group == GROUP_HUB and msg.operation == "update" and msg.resource == f"/node/{s.node}":
            if (
                self.usage is not None
                and isinstance(msg.content, dict)
                and isinstance(msg.content.get("usage"), dict)
            ):
                self.usage.update(s.node, own_usage(msg.content["usage"], s.refs))
            status = msg.content.get("status") if isinstance(msg.content, dict) else None
            if isinstance(status, dict):
                await self.store.guaranteed_update(
                    NODES, "", s.node, lambda n: {**n, "status": stamp_heartbeat(status, n.get("status"))}
                )
            return
        if msg.group != GROUP_RESOURCE:
            s.channel.reject(msg, f"unknown group {msg.group!r}")
            return
        try:
            namespace, rtype, name = parse_tunnel_resource(msg.resource)
        except ValueError as exc:
            s.channel.reject(msg, str(exc))
            return
        content = msg.content if isinstance(msg.content, dict) else {}
        uid = content.get("uid")
        if rtype == "podstatus" and msg.operation == "update" and isinstance(content.get("status"), dict):
            rv = await self._apply_pod_status(s, msg, (namespace, name, str(uid)), content["status"])
            s.channel.ack(msg, {"resourceversion": rv})
        elif (
            rtype == "devicestatus" and msg.operation == "update" and isinstance(content.get("status"), dict)
        ):
            await self._apply_device_status(s, msg, (namespace, name, str(uid)), content["status"])
            s.channel.ack(msg)
        elif rtype == "event" and msg.operation == "insert":
            await self._record_edge_event(s, PODS, namespace, name, content)
            s.channel.ack(msg)
        elif rtype == "deviceevent" and msg.operation == "insert":
            await self._record_edge_event(s, DEVICES, namespace, name, content)
            s.channel.ack(msg)
        elif rtype == "pod" and msg.operation == "delete":
            await self._finish_pod_deletion(s, namespace, name, str(uid))
            s.channel.ack(msg)
        else:
            log.warning("node %s sent unsupported %s %s", s.node, msg.operation, msg.resource)
            s.channel.reject(msg, f"unsupported {msg.operation} on {rtype}")

    async def _apply_pod_status(
        self, s: NodeSession, msg: Message, ident: tuple[str, str, str], status: JSONObject
    ) -> str:
        namespace, name, uid = ident
        held = msg.content.get("rv") if isinstance(msg.content, dict) else None
        # The new resourceVersion goes back to the edge only when the edge already held the pod as it was
        # just before this write: then its copy of the spec is exactly as current. Otherwise a spec change
        # it has not received yet would be marked as seen, and dropped.
        current = [False]

        def apply(pod: JSONObject) -> JSONObject | None:
            if pod.get("metadata", {}).get("uid") != uid or pod.get("spec", {}).get("nodeName") != s.node:
                return None  # another incarnation of the pod, or not this node's: nothing to do
            if pod.get("status") == status:
                return None
            current[0] = isinstance(held, int) and str(held) == str(pod["metadata"].get("resourceVersion"))
            return {**pod, "status": status}

        cursor = Cursor(outbox_cursor(s.node, s.epoch), msg.seq) if msg.seq else None
        try:
            stored = await self.store.guaranteed_update(PODS, namespace, name, apply, cursor=cursor)
        except NotFound:
            return ""
        if stored is None:
            self.stats["duplicates_skipped"] += 1
            return ""
        return str(stored.get("metadata", {}).get("resourceVersion", "")) if current[0] else ""

    async def _apply_device_status(
        self, s: NodeSession, msg: Message, ident: tuple[str, str, str], status: JSONObject
    ) -> None:
        """The edge's twin report: reported (actual) and observed desired values, and online/offline."""
        namespace, name, uid = ident

        def apply(device: JSONObject) -> JSONObject | None:
            if (
                device.get("metadata", {}).get("uid") != uid
                or device.get("spec", {}).get("nodeName") != s.node
            ):
                return None
            new_status = {**device.get("status", {}), **status}
            return None if new_status == device.get("status") else {**device, "status": new_status}

        cursor = Cursor(outbox_cursor(s.node, s.epoch), msg.seq) if msg.seq else None
        with contextlib.suppress(NotFound):
            await self.store.guaranteed_update(DEVICES, namespace, name, apply, cursor=cursor)

    async def _record_device_data(self, s: NodeSession, messages: list[Message]) -> None:
        """Telemetry window summaries for this node's devices, as many as one frame carried: into the
        cloud's bounded history in one store transaction, then acknowledged. A store failure leaves them
        unacknowledged, and the edge sends them again."""
        accepted: list[tuple[str, str, JSONObject]] = []
        owners: dict[tuple[str, str], str | None] = {}  # (namespace, name) -> uid, if this node's device
        for msg in messages:
            content = msg.content if isinstance(msg.content, dict) else {}
            summary = content.get("summary")
            try:
                namespace, _, name = parse_tunnel_resource(msg.resource)
            except ValueError as exc:
                s.channel.reject(msg, str(exc))
                continue
            if not isinstance(summary, dict):
                s.channel.reject(msg, "a devicedata update needs a summary object")
                continue
            if (namespace, name) not in owners:
                owners[(namespace, name)] = await self._device_uid(s, namespace, name)
            if self.history is not None and owners[(namespace, name)] == content.get("uid"):
                accepted.append((namespace, name, summary))
        if accepted and self.history is not None:
            try:
                await self.history.add_many(accepted)
            except StoreError as exc:
                log.warning("node %s: telemetry not stored, the edge will resend it: %s", s.node, exc)
                return
            self.stats["telemetry_summaries"] += len(accepted)
        for msg in messages:
            s.channel.ack(msg)  # rejected ones count as handled; acking them again is harmless

    async def _device_uid(self, s: NodeSession, namespace: str, name: str) -> str | None:
        """The uid of the Device if it is bound to this node, else None."""
        try:
            device = await self.store.get(DEVICES, namespace, name)
        except NotFound:
            return None
        if device.get("spec", {}).get("nodeName") != s.node:
            return None
        uid = device.get("metadata", {}).get("uid")
        return uid if isinstance(uid, str) else None

    async def _record_edge_event(
        self, s: NodeSession, rt: ResourceType, namespace: str, name: str, content: JSONObject
    ) -> None:
        """An Event the edge recorded about one of its objects: a pod (Started, BackOff, Unhealthy... from
        Edged) or a device (an MQTT message devicetwin rejected). Dropped unless the object is this node's,
        the same incarnation the edge meant, and the event well-formed."""
        try:
            obj = await self.store.get(rt, namespace, name)
        except NotFound:
            return
        if (
            obj.get("metadata", {}).get("uid") != content.get("uid")
            or obj.get("spec", {}).get("nodeName") != s.node
        ):
            return  # not this node's object (or another incarnation of it)
        type_, reason = str(content.get("type", "Normal")), str(content.get("reason", ""))
        if type_ not in ("Normal", "Warning") or not reason:
            return
        message = str(content.get("message", ""))[:1024]
        component = f"edged/{s.node}" if rt is PODS else f"devicetwin/{s.node}"
        await record_event(self.store, obj, type_, reason, message, component=component, rt=rt)

    async def _finish_pod_deletion(self, s: NodeSession, namespace: str, name: str, uid: str) -> None:
        """The edge stopped every container of a terminating pod: remove it, as the kubelet does."""
        for _ in range(5):
            try:
                pod = await self.store.get(PODS, namespace, name)
            except NotFound:
                return
            meta = pod.get("metadata", {})
            if meta.get("uid") != uid or pod.get("spec", {}).get("nodeName") != s.node:
                return
            if not meta.get("deletionTimestamp"):
                log.warning(
                    "node %s reported pod %s/%s terminated but it is not being deleted",
                    s.node,
                    namespace,
                    name,
                )
                return
            if meta.get("finalizers"):
                # Someone still has work to do before the pod goes: the API removes it once they are done.
                return
            try:
                await self.store.delete(PODS, namespace, name, resource_version=str(meta["resourceVersion"]))
                return
            except NotFound:
                return
            except Conflict:
                continue  # changed under us (a status write): read it again
        log.warning("could not finish deleting pod %s/%s after retries", namespace, name)


def is_ready(status: Any) -> bool:
    conditions = status.get("conditions", []) if isinstance(status, dict) else []
    return any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
    )


def stamp_heartbeat(status: JSONObject, previous: Any) -> JSONObject:
    """The node status as reported, with the Ready condition's heartbeat taken from the cloud's clock (edge
    clocks drift; the lifecycle controller compares against ours) and its transition time kept while the
    status does not change."""
    now = now_rfc3339()
    prev_conditions = {
        c.get("type"): c for c in (previous or {}).get("conditions", []) if isinstance(c, dict)
    }
    conditions = []
    for cond in status.get("conditions", []):
        if not isinstance(cond, dict):
            continue
        c = dict(cond)
        before = prev_conditions.get(c.get("type"))
        c["lastHeartbeatTime"] = now
        if before is not None and before.get("status") == c.get("status"):
            c["lastTransitionTime"] = before.get("lastTransitionTime", now)
        else:
            c["lastTransitionTime"] = now
        conditions.append(c)
    return {**status, "conditions": conditions}

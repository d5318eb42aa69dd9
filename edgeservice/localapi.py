"""The edge's local API: the node's own pods, node and container logs over HTTP, from the edge's cache.

A field engineer on site must see what runs on the box and why it fails while the cloud is unreachable, so
the edge serves the cloud's read paths for this node (same URLs, same Kubernetes JSON shapes) from
MetaManager's cache, with the pod statuses Edged computed itself merged in. Every response carries the
header ``X-FleetOps-Source: edge-cache`` and ``X-FleetOps-Cloud-Connected: true|false``; served objects also
carry the annotation ``fleetops.io/cloud-connected`` so a UI can show its "offline" banner from the object.

Writes go to the cloud, which owns the desired state. The one allowed offline operation is
``POST /api/v1/namespaces/{ns}/pods/{name}/restart`` with the header ``X-FleetOps-Request: restart``
(202; the containers restart locally and the cloud learns of it through the usual status reports). Every
other write is answered 405 with a Status naming it.

NO AUTHENTICATION: anyone who can connect can read every pod spec (environment variables included) and
logs, and restart pods. That is why it binds to 127.0.0.1 by default: access is whoever can log in to the
box (the engineer's SSH session). Bind it elsewhere only behind something that authenticates.

HTTP is spoken with ``h11`` (a sans-I/O HTTP/1.1 state machine) over ``asyncio.start_server`` rather than
aiohttp.web, to keep the idle edge small (aiohttp.web alone costs ~11 MB RSS). Each connection is its own
task, so a slow or hung client only holds itself up: reading a request must complete within
``REQUEST_TIMEOUT``, each write within ``WRITE_TIMEOUT``, and at most ``MAX_CONNECTIONS`` are served at once
(more are closed at once). Malformed HTTP gets a 400 and the connection is closed. Log responses are chunked;
``follow=true`` streams until the client goes away or the server stops, when the chunked body is ended
properly. Keep-alive is supported; pipelining is not (a pipelined request waits for the one before it).

Devices (``/apis/devices.kubeedge.io/v1beta1/[namespaces/NS/]devices[/NAME]``) come from the cache with the
edge's own twin state as their status; DeviceModels (``.../[namespaces/NS/]devicemodels[/NAME]``) are the
ones the cloud sent this node (those of its devices), as cached, so a UI at the edge can show units, types
and access; events (``/api/v1/[namespaces/NS/]events``) are the pod Events still waiting in the outbox,
i.e. what happened while the cloud was unreachable.

Deliberately not done: watch, label/field selectors, the Table format (``kubectl get`` against this API
prints names only), TLS, and anything that writes to the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import platform
import time
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import h11

from app.envelope import Message
from app.errors import ValidationError
from app.resources import JSONObject
from app.twin import status_twins, twins_from_json
from edgeservice.edged.logs import LogOptions, follow, parse_time, read_log
from edgeservice.errors import EdgeError
from edgeservice.nodeinfo import KUBELET_VERSION

log = logging.getLogger(__name__)

DEFAULT_PORT = 10550
SOURCE_HEADER = "X-FleetOps-Source"
CONNECTED_HEADER = "X-FleetOps-Cloud-Connected"
CONNECTED_ANNOTATION = "fleetops.io/cloud-connected"
# A request (head and body) must arrive within this; it is also how long an idle keep-alive connection lasts.
REQUEST_TIMEOUT = 30.0
# A client that reads nothing for this long (a full socket buffer) is dropped.
WRITE_TIMEOUT = 30.0
# Concurrent connections: each costs a task and buffers (~100 KB worst case); a box has few local clients.
MAX_CONNECTIONS = 64
# Request heads beyond this are refused with 431 (a kubectl request head is well under 2 KiB).
MAX_HEAD_BYTES = 16 * 1024
# Request bodies are not used (restart takes none); more than this is refused.
MAX_BODY_BYTES = 64 * 1024
# How long stop() lets streaming responses end cleanly before cancelling them.
STOP_GRACE = 2.0
_READ_SIZE = 16 * 1024
# After refusing a request: how long unread input is drained so the refusal reaches the client.
LINGER_SECONDS = 1.0
_RESTART_PATH = "POST /api/v1/namespaces/{namespace}/pods/{name}/restart"
_DEVICES_GROUP = "devices.kubeedge.io"
_DEVICES_API = f"{_DEVICES_GROUP}/v1beta1"


class LocalApiError(EdgeError):
    """The local API could not start (its address is taken or not allowed)."""

    def __init__(self, message: str, *, host: str, port: int) -> None:
        super().__init__(message)
        self.host = host
        self.port = port


class PodCache(Protocol):
    """What is read from MetaManager."""

    @property
    def is_open(self) -> bool: ...

    def objects(self, type_: str) -> list[JSONObject]: ...

    def get(self, key: str) -> JSONObject | None: ...

    def status(self, key: str) -> JSONObject | None: ...

    def local(self, key: str) -> JSONObject | None: ...

    def outbox(self, after: int = 0) -> list[Message]: ...


class PodRuntime(Protocol):
    """What is read from Edged."""

    def status_of(self, uid: str) -> JSONObject | None: ...

    def log_path(self, uid: str, container: str) -> Path | None: ...


class _Reply(Exception):
    """A Kubernetes Status answer, raised from anywhere inside a request's handling."""

    def __init__(self, code: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = {k: v for k, v in details.items() if v}

    def status(self) -> JSONObject:
        body: JSONObject = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def _bad_request(message: str) -> _Reply:
    return _Reply(400, "BadRequest", message)


def _not_found(plural: str, name: str, *, group: str = "", why: str = "") -> _Reply:
    """A NotFound Status worded as the Kubernetes API words it (``devices.devices.kubeedge.io "x" not
    found``), ``why`` appended."""
    resource = f"{plural}.{group}" if group else plural
    return _Reply(404, "NotFound", f'{resource} "{name}" not found{why}', name=name, group=group, kind=plural)


@dataclass(slots=True)
class _Response:
    status: int
    body: bytes | Generator[bytes, None, None] | AsyncGenerator[bytes, None]
    content_type: str = "application/json"
    extra_headers: tuple[tuple[str, str], ...] = ()


def _json(obj: Any, status: int = 200) -> _Response:
    return _Response(status, json.dumps(obj, separators=(",", ":")).encode())


def _flag(query: dict[str, list[str]], name: str) -> bool:
    value = _one(query, name)
    if value is None or value in ("true", "1"):
        return value is not None
    if value in ("false", "0"):
        return False
    raise _bad_request(f'invalid value "{value}" for query parameter {name}: must be true or false')


def _int(query: dict[str, list[str]], name: str, minimum: int) -> int | None:
    value = _one(query, name)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise _bad_request(
            f'invalid value "{value}" for query parameter {name}: must be an integer'
        ) from None
    if number < minimum:
        raise _bad_request(f"invalid value {number} for query parameter {name}: must be >= {minimum}")
    return number


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


class _Conn:
    """One client connection; ``busy`` while a response is being produced."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.busy = False

    def gone(self) -> bool:
        return self.reader.at_eof() or self.writer.is_closing()

    async def send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            self.writer.write(data)
            async with asyncio.timeout(WRITE_TIMEOUT):
                await self.writer.drain()

    async def next_event(self) -> h11.Event:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                assert not isinstance(event, type)  # PAUSED: we never pipeline, so it does not happen
                return event
            data = await self.reader.read(_READ_SIZE)
            self.h11.receive_data(data)


class LocalApi:
    """The edge's read-only Kubernetes API on loopback; see the module docstring (no authentication).

    ``node_status`` returns the last NodeStatus the edge computed, ``cloud_connected`` whether the tunnel
    is up, ``restart_pod`` restarts a pod's containers locally given its uid (without it, restart is 405).
    """

    name = "localapi"

    def __init__(
        self,
        meta: PodCache,
        edged: PodRuntime,
        node_name: str,
        *,
        node_status: Callable[[], JSONObject] | None = None,
        cloud_connected: Callable[[], bool] | None = None,
        restart_pod: Callable[[str], None] | None = None,
        metrics: Callable[[], tuple[str, bytes]] | None = None,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
    ) -> None:
        self.meta = meta
        self.edged = edged
        self.node_name = node_name
        self.host = host
        self._port = port
        self._node_status = node_status or dict
        self._cloud_connected = cloud_connected or (lambda: False)
        self._restart_pod = restart_pod
        self._metrics = metrics
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[Any], _Conn] = {}
        self._stopping = False

    @property
    def connections(self) -> int:
        """Client connections open now (diagnostics, tests)."""
        return len(self._conns)

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        return self._port

    async def start(self) -> None:
        if self._server is not None:
            return
        self._stopping = False
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self._port, limit=_READ_SIZE)
        except OSError as exc:
            raise LocalApiError(
                f"cannot serve the local API on {self.host}:{self._port}: {exc.strerror or exc}",
                host=self.host,
                port=self._port,
            ) from exc
        self._port = int(self._server.sockets[0].getsockname()[1])
        log.info("local API listening on http://%s:%d node=%s", self.host, self._port, self.node_name)

    async def stop(self) -> None:
        """Stop listening, end streaming responses cleanly (up to STOP_GRACE), close every connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        server.close()
        for task, conn in list(self._conns.items()):
            if not conn.busy:
                task.cancel()
        if self._conns:
            _done, pending = await asyncio.wait(list(self._conns), timeout=STOP_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
        await server.wait_closed()
        log.info("local API stopped node=%s", self.node_name)

    # -- connections --------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._stopping or len(self._conns) >= MAX_CONNECTIONS:
            if not self._stopping:
                log.warning("local API: more than %d connections; closing a new one", MAX_CONNECTIONS)
            writer.close()
            return
        conn = _Conn(reader, writer)
        self._conns[task] = conn
        try:
            await self._converse(conn)
        except (TimeoutError, ConnectionError) as exc:
            log.debug("local API connection ended: %r", exc)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
        except Exception:  # a failure mid-response (e.g. an unreadable log file): this connection only
            log.exception("local API connection failed")
        finally:
            self._conns.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _converse(self, conn: _Conn) -> None:
        while not self._stopping:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    request = await conn.next_event()
                    if isinstance(request, h11.ConnectionClosed):
                        return
                    assert isinstance(request, h11.Request)
                    # h11 bounds what it buffers for an incomplete head; a complete one may still be larger.
                    if (
                        len(request.target) + sum(len(k) + len(v) for k, v in request.headers)
                        > MAX_HEAD_BYTES
                    ):
                        raise _Reply(431, "RequestHeaderFieldsTooLarge", "request header fields too large")
                    body_size = 0
                    while not isinstance(event := await conn.next_event(), h11.EndOfMessage):
                        if isinstance(event, h11.Data):
                            body_size += len(event.data)
                        if body_size > MAX_BODY_BYTES:
                            raise _Reply(413, "RequestEntityTooLarge", "request body too large")
            except h11.RemoteProtocolError as exc:
                await self._refuse(conn, 400, "BadRequest", f"malformed HTTP request: {exc}")
                return
            except _Reply as reply:
                await self._refuse(conn, reply.code, reply.reason, reply.message)
                return
            conn.busy = True
            await self._respond(conn, request)
            conn.busy = False
            if conn.h11.our_state is h11.MUST_CLOSE or conn.h11.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.h11.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _refuse(self, conn: _Conn, code: int, reason: str, message: str) -> None:
        """Answer an unusable request and let the connection close."""
        log.info("local API refused a request: %s", message)
        if conn.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = json.dumps(_Reply(code, reason, message).status()).encode()
        with contextlib.suppress(h11.LocalProtocolError):
            await conn.send(
                h11.Response(status_code=code, headers=[*self._headers(body), ("Connection", "close")])
            )
            await conn.send(h11.Data(data=body))
            await conn.send(h11.EndOfMessage())
        # Lingering close: closing with unread input makes the kernel send a reset, which can destroy the
        # answer before the client reads it. Half-close, then discard what still arrives, briefly.
        with contextlib.suppress(OSError, TimeoutError):
            conn.writer.write_eof()
            async with asyncio.timeout(LINGER_SECONDS):
                while await conn.reader.read(_READ_SIZE):
                    pass

    def _headers(self, body: bytes | None, content_type: str = "application/json") -> list[tuple[str, str]]:
        headers = [
            ("Content-Type", content_type),
            (SOURCE_HEADER, "edge-cache"),
            (CONNECTED_HEADER, "true" if self._cloud_connected() else "false"),
            ("Cache-Control", "no-cache, private"),
        ]
        if body is not None:
            headers.append(("Content-Length", str(len(body))))
        return headers

    async def _respond(self, conn: _Conn, request: h11.Request) -> None:
        method = request.method.decode("ascii", "replace")
        target = request.target.decode("ascii", "replace")
        started = time.monotonic()
        try:
            request_headers = {k.lower(): v for k, v in request.headers}
            response = self._route(method, target, conn, request_headers)
        except _Reply as reply:
            response = _Response(reply.code, json.dumps(reply.status()).encode())
            if reply.code == 405:
                response.extra_headers = (("Allow", "GET, HEAD"),)
        except Exception as exc:
            log.exception("local API failed %s %s", method, target)
            status = _Reply(500, "InternalError", f"the edge could not serve the request: {exc}").status()
            response = _Response(500, json.dumps(status).encode())
        headers = self._headers(
            response.body if isinstance(response.body, bytes) else None, response.content_type
        )
        if self._stopping:
            headers.append(("Connection", "close"))
        await conn.send(
            h11.Response(status_code=response.status, headers=[*headers, *response.extra_headers])
        )
        body = response.body
        if isinstance(body, bytes):
            if method != "HEAD":  # h11 frames a HEAD response as having no body
                await conn.send(h11.Data(data=body))
        elif isinstance(body, Generator):
            try:
                for chunk in () if method == "HEAD" else body:  # each chunk: one bounded slice of reading
                    await conn.send(h11.Data(data=chunk))
                    await asyncio.sleep(0)
            finally:
                body.close()
        else:
            try:
                if method != "HEAD":
                    async for chunk in body:
                        await conn.send(h11.Data(data=chunk))
            finally:
                await body.aclose()
        await conn.send(h11.EndOfMessage())
        log.debug(
            "local API %s %s -> %d in %.1f ms",
            method,
            target,
            response.status,
            1e3 * (time.monotonic() - started),
        )

    # -- routes -------------------------------------------------------------------------------------

    def _route(
        self, method: str, target: str, conn: _Conn, headers: dict[bytes, bytes] | None = None
    ) -> _Response:
        url = urlsplit(target)
        query = parse_qs(url.query, keep_blank_values=True)
        parts = [unquote(p) for p in url.path.strip("/").split("/")] if url.path.strip("/") else []
        if (
            method == "POST"
            and len(parts) == 7
            and parts[:3] == ["api", "v1", "namespaces"]
            and parts[4] == "pods"
            and parts[6] == "restart"
        ):
            if (headers or {}).get(b"x-fleetops-request") != b"restart":
                # A browser page on this box can POST a plain form to localhost, but cannot add a header
                # without a CORS preflight we never answer: this keeps restarts to deliberate clients.
                raise _Reply(403, "Forbidden", "restart needs the header 'X-FleetOps-Request: restart'")
            return self._restart(parts[3], parts[5])
        if method not in ("GET", "HEAD"):
            allowed = _RESTART_PATH if self._restart_pod is not None else "none"
            raise _Reply(
                405,
                "MethodNotAllowed",
                f"{method} {url.path}: the edge's local API is read-only (the cloud owns the desired "
                f"state); allowed offline operations: {allowed}",
            )
        match parts:
            case ["healthz" | "livez"]:
                return _Response(200, b"ok", "text/plain; charset=utf-8")
            case ["readyz"]:
                if self.meta.is_open:
                    return _Response(200, b"ok", "text/plain; charset=utf-8")
                return _Response(503, b"the edge cache is not open", "text/plain; charset=utf-8")
            case ["version"]:
                return _json(self._version())
            case ["metrics"] if self._metrics is not None:
                content_type, body = self._metrics()
                return _Response(200, body, content_type)
            case ["api"]:
                return _json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
            case ["apis"]:
                return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
            case ["api", "v1"]:
                return _json(_RESOURCES)
            case ["api", "v1", "nodes"]:
                return _json(
                    {"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": [self._node()]}
                )
            case ["api", "v1", "nodes", name]:
                if name != self.node_name:
                    raise _not_found("nodes", name)
                return _json(self._node())
            case ["api", "v1", "pods"]:
                return _json(self._pod_list(None))
            case ["api", "v1", "namespaces", ns, "pods"]:
                return _json(self._pod_list(ns))
            case ["api", "v1", "namespaces", ns, "pods", name]:
                return _json(self._pod(ns, name))
            case ["api", "v1", "namespaces", ns, "pods", name, "log"]:
                return self._log(ns, name, query, conn)
            case ["apis", "devices.kubeedge.io", "v1beta1", "devices"]:
                return _json(self._device_list(None))
            case ["apis", "devices.kubeedge.io", "v1beta1", "namespaces", ns, "devices"]:
                return _json(self._device_list(ns))
            case ["apis", "devices.kubeedge.io", "v1beta1", "namespaces", ns, "devices", name]:
                return _json(self._device(ns, name))
            case ["apis", "devices.kubeedge.io", "v1beta1", "devicemodels"]:
                return _json(self._model_list(None))
            case ["apis", "devices.kubeedge.io", "v1beta1", "namespaces", ns, "devicemodels"]:
                return _json(self._model_list(ns))
            case ["apis", "devices.kubeedge.io", "v1beta1", "namespaces", ns, "devicemodels", name]:
                return _json(self._model(ns, name))
            case ["api", "v1", "events"]:
                return _json(self._event_list(None))
            case ["api", "v1", "namespaces", ns, "events"]:
                return _json(self._event_list(ns))
        raise _Reply(404, "NotFound", "the server could not find the requested resource")

    def _annotate(self, obj: JSONObject) -> JSONObject:
        meta = dict(obj.get("metadata") or {})
        meta["annotations"] = {
            **(meta.get("annotations") or {}),
            CONNECTED_ANNOTATION: "true" if self._cloud_connected() else "false",
        }
        return {**obj, "metadata": meta}

    def _node(self) -> JSONObject:
        return self._annotate(
            {
                "kind": "Node",
                "apiVersion": "v1",
                "metadata": {"name": self.node_name},
                "status": self._node_status(),
            }
        )

    def _with_status(self, pod: JSONObject) -> JSONObject:
        """The cached pod with the newest status this edge knows: Edged's live one, else the persisted one."""
        m = pod.get("metadata") or {}
        status = self.edged.status_of(str(m.get("uid", "")))
        if status is None:
            status = self.meta.status(f"{m.get('namespace', '')}/pod/{m.get('name', '')}")
        out = {"kind": "Pod", "apiVersion": "v1", **pod}
        if status is not None:
            out["status"] = status
        return self._annotate(out)

    def _pod_list(self, namespace: str | None) -> JSONObject:
        items = [
            self._with_status(p)
            for p in self.meta.objects("pod")
            if namespace is None or (p.get("metadata") or {}).get("namespace") == namespace
        ]
        return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}

    def _with_twin(self, dev: JSONObject) -> JSONObject:
        """A cached Device with the status this edge's DeviceTwin last computed (reported values, state),
        which is newer than the cloud's copy while the cloud is away."""
        m = dev.get("metadata") or {}
        out = {"kind": "Device", "apiVersion": _DEVICES_API, **dev}
        twin = self.meta.local(f"twin/{m.get('namespace', '')}/device/{m.get('name', '')}")
        if twin is not None:
            status = dict(out.get("status") or {})
            try:
                status["twins"] = status_twins(twins_from_json(twin.get("twins")))
            except ValidationError as exc:  # a damaged local copy: serve the cloud's status instead
                log.warning("local API: twin state of device %s unreadable: %s", m.get("name"), exc)
            if twin.get("state"):
                status["state"] = twin["state"]
            out["status"] = status
        return self._annotate(out)

    def _cached(self, type_: str, namespace: str | None) -> list[JSONObject]:
        return [
            obj
            for obj in self.meta.objects(type_)
            if namespace is None or (obj.get("metadata") or {}).get("namespace") == namespace
        ]

    def _device_list(self, namespace: str | None) -> JSONObject:
        items = [self._with_twin(dev) for dev in self._cached("device", namespace)]
        return {"kind": "DeviceList", "apiVersion": _DEVICES_API, "metadata": {}, "items": items}

    def _device(self, namespace: str, name: str) -> JSONObject:
        dev = self.meta.get(f"{namespace}/device/{name}")
        if dev is None:
            raise _not_found("devices", name, group=_DEVICES_GROUP, why=" on this edge")
        return self._with_twin(dev)

    def _model_list(self, namespace: str | None) -> JSONObject:
        items = [
            self._annotate({"kind": "DeviceModel", "apiVersion": _DEVICES_API, **obj})
            for obj in self._cached("devicemodel", namespace)
        ]
        return {"kind": "DeviceModelList", "apiVersion": _DEVICES_API, "metadata": {}, "items": items}

    def _model(self, namespace: str, name: str) -> JSONObject:
        """One DeviceModel as cached. The cloud sends a node only the models of its own devices, so a
        missing one may exist at the cloud: the message says so."""
        obj = self.meta.get(f"{namespace}/devicemodel/{name}")
        if obj is None:
            why = " in this edge's cache (it holds the models of this node's devices only)"
            raise _not_found("devicemodels", name, group=_DEVICES_GROUP, why=why)
        return self._annotate({"kind": "DeviceModel", "apiVersion": _DEVICES_API, **obj})

    def _event_list(self, namespace: str | None) -> JSONObject:
        """The pod Events this edge recorded that still wait in its outbox (what happened while the cloud
        was away); delivered ones are the cloud's to serve."""
        items = []
        for msg in self.meta.outbox():
            ns, _, rest = msg.resource.partition("/")
            type_, _, name = rest.partition("/")
            if type_ != "event" or (namespace is not None and ns != namespace):
                continue
            content = msg.content if isinstance(msg.content, dict) else {}
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(msg.timestamp / 1000))
            items.append(
                {
                    "kind": "Event",
                    "apiVersion": "v1",
                    "metadata": {"name": f"{name}.{msg.seq or msg.msg_id}", "namespace": ns},
                    "involvedObject": {
                        "kind": "Pod",
                        "namespace": ns,
                        "name": name,
                        "uid": content.get("uid"),
                    },
                    "type": content.get("type", "Normal"),
                    "reason": content.get("reason", ""),
                    "message": content.get("message", ""),
                    "source": {"component": "edged", "host": self.node_name},
                    "firstTimestamp": when,
                    "lastTimestamp": when,
                    "count": 1,
                }
            )
        return {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": items}

    def _find(self, namespace: str, name: str) -> JSONObject:
        pod = self.meta.get(f"{namespace}/pod/{name}")
        if pod is None:
            raise _not_found("pods", name)
        return pod

    def _pod(self, namespace: str, name: str) -> JSONObject:
        return self._with_status(self._find(namespace, name))

    def _restart(self, namespace: str, name: str) -> _Response:
        if self._restart_pod is None:
            raise _Reply(405, "MethodNotAllowed", "this edge does not offer restarting pods locally")
        pod = self._find(namespace, name)
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        self._restart_pod(uid)
        log.info("local API: restarting pod=%s/%s uid=%s on request", namespace, name, uid)
        return _json(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "message": f'restarting the containers of pod "{name}" locally',
                "reason": "Accepted",
                "details": {"name": name, "kind": "pods", "uid": uid},
                "code": 202,
            },
            202,
        )

    def _log(self, namespace: str, name: str, query: dict[str, list[str]], conn: _Conn) -> _Response:
        pod = self._with_status(self._find(namespace, name))
        spec = pod.get("spec") or {}
        names = [
            str(c.get("name", "")) for c in (*spec.get("initContainers", []), *spec.get("containers", []))
        ]
        container = _one(query, "container")
        if not container:
            main = [str(c.get("name", "")) for c in spec.get("containers", [])]
            if len(main) != 1:
                raise _bad_request(
                    f"a container name must be specified for pod {name}, choose one of: [{' '.join(main)}]"
                )
            container = main[0]
        elif container not in names:
            raise _bad_request(f"container {container} is not valid for pod {name}")
        follow_ = _flag(query, "follow")
        previous = _flag(query, "previous")
        options = LogOptions(
            tail_lines=_int(query, "tailLines", 0),
            timestamps=_flag(query, "timestamps"),
            limit_bytes=_int(query, "limitBytes", 1),
            since_time=self._since(query),
        )
        if previous:
            options = self._previous(pod, container, options)
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        path = self.edged.log_path(uid, container)
        if path is None:
            raise _bad_request(f'container "{container}" in pod "{name}" is not known to this edge yet')
        text = "text/plain; charset=utf-8"
        if follow_ and not previous:
            stream = follow(path, options, stop=lambda: self._stopping or conn.gone())
            return _Response(200, stream, text)
        return _Response(200, read_log(path, options), text)

    @staticmethod
    def _since(query: dict[str, list[str]]) -> float | None:
        seconds = _int(query, "sinceSeconds", 1)
        since_time = _one(query, "sinceTime")
        if seconds is not None and since_time is not None:
            raise _bad_request("at most one of sinceSeconds or sinceTime may be specified")
        if seconds is not None:
            return time.time() - seconds
        if since_time is not None:
            when = parse_time(since_time)
            if when is None:
                raise _bad_request(
                    f'invalid value "{since_time}" for query parameter sinceTime: must be RFC 3339'
                )
            return when
        return None

    @staticmethod
    def _previous(pod: JSONObject, container: str, options: LogOptions) -> LogOptions:
        """The previous instance's lines, selected by its run's time window (see edged.logs)."""
        status = pod.get("status") or {}
        for cs in (*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])):
            if cs.get("name") != container:
                continue
            term = (cs.get("lastState") or {}).get("terminated") or {}
            began, ended = (
                parse_time(str(term.get("startedAt") or "")),
                parse_time(str(term.get("finishedAt") or "")),
            )
            if began is not None and ended is not None:
                since = began if options.since_time is None else max(began, options.since_time)
                # The status times have second precision: the whole second the run ended in is included.
                return LogOptions(
                    options.tail_lines, since, ended + 1.0, options.timestamps, options.limit_bytes
                )
        name = (pod.get("metadata") or {}).get("name", "")
        raise _bad_request(f'previous terminated container "{container}" in pod "{name}" not found')

    @staticmethod
    def _version() -> JSONObject:
        machine = platform.machine().lower()
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
        major, minor = KUBELET_VERSION.removeprefix("v").split(".")[:2]
        return {
            "major": major,
            "minor": minor,
            "gitVersion": KUBELET_VERSION,
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "",
            "goVersion": f"python{platform.python_version()}",
            "compiler": "cpython",
            "platform": f"{platform.system().lower()}/{arch}",
        }


# Discovery: enough for a client to learn what this API serves (and that it is read-only).
_RESOURCES: JSONObject = {
    "kind": "APIResourceList",
    "apiVersion": "v1",
    "groupVersion": "v1",
    "resources": [
        {
            "name": "nodes",
            "singularName": "node",
            "namespaced": False,
            "kind": "Node",
            "verbs": ["get", "list"],
            "shortNames": ["no"],
        },
        {
            "name": "pods",
            "singularName": "pod",
            "namespaced": True,
            "kind": "Pod",
            "verbs": ["get", "list"],
            "shortNames": ["po"],
            "categories": ["all"],
        },
        {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
        {
            "name": "pods/restart",
            "singularName": "",
            "namespaced": True,
            "kind": "Status",
            "verbs": ["create"],
        },
    ],
}

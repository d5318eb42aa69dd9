"""``app.client``: the asynchronous client the TUI, the GUI and the tests use to talk to the FleetOps cloud.

The cloud speaks a subset of the Kubernetes API (``cloudservice/api/server.py``), so this is a small
Kubernetes client on aiohttp: one shared ``ClientSession`` per :class:`AsyncClient`, created lazily inside
the caller's running loop, TLS verified against the kubeconfig's CA, a bearer token on every request.
Nothing here blocks the event loop: the CA file is loaded in a worker thread and every request is awaited.

Layers, bottom up:

* ``_request`` / ``_open_stream``: one HTTP exchange. A non-2xx answer becomes a typed :class:`ApiError`
  built from the server's meta/v1 Status (``reason``, ``message``, ``details.causes``), so a UI can show
  "spec.replicas: Invalid value: -1: must be >= 0" next to the field; a transport failure becomes
  :class:`ConnectionFailed` naming the server. aiohttp exceptions never escape.
* CRUD by :class:`~app.resources.ResourceType`: ``get``, ``list``, ``create``, ``replace``, ``patch``
  (merge, strategic, json), ``delete``, ``scale``, and ``apply``.
* Streams: ``watch`` yields :class:`WatchEvent` objects from the ``?watch=true`` JSON-lines stream (an
  ``ERROR`` event raises the Status as an exception, e.g. :class:`Gone`); ``logs`` yields log lines.
  ``camera_frames`` yields a camera's :class:`~app.camera.CameraFrame` s over the Device's ``stream``
  subresource (a WebSocket of ``app.camera`` records). All are classes with ``aclose()`` and ``async
  with`` support rather than bare async generators, so breaking out of a loop and closing the stream is
  deterministic (no generator finaliser tasks).
* :class:`Reflector` (``AsyncClient.list_watch``): the informer pattern. It lists, emits a ``RESYNC``
  event carrying every item (a UI replaces its whole table), then watches from the list's resourceVersion.
  Bookmarks advance the resourceVersion silently; a dropped stream is resumed from the last
  resourceVersion after a jittered exponential backoff; a 410 Gone (the version fell out of the server's
  event window) relists and emits ``RESYNC`` again. It keeps the current objects in ``items``.

Deliberately not done: server-side apply (``apply`` is create-or-strategic-merge-patch of the fields
given, without kubectl's last-applied annotation, so it never removes fields), pagination
(``limit``/``continue``: the server returns whole lists), client certificates and exec/auth-provider
plugins from kubeconfig, protobuf, and exec/attach/port-forward (they need WebSocket routes the server
does not serve yet).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import quote

import aiohttp

from app.camera import MAX_RECORD_BYTES, CameraFrame, decode_frame
from app.clientmodels import (
    ContainerView,
    DeploymentView,
    NodeView,
    PodView,
    deployment_view,
    format_age,
    node_view,
    pod_view,
)
from app.errors import FleetOpsError, ValidationError
from app.kubeconfig import load_kubeconfig
from app.resources import DEVICES, PODS, JSONObject, ResourceType, by_kind

logger = logging.getLogger(__name__)

__all__ = [
    "AlreadyExists",
    "ApiError",
    "AsyncClient",
    "Backoff",
    "CameraFrame",
    "CameraStream",
    "ClientError",
    "Conflict",
    "ConnectionFailed",
    "ContainerView",
    "DeploymentView",
    "Forbidden",
    "Gone",
    "Invalid",
    "LineStream",
    "NodeView",
    "NotFound",
    "ObjectList",
    "PodView",
    "Reflector",
    "Reflectors",
    "StatusCause",
    "Unauthorized",
    "WatchEvent",
    "WatchStream",
    "api_error_from_status",
    "deployment_view",
    "format_age",
    "node_view",
    "pod_view",
]

# Timeouts for ordinary requests: connecting over a flaky LTE link may take a while, but a request that
# has not answered in 30 s is treated as a failed connection rather than left hanging in a UI.
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_REQUEST_TIMEOUT = 30.0
# A single watch line is one object; the server refuses bodies over 3 MiB, so 16 MiB is a safe ceiling
# that still stops a runaway stream from eating memory.
MAX_LINE_BYTES = 16 * 1024 * 1024
# Reflector watches end after 5-10 minutes (randomised, like client-go) and are re-opened from the last
# resourceVersion, so a half-open TCP connection (LTE dropping without a RST) is noticed within that time.
WATCH_TIMEOUT_MIN = 300
WATCH_TIMEOUT_MAX = 600

# Servers send a bookmark about once a minute to watches that ask for them, so three minutes without a
# byte means a dead connection (a server that sends no bookmarks only costs a harmless resume).
WATCH_READ_TIMEOUT = 180.0

PatchType = Literal["merge", "strategic", "json"]
# A Device's telemetry history: the window summaries of each property, oldest first.
DeviceHistory = dict[str, list[JSONObject]]
_PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}
Propagation = Literal["Background", "Foreground", "Orphan"]
EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "RESYNC"]
_EVENT_TYPES: frozenset[str] = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK"})


# -- errors -----------------------------------------------------------------------------------------------


class ClientError(FleetOpsError):
    """Root of every error :mod:`app.client` raises."""


class ConnectionFailed(ClientError):
    """The server could not be reached, or the connection broke mid-request or mid-stream."""

    def __init__(self, server: str, message: str) -> None:
        super().__init__(f"cannot reach {server}: {message}")
        self.server = server
        self.message = message


@dataclass(frozen=True, slots=True)
class StatusCause:
    """One ``details.causes`` entry of a Status: the offending field and what is wrong with it."""

    field: str
    message: str
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class ApiError(ClientError):
    """The server refused a request; the fields are those of its meta/v1 Status."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        causes: tuple[StatusCause, ...] = (),
        *,
        name: str = "",
        kind: str = "",
        group: str = "",
        status: JSONObject | None = None,
    ) -> None:
        super().__init__(message or reason or f"HTTP {code}")
        self.code = code
        self.reason = reason
        self.message = message
        self.causes = causes
        self.name = name
        self.kind = kind
        self.group = group
        self.status: JSONObject = status or {}

    @property
    def field_errors(self) -> list[str]:
        """One ``field: message`` line per cause, ready for a form or a notification."""
        return [str(c) for c in self.causes]


class NotFound(ApiError):
    """404: the object (or its namespace) does not exist."""


class AlreadyExists(ApiError):
    """409 AlreadyExists: a create found an object with that name."""


class Conflict(ApiError):
    """409 Conflict: the object changed since it was read (resourceVersion mismatch); re-read and retry."""


class Invalid(ApiError):
    """422 Invalid: the manifest failed validation; ``causes`` names each field."""


class Unauthorized(ApiError):
    """401: the token is missing, wrong or expired."""


class Forbidden(ApiError):
    """403: the request is not allowed (e.g. deleting a system namespace)."""


class Gone(ApiError):
    """410: the requested resourceVersion is older than the server's event window; relist."""


_BY_REASON: dict[str, type[ApiError]] = {
    "NotFound": NotFound,
    "AlreadyExists": AlreadyExists,
    "Conflict": Conflict,
    "Invalid": Invalid,
    "Unauthorized": Unauthorized,
    "Forbidden": Forbidden,
    "Expired": Gone,
    "Gone": Gone,
}
_BY_CODE: dict[int, type[ApiError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
}


def api_error_from_status(code: int, body: Any, http_reason: str = "") -> ApiError:
    """The typed error for an HTTP ``code`` and a body that may be a meta/v1 Status (or anything else)."""
    status: JSONObject = body if isinstance(body, dict) and body.get("kind") == "Status" else {}
    status_code = status.get("code")
    if isinstance(status_code, int) and not isinstance(status_code, bool) and status_code >= 400:
        code = status_code
    reason = str(status.get("reason") or http_reason or "")
    if status:
        message = str(status.get("message") or "")
    elif isinstance(body, str):
        message = body.strip()[:500]
    else:
        message = ""
    details = _dict(status.get("details"))
    causes = tuple(
        StatusCause(str(c.get("field") or ""), str(c.get("message") or ""), str(c.get("reason") or ""))
        for c in (details.get("causes") or [])
        if isinstance(c, dict)
    )
    cls = _BY_REASON.get(reason) or _BY_CODE.get(code, ApiError)
    return cls(
        code,
        reason,
        message,
        causes,
        name=str(details.get("name") or ""),
        kind=str(details.get("kind") or ""),
        group=str(details.get("group") or ""),
        status=status or None,
    )


# -- values -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ObjectList:
    """A list answer: the items and the resourceVersion to watch from."""

    items: tuple[JSONObject, ...]
    resource_version: str
    raw: JSONObject = field(repr=False, compare=False, default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One event of a watch.

    ``type`` is ADDED, MODIFIED or DELETED with the object; BOOKMARK (only from :meth:`AsyncClient.watch`
    with ``allow_bookmarks``) carries just ``metadata.resourceVersion``. RESYNC comes only from a
    :class:`Reflector`: ``items`` holds the whole current state and ``object`` the list's JSON (its
    ``metadata.resourceVersion``); a UI replaces its table with ``items``.
    """

    type: EventType
    object: JSONObject
    items: tuple[JSONObject, ...] = ()

    @property
    def resource_version(self) -> str:
        m = self.object.get("metadata")
        return str(m.get("resourceVersion") or "") if isinstance(m, dict) else ""


def _dict(value: Any) -> JSONObject:
    return value if isinstance(value, dict) else {}


def _key(obj: JSONObject) -> tuple[str, str]:
    m = _dict(obj.get("metadata"))
    return str(m.get("namespace") or ""), str(m.get("name") or "")


@dataclass
class Backoff:
    """Jittered exponential backoff: ``initial * factor**attempt`` capped at ``maximum``, then scaled by a
    random factor in ``[1 - jitter, 1]`` so that many UIs reconnecting after a cloud restart spread out."""

    initial: float = 0.2
    maximum: float = 10.0
    factor: float = 2.0
    jitter: float = 0.5
    attempt: int = 0
    rand: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        base = min(self.maximum, self.initial * self.factor ** min(self.attempt, 64))
        self.attempt += 1
        return base * (1.0 - self.jitter * self.rand.random())

    def reset(self) -> None:
        self.attempt = 0


# -- streams ----------------------------------------------------------------------------------------------


class LineStream:
    """Lines of a streamed HTTP answer (without the trailing newline). Opened on first use; close it with
    ``aclose()`` or ``async with``. Transport failures mid-stream raise :class:`ConnectionFailed`."""

    def __init__(
        self,
        client: AsyncClient,
        path: str,
        params: Mapping[str, str],
        *,
        accept: str = "",
        read_timeout: float | None = None,
    ) -> None:
        self._client = client
        self._path = path
        self._params = dict(params)
        self._accept = accept
        self._read_timeout = read_timeout
        self._resp: aiohttp.ClientResponse | None = None
        self._buf = bytearray()
        self._eof = False
        self._closed = False

    async def open(self) -> None:
        """Send the request now (otherwise the first ``__anext__`` does); raises the server's error."""
        if self._resp is None and not self._closed:
            self._resp = await self._client._open_stream(
                self._path, self._params, accept=self._accept, read_timeout=self._read_timeout
            )

    async def _next_line(self) -> bytes | None:
        await self.open()
        if self._resp is None:
            return None
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return line
            if self._eof:
                if self._buf:
                    line = bytes(self._buf)
                    self._buf.clear()
                    return line
                return None
            try:
                chunk = await self._resp.content.readany()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ConnectionFailed(self._client.server, f"stream {self._path} broke: {exc!r}") from exc
            if not chunk:
                self._eof = True
            else:
                self._buf += chunk
                if len(self._buf) > MAX_LINE_BYTES:
                    raise ClientError(f"stream {self._path}: a line exceeds {MAX_LINE_BYTES} bytes")

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> str:
        line = await self._next_line()
        if line is None:
            await self.aclose()
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace").removesuffix("\r")

    async def aclose(self) -> None:
        self._closed = True
        resp, self._resp = self._resp, None
        if resp is not None:
            if self._eof:
                resp.release()
            else:
                resp.close()  # mid-stream: the connection cannot go back to the pool

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class WatchStream:
    """The events of one watch request. An ``ERROR`` event raises the Status it carries (:class:`Gone`
    for an expired resourceVersion); the server ending the watch ends the iteration."""

    def __init__(self, lines: LineStream) -> None:
        self._lines = lines

    async def open(self) -> None:
        await self._lines.open()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> WatchEvent:
        while True:
            line = await self._lines.__anext__()
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError as exc:
                raise ClientError(f"watch stream sent invalid JSON: {line[:200]!r}") from exc
            kind = doc.get("type") if isinstance(doc, dict) else None
            obj = doc.get("object") if isinstance(doc, dict) else None
            if not isinstance(obj, dict):
                raise ClientError(f"watch stream sent an event without an object: {line[:200]!r}")
            if kind == "ERROR":
                await self.aclose()
                raise api_error_from_status(int(obj.get("code") or 500), obj)
            if kind not in _EVENT_TYPES:
                raise ClientError(f"watch stream sent an unknown event type {kind!r}")
            return WatchEvent(kind, obj)

    async def aclose(self) -> None:
        await self._lines.aclose()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


# -- the client -------------------------------------------------------------------------------------------


class CameraStream:
    """A camera's live frames (``AsyncClient.camera_frames``), newest first-come: the server sends the
    newest frame whenever the previous one has been taken, so a consumer that is slow gets fewer frames,
    never late ones. Ends with the server's Status as an :class:`ApiError` (an offline node, a camera
    that sends nothing) or :class:`ConnectionFailed`."""

    def __init__(self, client: AsyncClient, path: str, params: Mapping[str, str]) -> None:
        self._client = client
        self._path = path
        self._params = dict(params)
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def open(self) -> None:
        if self._ws is not None:
            return
        client = self._client
        session = await client._get_session()
        try:
            self._ws = await session.ws_connect(
                client.server + self._path,
                params=self._params,
                heartbeat=30.0,
                max_msg_size=MAX_RECORD_BYTES,
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise api_error_from_status(exc.status, None, exc.message) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise client._fail("GET", self._path, exc) from exc

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> CameraFrame:
        await self.open()
        assert self._ws is not None
        try:
            msg = await self._ws.receive()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._client._fail("GET", self._path, exc) from exc
        if msg.type == aiohttp.WSMsgType.BINARY:
            try:
                return decode_frame(msg.data)
            except ValidationError as exc:
                raise ClientError(f"camera stream {self._path}: bad frame: {exc}") from exc
        if msg.type == aiohttp.WSMsgType.TEXT:
            status = _decode(msg.data.encode())
            code = status.get("code", 500) if isinstance(status, dict) else 500
            raise api_error_from_status(int(code) if isinstance(code, int) else 500, status)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            raise StopAsyncIteration
        raise self._client._fail("GET", self._path, ConnectionError(f"websocket: {msg.type.name}"))

    async def aclose(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class AsyncClient:
    """A connection to one FleetOps cloud (or any Kubernetes API server serving these kinds).

    ``namespace`` is the default for namespaced calls that pass ``namespace=""`` (the kubeconfig
    context's namespace with :meth:`from_kubeconfig`). Use as ``async with`` or call :meth:`aclose`.
    """

    def __init__(
        self,
        server: str,
        token: str = "",
        *,
        ca_file: str | os.PathLike[str] | None = None,
        insecure: bool = False,
        namespace: str = "default",
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self.server = server.rstrip("/")
        self.namespace = namespace
        self._token = token
        self._ca_file = os.fspath(ca_file) if ca_file is not None else None
        self._insecure = insecure
        self._request_timeout = request_timeout
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None
        self._session_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    def from_kubeconfig(
        cls, path: str | os.PathLike[str], context: str | None = None, **kwargs: Any
    ) -> AsyncClient:
        """A client for ``context`` (default: current-context) of a kubeconfig file (one small read).

        Raises ``app.kubeconfig.KubeconfigError`` when the file or the context is unusable."""
        kc = load_kubeconfig(path, context)
        kwargs.setdefault("namespace", kc.namespace)
        return cls(
            kc.server,
            kc.token,
            ca_file=kc.certificate_authority,
            insecure=kc.insecure_skip_tls_verify,
            **kwargs,
        )

    # -- lifecycle ------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the shared session; open streams break with :class:`ConnectionFailed`."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ClientError("the client is closed")
        if self._session is None:
            async with self._session_lock:
                if self._session is None:
                    ssl_arg: ssl.SSLContext | bool
                    if self._insecure:
                        ssl_arg = False
                    elif self._ca_file is not None:
                        try:
                            ssl_arg = await asyncio.to_thread(
                                ssl.create_default_context, cafile=self._ca_file
                            )
                        except (OSError, ssl.SSLError) as exc:
                            raise ClientError(f"cannot load CA file {self._ca_file}: {exc}") from exc
                    else:
                        ssl_arg = True
                    headers = {"Accept": "application/json", "User-Agent": "fleetops-client"}
                    if self._token:
                        headers["Authorization"] = f"Bearer {self._token}"
                    self._session = aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(ssl=ssl_arg),
                        headers=headers,
                        timeout=aiohttp.ClientTimeout(
                            total=self._request_timeout, sock_connect=self._connect_timeout
                        ),
                    )
        return self._session

    # -- HTTP -----------------------------------------------------------------------------------------

    def _fail(self, method: str, path: str, exc: BaseException) -> ConnectionFailed:
        what = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
        return ConnectionFailed(self.server, f"{method} {path}: {what}")

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """One request; the decoded JSON answer, or a typed error."""
        session = await self._get_session()
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": content_type} if data is not None else {}
        # A GET is retried once when a pooled keep-alive connection turns out to be dead (the cloud
        # restarted since it was opened); writes are never retried, so a create cannot happen twice.
        attempts = 2 if method == "GET" else 1
        for attempt in range(attempts):
            try:
                async with session.request(
                    method, self.server + path, params=params, data=data, headers=headers
                ) as resp:
                    raw = await resp.read()
                    if resp.status >= 400:
                        raise api_error_from_status(resp.status, _decode(raw), resp.reason or "")
                    if not raw:
                        return None
                    try:
                        return json.loads(raw)
                    except ValueError as exc:
                        raise ClientError(f"{method} {path}: the server answered invalid JSON") from exc
            except aiohttp.ServerDisconnectedError as exc:
                if attempt + 1 < attempts:
                    logger.debug("retrying %s %s after a dropped pooled connection", method, path)
                    continue
                raise self._fail(method, path, exc) from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise self._fail(method, path, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _open_stream(
        self, path: str, params: Mapping[str, str], *, accept: str = "", read_timeout: float | None = None
    ) -> aiohttp.ClientResponse:
        """A GET whose body is read incrementally: no total timeout, errors raised before the first byte."""
        session = await self._get_session()
        headers = {"Accept": accept} if accept else {}
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._connect_timeout, sock_read=read_timeout
        )
        try:
            resp = await session.get(self.server + path, params=params, headers=headers, timeout=timeout)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._fail("GET", path, exc) from exc
        if resp.status >= 400:
            try:
                raw = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise self._fail("GET", path, exc) from exc
            finally:
                resp.release()
            raise api_error_from_status(resp.status, _decode(raw), resp.reason or "")
        return resp

    # -- paths ----------------------------------------------------------------------------------------

    def _ns(self, rt: ResourceType, namespace: str | None) -> str | None:
        if not rt.namespaced:
            return None
        return namespace or self.namespace

    @staticmethod
    def _path(rt: ResourceType, namespace: str | None, name: str = "", sub: str = "") -> str:
        root = f"/apis/{rt.group}/{rt.version}" if rt.group else f"/api/{rt.version}"
        path = root
        if rt.namespaced and namespace:
            path += f"/namespaces/{quote(namespace, safe='')}"
        path += f"/{rt.plural}"
        if name:
            path += f"/{quote(name, safe='')}"
        if sub:
            path += f"/{sub}"
        return path

    def _object_path(self, rt: ResourceType, name: str, namespace: str, sub: str = "") -> str:
        if not name:
            raise ClientError(f"a {rt.kind} name is required")
        return self._path(rt, self._ns(rt, namespace), name, sub)

    @staticmethod
    def _selectors(label_selector: str, field_selector: str) -> dict[str, str]:
        params: dict[str, str] = {}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        return params

    # -- CRUD -----------------------------------------------------------------------------------------

    async def get(self, rt: ResourceType, name: str, namespace: str = "") -> JSONObject:
        return _obj(await self._request("GET", self._object_path(rt, name, namespace)))

    async def list(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
    ) -> ObjectList:
        """Objects of a kind; ``namespace=None`` lists all namespaces (unlike the single-object calls,
        where "" means the client's default namespace)."""
        path = self._path(rt, namespace if rt.namespaced else None)
        doc = _obj(await self._request("GET", path, params=self._selectors(label_selector, field_selector)))
        items = tuple(i for i in (doc.get("items") or []) if isinstance(i, dict))
        for item in items:  # list items omit apiVersion/kind, as in Kubernetes; fill them for callers
            item.setdefault("apiVersion", rt.api_version)
            item.setdefault("kind", rt.kind)
        meta = _dict(doc.get("metadata"))
        return ObjectList(items, str(meta.get("resourceVersion") or ""), doc)

    async def create(self, rt: ResourceType, obj: JSONObject) -> JSONObject:
        ns = self._ns(rt, _key(obj)[0])
        return _obj(await self._request("POST", self._path(rt, ns), body=obj))

    async def replace(self, rt: ResourceType, obj: JSONObject) -> JSONObject:
        """PUT the whole object; with ``metadata.resourceVersion`` set, :class:`Conflict` if it changed."""
        ns, name = _key(obj)
        return _obj(await self._request("PUT", self._object_path(rt, name, ns), body=obj))

    async def patch(
        self,
        rt: ResourceType,
        name: str,
        patch: Any,
        namespace: str = "",
        *,
        type: PatchType = "merge",
        subresource: str = "",
    ) -> JSONObject:
        """PATCH with a JSON merge patch (RFC 7386), a strategic merge patch (lists merged by key, e.g.
        containers by name) or a JSON patch (RFC 6902, a list of operations)."""
        try:
            content_type = _PATCH_CONTENT_TYPES[type]
        except KeyError as exc:
            raise ClientError(f"unknown patch type {type!r}: use merge, strategic or json") from exc
        path = self._object_path(rt, name, namespace, subresource)
        return _obj(await self._request("PATCH", path, body=patch, content_type=content_type))

    async def delete(
        self,
        rt: ResourceType,
        name: str,
        namespace: str = "",
        *,
        grace_period: int | None = None,
        propagation: Propagation = "Background",
    ) -> JSONObject:
        """Delete; answers the deleted object, or the object marked with ``deletionTimestamp`` when it
        still has a grace period (a running pod) or finalizers."""
        options: JSONObject = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        if grace_period is not None:
            options["gracePeriodSeconds"] = grace_period
        return _obj(await self._request("DELETE", self._object_path(rt, name, namespace), body=options))

    async def apply(self, obj: JSONObject) -> JSONObject:
        """Create ``obj``, or when it already exists, strategic-merge-patch the fields it gives.

        This is NOT server-side apply and not kubectl's three-way apply: fields absent from ``obj`` are
        left as they are on the server (nothing is ever removed), and no field ownership is tracked. A
        ``metadata.resourceVersion`` in ``obj`` makes the patch conditional (:class:`Conflict`).

        It reads the object first rather than trying the create: the server validates a create before it
        checks for an existing name, so a partial manifest ("just replicas") would fail as Invalid. A
        create that loses a race with another creator falls back to the patch (AlreadyExists)."""
        rt = by_kind(str(obj.get("apiVersion") or ""), str(obj.get("kind") or ""))
        if rt is None:
            raise ClientError(f"unknown kind {obj.get('kind')!r} in apiVersion {obj.get('apiVersion')!r}")
        ns, name = _key(obj)
        if not name:
            return await self.create(rt, obj)  # generateName: always a new object
        try:
            await self.get(rt, name, ns)
        except NotFound:
            try:
                return await self.create(rt, obj)
            except AlreadyExists:
                logger.debug("apply: %s %s/%s was created meanwhile, patching", rt.kind, ns, name)
        return await self.patch(rt, name, obj, ns, type="strategic")

    async def scale(self, rt: ResourceType, name: str, replicas: int, namespace: str = "") -> JSONObject:
        """Set ``spec.replicas`` through the ``/scale`` subresource; answers the autoscaling/v1 Scale."""
        return await self.patch(
            rt, name, {"spec": {"replicas": replicas}}, namespace, type="merge", subresource="scale"
        )

    # -- streams --------------------------------------------------------------------------------------

    def watch(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        resource_version: str | None = None,
        allow_bookmarks: bool = False,
        timeout_seconds: int | None = None,
        read_timeout: float | None = None,
    ) -> WatchStream:
        """Watch a kind. Without ``resource_version`` the server first sends the current objects as ADDED;
        with one, the changes after it (:class:`Gone` when it is too old). ``read_timeout`` breaks the
        stream (:class:`ConnectionFailed`) after that many seconds without a byte."""
        params = {"watch": "true", **self._selectors(label_selector, field_selector)}
        if resource_version is not None:
            params["resourceVersion"] = resource_version
        if allow_bookmarks:
            params["allowWatchBookmarks"] = "true"
        if timeout_seconds is not None:
            params["timeoutSeconds"] = str(timeout_seconds)
        path = self._path(rt, namespace if rt.namespaced else None)
        return WatchStream(LineStream(self, path, params, read_timeout=read_timeout))

    def list_watch(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        backoff: Backoff | None = None,
    ) -> Reflector:
        """An informer-style :class:`Reflector`: RESYNC with every item, then changes, forever."""
        return Reflector(
            self,
            rt,
            namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            backoff=backoff,
        )

    def logs(
        self,
        name: str,
        namespace: str = "",
        *,
        container: str | None = None,
        follow: bool = False,
        tail_lines: int | None = None,
        since_seconds: int | None = None,
        timestamps: bool = False,
    ) -> LineStream:
        """A pod's log (``GET /api/v1/namespaces/{ns}/pods/{name}/log``) line by line; with ``follow`` the
        stream stays open for new lines until the container ends or the stream is closed."""
        params: dict[str, str] = {}
        if container:
            params["container"] = container
        if follow:
            params["follow"] = "true"
        if tail_lines is not None:
            params["tailLines"] = str(tail_lines)
        if since_seconds is not None:
            params["sinceSeconds"] = str(since_seconds)
        if timestamps:
            params["timestamps"] = "true"
        path = self._object_path(PODS, name, namespace, "log")
        return LineStream(self, path, params, accept="text/plain, */*")

    async def device_history(
        self, name: str, namespace: str = "", *, since_ms: int | None = None
    ) -> DeviceHistory:
        """A Device's telemetry windows per property (``.../devices/{name}/history``: ``start``, ``end``,
        ``min``, ``max``, ``mean``, ``count``, ``last``), only those that ended after ``since_ms``; {}
        when the cloud has none for it yet."""
        params = {"sinceMs": str(since_ms)} if since_ms is not None else None
        try:
            doc = await self._request(
                "GET", self._object_path(DEVICES, name, namespace, "history"), params=params
            )
        except NotFound:
            return {}
        series = doc.get("series") if isinstance(doc, dict) else None
        if not isinstance(series, dict):
            return {}
        return {
            str(k): [p for p in v if isinstance(p, dict)] for k, v in series.items() if isinstance(v, list)
        }

    async def node_metrics(self) -> JSONObject:
        """``kubectl top nodes``' source: the metrics.k8s.io NodeMetricsList (usage per node)."""
        return _obj(await self._request("GET", "/apis/metrics.k8s.io/v1beta1/nodes"))

    def camera_frames(self, name: str, namespace: str = "", *, overlay: bool = False) -> CameraStream:
        """A camera Device's live frames (``.../devices/{name}/stream``, WebSocket); with ``overlay`` the
        inference workload's frames with its results drawn on them."""
        path = self._object_path(DEVICES, name, namespace, "stream")
        return CameraStream(self, path, {"overlay": "1"} if overlay else {})


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")


def _obj(value: Any) -> JSONObject:
    if not isinstance(value, dict):
        raise ClientError(f"expected a JSON object from the server, got {type(value).__name__}")
    return value


# -- reflector --------------------------------------------------------------------------------------------


class Reflector:
    """List, then watch from the list's resourceVersion, forever: the informer pattern for UIs.

    Iterating yields a ``RESYNC`` event first (``items``: everything that matches) and then ADDED,
    MODIFIED and DELETED events. ``items`` (keyed by ``(namespace, name)``) and ``resource_version``
    always reflect what has been yielded. Behaviour on trouble:

    * the stream ends or breaks (server timeout, cloud restart, network): re-watch from
      ``resource_version`` after a jittered exponential backoff (reset once an event arrives);
    * 410 Gone (``resource_version`` fell out of the server's event window): relist and yield ``RESYNC``;
    * BOOKMARK events update ``resource_version`` and are not yielded;
    * any other :class:`ApiError` (e.g. :class:`Unauthorized`) is raised: retrying cannot fix it.

    ``connected`` and ``last_error`` tell a UI whether to show a "reconnecting" banner; ``connected`` is
    set as soon as a list or a watch request is answered.
    """

    def __init__(
        self,
        client: AsyncClient,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        backoff: Backoff | None = None,
        watch_timeout: tuple[int, int] = (WATCH_TIMEOUT_MIN, WATCH_TIMEOUT_MAX),
    ) -> None:
        self.client = client
        self.rt = rt
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.backoff = backoff or Backoff()
        self.watch_timeout = watch_timeout
        self.items: dict[tuple[str, str], JSONObject] = {}
        self.resource_version = ""
        self.relists = 0
        self.connected = False
        self.last_error: ClientError | None = None
        self._stream: WatchStream | None = None
        self._need_list = True
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> WatchEvent:
        while not self._closed:
            if self._need_list:
                event = await self._relist()
                if event is not None:
                    return event
                continue
            try:
                if self._stream is None:
                    self._stream = self.client.watch(
                        self.rt,
                        self.namespace,
                        label_selector=self.label_selector,
                        field_selector=self.field_selector,
                        resource_version=self.resource_version,
                        allow_bookmarks=True,
                        timeout_seconds=random.randint(*self.watch_timeout),
                        read_timeout=WATCH_READ_TIMEOUT,
                    )
                    # The server answered the watch: connected now, not at the next change (a quiet
                    # fleet after a cloud restart would otherwise look "reconnecting" for a minute).
                    await self._stream.open()
                    self.connected, self.last_error = True, None
                ev = await self._stream.__anext__()
            except StopAsyncIteration:
                logger.debug("watch of %s ended at %s; resuming", self.rt.plural, self.resource_version)
                await self._drop_stream()
                continue
            except Gone as exc:
                logger.info("watch of %s: %s; relisting", self.rt.plural, exc.message)
                await self._drop_stream()
                self._need_list = True
                continue
            except ConnectionFailed as exc:
                await self._drop_stream()
                await self._pause(exc)
                continue
            except ApiError as exc:
                if exc.code < 500:
                    raise
                await self._drop_stream()
                await self._pause(exc)
                continue
            self.connected, self.last_error = True, None
            self.backoff.reset()
            if ev.resource_version:
                self.resource_version = ev.resource_version
            if ev.type == "BOOKMARK":
                continue
            if ev.type == "DELETED":
                self.items.pop(_key(ev.object), None)
            else:
                self.items[_key(ev.object)] = ev.object
            return ev
        raise StopAsyncIteration

    async def _relist(self) -> WatchEvent | None:
        try:
            lst = await self.client.list(
                self.rt,
                self.namespace,
                label_selector=self.label_selector,
                field_selector=self.field_selector,
            )
        except ConnectionFailed as exc:
            await self._pause(exc)
            return None
        except ApiError as exc:
            if exc.code < 500:
                raise
            await self._pause(exc)
            return None
        self._need_list = False
        self.connected, self.last_error = True, None
        self.relists += 1
        self.resource_version = lst.resource_version
        self.items = {_key(o): o for o in lst.items}
        list_obj: JSONObject = {
            "apiVersion": self.rt.api_version,
            "kind": self.rt.list_kind,
            "metadata": {"resourceVersion": lst.resource_version},
        }
        return WatchEvent("RESYNC", list_obj, lst.items)

    async def _pause(self, exc: ClientError) -> None:
        self.connected, self.last_error = False, exc
        delay = self.backoff.next_delay()
        logger.warning("reflector for %s: %s; retrying in %.1fs", self.rt.plural, exc, delay)
        await asyncio.sleep(delay)

    async def _drop_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()

    async def aclose(self) -> None:
        self._closed = True
        await self._drop_stream()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


LinkState = Literal["connecting", "connected", "reconnecting", "unreachable", "failed"]


class Reflectors:
    """The reflectors a UI runs over one client (one per kind it shows) and the state of its link to the
    cloud they add up to, for a header or a status bar: ``failed`` (a watch raised an error no retry can
    fix, e.g. 401: :attr:`failed`), ``reconnecting`` (a reflector is retrying after having been connected),
    ``unreachable`` (never reached the cloud yet), ``connected`` (every reflector is), else
    ``connecting``. :meth:`state` answers it with the error to show."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.by_key: dict[str, Reflector] = {}
        self.failed: ClientError | None = None

    def watch(self, key: str, rt: ResourceType) -> _TrackedReflector:
        """A reflector over all namespaces of ``rt``, known as ``key``; iterate it for its events."""
        reflector = self.client.list_watch(rt)
        self.by_key[key] = reflector
        return _TrackedReflector(reflector, self)

    def state(self) -> tuple[LinkState, ClientError | None]:
        if self.failed is not None:
            return "failed", self.failed
        reflectors = list(self.by_key.values())
        errors = [r.last_error for r in reflectors if r.last_error is not None]
        if errors:
            ever = any(r.relists for r in reflectors)
            return ("reconnecting" if ever else "unreachable"), errors[0]
        if reflectors and all(r.connected for r in reflectors):
            return "connected", None
        return "connecting", None

    async def aclose(self) -> None:
        for r in list(self.by_key.values()):
            await r.aclose()


class _TrackedReflector:
    """A reflector's events, noting a permanent failure (a watch that raised) on its :class:`Reflectors`."""

    def __init__(self, inner: Reflector, owner: Reflectors) -> None:
        self._inner = inner
        self._owner = owner

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> WatchEvent:
        try:
            ev = await self._inner.__anext__()
        except ClientError as exc:
            self._owner.failed = exc
            raise
        self._owner.failed = None
        return ev

    async def aclose(self) -> None:
        await self._inner.aclose()

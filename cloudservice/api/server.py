"""CloudCore's Kubernetes-compatible HTTP API, on aiohttp.

Why aiohttp: one mature asyncio stack gives us HTTP/1.1 with chunked streaming responses (watch),
WebSocket upgrades (exec, attach and port-forward use them later), a client for our own ``app.client``, and
direct access to the TLS transport, so the security work can read client certificates for node and admin
authentication -- which ASGI servers such as uvicorn do not expose.

Shape of a request. One catch-all route per API root (``/api/v1/...``, ``/apis/{group}/{version}/...``)
parses the path into a :class:`Target` (resource type, namespace, name, subresource) and dispatches on the
verb. Every write runs the kind's strategy (``strategy.py``: defaults, validation, what may change) before
the store sees it, and read-modify-writes run inside ``Store.guaranteed_update``, so a rejected write leaves
the store untouched. Errors of every kind leave as a meta/v1 Status (``status.py``) from one middleware.

Watch. ``?watch=true`` streams ``{"type", "object"}`` JSON lines over chunked encoding. A pump task relays
the store's watch into a bounded queue; the handler applies the request's selectors (an object that stops
matching is sent as DELETED, one that starts matching as ADDED, as the apiserver does), writes BOOKMARK
events when asked, and ends at ``timeoutSeconds``, on server shutdown, or when the client goes away
(aiohttp cancels the handler: :class:`ApiServer` runs with ``handler_cancellation=True``). A resourceVersion
older than the event log answers an ERROR event carrying a 410 Expired Status, as the apiserver does
mid-stream.

Deliberately not done: server-side apply (``application/apply-patch+yaml`` answers 415 with a message;
kubectl's default client-side apply works), OpenAPI schemas (``openapi.py`` publishes only what makes
kubectl leave validation to the server; ``/openapi/v2`` answers 404),
aggregated discovery (legacy discovery is answered; see ``discovery.py``), protobuf beyond the request
bodies of the kinds kubectl's ``create`` subcommands send (``kprotobuf.py``; responses are JSON), pagination
(``limit``/``continue`` are accepted and the whole list is returned), cascading deletion (garbage
collection of owned objects belongs to the controllers; ``propagationPolicy`` is validated and ignored),
authorization beyond "a known bearer token", and the namespace lifecycle controller (deleting a namespace
deletes what is in it, pods gracefully, then the namespace itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from app.patch import PatchError, json_merge_patch, json_patch, strategic_merge_patch
from app.resources import ALL, DEVICEMODELS, DEVICES, NAMESPACES, PODS, JSONObject, ResourceType, by_plural
from cloudservice.api import (
    camerastream,
    discovery,
    historyapi,
    kprotobuf,
    metricsapi,
    openapi,
    strategy,
    tables,
)
from cloudservice.api.camerastream import device_stream
from cloudservice.api.podexec import pod_exec
from cloudservice.api.podlogs import StreamOpener, pod_log
from cloudservice.api.selectors import (
    Selection,
    SelectorError,
    format_label_selector,
    parse_field_selector,
    parse_label_selector,
)
from cloudservice.api.status import (
    ApiError,
    Cause,
    bad_request,
    conflict,
    failure_status,
    from_store_error,
    gone,
    invalid,
    not_found,
)
from cloudservice.cameras import CameraStreams
from cloudservice.errors import AlreadyExists, Conflict, Gone, NotFound, StoreError
from cloudservice.history import History
from cloudservice.store.base import Store, WatchEvent
from cloudservice.usage import UsageStore

logger = logging.getLogger(__name__)

# The apiserver's request body limit (3 MiB): a manifest larger than this is a mistake, not a workload.
MAX_BODY_BYTES = 3 * 1024 * 1024
# kube-apiserver sends a bookmark about once a minute to clients that ask for them.
DEFAULT_BOOKMARK_INTERVAL = 60.0
# Without timeoutSeconds the apiserver ends a watch after --min-request-timeout (1800 s); so do we.
DEFAULT_WATCH_TIMEOUT = 1800.0
# Relay buffer between the store's watch and the HTTP stream; the store bounds its own buffer too.
_WATCH_QUEUE = 256
# Namespaces every Kubernetes cluster has, created on startup when missing and protected from deletion.
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public")
# How many times a delete re-reads the object when it changed between the read and the write.
_DELETE_ATTEMPTS = 5
# How many times a Device PATCH is applied again when the model its result names changed meanwhile.
_PATCH_ATTEMPTS = 5
# The authenticated user name, for handlers (and later authorization) to read.
USER_KEY = web.RequestKey("user", str)
_PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/livez", "/version"})
_YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml"})
_PATCH_TYPES = frozenset(
    {"application/merge-patch+json", "application/strategic-merge-patch+json", "application/json-patch+json"}
)
_APPLY_PATCH = "application/apply-patch+yaml"


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(), status=status, content_type="application/json"
    )


def status_response(err: ApiError) -> web.Response:
    return json_response(err.to_status(), err.code)


def _success(name: str, kind: str, code: int = 200) -> JSONObject:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "kind": kind},
        "code": code,
    }


@dataclass(frozen=True, slots=True)
class Target:
    """What a URL addresses: a collection (``name`` empty) or one object, maybe a subresource of it.

    ``namespace`` is None for an all-namespaces collection and "" for cluster-scoped kinds.
    """

    rt: ResourceType
    namespace: str | None
    name: str = ""
    sub: str = ""

    @property
    def ns(self) -> str:
        return self.namespace or ""


_SUBRESOURCES: dict[str, frozenset[str]] = {
    "Node": frozenset({"status"}),
    "Pod": frozenset({"status", "binding", "eviction"}),
    "Deployment": frozenset({"status", "scale"}),
    "ReplicaSet": frozenset({"status", "scale"}),
}


def _unknown_path() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")


def parse_target(group: str, version: str, segments: list[str]) -> Target:
    """Map the path below ``/api/v1`` or ``/apis/{group}/{version}`` to a :class:`Target` (404 otherwise)."""

    def rt_for(plural: str) -> ResourceType:
        rt = by_plural(group, plural)
        if rt is None or rt.version != version:
            raise _unknown_path()
        return rt

    def check_sub(rt: ResourceType, sub: str) -> str:
        if sub and sub not in _SUBRESOURCES.get(rt.kind, frozenset()):
            raise _unknown_path()
        return sub

    if not segments or any(not s for s in segments):
        raise _unknown_path()
    n = len(segments)
    if segments[0] == "namespaces" and n >= 3:
        ns = segments[1]
        if n == 3 and segments[2] in ("status", "finalize"):
            raise _unknown_path()
        rt = rt_for(segments[2])
        if not rt.namespaced or n > 5:
            raise _unknown_path()
        name = segments[3] if n >= 4 else ""
        sub = check_sub(rt, segments[4]) if n == 5 else ""
        return Target(rt, ns, name, sub)
    rt = rt_for(segments[0])
    if n == 1:
        return Target(rt, None if rt.namespaced else "")
    if rt.namespaced or n > 3:
        raise _unknown_path()
    return Target(rt, "", segments[1], check_sub(rt, segments[2]) if n == 3 else "")


def wants_table(request: web.Request) -> bool:
    """True when the Accept header asks for a meta.k8s.io Table (kubectl get does)."""
    for part in request.headers.get("Accept", "").split(","):
        params = {
            k.strip(): v.strip() for k, _, v in (p.partition("=") for p in part.split(";")[1:]) if k.strip()
        }
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            return True
    return False


# The largest integer a query parameter may carry: int64, as the apiserver parses them.
_MAX_QUERY_INT = (1 << 63) - 1


def _query_int(request: web.Request, key: str) -> int | None:
    raw = request.query.get(key)
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise bad_request(f"{key}: invalid integer {raw[:40]!r}") from exc
    if abs(value) > _MAX_QUERY_INT:
        raise bad_request(f"{key}: value out of range")
    return value


class _JsonYamlLoader(yaml.SafeLoader):
    """YAML as the apiserver reads it: a JSON superset, so timestamps stay strings (not datetimes)."""


_JsonYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _query_bool(request: web.Request, key: str) -> bool:
    return request.query.get(key, "").lower() in ("1", "true")


# A grace period beyond ~31 years is as good as forever, and larger ones overflow the date arithmetic.
_MAX_GRACE_SECONDS = 10**9


def _now_plus(seconds: int) -> str:
    seconds = min(seconds, _MAX_GRACE_SECONDS)
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rv(obj: JSONObject) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _model_ref(obj: JSONObject) -> str:
    """A Device's ``spec.deviceModelRef.name``; "" when it has none (the strategy names what is wrong)."""
    spec = obj.get("spec")
    ref = spec.get("deviceModelRef") if isinstance(spec, dict) else None
    name = ref.get("name") if isinstance(ref, dict) else None
    return name if isinstance(name, str) else ""


def _key(obj: JSONObject) -> tuple[str, str]:
    m = obj.get("metadata") or {}
    return str(m.get("namespace") or ""), str(m.get("name") or "")


@dataclass(frozen=True, slots=True)
class DeleteOptions:
    grace_period: int | None = None
    propagation: str = ""
    uid: str = ""
    resource_version: str = ""
    dry_run: bool = False


class _Api:
    """The request handlers and the state they share (the store, tokens and the running watches)."""

    def __init__(
        self, store: Store, authenticate: Callable[[str], str | None], bookmark_interval: float
    ) -> None:
        self.store = store
        self.check_token = authenticate
        self.bookmark_interval = bookmark_interval
        self.closing = asyncio.Event()

    # -- plumbing --------------------------------------------------------------------------------------

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            if request.path not in _PUBLIC_PATHS:
                request[USER_KEY] = self.authenticate(request)
            return await handler(request)
        except ApiError as exc:
            return status_response(exc)
        except SelectorError as exc:
            return status_response(bad_request(str(exc)))
        except web.HTTPRequestEntityTooLarge:
            return status_response(
                ApiError(
                    413, "RequestEntityTooLarge", f"request body too large: limit is {MAX_BODY_BYTES} bytes"
                )
            )
        except web.HTTPMethodNotAllowed as exc:
            return status_response(
                ApiError(
                    405,
                    "MethodNotAllowed",
                    f"the server does not allow this method on the requested resource ({exc.method})",
                )
            )
        except web.HTTPNotFound:
            return status_response(_unknown_path())
        except StoreError as exc:
            logger.warning("store error on %s %s: %s", request.method, request.path, exc)
            return json_response(failure_status(exc.code, exc.reason, exc.message), exc.code)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return json_response(failure_status(exc.status, exc.reason, exc.text or exc.reason), exc.status)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception:
            logger.exception("internal error on %s %s", request.method, request.path)
            return status_response(ApiError(500, "InternalError", "an internal error occurred"))

    def authenticate(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            user = self.check_token(token.strip())
            if user:
                return user
        raise ApiError(401, "Unauthorized", "Unauthorized")

    async def on_startup(self, _app: web.Application) -> None:
        for name in SYSTEM_NAMESPACES:
            obj: JSONObject = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            strategy.prepare_create(NAMESPACES, obj)
            with contextlib.suppress(AlreadyExists):
                await self.store.create(NAMESPACES, obj)
                logger.info("created namespace %s", name)

    async def on_shutdown(self, _app: web.Application) -> None:
        self.closing.set()

    async def read_body(self, request: web.Request, *, required: bool = True) -> Any:
        raw = await request.read()
        if not raw.strip():
            if required:
                raise bad_request("the request body is empty")
            return None
        if request.content_type == kprotobuf.PROTOBUF_CONTENT_TYPE:
            try:
                return kprotobuf.decode_k8s_protobuf(raw)
            except kprotobuf.ProtobufDecodeError as exc:
                raise bad_request(f"the request body is not valid Kubernetes protobuf: {exc}") from exc
        fmt = "YAML" if request.content_type in _YAML_TYPES else "JSON"
        try:
            body = yaml.load(raw, Loader=_JsonYamlLoader) if fmt == "YAML" else json.loads(raw)  # noqa: S506
            # What is stored must be JSON in UTF-8: no YAML-only types (sets, binary), no lone surrogates.
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except RecursionError as exc:
            raise bad_request(f"the request body is not valid {fmt}: nested too deeply") from exc
        except (ValueError, TypeError, yaml.YAMLError) as exc:
            raise bad_request(f"the request body is not valid {fmt}: {exc}") from exc
        return body

    async def read_object(
        self, request: web.Request, t: Target, *, kind: str = "", api_version: str = ""
    ) -> JSONObject:
        """The body as an object of the URL's kind: apiVersion/kind filled when absent, 400 if they differ."""
        body = await self.read_body(request)
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON or YAML object")
        want_av, want_kind = api_version or t.rt.api_version, kind or t.rt.kind
        if body.get("apiVersion") not in (None, "", want_av):
            raise bad_request(
                f"the API version in the data ({body['apiVersion']}) does not match the expected API version "
                f"({want_av})"
            )
        if body.get("kind") not in (None, "", want_kind):
            raise bad_request(
                f"the kind in the data ({body['kind']}) does not match the expected kind ({want_kind})"
            )
        body["apiVersion"], body["kind"] = want_av, want_kind
        if not isinstance(body.setdefault("metadata", {}), dict):
            raise bad_request("metadata must be an object")
        return body

    @staticmethod
    def check_identity(t: Target, obj: JSONObject) -> None:
        """The body's name and namespace must agree with the URL's (filled in when absent)."""
        m = obj["metadata"]
        if t.name:
            if m.get("name") not in (None, "", t.name):
                raise bad_request(
                    f"the name of the object ({m['name']}) does not match the name on the URL ({t.name})"
                )
            m["name"] = t.name
        if t.rt.namespaced:
            if m.get("namespace") not in (None, "", t.ns):
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            m["namespace"] = t.ns
        else:
            m.pop("namespace", None)

    # -- dispatch --------------------------------------------------------------------------------------

    async def core(self, request: web.Request) -> web.StreamResponse:
        return await self.dispatch(request, "", "v1", request.match_info["path"])

    async def grouped(self, request: web.Request) -> web.StreamResponse:
        return await self.dispatch(
            request, request.match_info["group"], request.match_info["version"], request.match_info["path"]
        )

    async def dispatch(self, request: web.Request, group: str, version: str, path: str) -> web.StreamResponse:
        t = parse_target(group, version, path.strip("/").split("/"))
        method = request.method
        handler: Callable[[web.Request, Target], Awaitable[web.StreamResponse]] | None = None
        if not t.name:
            if method == "POST" and t.namespace is None and t.rt.namespaced:
                raise ApiError(
                    405, "MethodNotAllowed", "create needs a namespace: POST /namespaces/{ns}/" + t.rt.plural
                )
            handler = {"GET": self.get_collection, "POST": self.create, "DELETE": self.delete_collection}.get(
                method
            )
        elif not t.sub:
            handler = {"GET": self.get, "PUT": self.update, "PATCH": self.patch, "DELETE": self.delete}.get(
                method
            )
        elif t.sub in ("status", "scale"):
            handler = {"GET": self.get, "PUT": self.update, "PATCH": self.patch}.get(method)
        elif t.sub == "binding":
            handler = {"POST": self.bind}.get(method)
        elif t.sub == "eviction":
            handler = {"POST": self.evict}.get(method)
        if handler is None:
            raise ApiError(
                405,
                "MethodNotAllowed",
                f"the server does not allow this method on the requested resource ({method})",
            )
        try:
            return await handler(request, t)
        except StoreError as exc:
            raise from_store_error(exc, t.rt, t.name) from exc

    # -- reads -----------------------------------------------------------------------------------------

    def selection(self, request: web.Request, rt: ResourceType) -> Selection:
        return Selection(
            parse_label_selector(request.query.get("labelSelector", "")),
            parse_field_selector(request.query.get("fieldSelector", ""), rt),
        )

    async def list_matching(self, t: Target, sel: Selection) -> tuple[list[JSONObject], int]:
        items, rev = await self.store.list(t.rt, t.namespace if t.rt.namespaced else None)
        items = sorted((o for o in items if sel.matches(o)), key=_key)
        return items, rev

    async def get_collection(self, request: web.Request, t: Target) -> web.StreamResponse:
        sel = self.selection(request, t.rt)
        if _query_bool(request, "watch"):
            return await self.watch(request, t, sel)
        items, rev = await self.list_matching(t, sel)
        if wants_table(request):
            include = request.query.get("includeObject", "Metadata")
            return json_response(tables.to_table(t.rt, items, resource_version=str(rev), include=include))
        return json_response(
            {
                "kind": t.rt.list_kind,
                "apiVersion": t.rt.api_version,
                "metadata": {"resourceVersion": str(rev)},
                "items": items,
            }
        )

    async def get(self, request: web.Request, t: Target) -> web.StreamResponse:
        obj = await self.store.get(t.rt, t.ns, t.name)
        if t.sub == "scale":
            return json_response(to_scale(obj))
        if wants_table(request):
            include = request.query.get("includeObject", "Metadata")
            return json_response(tables.to_table(t.rt, [obj], resource_version=_rv(obj), include=include))
        return json_response(obj)

    # -- writes ----------------------------------------------------------------------------------------

    async def create(self, request: web.Request, t: Target) -> web.StreamResponse:
        obj = await self.read_object(request, t)
        self.check_identity(t, obj)
        m = obj["metadata"]
        if not m.get("name") and isinstance(m.get("generateName"), str) and m["generateName"]:
            # Kubernetes' generateName suffix: 5 characters without vowels, so no words are spelled.
            m["name"] = m["generateName"] + "".join(
                secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5)
            )
        strategy.prepare_create(t.rt, obj)
        strategy.validate(t.rt, obj, models=await self.device_model(t, _model_ref(obj)))
        if t.rt.namespaced:
            try:
                await self.store.get(NAMESPACES, "", t.ns)
            except NotFound as exc:
                raise not_found(NAMESPACES, t.ns) from exc
        if request.query.get("dryRun"):
            return json_response(obj, 201)
        try:
            created = await self.store.create(t.rt, obj)
        except StoreError as exc:
            raise from_store_error(exc, t.rt, str(m.get("name"))) from exc
        logger.info("created %s %s/%s", t.rt.kind, t.ns, m.get("name"))
        return json_response(created, 201)

    async def write(
        self, request: web.Request, t: Target, fn: Callable[[JSONObject], JSONObject | None]
    ) -> web.StreamResponse:
        """Run a read-modify-write ``fn`` in the store (or on a copy for dryRun) and answer the result."""
        if request.query.get("dryRun"):
            cur = await self.store.get(t.rt, t.ns, t.name)
            result = fn(copy.deepcopy(cur)) or cur
        else:
            stored = await self.store.guaranteed_update(t.rt, t.ns, t.name, fn)
            assert stored is not None  # None only when a cursor skipped the write; we pass none
            result = await self.finish_deletion(t.rt, stored)
        if t.sub == "scale":
            return json_response(to_scale(result))
        return json_response(result)

    async def update(self, request: web.Request, t: Target) -> web.StreamResponse:
        if t.sub == "scale":
            scale = await self.read_object(request, t, kind="Scale", api_version="autoscaling/v1")
            self.check_identity(t, scale)
            return await self.write(request, t, self.scale_fn(t, lambda _cur: scale))
        body = await self.read_object(request, t)
        self.check_identity(t, body)
        models = await self.device_model(t, _model_ref(body))
        return await self.write(request, t, self.replace_fn(t, lambda _cur: body, models))

    async def patch(self, request: web.Request, t: Target) -> web.StreamResponse:
        ctype = request.content_type
        if ctype == _APPLY_PATCH:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "server-side apply (application/apply-patch+yaml) is not supported by this server; "
                "use client-side `kubectl apply` (without --server-side)",
            )
        if ctype not in _PATCH_TYPES:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{', '.join(sorted(_PATCH_TYPES))}",
            )
        body = await self.read_body(request)

        def patched(cur: JSONObject, api_version: str, kind: str) -> JSONObject:
            try:
                if ctype == "application/json-patch+json":
                    result = json_patch(cur, body)
                elif ctype == "application/merge-patch+json":
                    result = json_merge_patch(cur, body)
                else:
                    result = strategic_merge_patch(cur, body, api_version, kind)
            except PatchError as exc:
                raise invalid(t.rt, t.name, [Cause(exc.field, exc.message)]) from exc
            if not isinstance(result, dict):
                raise bad_request("the patch must leave an object")
            if result.get("kind", kind) != kind or result.get("apiVersion", api_version) != api_version:
                raise bad_request("a patch may not change apiVersion or kind")
            result.setdefault("metadata", {})
            if not isinstance(result["metadata"], dict):
                raise bad_request("metadata must be an object")
            self.check_identity(t, result)
            return result

        if t.sub == "scale":
            return await self.write(
                request, t, self.scale_fn(t, lambda cur: patched(to_scale(cur), "autoscaling/v1", "Scale"))
            )

        def make(cur: JSONObject) -> JSONObject:
            return patched(cur, t.rt.api_version, t.rt.kind)

        if t.rt is not DEVICES or t.sub:
            return await self.write(request, t, self.replace_fn(t, make))
        # A Device is checked against the model its patched result names. The store runs the update
        # function under its write lock, where nothing can be awaited, so that model is read first, from
        # the patch applied to the current object; should a concurrent write make the result name another
        # model, the patch is applied again.
        for _ in range(_PATCH_ATTEMPTS):
            ref = _model_ref(make(await self.store.get(t.rt, t.ns, t.name)))
            models = await self.device_model(t, ref)
            try:
                return await self.write(request, t, self.replace_fn(t, make, models, model_ref=ref))
            except _Changed:
                continue
        raise conflict(t.rt, t.name)

    async def device_model(self, t: Target, name: str) -> dict[str, JSONObject] | None:
        """For a write of a Device's main resource: ``{name: model}`` for the DeviceModel ``name`` the
        Device names, which its desired values are validated against (read before the write; the edge
        checks again on arrival); empty when there is no such model (yet). None for other writes."""
        if t.rt is not DEVICES or t.sub:
            return None
        if not name:
            return {}  # no reference: parse_device refuses the Device
        try:
            return {name: await self.store.get(DEVICEMODELS, t.ns, name)}
        except NotFound:
            return {}

    def replace_fn(
        self,
        t: Target,
        make: Callable[[JSONObject], JSONObject],
        models: dict[str, JSONObject] | None = None,
        *,
        model_ref: str | None = None,
    ) -> Callable[[JSONObject], JSONObject | None]:
        """An update function for PUT/PATCH of the main resource or /status: CAS, strategy, no-op check.
        ``models``: see :meth:`device_model`; ``model_ref``, when given, is the model name ``models`` was
        read for: a result naming another raises :class:`_Changed`."""

        def fn(cur: JSONObject) -> JSONObject | None:
            new = copy.deepcopy(make(copy.deepcopy(cur)))
            if model_ref is not None and _model_ref(new) != model_ref:
                raise _Changed
            want = _rv(new)
            if want and want != _rv(cur):
                raise conflict(t.rt, t.name)
            if t.sub == "status":
                new = strategy.prepare_status_update(new, cur)
            else:
                strategy.prepare_update(t.rt, new, cur)
                strategy.validate(t.rt, new, cur, models=models)
            new["metadata"]["resourceVersion"] = _rv(cur)
            if new == cur:
                return None  # the apiserver does not write (nor bump resourceVersion) for no-op updates
            return new

        return fn

    def scale_fn(
        self, t: Target, make: Callable[[JSONObject], JSONObject]
    ) -> Callable[[JSONObject], JSONObject | None]:
        def fn(cur: JSONObject) -> JSONObject | None:
            scale = make(copy.deepcopy(cur))
            want = _rv(scale)
            if want and want != _rv(cur):
                raise conflict(t.rt, t.name)
            replicas = (scale.get("spec") or {}).get("replicas")
            if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
                shown = "null" if replicas is None else json.dumps(replicas)
                raise ApiError(
                    422,
                    "Invalid",
                    f'Scale.autoscaling "{t.name}" is invalid: '
                    f"spec.replicas: Invalid value: {shown}: must be >= 0",
                    name=t.name,
                    kind="Scale",
                    group="autoscaling",
                    causes=[Cause("spec.replicas", f"Invalid value: {shown}: must be >= 0")],
                )
            if (cur.get("spec") or {}).get("replicas") == replicas:
                return None
            new = copy.deepcopy(cur)
            new.setdefault("spec", {})["replicas"] = replicas
            return new

        return fn

    async def evict(self, request: web.Request, t: Target) -> web.StreamResponse:
        """POST pods/{name}/eviction (policy/v1 Eviction): what ``kubectl drain`` calls. There are no
        PodDisruptionBudgets here, so an eviction is a graceful delete with the Eviction's options."""
        body = await self.read_body(request)
        if not isinstance(body, dict) or body.get("kind", "Eviction") != "Eviction":
            raise bad_request("the body must be a policy/v1 Eviction")
        options = body.get("deleteOptions") or {}
        if not isinstance(options, dict):
            raise bad_request("deleteOptions must be an object")
        grace = options.get("gracePeriodSeconds")
        if grace is not None and (isinstance(grace, bool) or not isinstance(grace, int)):
            raise bad_request("deleteOptions.gracePeriodSeconds must be an integer")
        dry_run = bool(request.query.get("dryRun") or options.get("dryRun"))
        opts = DeleteOptions(max(grace, 0) if grace is not None else None, "", "", "", dry_run)
        await self.delete_one(PODS, t.ns, t.name, opts)
        return json_response(_success(t.name, "pods", 201), 201)

    async def bind(self, request: web.Request, t: Target) -> web.StreamResponse:
        """POST pods/{name}/binding: what a scheduler calls to set spec.nodeName once."""
        body = await self.read_body(request)
        target = body.get("target") if isinstance(body, dict) else None
        node = target.get("name") if isinstance(target, dict) else None
        if not isinstance(node, str) or not node:
            raise invalid(t.rt, t.name, [Cause("target.name", "Required value", "FieldValueRequired")])

        def fn(cur: JSONObject) -> JSONObject | None:
            spec = cur.setdefault("spec", {})
            if spec.get("nodeName"):
                raise conflict(t.rt, t.name, f"pod {t.name} is already assigned to node {spec['nodeName']!r}")
            if (cur.get("metadata") or {}).get("deletionTimestamp"):
                raise conflict(t.rt, t.name, f"pod {t.name} is being deleted, cannot be assigned to a host")
            spec["nodeName"] = node
            return cur

        if request.query.get("dryRun"):
            fn(await self.store.get(t.rt, t.ns, t.name))  # the same checks, nothing written
            return json_response(_success(t.name, "pods", 201), 201)
        await self.store.guaranteed_update(t.rt, t.ns, t.name, fn)
        return json_response(_success(t.name, "pods", 201), 201)

    # -- deletes ---------------------------------------------------------------------------------------

    async def delete_options(self, request: web.Request) -> DeleteOptions:
        body = await self.read_body(request, required=False)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise bad_request("DeleteOptions must be an object")
        grace = body.get("gracePeriodSeconds")
        q_grace = _query_int(request, "gracePeriodSeconds")
        grace = q_grace if q_grace is not None else grace
        if grace is not None and (isinstance(grace, bool) or not isinstance(grace, int)):
            raise bad_request("gracePeriodSeconds must be an integer")
        propagation = request.query.get("propagationPolicy") or body.get("propagationPolicy") or ""
        if propagation not in ("", "Orphan", "Background", "Foreground"):
            raise ApiError(
                422,
                "Invalid",
                f'propagationPolicy: Unsupported value: "{propagation}": supported values: "Background", '
                '"Foreground", "Orphan"',
                causes=[
                    Cause(
                        "propagationPolicy", f'Unsupported value: "{propagation}"', "FieldValueNotSupported"
                    )
                ],
            )
        pre = body.get("preconditions") or {}
        if not isinstance(pre, dict):
            raise bad_request("preconditions must be an object")
        dry_run = bool(request.query.get("dryRun") or body.get("dryRun"))
        return DeleteOptions(
            max(grace, 0) if grace is not None else None,
            str(propagation),
            str(pre.get("uid") or ""),
            str(pre.get("resourceVersion") or ""),
            dry_run,
        )

    async def delete(self, request: web.Request, t: Target) -> web.StreamResponse:
        opts = await self.delete_options(request)
        if t.rt is NAMESPACES and t.name in SYSTEM_NAMESPACES:
            raise ApiError(
                403,
                "Forbidden",
                f'namespaces "{t.name}" is forbidden: this namespace may not be deleted',
                name=t.name,
                kind="namespaces",
            )
        if t.rt is NAMESPACES and not opts.dry_run:
            # Preconditions first: a delete refused for them must not have emptied the namespace already.
            self.check_preconditions(t.rt, await self.store.get(NAMESPACES, "", t.name), opts)
            await self.empty_namespace(t.name)
        return json_response(await self.delete_one(t.rt, t.ns, t.name, opts))

    @staticmethod
    def check_preconditions(rt: ResourceType, obj: JSONObject, opts: DeleteOptions) -> None:
        """A 409 Conflict, in the apiserver's words, unless ``obj`` meets the delete's preconditions."""
        m = obj.get("metadata") or {}
        name = str(m.get("name", ""))
        if opts.uid and opts.uid != m.get("uid"):
            raise conflict(
                rt,
                name,
                f"Precondition failed: UID in precondition: {opts.uid}, UID in object meta: {m.get('uid')}",
            )
        if opts.resource_version and opts.resource_version != _rv(obj):
            raise conflict(
                rt,
                name,
                f"Precondition failed: ResourceVersion in precondition: "
                f"{opts.resource_version}, ResourceVersion in object meta: {_rv(obj)}",
            )

    async def empty_namespace(self, namespace: str) -> None:
        for rt in ALL:
            if not rt.namespaced:
                continue
            items, _ = await self.store.list(rt, namespace)
            for obj in items:
                with contextlib.suppress(NotFound):
                    await self.delete_one(rt, namespace, _key(obj)[1], DeleteOptions())

    @staticmethod
    def grace_for(rt: ResourceType, cur: JSONObject, opts: DeleteOptions) -> int:
        """Seconds of grace a delete gets: only bound, still running pods get any (the edge stops them)."""
        if rt is not PODS:
            return 0
        spec, status = cur.get("spec") or {}, cur.get("status") or {}
        if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
            return 0
        if opts.grace_period is not None:
            return opts.grace_period
        grace = spec.get("terminationGracePeriodSeconds")
        return grace if isinstance(grace, int) and grace >= 0 else 30

    async def delete_one(self, rt: ResourceType, ns: str, name: str, opts: DeleteOptions) -> JSONObject:
        """Remove the object now, or mark it (deletionTimestamp) when it has grace or finalizers left."""
        for _ in range(_DELETE_ATTEMPTS):
            cur = await self.store.get(rt, ns, name)
            m = cur.get("metadata") or {}
            self.check_preconditions(rt, cur, opts)
            grace = self.grace_for(rt, cur, opts)
            if opts.dry_run:
                return cur
            if grace == 0 and not m.get("finalizers"):
                try:
                    gone_obj = await self.store.delete(rt, ns, name, resource_version=_rv(cur))
                except Conflict:
                    continue
                logger.info("deleted %s %s/%s", rt.kind, ns, name)
                return gone_obj
            seen = _rv(cur)

            def mark(obj: JSONObject, seen: str = seen, grace: int = grace) -> JSONObject | None:
                if _rv(obj) != seen:
                    raise _Changed
                mm = obj.setdefault("metadata", {})
                current = mm.get("deletionGracePeriodSeconds")
                if mm.get("deletionTimestamp") and isinstance(current, int) and current <= grace:
                    return None  # a delete may shorten the grace period, never extend it
                mm["deletionTimestamp"] = _now_plus(grace)
                mm["deletionGracePeriodSeconds"] = grace
                return obj

            try:
                marked = await self.store.guaranteed_update(rt, ns, name, mark)
            except _Changed:
                continue
            assert marked is not None
            logger.info("marked %s %s/%s for deletion (grace %ss)", rt.kind, ns, name, grace)
            return marked
        raise conflict(rt, name)

    async def finish_deletion(self, rt: ResourceType, obj: JSONObject) -> JSONObject:
        """After an update: an object marked for deletion whose finalizers are gone (and whose grace period
        is over) is removed, as the apiserver's registry does."""
        m = obj.get("metadata") or {}
        if not m.get("deletionTimestamp") or m.get("finalizers") or m.get("deletionGracePeriodSeconds"):
            return obj
        ns, name = _key(obj)
        try:
            return await self.store.delete(rt, ns if rt.namespaced else "", name, resource_version=_rv(obj))
        except (NotFound, Conflict):
            return obj

    async def delete_collection(self, request: web.Request, t: Target) -> web.StreamResponse:
        opts = await self.delete_options(request)
        items, _ = await self.list_matching(t, self.selection(request, t.rt))
        items = [o for o in items if not (t.rt is NAMESPACES and _key(o)[1] in SYSTEM_NAMESPACES)]
        for obj in items:  # all or nothing: a refusal must not follow half a collection's deletion
            self.check_preconditions(t.rt, obj, opts)
        done: list[JSONObject] = []
        for obj in items:
            ns, name = _key(obj)
            if t.rt is NAMESPACES and name in SYSTEM_NAMESPACES:
                continue
            with contextlib.suppress(NotFound):
                if t.rt is NAMESPACES and not opts.dry_run:
                    await self.empty_namespace(name)
                done.append(await self.delete_one(t.rt, ns if t.rt.namespaced else "", name, opts))
        return json_response(
            {"kind": t.rt.list_kind, "apiVersion": t.rt.api_version, "metadata": {}, "items": done}
        )

    # -- watch -----------------------------------------------------------------------------------------

    async def watch(self, request: web.Request, t: Target, sel: Selection) -> web.StreamResponse:
        timeout = _query_int(request, "timeoutSeconds")
        deadline = asyncio.get_running_loop().time() + (
            timeout if timeout and timeout > 0 else DEFAULT_WATCH_TIMEOUT
        )
        bookmarks = _query_bool(request, "allowWatchBookmarks")
        table = wants_table(request)
        include = request.query.get("includeObject", "Metadata")
        rv_param = request.query.get("resourceVersion", "")
        since: int | None = None
        initial: list[JSONObject] = []
        known: set[tuple[str, str]] = set()
        replay_until = 0
        if rv_param not in ("", "0"):
            try:
                since = int(rv_param)
            except ValueError as exc:
                raise bad_request(f"resourceVersion: invalid value {rv_param!r}") from exc
            if not sel.empty:
                # Which selected objects the client holds: those matching now (see _filter for replay).
                current, replay_until = await self.list_matching(t, sel)
                known = {_key(o) for o in current}
        else:
            # No resourceVersion (or "0"): the current state as ADDED events, then changes after it.
            initial, rev = await self.list_matching(t, sel)
            since = rev
            known = {_key(o) for o in initial}
        ns_filter = t.namespace if t.rt.namespaced else None
        stream = self.store.watch(t.rt, ns_filter, since)
        queue: asyncio.Queue[WatchEvent | BaseException | None] = asyncio.Queue(_WATCH_QUEUE)

        async def pump() -> None:
            try:
                async for ev in stream:
                    await queue.put(ev)
                await queue.put(None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # handed to the writer, which reports it to the client
                await queue.put(exc)

        resp = web.StreamResponse(headers={"Content-Type": "application/json", "Cache-Control": "no-cache"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        pump_task = asyncio.create_task(pump(), name=f"api.watch[{t.rt.plural}].pump")
        closing_task = asyncio.create_task(self.closing.wait(), name=f"api.watch[{t.rt.plural}].closing")
        loop = asyncio.get_running_loop()
        last_rev = since
        first = True
        get_task: asyncio.Task[WatchEvent | BaseException | None] | None = None
        next_bookmark = loop.time() + self.bookmark_interval

        async def send(ev_type: str, obj: JSONObject) -> None:
            nonlocal first
            if table and ev_type in ("ADDED", "MODIFIED", "DELETED"):
                obj = tables.to_table(t.rt, [obj], resource_version=_rv(obj), include=include, headers=first)
                first = False
            await resp.write(
                json.dumps({"type": ev_type, "object": obj}, separators=(",", ":")).encode() + b"\n"
            )

        try:
            for obj in initial:
                await send("ADDED", obj)
            while True:
                now = loop.time()
                if now >= deadline:
                    break
                wake = min(deadline, next_bookmark) if bookmarks else deadline
                get_task = asyncio.create_task(queue.get(), name=f"api.watch[{t.rt.plural}].next")
                done, _ = await asyncio.wait(
                    {get_task, closing_task}, timeout=wake - now, return_when=asyncio.FIRST_COMPLETED
                )
                if get_task not in done:
                    await _cancel(get_task)
                    if closing_task in done:
                        break
                    if bookmarks and loop.time() >= next_bookmark:
                        bookmark = {
                            "kind": t.rt.kind,
                            "apiVersion": t.rt.api_version,
                            "metadata": {"resourceVersion": str(last_rev)},
                        }
                        await resp.write(
                            json.dumps({"type": "BOOKMARK", "object": bookmark}).encode() + b"\n"
                        )
                        next_bookmark = loop.time() + self.bookmark_interval
                    continue
                item = get_task.result()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    if isinstance(item, Gone):
                        status = gone(item.message).to_status()
                    else:
                        logger.error("watch of %s failed: %s", t.rt.plural, item)
                        status = failure_status(500, "InternalError", str(item))
                    await resp.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
                    break
                last_rev = item.revision
                out = _filter(item, sel, known, replaying=item.revision <= replay_until)
                if out is not None and not table and out == item.type and item.raw:
                    # The stored JSON goes out as it is: no decode, no encode, per watcher.
                    await resp.write(b'{"type":"%s","object":%s}\n' % (out.encode(), item.raw.encode()))
                elif out is not None:
                    await send(out, item.object)
        except ConnectionResetError:
            logger.debug("watch client of %s went away", t.rt.plural)
        finally:
            for task in (get_task, pump_task, closing_task):
                if task is not None:
                    await _cancel(task)
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
        return resp


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel a helper task and wait until it has finished, so that none outlives its request."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class _Changed(Exception):
    """The object changed between a read and the write that relied on it (a delete's precondition, the
    model a Device PATCH names); the write reads it again."""


def _filter(ev: WatchEvent, sel: Selection, known: set[tuple[str, str]], *, replaying: bool) -> str | None:
    """The event type to send for ``ev`` under ``sel`` (None: nothing), updating ``known``: the objects the
    client holds. An object that stops matching is DELETED for the client; one that starts matching, ADDED."""
    if sel.empty:
        return ev.type
    key = _key(ev.object)
    matches = sel.matches(ev.object)
    if ev.type == "DELETED":
        if matches or key in known:
            known.discard(key)
            return "DELETED"
        return None
    if matches:
        had = key in known
        known.add(key)
        return "MODIFIED" if had and ev.type == "MODIFIED" else "ADDED"
    if key in known or (replaying and ev.type == "MODIFIED"):
        known.discard(key)
        return "DELETED"
    return None


def to_scale(obj: JSONObject) -> JSONObject:
    """An autoscaling/v1 Scale view of a Deployment or ReplicaSet."""
    m = obj.get("metadata") or {}
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    selector = format_label_selector(spec.get("selector"))
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: m[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in m
        },
        "spec": {"replicas": int(spec.get("replicas") or 0)},
        "status": {
            "replicas": int(status.get("replicas") or 0),
            "selector": "" if selector == "<none>" else selector,
        },
    }


# -- app and server --------------------------------------------------------------------------------------


def build_app(
    store: Store,
    *,
    tokens: Mapping[str, str] | None = None,
    authenticate: Callable[[str], str | None] | None = None,
    bookmark_interval: float = DEFAULT_BOOKMARK_INTERVAL,
    max_body_bytes: int = MAX_BODY_BYTES,
    streams: StreamOpener | None = None,
    usage: UsageStore | None = None,
    history: History | None = None,
    cameras: CameraStreams | None = None,
) -> web.Application:
    """The API as an aiohttp application. The caller starts and closes ``store``; the app creates the
    system namespaces on startup.

    Bearer tokens are checked by ``authenticate`` (token -> user name, None when unknown) or, when it is
    not given, looked up in ``tokens`` (token -> user name) in constant time.
    """
    if authenticate is None:
        known = dict(tokens or {})

        def authenticate(token: str) -> str | None:
            for candidate, user in known.items():
                if hmac.compare_digest(candidate.encode(), token.encode()):
                    return user
            return None

    api = _Api(store, authenticate, bookmark_interval)
    app = web.Application(middlewares=[api.middleware], client_max_size=max_body_bytes)

    async def text_ok(_request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def version(_request: web.Request) -> web.StreamResponse:
        return json_response(discovery.version_info())

    async def api_root(request: web.Request) -> web.StreamResponse:
        return json_response(discovery.api_versions(request.host))

    async def apis_root(_request: web.Request) -> web.StreamResponse:
        body = discovery.api_group_list()
        if usage is not None:
            body["groups"].append(metricsapi.discovery_group())
        return json_response(body)

    async def core_resources(_request: web.Request) -> web.StreamResponse:
        body = discovery.resource_list("", "v1")
        assert body is not None
        return json_response(body)

    async def group(request: web.Request) -> web.StreamResponse:
        body = discovery.api_group(request.match_info["group"])
        if body is None:
            raise _unknown_path()
        return json_response(body)

    async def group_resources(request: web.Request) -> web.StreamResponse:
        body = discovery.resource_list(request.match_info["group"], request.match_info["version"])
        if body is None:
            raise _unknown_path()
        return json_response(body)

    async def openapi_root(_request: web.Request) -> web.StreamResponse:
        return json_response(openapi.root_document())

    async def openapi_core(request: web.Request) -> web.StreamResponse:
        body = openapi.group_version_document("", request.match_info["version"])
        if body is None:
            raise _unknown_path()
        return json_response(body)

    async def openapi_group(request: web.Request) -> web.StreamResponse:
        body = openapi.group_version_document(request.match_info["group"], request.match_info["version"])
        if body is None:
            raise _unknown_path()
        return json_response(body)

    for path in ("/healthz", "/readyz", "/livez"):
        app.router.add_get(path, text_ok)
    app.router.add_get("/version", version)
    app.router.add_get("/api", api_root)
    app.router.add_get("/api/v1", core_resources)
    app.router.add_get("/apis", apis_root)
    app.router.add_get("/apis/{group}", group)
    app.router.add_get("/apis/{group}/{version}", group_resources)
    app.router.add_get("/openapi/v3", openapi_root)
    app.router.add_get("/openapi/v3/api/{version}", openapi_core)
    app.router.add_get("/openapi/v3/apis/{group}/{version}", openapi_group)

    async def log_handler(request: web.Request) -> web.StreamResponse:
        return await pod_log(request, store, streams)

    async def exec_handler(request: web.Request) -> web.StreamResponse:
        return await pod_exec(request, store, streams)

    app.router.add_get("/api/v1/namespaces/{namespace}/pods/{name}/log", log_handler)
    app.router.add_route("*", "/api/v1/namespaces/{namespace}/pods/{name}/exec", exec_handler)
    app.router.add_route("*", "/api/v1/{path:.+}", api.core)
    if usage is not None:  # before the catch-all below
        metricsapi.add_metrics_api(app, usage, store=store)
    if history is not None:  # before the catch-all below
        historyapi.add_history_api(app, history)
    feeds = cameras if cameras is not None else CameraStreams()

    async def camera_handler(request: web.Request) -> web.StreamResponse:
        return await device_stream(request, store, streams, feeds)

    app.router.add_get(camerastream.PATH, camera_handler)  # before the catch-all below
    app.router.add_route("*", "/apis/{group}/{version}/{path:.+}", api.grouped)
    app.on_startup.append(api.on_startup)
    app.on_shutdown.append(api.on_shutdown)
    return app


class ApiServer:
    """Serves an app on ``host:port`` (port 0 picks a free port; read :attr:`port` after :meth:`start`).

    ``ssl_context`` makes it HTTPS; the security work passes one that requests client certificates.
    """

    # Seconds stop() waits for in-flight requests; watches end at once on shutdown, so this is short.
    SHUTDOWN_TIMEOUT = 5.0

    def __init__(
        self, app: web.Application, host: str = "127.0.0.1", port: int = 0, *, ssl_context: Any = None
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> None:
        runner = web.AppRunner(
            self.app, handler_cancellation=True, shutdown_timeout=self.SHUTDOWN_TIMEOUT, access_log=None
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, ssl_context=self._ssl)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        logger.info("API listening on %s", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()


async def serve(
    app: web.Application, host: str = "127.0.0.1", port: int = 0, *, ssl_context: Any = None
) -> ApiServer:
    """Start serving ``app`` and return the running server (call ``stop()`` when done)."""
    server = ApiServer(app, host, port, ssl_context=ssl_context)
    await server.start()
    return server

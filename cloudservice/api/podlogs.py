"""``GET /api/v1/namespaces/{ns}/pods/{name}/log``: a pod's container log, read on its edge.

The cloud holds no logs: it opens a stream through the node's tunnel (``cloudservice.streams``) and copies
what the edge sends to the HTTP response, so ``kubectl logs [-f] [--tail N] [--since 5m] [--timestamps]``
work as against a kubelet. A node without a tunnel connection gets an immediate 503 naming the node,
never a hang. Query parameters are checked here, before anything crosses the tunnel.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Protocol

from aiohttp import web

from app.resources import PODS, JSONObject
from cloudservice.api.status import ApiError
from cloudservice.store.base import Store
from cloudservice.streams import CloudStream, NodeOffline, StreamClosed, StreamRefused

log = logging.getLogger(__name__)


class StreamOpener(Protocol):
    def open_stream(self, node: str, resource: str, params: JSONObject) -> CloudStream: ...

    def connected(self, node: str) -> bool: ...


def _int_param(request: web.Request, name: str, minimum: int) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "BadRequest", f"{name}: invalid value {raw!r}: must be an integer") from None
    if value < minimum:
        raise ApiError(400, "BadRequest", f"{name}: invalid value {value}: must be >= {minimum}")
    return value


def _bool_param(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes")


def pick_container(pod: JSONObject, wanted: str) -> str:
    name = str(pod["metadata"]["name"])
    containers = [c.get("name", "") for c in pod.get("spec", {}).get("containers", [])]
    inits = [c.get("name", "") for c in pod.get("spec", {}).get("initContainers", [])]
    if wanted:
        if wanted not in containers + inits:
            raise ApiError(
                400, "BadRequest", f"container {wanted} is not valid for pod {name}", name=name, kind="pods"
            )
        return wanted
    if len(containers) == 1:
        return str(containers[0])
    raise ApiError(
        400,
        "BadRequest",
        f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]",
        name=name,
        kind="pods",
    )


async def open_accepted(
    opener: StreamOpener, node: str, resource: str, params: JSONObject, *, offline_hint: str = ""
) -> CloudStream:
    """Open a stream on a node and wait until the node accepts it, mapping every way it can fail to the
    Status a kubectl user should read: offline node 503, the edge's own refusal as it sent it."""
    try:
        stream = opener.open_stream(node, resource, params)
    except NodeOffline as exc:
        raise ApiError(503, "ServiceUnavailable", f"{exc}{offline_hint}") from exc
    try:
        await stream.wait_accepted()
    except StreamRefused as exc:
        await stream.aclose()
        raise ApiError(exc.code, exc.reason, exc.message) from exc
    except StreamClosed as exc:
        await stream.aclose()
        raise ApiError(503, "ServiceUnavailable", f"node {node}: {exc}") from exc
    except BaseException:
        await stream.aclose()
        raise
    return stream


async def pod_log(request: web.Request, store: Store, opener: StreamOpener | None) -> web.StreamResponse:
    ns, name = request.match_info["namespace"], request.match_info["name"]
    params: JSONObject = {
        "tailLines": _int_param(request, "tailLines", 0),
        "sinceSeconds": _int_param(request, "sinceSeconds", 1),
        "limitBytes": _int_param(request, "limitBytes", 1),
        "sinceTime": request.query.get("sinceTime") or None,
        "follow": _bool_param(request, "follow"),
        "timestamps": _bool_param(request, "timestamps"),
        "previous": _bool_param(request, "previous"),
    }
    pod = await store.get(PODS, ns, name)
    params["container"] = pick_container(pod, request.query.get("container", ""))
    params["uid"] = pod["metadata"].get("uid", "")
    node = pod.get("spec", {}).get("nodeName", "")
    if not node:
        raise ApiError(
            400,
            "BadRequest",
            f'container "{params["container"]}" in pod "{name}" is waiting to start: not scheduled yet',
        )
    if opener is None:
        raise ApiError(503, "ServiceUnavailable", "pod logs need the hub, which this server does not run")
    stream = await open_accepted(
        opener, node, f"{ns}/podlog/{name}", params, offline_hint="; read the logs on the node's local API"
    )
    try:
        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await response.prepare(request)
        try:
            async for chunk in stream.chunks():
                await response.write(chunk.encode())
        except StreamClosed as exc:
            log.info("log stream for pod %s/%s on %s ended: %s", ns, name, node, exc)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response
    finally:
        await stream.aclose()

"""``/api/v1/namespaces/{ns}/pods/{name}/exec``: ``kubectl exec [-it]`` through the node's tunnel.

kubectl (1.30 and later) speaks the Kubernetes remote-command protocol over a WebSocket
(``v5.channel.k8s.io``, or ``v4``): every binary message starts with a channel byte — 0 stdin, 1 stdout,
2 stderr, 3 error (a final meta/v1 Status), 4 terminal resize — and v5 adds 255, "client closed stdin".
The API upgrades the request, opens a ``podexec`` stream on the node through its tunnel, and relays
channels both ways; the node runs the command (``edgeservice.podexec``). The exit code comes back as the
Status on channel 3, which is how kubectl learns it (``NonZeroExitCode`` with an ``ExitCode`` cause).

SPDY, kubectl's older transport, is not offered: a request that does not ask for a WebSocket gets a 400
saying so. Errors found before the upgrade (no such pod or container, node offline) are plain Status
responses, so kubectl prints them as it prints any API error.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging

from aiohttp import WSMsgType, web

from app.resources import PODS, JSONObject
from cloudservice.api.podlogs import StreamOpener, open_accepted, pick_container
from cloudservice.api.status import ApiError
from cloudservice.store.base import Store
from cloudservice.streams import CloudStream, NodeOffline, StreamClosed

log = logging.getLogger(__name__)

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, ERROR, RESIZE, CLOSE = 0, 3, 4, 255


def _exit_status(code: int, command: list[str]) -> JSONObject:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            f"command terminated with non-zero exit code: error executing command {command}, exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def _failure(message: str) -> JSONObject:
    return {"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500}


async def pod_exec(request: web.Request, store: Store, opener: StreamOpener | None) -> web.StreamResponse:
    ns, name = request.match_info["namespace"], request.match_info["name"]
    command = request.query.getall("command", [])
    if not command:
        raise ApiError(400, "BadRequest", "you must specify at least one command for the container")
    pod = await store.get(PODS, ns, name)
    container = pick_container(pod, request.query.get("container", ""))
    node = pod.get("spec", {}).get("nodeName", "")
    if not node or pod.get("status", {}).get("phase") != "Running":
        raise ApiError(
            400, "BadRequest", f"pod {name} is not running (phase {pod.get('status', {}).get('phase')})"
        )
    if opener is None:
        raise ApiError(503, "ServiceUnavailable", "exec needs the hub, which this server does not run")
    if not opener.connected(node):
        # Checked before the transport: kubectl retries a failed WebSocket upgrade over SPDY, and the
        # error a person should read is this one, not the fallback's.
        raise ApiError(503, "ServiceUnavailable", str(NodeOffline(node)))
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise ApiError(
            400, "BadRequest", "exec needs a WebSocket upgrade (v5.channel.k8s.io); SPDY is not supported"
        )
    params: JSONObject = {
        "command": command,
        "container": container,
        "tty": request.query.get("tty", "").lower() in ("1", "true"),
        "stdin": request.query.get("stdin", "").lower() in ("1", "true"),
    }
    stream = await open_accepted(opener, node, f"{ns}/podexec/{name}", params)
    try:
        ws = web.WebSocketResponse(protocols=PROTOCOLS, autoping=True)
        await ws.prepare(request)
        log.info("exec %s in pod %s/%s on %s (protocol %s)", command, ns, name, node, ws.ws_protocol)
        await _relay(ws, stream, command)
        return ws
    finally:
        await stream.aclose()


async def _relay(ws: web.WebSocketResponse, stream: CloudStream, command: list[str]) -> None:
    v5 = ws.ws_protocol == "v5.channel.k8s.io"

    async def from_client() -> None:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, payload = msg.data[0], msg.data[1:]
            if channel == STDIN:
                stream.send_input({"ch": STDIN, "b64": base64.b64encode(payload).decode()})
            elif channel == RESIZE:
                stream.send_input({"ch": RESIZE, "data": payload.decode(errors="replace")})
            elif channel == CLOSE and v5:
                stream.send_input({"ch": CLOSE})

    client = asyncio.create_task(from_client(), name="exec.client")
    status: JSONObject
    try:
        async for item in stream.items():
            channel = int(item.get("ch", 1))
            await ws.send_bytes(bytes([channel]) + base64.b64decode(str(item.get("b64", ""))))
        status = _exit_status(int(stream.result.get("exitCode", 0) or 0), command)
    except StreamClosed as exc:
        status = _failure(f"the node ended the session: {exc}")
    except ConnectionResetError:
        return
    finally:
        client.cancel()
        await asyncio.gather(client, return_exceptions=True)
    with contextlib.suppress(ConnectionResetError):
        await ws.send_bytes(bytes([ERROR]) + json.dumps(status).encode())
        await ws.close()

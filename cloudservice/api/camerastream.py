"""``GET /apis/devices.kubeedge.io/v1beta1/namespaces/{ns}/devices/{name}/stream``: a camera, live.

Two forms of the same frames (``cloudservice.cameras`` shares one edge stream among all viewers):

* plain GET: ``multipart/x-mixed-replace`` MJPEG, which a browser, VLC or ffplay shows as video. Each part
  carries the JPEG and ``X-Frame-Seq``, ``X-Frame-Timestamp`` (capture time at the edge, ms since the
  epoch), ``X-Frame-Fps`` and ``X-Frame-Bytes-Per-Second`` (what the camera achieved).
* WebSocket upgrade: one binary message per frame, the frame record of ``app.camera`` (a JSON header line
  with the same figures, then the JPEG), for ``app.client.AsyncClient.camera_frames`` and the UIs. A text
  message is a Status saying why the stream cannot start or has ended; the server closes after it.

``?overlay=1`` asks for the inference workload's frames, with its results drawn on them. Both forms write
the newest frame whenever the client has taken the previous one: a slow client gets fewer frames, never
older ones. Errors come as Kubernetes Status objects before any frame is sent: 404 for no such Device, 400
for a Device that is not a camera or is bound to no node, 503 for an offline node or a camera that sends
nothing (with the reason the edge gave). A browser, which cannot send the bearer token, opens the stream
through ``kubectl proxy``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket

from aiohttp import WSCloseCode, web

from app.camera import CameraFrame, encode_frame, is_camera
from app.resources import DEVICES, JSONObject
from cloudservice.api.podlogs import StreamOpener, open_accepted
from cloudservice.api.status import ApiError, failure_status
from cloudservice.cameras import CameraStreams, FeedKey, OpenStream, Viewer
from cloudservice.errors import StoreError
from cloudservice.store.base import Store
from cloudservice.streams import CloudStream, StreamClosed

log = logging.getLogger(__name__)

PATH = f"/apis/{DEVICES.group}/{DEVICES.version}/namespaces/{{namespace}}/devices/{{name}}/stream"
BOUNDARY = "fleetops-frame"


def _part_headers(frame: CameraFrame) -> bytes:
    return (
        f"--{BOUNDARY}\r\n"
        "Content-Type: image/jpeg\r\n"
        f"Content-Length: {len(frame.jpeg)}\r\n"
        f"X-Frame-Seq: {frame.seq}\r\n"
        f"X-Frame-Timestamp: {frame.timestamp_ms}\r\n"
        f"X-Frame-Fps: {frame.fps:.2f}\r\n"
        f"X-Frame-Bytes-Per-Second: {frame.bytes_per_s:.0f}\r\n\r\n"
    ).encode()


async def _mjpeg(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
            "Cache-Control": "no-cache, no-store",
            "Pragma": "no-cache",
        }
    )
    await response.prepare(request)
    try:
        async for frame in viewer.frames():
            await response.write(_part_headers(frame) + frame.jpeg + b"\r\n")
    except StreamClosed as exc:
        log.info("camera stream %s ended: %s", request.path, exc)
    except ConnectionError:
        pass  # the viewer went away
    return response


async def _relay(ws: web.WebSocketResponse, viewer: Viewer, path: str) -> StreamClosed | None:
    """Frames to the WebSocket until either side ends; the edge stream's end, if that was it."""

    async def send() -> None:
        async for frame in viewer.frames():
            await ws.send_bytes(encode_frame(frame))

    async def drain() -> None:  # nothing is expected from the client but its close
        async for _msg in ws:
            pass

    sender = asyncio.create_task(send(), name=f"camera-ws[{path}].send")
    reader = asyncio.create_task(drain(), name=f"camera-ws[{path}].receive")
    try:
        await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, reader):
            task.cancel()
        await asyncio.gather(sender, reader, return_exceptions=True)
    error = None if sender.cancelled() else sender.exception()
    return error if isinstance(error, StreamClosed) else None


async def _camera(
    request: web.Request, store: Store, opener: StreamOpener | None
) -> tuple[FeedKey, str, OpenStream]:
    """The feed a request asks for, its node, and how to open it; ApiError/StoreError when it cannot be."""
    ns, name = request.match_info["namespace"], request.match_info["name"]
    device = await store.get(DEVICES, ns, name)
    if not is_camera(device):
        raise ApiError(
            400, "BadRequest", f'device "{name}" is not a camera (spec.protocol.protocolName: camera)'
        )
    node = str(device.get("spec", {}).get("nodeName") or "")
    if not node:
        raise ApiError(400, "BadRequest", f'camera "{name}" is not bound to a node (spec.nodeName)')
    if opener is None:
        raise ApiError(503, "ServiceUnavailable", "camera streams need the hub, which this server lacks")
    bound: StreamOpener = opener

    async def open_stream(node: str, resource: str, params: JSONObject) -> CloudStream:
        return await open_accepted(bound, node, resource, params)

    overlay = request.query.get("overlay", "").lower() in ("1", "true", "yes")
    return FeedKey(ns, name, overlay), node, open_stream


# Bytes a stream's connection may hold outside the application, in the kernel's send buffer and again in
# the transport's (TLS) write buffer. Autotuning would grow the kernel's to megabytes on a slow link:
# seconds of video queued where the newest-frame rule cannot reach. This much is a few frames, enough
# for a LAN or a 50 ms WAN at a camera's rate; beyond it the viewer's writes wait and frames are skipped.
SEND_BUFFER_BYTES = 32 * 1024


def _bound_send_buffer(request: web.Request) -> None:
    transport = request.transport
    if transport is None:
        return
    transport.set_write_buffer_limits(high=SEND_BUFFER_BYTES)
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)


async def device_stream(
    request: web.Request, store: Store, opener: StreamOpener | None, cameras: CameraStreams
) -> web.StreamResponse:
    _bound_send_buffer(request)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        key, node, open_stream = await _camera(request, store, opener)  # errors: the middleware's Status
        async with cameras.watch(key, node, open_stream) as viewer:
            return await _mjpeg(request, viewer)
    # A WebSocket client learns why a stream failed from a text message holding the Status (a failed
    # handshake would carry only the HTTP status), then a close with 1011.
    # No permessage-deflate: JPEG does not compress, deflating it only costs CPU per frame per viewer.
    ws = web.WebSocketResponse(heartbeat=30.0, compress=False)
    await ws.prepare(request)
    status: JSONObject | None = None
    try:
        key, node, open_stream = await _camera(request, store, opener)
        async with cameras.watch(key, node, open_stream) as viewer:
            ended = await _relay(ws, viewer, request.path)
        if ended is not None:
            status = failure_status(503, "ServiceUnavailable", str(ended))
    except ApiError as exc:
        status = exc.to_status()
    except StoreError as exc:
        status = failure_status(exc.code, exc.reason, exc.message)
    if status is not None:
        log.info("camera stream %s: %s", request.path, status.get("message"))
        with contextlib.suppress(ConnectionError):
            await ws.send_str(json.dumps(status))
        await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"stream failed")
    else:
        await ws.close()
    return ws

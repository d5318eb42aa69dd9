"""The ``camera`` stream producer: a camera Device's frames, from the node's MQTT bus into a tunnel stream.

The cloud opens one stream per camera and variant (``frame``, or ``overlay`` for the inference workload's
annotated frames) however many people watch, and fans it out itself. For the life of the stream this
producer holds a lease on the camera (``app.camera``: renewed every second, so the camera workload stops
encoding within seconds of the stream's end, even if this process dies), subscribes to the frames, and
sends the newest one whenever the stream has credit. Video streams are opened with a credit window of
two frames: on a slow link the producer drops frames (counted in ``dropped``) rather than letting the
tunnel queue them, so what a viewer sees is at most two frames behind the camera.

The stream is accepted only once the first frame has arrived, so a camera whose workload is not running
(or whose source is offline) is refused with a reason the viewer can act on, instead of a response that
never shows a picture.

Deliberately not done: transcoding (the frames are forwarded as the camera encoded them) and sharing one
MQTT connection between streams (there is one per camera and variant, opened on demand).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from app.camera import (
    LEASE_RENEW_S,
    Variant,
    decode_frame,
    frame_topic,
    is_camera,
    lease_payload,
    watch_topic,
)
from app.envelope import Message
from app.errors import ValidationError
from app.resources import DEVICES, JSONObject, tunnel_resource
from edgeservice.broker import parse_url
from edgeservice.metamanager import MetaManager
from edgeservice.streams import StreamRejected, StreamSink

if TYPE_CHECKING:  # imported with the first stream: an edge nobody watches does not load the client
    import aiomqtt

log = logging.getLogger(__name__)

# How long the first frame may take before the stream is refused: a camera at 1 fps has sent one by then.
FIRST_FRAME_TIMEOUT_S = 5.0
_NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


class CameraStreamProducer:
    def __init__(self, meta: MetaManager, node: str, broker_url: Callable[[], Awaitable[str | None]]) -> None:
        self.meta = meta
        self.node = node
        self.broker_url = broker_url
        self.stats = {"frames": 0, "dropped": 0, "malformed": 0}

    async def _check(self, namespace: str, name: str) -> str:
        device = self.meta.get(tunnel_resource(DEVICES, namespace, name))
        if device is None:
            raise StreamRejected(
                404, "NotFound", f'devices.devices.kubeedge.io "{name}" not found on node {self.node}'
            )
        if not is_camera(device):
            raise StreamRejected(400, "BadRequest", f'device "{name}" is not a camera (protocol camera)')
        url = await self.broker_url()
        if url is None:
            raise StreamRejected(503, "ServiceUnavailable", f"node {self.node} has no MQTT bus running")
        return url

    def _why_no_frames(self, namespace: str, name: str, variant: Variant) -> str:
        twin = self.meta.local(f"twin/{namespace}/device/{name}") or {}
        state = str(twin.get("state") or "unknown")
        who = "inference workload (overlay)" if variant == "overlay" else "camera workload"
        return (
            f'camera "{name}" sent no frame within {FIRST_FRAME_TIMEOUT_S:.0f} s (device state {state}): '
            f"is its {who} running on node {self.node}?"
        )

    async def __call__(
        self, namespace: str, name: str, params: JSONObject, sink: StreamSink, msg: Message
    ) -> None:
        import aiomqtt

        url = await self._check(namespace, name)
        variant: Variant = "overlay" if params.get("overlay") else "frame"
        host, port = parse_url(url)
        consumer = f"edge-{self.node}-{sink.sid[-12:]}"
        try:
            async with aiomqtt.Client(
                host, port, identifier=consumer, keepalive=15, timeout=3, socket_options=_NODELAY
            ) as client:
                await client.subscribe(frame_topic(name, variant), qos=0)
                await self._stream(
                    client,
                    namespace=namespace,
                    name=name,
                    variant=variant,
                    consumer=consumer,
                    sink=sink,
                    msg=msg,
                )
        except aiomqtt.MqttError as exc:
            if not sink.accepted:
                raise StreamRejected(503, "ServiceUnavailable", f"node {self.node}: MQTT: {exc}") from exc
            raise

    async def _stream(
        self,
        client: aiomqtt.Client,
        *,
        namespace: str,
        name: str,
        variant: Variant,
        consumer: str,
        sink: StreamSink,
        msg: Message,
    ) -> None:
        import aiomqtt

        latest: list[bytes] = []  # the newest record not yet sent (at most one)
        arrived = asyncio.Event()

        async def renew() -> None:
            while True:
                await client.publish(watch_topic(name), lease_payload(consumer, variant), qos=0)
                await asyncio.sleep(LEASE_RENEW_S)

        async def receive() -> None:
            async for message in client.messages:
                payload: Any = message.payload
                if not isinstance(payload, bytes | bytearray):
                    continue
                try:
                    decode_frame(payload)  # not worth the link if it is not a frame
                except ValidationError as exc:
                    self.stats["malformed"] += 1
                    log.debug("camera %s: not a frame record: %s", name, exc)
                    continue
                if latest:
                    self.stats["dropped"] += 1
                    latest[0] = bytes(payload)
                else:
                    latest.append(bytes(payload))
                arrived.set()

        async def send() -> None:
            try:
                async with asyncio.timeout(FIRST_FRAME_TIMEOUT_S):
                    await arrived.wait()
            except TimeoutError:
                raise StreamRejected(
                    503, "ServiceUnavailable", self._why_no_frames(namespace, name, variant)
                ) from None
            sink.accept(msg)
            while True:
                await arrived.wait()
                await sink.wait_credit()  # meanwhile newer frames replace the one waiting
                arrived.clear()
                record = latest.pop()
                await sink.send_item({"b64": base64.b64encode(record).decode("ascii")})
                self.stats["frames"] += 1

        tasks = [
            asyncio.create_task(renew(), name=f"camera[{name}].lease"),
            asyncio.create_task(receive(), name=f"camera[{name}].receive"),
            asyncio.create_task(send(), name=f"camera[{name}].send"),
        ]
        try:
            # Whichever ends first ends the stream: the broker gone (receive, renew), a refusal (send).
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            raise aiomqtt.MqttError("the broker closed the connection")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(aiomqtt.MqttError):  # release at once rather than by expiry
                await client.publish(watch_topic(name), lease_payload(consumer, variant, 0), qos=0)

"""The camera workload: captures a camera Device with OpenCV and streams JPEG frames while someone watches.

One process Edged runs as a pod's container (``python -m edgeservice.workloads.camera --config FILE``).
Its config file (JSON) names the broker and the camera Devices it serves, as the protocol adapters'
configs do (a ConfigMap in a real deployment)::

    {"broker": "mqtt://127.0.0.1:1883",
     "devices": [{"metadata": {"name": "camera-1", ...},
                  "spec": {"protocol": {"protocolName": "camera",
                                        "configData": {"url": "synthetic://conveyor", "fps": 30,
                                                       "width": 640, "height": 480, "jpegQuality": 80}},
                           ...}}]}

(``app.camera`` documents ``configData``; ``edgeservice.workloads.capture`` the sources.)

Per camera, a capture thread reads frames at the configured rate, always, so a live source's buffer
never goes stale and the device's state is known: ``online`` from the first frame, ``offline`` with the
reason when the source cannot be opened or stops giving frames, retried with back-off
(``$hw/events/device/{id}/state/update``, as the adapters report). Encoding is on demand: only while a
lease of the ``frame`` variant is active on ``$ke/events/device/{id}/stream/watch`` does the thread
resize and JPEG-encode its frames; the newest record then goes out on ``.../stream/frame`` at QoS 0. A
frame not yet published when the next is encoded is replaced (counted as dropped): the newest frame wins,
a slow broker never builds a queue. Each record's header carries the fps and bytes/s actually published
over the last second.

Deliberately not done: several resolutions per camera (one setting, shared by every viewer), snapshots
to disk, and PTZ controls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import cv2
import numpy as np

from app.camera import (
    CAMERA_PROTOCOL,
    CameraFrame,
    CameraSettings,
    Leases,
    RateMeter,
    encode_frame,
    frame_topic,
    parse_camera_config,
    parse_lease,
    watch_topic,
)
from app.devices import parse_device
from app.errors import ValidationError
from app.resources import JSONObject
from edgeservice.workloads.adapter import (
    EXIT_CONFIG,
    OFFLINE,
    Broker,
    ConfigError,
    Outbox,
    mqtt_session,
    now_ms,
    parse_broker,
    read_config,
    serve_until_signalled,
    state_payload,
    state_topic,
    workload_arguments,
)
from edgeservice.workloads.capture import FrameSource, capture_loop

log = logging.getLogger(__name__)

# How often leases are checked for expiry (they are renewed every second; they live five).
LEASE_CHECK_S = 0.5


@dataclass(frozen=True, slots=True)
class Camera:
    name: str
    settings: CameraSettings


@dataclass(frozen=True, slots=True)
class CameraConfig:
    broker: Broker
    cameras: tuple[Camera, ...]


def parse_config(obj: Any) -> CameraConfig:
    """Validate the workload's config JSON; every problem is a ConfigError naming the field."""
    if not isinstance(obj, dict):
        raise ConfigError("the config must be a JSON object")
    broker = obj.get("broker")
    if not isinstance(broker, str) or not broker:
        raise ConfigError("Required value: the MQTT broker URL", field="broker")
    raw = obj.get("devices")
    if not isinstance(raw, list) or not raw:
        raise ConfigError("Required value: at least one camera Device", field="devices")
    cameras: list[Camera] = []
    try:
        for i, item in enumerate(raw):
            where = f"devices[{i}]"
            device = parse_device(item, where)
            if device.protocol.protocol_name.lower() != CAMERA_PROTOCOL:
                raise ValidationError(
                    f"{where}.spec.protocol.protocolName",
                    f"{device.protocol.protocol_name!r}: this workload serves camera devices",
                )
            if not device.name:
                raise ValidationError(f"{where}.metadata.name", "Required value")
            if any(c.name == device.name for c in cameras):
                raise ValidationError(f"{where}.metadata.name", f"Duplicate value: {device.name!r}")
            settings = parse_camera_config(device.protocol.config_data, f"{where}.spec.protocol.configData")
            cameras.append(Camera(device.name, settings))
    except ValidationError as exc:
        raise ConfigError(exc.message, field=exc.field) from exc
    return CameraConfig(parse_broker(broker), tuple(cameras))


def load_config(path: Path) -> CameraConfig:
    """Read and validate the config file; every problem is a ConfigError naming the file."""
    return read_config(path, parse_config)


class CameraStreamer:
    """One camera: its capture thread, its leases, and the newest encoded record waiting to go out."""

    def __init__(self, camera: Camera, outbox: Outbox) -> None:
        self.camera = camera
        self.outbox = outbox
        self.leases = Leases()
        self.watched = threading.Event()  # set while a lease is active: the capture thread encodes
        self.state = ""
        self.state_reason = ""
        self.published = 0
        self.dropped = 0
        self._seq = 0
        self._meter = RateMeter()
        self._latest: bytes | None = None
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # The capture thread ------------------------------------------------------------------------------

    def encode(self, frame: np.ndarray, ts: int) -> bytes | None:
        """Resize and JPEG-encode ``frame`` as the camera's settings say; ``None`` if OpenCV fails."""
        s = self.camera.settings
        if s.width is not None and s.height is not None and frame.shape[:2] != (s.height, s.width):
            frame = cv2.resize(frame, (s.width, s.height), interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, s.jpeg_quality])
        if not ok:
            return None
        data = jpeg.tobytes()
        fps, bps = self._meter.add(time.monotonic(), len(data))
        self._seq += 1
        h, w = frame.shape[:2]
        return encode_frame(CameraFrame(data, self._seq, ts, w, h, fps, bps))

    def on_frame(self, frame: np.ndarray, ts: int) -> None:
        if not self.watched.is_set():
            return  # nobody watches: captured (the source stays fresh), not encoded
        record = self.encode(frame, ts)
        if record is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._offer, record)

    def on_state(self, state: str, reason: str) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.set_state, state, reason)

    # The loop --------------------------------------------------------------------------------------

    def _offer(self, record: bytes) -> None:
        if self._latest is not None:
            self.dropped += 1
        self._latest = record
        self._wake.set()

    def set_state(self, state: str, reason: str) -> None:
        if state == self.state:
            return
        self.state, self.state_reason = state, reason
        if reason:
            log.warning("camera %s is %s: %s", self.camera.name, state, reason)
        else:
            log.info("camera %s is %s", self.camera.name, state)
        self.outbox.put(state_topic(self.camera.name), self.state_message())

    def state_message(self) -> JSONObject:
        """``state/update`` for the camera, with the reason when it is offline."""
        payload = state_payload(self.state, timestamp=now_ms())
        if self.state_reason:
            payload["reason"] = self.state_reason
        return payload

    def on_lease(self, payload: bytes | str) -> None:
        try:
            consumer, variant, ttl = parse_lease(payload)
        except ValidationError as exc:
            log.warning("camera %s: lease ignored: %s", self.camera.name, exc)
            return
        if variant != "frame":
            return  # overlay streams are the inference workload's
        self.leases.renew(consumer, ttl, time.monotonic())
        self.check_leases()

    def check_leases(self) -> None:
        if self.leases.active(time.monotonic()):
            if not self.watched.is_set():
                log.info("camera %s: streaming", self.camera.name)
                self.watched.set()
        elif self.watched.is_set():
            log.info("camera %s: nobody watches; stream stopped", self.camera.name)
            self.watched.clear()
            self._latest = None

    async def send(self, client: aiomqtt.Client) -> None:
        """Publish the newest record whenever there is one (runs while the MQTT connection is up)."""
        topic = frame_topic(self.camera.name)
        while True:
            await self._wake.wait()
            self._wake.clear()
            record, self._latest = self._latest, None
            if record is not None:
                await client.publish(topic, record, qos=0)
                self.published += 1


class CameraWorkload:
    def __init__(self, config: CameraConfig) -> None:
        self.config = config
        self.outbox = Outbox()
        self.streamers = {c.name: CameraStreamer(c, self.outbox) for c in config.cameras}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        threads = []
        for streamer in self.streamers.values():
            streamer._loop = loop
            s = streamer.camera.settings
            source = FrameSource(s.url, s.fps)
            threads.append(
                threading.Thread(
                    target=capture_loop,
                    args=(source, streamer.on_frame, stop, streamer.on_state),
                    name=f"camera[{streamer.camera.name}].capture",
                    daemon=True,
                )
            )
        for t in threads:
            t.start()
        watch = {watch_topic(name): streamer for name, streamer in self.streamers.items()}

        def on_message(topic: str, payload: Any) -> None:
            streamer = watch.get(topic)
            if streamer is not None and isinstance(payload, bytes | str):
                streamer.on_lease(payload)

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(
                    mqtt_session(
                        self.config.broker,
                        f"fleetops-camera-{os.getpid()}",
                        list(watch),
                        self.outbox,
                        on_message,
                        on_connect=self._republish_state,
                        senders=[s.send for s in self.streamers.values()],
                    ),
                    name="camera.mqtt",
                )
                tg.create_task(self._expire_leases(), name="camera.leases")
        finally:
            stop.set()
            for t in threads:  # each wakes within one frame; a capture hung in a driver is left behind
                await asyncio.to_thread(t.join, 2.0)
            await self._say_offline()

    def _republish_state(self) -> None:
        """The broker (re)connected: tell each camera's state again, with its reason."""
        for streamer in self.streamers.values():
            if streamer.state:
                self.outbox.put(state_topic(streamer.camera.name), streamer.state_message())

    async def _expire_leases(self) -> None:
        while True:
            await asyncio.sleep(LEASE_CHECK_S)
            for streamer in self.streamers.values():
                streamer.check_leases()

    async def _say_offline(self) -> None:
        """On the way out: the cameras are offline (a stopped pod does not serve them), best effort."""
        broker = self.config.broker
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError, OSError):
            async with asyncio.timeout(1.0), aiomqtt.Client(broker.host, broker.port, timeout=1) as client:
                for name in self.streamers:
                    payload = json.dumps(state_payload(OFFLINE, timestamp=now_ms()))
                    await client.publish(state_topic(name), payload, qos=1)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edgeservice.workloads.camera --config FILE``: 0 when stopped by SIGTERM/SIGINT,
    :data:`EXIT_CONFIG` on a bad config."""
    args = workload_arguments(
        "edgeservice.workloads.camera", "FleetOps camera workload", argv, "JSON config file (broker, devices)"
    )
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        log.error("bad config: %s", exc)
        return EXIT_CONFIG
    for camera in config.cameras:
        s = camera.settings
        size = f"{s.width}x{s.height}" if s.width else "source size"
        log.info(
            "camera %s: %s at %g fps, %s, JPEG quality %d", camera.name, s.url, s.fps, size, s.jpeg_quality
        )
    asyncio.run(serve_until_signalled(CameraWorkload(config).run, "camera"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

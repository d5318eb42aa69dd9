"""Cameras: the Device settings of a ``camera``, the frame record every hop carries, the MQTT topics.

A camera is a Device (``devices.kubeedge.io/v1beta1``) whose ``spec.protocol.protocolName`` is ``camera``;
its ``configData`` says where frames come from and how they are streamed::

    configData:
      url: synthetic://conveyor      # a V4L2 index ("0"), rtsp:// or http:// URL, a video file, or the
                                     #   built-in synthetic conveyor (edgeservice.workloads.capture),
                                     #   with ?seed=&defect_rate=&width=&height= if wanted
      fps: 30                        # frames per second captured and streamed (1-60, default 15)
      width: 640                     # stream resolution; both or neither (default: the source's own)
      height: 480
      jpegQuality: 80                # 1-100 (default 80)

:func:`parse_camera_config` validates those fields with the path of the bad one, so ``kubectl apply`` of
a camera with ``fps: 0`` (or ``url: synthetic://belt``) is refused with a reason, as any other bad field
is. What can be checked of a real source without opening it is its form; whether it opens is the edge's
to find out, and it says so in the Device's state and Events.

Streams are on demand and the newest frame wins at every hop (DESIGN.md, flow 3). A consumer that wants
frames publishes a *lease* on the camera's watch topic every :data:`LEASE_RENEW_S` seconds; the producer
streams while an unexpired lease of its variant exists, so a consumer that dies (an edge restarted, a
tunnel dropped) stops the frames within :data:`LEASE_TTL_S` seconds without anyone having to say so.
Two variants exist: ``frame`` (the camera workload's JPEGs) and ``overlay`` (the inference workload's,
with its results drawn on the frames it inferred).

A frame travels as one *record*: a JSON header line, ``\\n``, then the JPEG bytes. The same bytes are an
MQTT payload (camera -> edge), base64 in a tunnel stream chunk (edge -> cloud), and a WebSocket binary
message (cloud -> client). The header is small and versioned by its keys: ``seq`` (the producer's frame
counter), ``ts`` (capture time, ms since the epoch: glass-to-glass latency is measured from it), ``w`` and
``h``, ``fps`` and ``bps`` (what the producer achieved over the last second). Unknown keys are ignored, so
a newer producer can add some.

Deliberately not done: audio, H.264 (JPEG per frame costs more bytes but no decoder state, so a viewer
can join or drop frames at any point), and timestamps from the camera's own clock.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import parse_qs, urlsplit

from app.errors import ValidationError
from app.resources import JSONObject

CAMERA_PROTOCOL: Final = "camera"
SYNTHETIC_SCHEME: Final = "synthetic://"
SYNTHETIC_CONVEYOR: Final = "synthetic://conveyor"
# The synthetic conveyor's query parameters and their types (app.synthetic.ConveyorSource's arguments).
SYNTHETIC_PARAMS: Final[dict[str, type[int] | type[float]]] = {
    "seed": int,
    "defect_rate": float,
    "width": int,
    "height": int,
}
# The conveyor's smallest frame: twice its inspection window (app.synthetic.CROP_SIZE, a test keeps the two
# in step; the cloud validates Devices without importing the renderer and OpenCV).
SYNTHETIC_MIN_SIDE: Final = 128
Variant = Literal["frame", "overlay"]
VARIANTS: Final[tuple[Variant, ...]] = ("frame", "overlay")

DEFAULT_FPS: Final = 15.0
MAX_FPS: Final = 60.0
DEFAULT_JPEG_QUALITY: Final = 80
MIN_SIDE, MAX_SIDE = 16, 7680  # pixels: a thumbnail to 8K
# A consumer renews its lease every LEASE_RENEW_S; a lease not renewed for LEASE_TTL_S has expired.
LEASE_RENEW_S: Final = 1.0
LEASE_TTL_S: Final = 5.0
# The largest record accepted anywhere (a 4K frame at quality 100 is ~3 MB): bounds every hop's memory.
MAX_RECORD_BYTES: Final = 8 * 1024 * 1024
_MAX_HEADER = 4096
_RATE_WINDOW_S = 1.0  # seconds over which a producer's fps and bytes/s are measured


@dataclass(frozen=True, slots=True)
class CameraSettings:
    url: str
    fps: float = DEFAULT_FPS
    width: int | None = None  # None: the source's own size
    height: int | None = None
    jpeg_quality: int = DEFAULT_JPEG_QUALITY


def _number(data: Mapping[str, Any], key: str, path: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{path}.{key}", f"must be a number, not {value!r}")
    return float(value)


def parse_synthetic_url(url: str, path: str = "url") -> dict[str, int | float]:
    """The arguments of ``synthetic://conveyor?seed=&defect_rate=&width=&height=`` for
    :class:`app.synthetic.ConveyorSource`; ValidationError on ``path`` for another name, an unknown
    parameter or a value out of range (the source would refuse it at the edge, too late to say so)."""
    parts = urlsplit(url)
    if f"{parts.scheme}://{parts.netloc}{parts.path}" != SYNTHETIC_CONVEYOR:
        raise ValidationError(path, f"{url!r}: the only synthetic source is {SYNTHETIC_CONVEYOR}")
    params: dict[str, int | float] = {}
    for key, values in parse_qs(parts.query, keep_blank_values=True).items():
        kind = SYNTHETIC_PARAMS.get(key)
        if kind is None:
            raise ValidationError(
                path, f"unknown parameter {key!r} of {SYNTHETIC_CONVEYOR}: use {', '.join(SYNTHETIC_PARAMS)}"
            )
        try:
            params[key] = kind(values[-1])
        except ValueError as exc:
            what = "a whole number" if kind is int else "a number"
            raise ValidationError(path, f"{key}={values[-1]!r} is not {what}") from exc
    seed = params.get("seed", 0)
    if seed < 0:
        raise ValidationError(path, f"seed={seed} must not be negative")
    rate = params.get("defect_rate", 0.0)
    if not 0.0 <= rate <= 1.0:
        raise ValidationError(path, f"defect_rate={rate:g} must be from 0 to 1")
    for key in ("width", "height"):
        side = params.get(key)
        if side is not None and not SYNTHETIC_MIN_SIDE <= side <= MAX_SIDE:
            raise ValidationError(path, f"{key}={side} must be {SYNTHETIC_MIN_SIDE} to {MAX_SIDE} pixels")
    return params


def parse_camera_config(data: Mapping[str, Any], path: str = "spec.protocol.configData") -> CameraSettings:
    """A camera Device's ``configData``; raises ValidationError naming the field."""
    url = data.get("url")
    if isinstance(url, int) and not isinstance(url, bool):
        url = str(url)  # a V4L2 index written as a number
    if not isinstance(url, str) or not url.strip():
        raise ValidationError(
            f"{path}.url",
            "Required value: a camera index, an rtsp:// or http:// URL, a video file or synthetic://conveyor",
        )
    if url.strip().startswith(SYNTHETIC_SCHEME):
        parse_synthetic_url(url.strip(), f"{path}.url")
    fps = _number(data, "fps", path)
    if fps is not None and not 0 < fps <= MAX_FPS:
        raise ValidationError(f"{path}.fps", f"must be more than 0 and at most {MAX_FPS:g}, not {fps:g}")
    sides: dict[str, int] = {}
    for key in ("width", "height"):
        side = _number(data, key, path)
        if side is None:
            continue
        if side != int(side) or not MIN_SIDE <= side <= MAX_SIDE:
            raise ValidationError(
                f"{path}.{key}", f"must be a whole number of pixels from {MIN_SIDE} to {MAX_SIDE}"
            )
        sides[key] = int(side)
    if len(sides) == 1:
        missing = "height" if "width" in sides else "width"
        raise ValidationError(f"{path}.{missing}", "Required value: width and height go together")
    quality = _number(data, "jpegQuality", path)
    if quality is not None and (quality != int(quality) or not 1 <= quality <= 100):
        raise ValidationError(f"{path}.jpegQuality", "must be a whole number from 1 to 100")
    return CameraSettings(
        url=url.strip(),
        fps=DEFAULT_FPS if fps is None else fps,
        width=sides.get("width"),
        height=sides.get("height"),
        jpeg_quality=DEFAULT_JPEG_QUALITY if quality is None else int(quality),
    )


def is_camera(device: JSONObject) -> bool:
    """Whether a Device object (JSON) is a camera."""
    spec = device.get("spec")
    protocol = spec.get("protocol") if isinstance(spec, dict) else None
    name = protocol.get("protocolName") if isinstance(protocol, dict) else None
    return isinstance(name, str) and name.lower() == CAMERA_PROTOCOL


# Frame records ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CameraFrame:
    """One JPEG frame and what the producer says about it."""

    jpeg: bytes
    seq: int
    timestamp_ms: int  # capture time at the edge
    width: int
    height: int
    fps: float = 0.0  # achieved by the producer over the last second
    bytes_per_s: float = 0.0

    def header(self) -> JSONObject:
        return {
            "seq": self.seq,
            "ts": self.timestamp_ms,
            "w": self.width,
            "h": self.height,
            "fps": round(self.fps, 2),
            "bps": round(self.bytes_per_s),
        }


def encode_frame(frame: CameraFrame) -> bytes:
    return json.dumps(frame.header(), separators=(",", ":")).encode() + b"\n" + frame.jpeg


def _int_field(header: Mapping[str, Any], key: str) -> int:
    value = header.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(key, f"must be a non-negative integer, not {value!r}")
    return value


def _float_field(header: Mapping[str, Any], key: str) -> float:
    value = header.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValidationError(key, f"must be a non-negative number, not {value!r}")
    return float(value)


def decode_frame(record: bytes | bytearray | memoryview) -> CameraFrame:
    """A record back; ValidationError (naming the header field) when it is not one."""
    data = bytes(record)
    if len(data) > MAX_RECORD_BYTES:
        raise ValidationError("", f"frame record of {len(data)} bytes is over the {MAX_RECORD_BYTES} limit")
    end = data.find(b"\n", 0, _MAX_HEADER)
    if end < 0:
        raise ValidationError("", "not a frame record: no header line")
    try:
        header: Any = json.loads(data[:end])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError("", f"frame header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ValidationError("", "frame header must be a JSON object")
    jpeg = data[end + 1 :]
    if not jpeg.startswith(b"\xff\xd8"):
        raise ValidationError("", "frame payload is not a JPEG image")
    return CameraFrame(
        jpeg=jpeg,
        seq=_int_field(header, "seq"),
        timestamp_ms=_int_field(header, "ts"),
        width=_int_field(header, "w"),
        height=_int_field(header, "h"),
        fps=_float_field(header, "fps"),
        bytes_per_s=_float_field(header, "bps"),
    )


# MQTT topics and leases ------------------------------------------------------------------------------------


def frame_topic(device: str, variant: Variant = "frame") -> str:
    """Where a producer publishes a camera's records (QoS 0: a lost frame is replaced by the next)."""
    return f"$ke/events/device/{device}/stream/{variant}"


def watch_topic(device: str) -> str:
    """Where consumers publish their leases on a camera's frames."""
    return f"$ke/events/device/{device}/stream/watch"


def lease_payload(consumer: str, variant: Variant, ttl: float = LEASE_TTL_S) -> bytes:
    """A lease (``ttl`` 0 releases it at once)."""
    return json.dumps({"consumer": consumer, "variant": variant, "ttl": ttl}, separators=(",", ":")).encode()


def parse_lease(payload: bytes | bytearray | str) -> tuple[str, Variant, float]:
    """(consumer, variant, ttl seconds) of a lease; ValidationError naming the field otherwise."""
    try:
        obj: Any = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError("", f"malformed JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValidationError("", "a lease must be a JSON object")
    consumer, variant, ttl = obj.get("consumer"), obj.get("variant", "frame"), obj.get("ttl", LEASE_TTL_S)
    if not isinstance(consumer, str) or not consumer or len(consumer) > 256:
        raise ValidationError("consumer", "Required value: a name of 1-256 characters")
    if variant not in VARIANTS:
        raise ValidationError("variant", f"must be one of {', '.join(VARIANTS)}, not {variant!r}")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 <= ttl <= 60:
        raise ValidationError("ttl", f"must be a number of seconds from 0 to 60, not {ttl!r}")
    return consumer, variant, float(ttl)


class Leases:
    """The unexpired leases of one producer, by consumer. Time is an argument, so it is tested exactly."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def renew(self, consumer: str, ttl: float, now: float) -> None:
        if ttl <= 0:
            self._until.pop(consumer, None)
        else:
            self._until[consumer] = now + ttl

    def active(self, now: float) -> bool:
        for consumer, until in list(self._until.items()):
            if until <= now:
                del self._until[consumer]
        return bool(self._until)


class RateMeter:
    """Frames and bytes per second over the last second (a sliding window of events)."""

    def __init__(self) -> None:
        self._events: deque[tuple[float, int]] = deque()
        self._bytes = 0

    def add(self, now: float, size: int) -> tuple[float, float]:
        """Count one frame of ``size`` bytes; the (frames/s, bytes/s) now."""
        self._events.append((now, size))
        self._bytes += size
        return self.rates(now)

    def rates(self, now: float) -> tuple[float, float]:
        cutoff = now - _RATE_WINDOW_S
        while self._events and self._events[0][0] <= cutoff:
            self._bytes -= self._events.popleft()[1]
        return len(self._events) / _RATE_WINDOW_S, self._bytes / _RATE_WINDOW_S

"""Camera settings, frame records, leases and rate meters (app.camera): pure, no I/O."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.camera import (
    DEFAULT_FPS,
    DEFAULT_JPEG_QUALITY,
    SYNTHETIC_MIN_SIDE,
    CameraFrame,
    CameraSettings,
    Leases,
    RateMeter,
    decode_frame,
    encode_frame,
    is_camera,
    lease_payload,
    parse_camera_config,
    parse_lease,
    parse_synthetic_url,
)
from app.devices import parse_device, parse_device_model
from app.errors import ValidationError

JPEG = b"\xff\xd8\xff\xe0" + b"x" * 100 + b"\xff\xd9"
PATH = "spec.protocol.configData"


def test_defaults_and_a_numeric_camera_index() -> None:
    assert parse_camera_config({"url": 0}) == CameraSettings(url="0")
    full = parse_camera_config(
        {"url": " rtsp://cam/1 ", "fps": 25, "width": 640, "height": 480, "jpegQuality": 60}
    )
    assert full == CameraSettings("rtsp://cam/1", 25.0, 640, 480, 60)
    assert CameraSettings("x").fps == DEFAULT_FPS and CameraSettings("x").jpeg_quality == DEFAULT_JPEG_QUALITY


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "url"),
        ({"url": ""}, "url"),
        ({"url": True}, "url"),
        ({"url": "0", "fps": 0}, "fps"),
        ({"url": "0", "fps": 61}, "fps"),
        ({"url": "0", "fps": "30"}, "fps"),
        ({"url": "0", "width": 640}, "height"),
        ({"url": "0", "height": 480}, "width"),
        ({"url": "0", "width": 640.5, "height": 480}, "width"),
        ({"url": "0", "width": 8, "height": 8}, "width"),
        ({"url": "0", "jpegQuality": 0}, "jpegQuality"),
        ({"url": "0", "jpegQuality": 101}, "jpegQuality"),
    ],
)
def test_bad_settings_name_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_camera_config(data)
    assert err.value.field == f"{PATH}.{field}"


def test_the_synthetic_conveyor_and_its_parameters() -> None:
    url = "synthetic://conveyor?seed=3&defect_rate=0.25&width=320&height=240"
    assert parse_camera_config({"url": url}).url == url
    assert parse_synthetic_url(url) == {"seed": 3, "defect_rate": 0.25, "width": 320, "height": 240}
    assert parse_synthetic_url("synthetic://conveyor") == {}


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("synthetic://belt", "the only synthetic source is synthetic://conveyor"),
        ("synthetic://conveyor/2", "the only synthetic source"),
        ("synthetic://", "the only synthetic source"),
        ("synthetic://conveyor?speed=3", "unknown parameter 'speed'"),
        ("synthetic://conveyor?seed=x", "seed='x' is not a whole number"),
        ("synthetic://conveyor?seed=", "seed='' is not a whole number"),
        ("synthetic://conveyor?seed=-1", "must not be negative"),
        ("synthetic://conveyor?defect_rate=1.5", "defect_rate=1.5 must be from 0 to 1"),
        ("synthetic://conveyor?defect_rate=nan", "must be from 0 to 1"),
        ("synthetic://conveyor?width=64", "width=64 must be 128 to"),
    ],
)
def test_a_bad_synthetic_url_is_refused_with_the_reason(url: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why) as err:
        parse_camera_config({"url": url})
    assert err.value.field == f"{PATH}.url"


def test_the_synthetic_minimum_side_is_the_renderers() -> None:
    from app import synthetic

    assert SYNTHETIC_MIN_SIDE == 2 * synthetic.CROP_SIZE
    synthetic.ConveyorSource(width=SYNTHETIC_MIN_SIDE, height=SYNTHETIC_MIN_SIDE)  # accepted there too
    with pytest.raises(ValueError, match="too small"):
        synthetic.ConveyorSource(width=SYNTHETIC_MIN_SIDE - 1, height=SYNTHETIC_MIN_SIDE)


def _device(config: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "cam", "namespace": "default"},
        "spec": {
            "deviceModelRef": {"name": "camera"},
            "protocol": {"protocolName": "camera", "configData": config},
        },
    }


def test_a_camera_device_is_checked_when_parsed_and_its_model_needs_no_properties() -> None:
    assert is_camera(_device({"url": "0"}))
    assert not is_camera({"spec": {"protocol": {"protocolName": "modbus"}}}) and not is_camera({})
    parse_device(_device({"url": "synthetic://conveyor", "fps": 30}))
    with pytest.raises(ValidationError) as err:
        parse_device(_device({"url": "0", "fps": -1}))
    assert err.value.field == f"{PATH}.fps"
    parse_device_model({"metadata": {"name": "camera"}, "spec": {"protocol": "camera", "properties": []}})
    with pytest.raises(ValidationError):
        parse_device_model({"metadata": {"name": "pump"}, "spec": {"protocol": "modbus", "properties": []}})


def test_a_frame_record_round_trips() -> None:
    frame = CameraFrame(
        JPEG, seq=7, timestamp_ms=1_700_000_000_123, width=640, height=480, fps=29.5, bytes_per_s=4e5
    )
    record = encode_frame(frame)
    header, _, body = record.partition(b"\n")
    assert json.loads(header) == {
        "seq": 7,
        "ts": 1_700_000_000_123,
        "w": 640,
        "h": 480,
        "fps": 29.5,
        "bps": 400000,
    }
    assert body == JPEG
    assert decode_frame(record) == frame
    assert decode_frame(b'{"seq":1,"ts":2,"w":3,"h":4,"newer":"ignored"}\n' + JPEG).fps == 0.0


@pytest.mark.parametrize(
    ("record", "why"),
    [
        (b"", "no header"),
        (JPEG, "no header"),
        (b"[1]\n" + JPEG, "JSON object"),
        (b"{nope\n" + JPEG, "not JSON"),
        (b'{"seq":1,"ts":2,"w":3,"h":4}\nGIF89a', "not a JPEG"),
        (b'{"seq":-1,"ts":2,"w":3,"h":4}\n' + JPEG, "non-negative"),
        (b'{"seq":1,"ts":"now","w":3,"h":4}\n' + JPEG, "non-negative"),
        (b'{"seq":1,"ts":2,"w":3}\n' + JPEG, "non-negative"),
        (b'{"seq":1,"ts":2,"w":3,"h":4,"fps":"fast"}\n' + JPEG, "number"),
    ],
)
def test_malformed_records_are_refused_with_a_reason(record: bytes, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        decode_frame(record)


def test_leases_expire_and_release() -> None:
    leases = Leases()
    assert not leases.active(0.0)
    leases.renew("edge-a", 5.0, now=0.0)
    leases.renew("edge-b", 2.0, now=1.0)
    assert leases.active(2.9)
    leases.renew("edge-a", 0, now=3.0)  # released at once
    assert not leases.active(3.0)
    leases.renew("edge-a", 5.0, now=10.0)
    assert leases.active(14.9) and not leases.active(15.0)


def test_lease_payloads() -> None:
    assert parse_lease(lease_payload("inference-1", "overlay", 3)) == ("inference-1", "overlay", 3.0)
    assert parse_lease(b'{"consumer": "x"}') == ("x", "frame", 5.0)
    for bad, field in [
        (b'{"consumer": ""}', "consumer"),
        (b'{"consumer": "x", "variant": "thermal"}', "variant"),
        (b'{"consumer": "x", "ttl": 3600}', "ttl"),
        (b'{"consumer": "x", "ttl": true}', "ttl"),
    ]:
        with pytest.raises(ValidationError) as err:
            parse_lease(bad)
        assert err.value.field == field
    with pytest.raises(ValidationError, match="malformed JSON"):
        parse_lease(b"\xff")


def test_rate_meter_counts_the_last_second() -> None:
    meter = RateMeter()
    for i in range(30):
        meter.add(i / 30, 1000)
    assert meter.rates(29 / 30) == (30.0, 30000.0)
    assert meter.rates(1.5) == (14.0, 14000.0)  # the frames of the last second only
    assert meter.rates(5.0) == (0.0, 0.0)

"""Device and DeviceModel validation: every bad input names its field; good input parses into typed views.
A desired value its model does not allow is refused by the API (422 naming the field) and, when the model
came too late for that, by the edge's devicetwin (a Warning Event, no delta)."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.devices import (
    ModelProperty,
    check_device_against_model,
    check_value,
    desired_value_problems,
    parse_device,
    parse_device_model,
)
from app.envelope import Message
from app.errors import ValidationError
from app.resources import DEVICES
from cloudservice.api import ApiServer, build_app, strategy
from cloudservice.api.status import ApiError
from cloudservice.store.sql import open_store
from edgeservice.devicetwin import DeviceTwin
from edgeservice.metamanager import MetaManager


def _model() -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": "thermo", "namespace": "default"},
        "spec": {
            "protocol": "modbus",
            "properties": [
                {
                    "name": "temperature",
                    "type": "FLOAT",
                    "accessMode": "ReadOnly",
                    "minimum": "-40",
                    "maximum": "125",
                    "unit": "C",
                },
                {
                    "name": "setpoint",
                    "type": "INT",
                    "accessMode": "ReadWrite",
                    "minimum": "0",
                    "maximum": "100",
                },
                {"name": "enabled", "type": "BOOLEAN", "accessMode": "ReadWrite"},
            ],
        },
    }


def _device() -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": "thermo-1", "namespace": "default"},
        "spec": {
            "deviceModelRef": {"name": "thermo"},
            "nodeName": "edge-1",
            "protocol": {"protocolName": "modbus", "configData": {"ip": "127.0.0.1", "port": 502}},
            "properties": [
                {
                    "name": "temperature",
                    "visitors": {
                        "protocolName": "modbus",
                        "configData": {"register": "InputRegister", "offset": 0, "limit": 1, "scale": 0.1},
                    },
                    "reportCycle": 1000,
                    "collectCycle": 500,
                    "reportToCloud": True,
                },
                {
                    "name": "setpoint",
                    "desired": {"value": "21", "metadata": {"timestamp": "1700000000000"}},
                    "visitors": {
                        "protocolName": "modbus",
                        "configData": {"register": "HoldingRegister", "offset": 3, "isSwap": True},
                    },
                },
            ],
        },
        "status": {
            "state": "online",
            "twins": [{"propertyName": "setpoint", "reported": {"value": "20"}}],
        },
    }


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``base`` deep-copied with the dotted ``path`` set (or deleted when ``value`` is ``...``)."""
    obj = copy.deepcopy(base)
    cur: Any = obj
    keys = path.split(".")
    for k in keys[:-1]:
        cur = cur[int(k)] if isinstance(cur, list) else cur[k]
    last = keys[-1]
    if value is ...:
        del cur[last]
    elif isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value
    return obj


def test_good_model_parses() -> None:
    model = parse_device_model(_model())
    assert model.name == "thermo" and model.protocol == "modbus"
    temp = model.property("temperature")
    assert temp is not None and temp.type == "FLOAT" and not temp.writable and temp.unit == "C"
    assert model.property("missing") is None


def test_good_device_parses() -> None:
    dev = parse_device(_device())
    assert (dev.name, dev.model_ref, dev.node_name) == ("thermo-1", "thermo", "edge-1")
    assert dev.protocol.config_data == {"ip": "127.0.0.1", "port": 502}
    temp = dev.property("temperature")
    assert temp is not None and temp.visitors.modbus is not None
    assert temp.visitors.modbus.register == "InputRegister" and temp.visitors.modbus.scale == 0.1
    assert (temp.report_cycle, temp.collect_cycle, temp.report_to_cloud) == (1000, 500, True)
    setpoint = dev.property("setpoint")
    assert setpoint is not None and setpoint.desired is not None and setpoint.desired.value == "21"
    assert setpoint.visitors.modbus is not None and setpoint.visitors.modbus.is_swap
    assert dev.status.state == "online" and dev.status.twins[0].reported is not None
    check_device_against_model(dev, parse_device_model(_model()))


def test_opcua_visitor_parses() -> None:
    obj = _with(_device(), "spec.protocol.protocolName", "opcua")
    for i in (0, 1):
        obj["spec"]["properties"][i]["visitors"] = {
            "protocolName": "opcua",
            "configData": {"nodeID": f"ns=2;i={i}"},
        }
    dev = parse_device(obj)
    assert [p.visitors.opcua.node_id for p in dev.properties if p.visitors.opcua] == ["ns=2;i=0", "ns=2;i=1"]


def test_nested_field_prefix() -> None:
    with pytest.raises(ValidationError) as err:
        parse_device(_with(_device(), "spec.nodeName", 7), field="content")
    assert err.value.field == "content.spec.nodeName"


P0 = "spec.properties.0"
BAD_MODELS: list[tuple[str, str, Any, str, str]] = [
    ("no spec", "spec", ..., "spec", "Required"),
    ("no protocol", "spec.protocol", ..., "spec.protocol", "Required"),
    ("no properties", "spec.properties", [], "spec.properties", "Required"),
    ("properties not a list", "spec.properties", {}, "spec.properties", "list"),
    ("property not an object", P0, "x", "spec.properties[0]", "object"),
    ("no name", f"{P0}.name", ..., "spec.properties[0].name", "Required"),
    ("bad name chars", f"{P0}.name", "temp erature", "spec.properties[0].name", "characters"),
    ("bad type", f"{P0}.type", "LONG", "spec.properties[0].type", "Unsupported"),
    ("no type", f"{P0}.type", ..., "spec.properties[0].type", "Required"),
    ("bad access mode", f"{P0}.accessMode", "WriteOnly", "spec.properties[0].accessMode", "Unsupported"),
    ("min not a number", f"{P0}.minimum", "cold", "spec.properties[0].minimum", "FLOAT"),
    ("min above max", f"{P0}.minimum", "200", "spec.properties[0].maximum", "minimum"),
    ("int min not an int", "spec.properties.1.minimum", "1.5", "spec.properties[1].minimum", "INT"),
    ("bound on boolean", "spec.properties.2.maximum", "1", "spec.properties[2].maximum", "numeric"),
    ("unit not a string", f"{P0}.unit", 3, "spec.properties[0].unit", "string"),
    ("duplicate name", "spec.properties.1.name", "temperature", "spec.properties[1].name", "Duplicate"),
]


@pytest.mark.parametrize(
    ("path", "value", "field", "message"), [c[1:] for c in BAD_MODELS], ids=[c[0] for c in BAD_MODELS]
)
def test_bad_model_names_field(path: str, value: Any, field: str, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_device_model(_with(_model(), path, value))
    assert err.value.field == field
    assert message in err.value.message


V = "spec.properties.0.visitors"
VF = "spec.properties[0].visitors"
BAD_DEVICES: list[tuple[str, str, Any, str, str]] = [
    ("no model ref", "spec.deviceModelRef", ..., "spec.deviceModelRef", "Required"),
    ("empty model ref name", "spec.deviceModelRef.name", "", "spec.deviceModelRef.name", "Required"),
    ("node name not a string", "spec.nodeName", 1, "spec.nodeName", "string"),
    ("no protocol", "spec.protocol", ..., "spec.protocol", "Required"),
    ("no protocol name", "spec.protocol.protocolName", ..., "spec.protocol.protocolName", "Required"),
    ("configData not an object", "spec.protocol.configData", [], "spec.protocol.configData", "object"),
    ("property name missing", "spec.properties.0.name", ..., "spec.properties[0].name", "Required"),
    ("duplicate property", "spec.properties.1.name", "temperature", "spec.properties[1].name", "Duplicate"),
    ("no visitors", V, ..., VF, "Required"),
    ("visitor protocol differs", f"{V}.protocolName", "opcua", f"{VF}.protocolName", "differs"),
    ("no register", f"{V}.configData.register", ..., f"{VF}.configData.register", "Required"),
    ("bad register", f"{V}.configData.register", "Coil", f"{VF}.configData.register", "Unsupported"),
    ("no offset", f"{V}.configData.offset", ..., f"{VF}.configData.offset", "Required"),
    ("negative offset", f"{V}.configData.offset", -1, f"{VF}.configData.offset", ">= 0"),
    ("offset too big", f"{V}.configData.offset", 70000, f"{VF}.configData.offset", "<= 65535"),
    ("offset a string", f"{V}.configData.offset", "1", f"{VF}.configData.offset", "integer"),
    ("zero limit", f"{V}.configData.limit", 0, f"{VF}.configData.limit", ">= 1"),
    ("scale not a number", f"{V}.configData.scale", "x", f"{VF}.configData.scale", "number"),
    ("zero scale", f"{V}.configData.scale", 0, f"{VF}.configData.scale", "not be 0"),
    ("isSwap not bool", f"{V}.configData.isSwap", "yes", f"{VF}.configData.isSwap", "boolean"),
    (
        "isRegisterSwap not bool",
        f"{V}.configData.isRegisterSwap",
        1,
        f"{VF}.configData.isRegisterSwap",
        "boolean",
    ),
    ("dataType not a string", f"{V}.configData.dataType", 4, f"{VF}.configData.dataType", "string"),
    ("modbus without configData", f"{V}.configData", ..., f"{VF}.configData", "Required"),
    ("reportCycle negative", "spec.properties.0.reportCycle", -5, "spec.properties[0].reportCycle", ">= 0"),
    (
        "collectCycle a string",
        "spec.properties.0.collectCycle",
        "1s",
        "spec.properties[0].collectCycle",
        "integer",
    ),
    (
        "reportToCloud a string",
        "spec.properties.0.reportToCloud",
        "true",
        "spec.properties[0].reportToCloud",
        "boolean",
    ),
    ("desired not an object", "spec.properties.1.desired", "21", "spec.properties[1].desired", "object"),
    (
        "desired value a number",
        "spec.properties.1.desired.value",
        21,
        "spec.properties[1].desired.value",
        "string",
    ),
    (
        "desired metadata not strings",
        "spec.properties.1.desired.metadata",
        {"timestamp": 1},
        "spec.properties[1].desired.metadata.timestamp",
        "string",
    ),
    (
        "desired value too long",
        "spec.properties.1.desired.value",
        "x" * 513,
        "spec.properties[1].desired.value",
        "512",
    ),
    ("status twins not a list", "status.twins", {}, "status.twins", "list"),
    ("status twin no name", "status.twins.0.propertyName", ..., "status.twins[0].propertyName", "Required"),
    (
        "reported value a bool",
        "status.twins.0.reported",
        {"value": True},
        "status.twins[0].reported.value",
        "string",
    ),
    ("state not a string", "status.state", 1, "status.state", "string"),
    ("lastOnlineTime not a string", "status.lastOnlineTime", 1, "status.lastOnlineTime", "string"),
]


@pytest.mark.parametrize(
    ("path", "value", "field", "message"), [c[1:] for c in BAD_DEVICES], ids=[c[0] for c in BAD_DEVICES]
)
def test_bad_device_names_field(path: str, value: Any, field: str, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_device(_with(_device(), path, value))
    assert err.value.field == field
    assert message in err.value.message


def test_opcua_needs_node_id() -> None:
    obj = _with(_device(), "spec.protocol.protocolName", "opcua")
    obj["spec"]["properties"] = [{"name": "t", "visitors": {"protocolName": "opcua", "configData": {}}}]
    with pytest.raises(ValidationError) as err:
        parse_device(obj)
    assert err.value.field == "spec.properties[0].visitors.configData.nodeID"


AGAINST_MODEL: list[tuple[str, str, Any, str, str]] = [
    ("unknown property", "spec.properties.0.name", "humidity", "spec.properties[0].name", "not a property"),
    ("protocol differs", "spec.protocol.protocolName", "opcua", "spec.protocol.protocolName", "differs"),
    (
        "desired out of range",
        "spec.properties.1.desired.value",
        "101",
        "spec.properties[1].desired.value",
        "maximum",
    ),
    (
        "desired wrong type",
        "spec.properties.1.desired.value",
        "2.5",
        "spec.properties[1].desired.value",
        "INT",
    ),
    (
        "desired on a ReadOnly property",
        "spec.properties.0.desired",
        {"value": "20"},
        "spec.properties[0].desired.value",
        "ReadOnly",
    ),
]


@pytest.mark.parametrize(
    ("path", "value", "field", "message"), [c[1:] for c in AGAINST_MODEL], ids=[c[0] for c in AGAINST_MODEL]
)
def test_device_against_model(path: str, value: Any, field: str, message: str) -> None:
    obj = _with(_device(), path, value)
    if path == "spec.protocol.protocolName":  # keep the visitors consistent so only the model check fails
        for p in obj["spec"]["properties"]:
            p["visitors"] = {"protocolName": "opcua", "configData": {"nodeID": "ns=1;i=1"}}
    with pytest.raises(ValidationError) as err:
        check_device_against_model(parse_device(obj), parse_device_model(_model()))
    assert err.value.field == field
    assert message in err.value.message


_INT = ModelProperty("setpoint", "INT", "ReadWrite", minimum="0", maximum="100")
_FLOAT = ModelProperty("temp", "DOUBLE", "ReadWrite", minimum="-40.5", maximum="125")
_RO = ModelProperty("temp", "FLOAT", "ReadOnly")
_BOOL = ModelProperty("on", "BOOLEAN", "ReadWrite")
_STR = ModelProperty("label", "STRING", "ReadWrite")
_BYTES = ModelProperty("blob", "BYTES", "ReadWrite")

VALUES: list[tuple[str, ModelProperty, str, bool, str | None]] = [
    ("int ok", _INT, "42", True, None),
    ("int with sign", _INT, "+7", True, None),
    ("int at minimum", _INT, "0", True, None),
    ("int at maximum", _INT, "100", True, None),
    ("int below minimum", _INT, "-1", True, "minimum"),
    ("int above maximum", _INT, "101", True, "maximum"),
    ("int not a number", _INT, "ten", True, "INT"),
    ("int with a fraction", _INT, "1.0", True, "INT"),
    ("int with spaces", _INT, " 1", True, "INT"),
    ("int beyond int64", _INT, str(2**63), True, "INT"),
    ("double ok", _FLOAT, "21.5", True, None),
    ("double exponent", _FLOAT, "1e2", True, None),
    ("double below minimum", _FLOAT, "-41", True, "minimum"),
    ("double nan", _FLOAT, "nan", True, "DOUBLE"),
    ("double inf", _FLOAT, "inf", True, "DOUBLE"),
    ("double garbage", _FLOAT, "warm", True, "DOUBLE"),
    ("read-only write", _RO, "20", True, "ReadOnly"),
    ("read-only reading", _RO, "20", False, None),
    ("bool true", _BOOL, "true", True, None),
    ("bool capitalised", _BOOL, "True", True, "true or false"),
    ("bool number", _BOOL, "1", True, "true or false"),
    ("string anything", _STR, "hello world", True, None),
    ("string too long", _STR, "x" * 513, True, "512"),
    ("bytes anything", _BYTES, "AAEC", True, None),
]


@pytest.mark.parametrize(
    ("prop", "value", "write", "problem"), [c[1:] for c in VALUES], ids=[c[0] for c in VALUES]
)
def test_check_value(prop: ModelProperty, value: str, write: bool, problem: str | None) -> None:
    if problem is None:
        check_value(prop, value, write=write)
        return
    with pytest.raises(ValidationError) as err:
        check_value(prop, value, write=write)
    assert err.value.field == prop.name
    assert problem in err.value.message


def test_check_value_uses_given_field() -> None:
    with pytest.raises(ValidationError) as err:
        check_value(_INT, "x", field="twin.setpoint.expected")
    assert err.value.field == "twin.setpoint.expected"


# Desired values against the model: at the API (the strategy) and at the edge (devicetwin) ----------------

BAD_DESIRED: list[tuple[str, int, str, str]] = [
    # (case, property index, desired value, what the message names)
    ("out of range", 1, "250", "250 is above the maximum 100"),
    ("wrong type", 1, "warm", "'warm' is not a valid INT"),
    ("ReadOnly", 0, "20", "property 'temperature' is ReadOnly"),
]


def _desired(index: int, value: str) -> dict[str, Any]:
    return _with(_device(), f"spec.properties.{index}.desired", {"value": value})


@pytest.mark.parametrize(
    ("index", "value", "message"), [c[1:] for c in BAD_DESIRED], ids=[c[0] for c in BAD_DESIRED]
)
def test_api_refuses_a_desired_value_its_model_does_not_allow(index: int, value: str, message: str) -> None:
    obj = _desired(index, value)
    with pytest.raises(ApiError) as err:
        strategy.validate(DEVICES, obj, models={"thermo": _model()})
    field = f"spec.properties[{index}].desired.value"
    status = err.value.to_status()
    assert (status["kind"], status["status"], status["code"], status["reason"]) == (
        "Status",
        "Failure",
        422,
        "Invalid",
    )
    assert status["message"] == (
        f'Device.devices.kubeedge.io "thermo-1" is invalid: {field}: Invalid value: {message}'
    )
    assert status["details"]["causes"] == [
        {"reason": "FieldValueInvalid", "message": f"Invalid value: {message}", "field": field}
    ]


def test_api_names_every_bad_desired_value() -> None:
    obj = _with(_desired(1, "-3"), "spec.properties.0.desired", {"value": "1"})
    with pytest.raises(ApiError) as err:
        strategy.validate(DEVICES, obj, models={"thermo": _model()})
    assert [c["field"] for c in err.value.to_status()["details"]["causes"]] == [
        "spec.properties[0].desired.value",
        "spec.properties[1].desired.value",
    ]


def test_desired_value_problems_name_the_index_and_the_property() -> None:
    obj = _with(_desired(1, "-3"), "spec.properties.0.desired", {"value": "1"})
    problems = desired_value_problems(parse_device(obj), parse_device_model(_model()), "content")
    assert [(p.index, p.name, p.error.field) for p in problems] == [
        (0, "temperature", "content.spec.properties[0].desired.value"),
        (1, "setpoint", "content.spec.properties[1].desired.value"),
    ]
    assert [p.error.message for p in problems] == [
        "property 'temperature' is ReadOnly",
        "-3 is below the minimum 0",
    ]


def _tightened() -> dict[str, Any]:
    """The model with setpoint's maximum lowered below the Device's stored desired value (21)."""
    return _with(_model(), "spec.properties.1.maximum", "10")


def test_api_ratchets_a_desired_value_the_update_leaves_unchanged() -> None:
    """As Kubernetes ratchets CRD validation: on an update, a desired value equal to the stored one is not
    checked again, so a stricter model does not lock the Device; a new or changed value is checked."""
    old = _device()  # setpoint desired 21, now above the tightened maximum 10
    models = {"thermo": _tightened()}
    with pytest.raises(ApiError):
        strategy.validate(DEVICES, old, models=models)  # a create is checked in full
    labelled = _with(old, "metadata.labels", {"site": "plant-2"})
    strategy.validate(DEVICES, labelled, old, models=models)
    # Ratcheting follows the property, not its position in the list.
    swapped = _with(labelled, "spec.properties", list(reversed(labelled["spec"]["properties"])))
    strategy.validate(DEVICES, swapped, old, models=models)

    for value in ("50", "22"):  # changed, and still out of range: refused
        with pytest.raises(ApiError) as err:
            strategy.validate(
                DEVICES, _with(labelled, "spec.properties.1.desired.value", value), old, models=models
            )
        assert err.value.to_status()["details"]["causes"] == [
            {
                "reason": "FieldValueInvalid",
                "message": f"Invalid value: {value} is above the maximum 10",
                "field": "spec.properties[1].desired.value",
            }
        ]
    # A value newly set on another property is checked too, though the stored one is ratcheted.
    readonly = _with(labelled, "spec.properties.0.desired", {"value": "20"})
    with pytest.raises(ApiError) as err:
        strategy.validate(DEVICES, readonly, old, models=models)
    assert [c["field"] for c in err.value.to_status()["details"]["causes"]] == [
        "spec.properties[0].desired.value"
    ]
    # An old object that does not parse ratchets nothing.
    with pytest.raises(ApiError):
        strategy.validate(DEVICES, labelled, _with(old, "spec.protocol", ...), models=models)


def test_api_accepts_a_desired_value_when_the_model_is_not_there_yet() -> None:
    obj = _desired(1, "250")
    strategy.validate(DEVICES, obj, models={})  # the model may be created after the Device
    strategy.validate(DEVICES, obj)
    strategy.validate(DEVICES, _desired(1, "100"), models={"thermo": _model()})
    assert desired_value_problems(parse_device(_desired(1, "")), parse_device_model(_model())) == []


_DEVICES_URL = "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices"
_MODELS_URL = "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devicemodels"
_MERGE = "application/merge-patch+json"
_JSONPATCH = "application/json-patch+json"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[tuple[int, Any]]]]:
    """The API server on a random loopback port over a SqlStore on disk; yields ``call(method, path,
    body, ctype=...) -> (status, decoded body)``."""
    store = open_store(str(tmp_path / "cloud.db"))
    await store.start()
    server = ApiServer(build_app(store, tokens={"t": "admin"}))
    await server.start()
    session = aiohttp.ClientSession(headers={"Authorization": "Bearer t"})

    async def call(method: str, path: str, body: Any, *, ctype: str = "application/json") -> tuple[int, Any]:
        async with session.request(
            method, server.url + path, data=json.dumps(body), headers={"Content-Type": ctype}
        ) as resp:
            return resp.status, await resp.json()

    try:
        yield call
    finally:
        await session.close()
        await server.stop()
        await store.close()


async def test_api_writes_of_a_device_after_its_model_was_tightened(
    api: Callable[..., Awaitable[tuple[int, Any]]],
) -> None:
    """Over HTTP: the Device is checked against the one model it names (read from the store by name, for
    a PATCH the model the patched result names), and a stored desired value that a stricter model no
    longer allows does not block other changes."""
    assert (await api("POST", _MODELS_URL, _model()))[0] == 201
    status, created = await api("POST", _DEVICES_URL, _device())
    assert status == 201, created
    url = f"{_DEVICES_URL}/thermo-1"
    status, _ = await api(
        "PATCH",
        f"{_MODELS_URL}/thermo",
        {"spec": {"properties": _tightened()["spec"]["properties"]}},
        ctype=_MERGE,
    )
    assert status == 200

    status, patched = await api("PATCH", url, {"metadata": {"labels": {"site": "plant-2"}}}, ctype=_MERGE)
    assert status == 200, patched
    assert patched["metadata"]["labels"] == {"site": "plant-2"}
    put = _with(patched, "metadata.annotations", {"owner": "ops"})
    status, replaced = await api("PUT", url, put)
    assert status == 200, replaced

    set_50 = [{"op": "replace", "path": "/spec/properties/1/desired/value", "value": "50"}]
    status, refused = await api("PATCH", url, set_50, ctype=_JSONPATCH)
    assert (status, refused["reason"]) == (422, "Invalid"), refused
    assert refused["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": "Invalid value: 50 is above the maximum 10",
            "field": "spec.properties[1].desired.value",
        }
    ]
    status, refused = await api("PUT", url, _with(replaced, "spec.properties.1.desired.value", "50"))
    assert status == 422, refused

    # A PATCH that also names another model is checked against that one: absent, the Device is accepted
    # (the edge checks once it arrives); present, its limits apply.
    other = [{"op": "replace", "path": "/spec/deviceModelRef/name", "value": "thermo-v2"}, *set_50]
    status, moved = await api("PATCH", url, other, ctype=_JSONPATCH)
    assert status == 200, moved
    assert moved["spec"]["properties"][1]["desired"]["value"] == "50"
    v2 = _with(_with(_model(), "metadata.name", "thermo-v2"), "spec.properties.1.maximum", "40")
    assert (await api("POST", _MODELS_URL, v2))[0] == 201
    set_45 = [{"op": "replace", "path": "/spec/properties/1/desired/value", "value": "45"}]
    status, refused = await api("PATCH", url, set_45, ctype=_JSONPATCH)
    assert status == 422, refused
    assert refused["details"]["causes"][0]["message"] == "Invalid value: 45 is above the maximum 40"
    back = [{"op": "replace", "path": "/spec/deviceModelRef/name", "value": "thermo"}, *set_45]
    status, refused = await api("PATCH", url, back, ctype=_JSONPATCH)
    assert status == 422, refused
    assert refused["details"]["causes"][0]["message"] == "Invalid value: 45 is above the maximum 10"


@pytest.fixture
def meta(tmp_path: Path) -> Any:
    m = MetaManager(tmp_path / "edge.db")
    m.open()
    yield m
    m.close()


def test_devicetwin_refuses_a_bad_desired_value_with_an_event_and_no_delta(meta: MetaManager) -> None:
    """The model reached the edge, the bad value passed the API (the model came later): the twin does not
    take it as the expected value (no delta for the adapter), counts it, and says why on the Device."""
    meta.apply([Message("update", "default/devicemodel/thermo", _model(), resourceversion="1")])
    sent: list[Message] = []
    twin = DeviceTwin(meta, "edge-1", sent.append)
    good = _with(_desired(1, "42"), "metadata.uid", "u-1")
    twin.device_changed(good)
    assert twin.devices["thermo-1"].twins["setpoint"].expected.value == "42"  # type: ignore[union-attr]

    for case, index, value, message in BAD_DESIRED:
        sent.clear()
        bad = _with(good, f"spec.properties.{index}.desired", {"value": value})
        twin.device_changed(bad)
        twin.device_changed(bad)  # delivered again (a resync): reported once
        field = f"spec.properties[{index}].desired.value"
        prop = "temperature" if index == 0 else "setpoint"
        assert [(m.operation, m.resource, m.content) for m in sent] == [
            (
                "insert",
                "default/deviceevent/thermo-1",
                {
                    "uid": "u-1",
                    "type": "Warning",
                    "reason": "InvalidDesiredValue",
                    "message": f"desired value {value!r} of {prop!r} not applied: {field}: {message}",
                },
            )
        ], case
        twins = twin.devices["thermo-1"].twins
        assert twins["setpoint"].expected.value == "42", case  # type: ignore[union-attr]
        assert twins["temperature"].expected is None, case
    assert twin.rejections == {"invalid": len(BAD_DESIRED)}

    # A valid value again is applied, and the same bad value later is reported anew.
    sent.clear()
    twin.device_changed(_with(_desired(1, "43"), "metadata.uid", "u-1"))
    assert twin.devices["thermo-1"].twins["setpoint"].expected.value == "43"  # type: ignore[union-attr]
    twin.device_changed(_with(_desired(1, "250"), "metadata.uid", "u-1"))
    assert [m.content["reason"] for m in sent] == ["InvalidDesiredValue"]
    assert twin.rejections == {"invalid": len(BAD_DESIRED) + 1}

"""Typed, validated views of KubeEdge's ``devices.kubeedge.io/v1beta1`` Device and DeviceModel.

Devices travel as plain Kubernetes JSON like every other kind (see ``app.resources``); this module turns
one into frozen dataclasses that the device controller, the edge's devicetwin and the protocol adapters can
reason about, and is the validation the cloud API runs on every Device and DeviceModel it stores. Every
rejection is an :class:`app.errors.ValidationError` whose ``field`` is the JSON path in Kubernetes'
notation (``spec.properties[0].visitors.configData.register``), so kubectl can name it.

The shapes follow KubeEdge's Go types (``pkg/apis/devices/v1beta1/device_instance_types.go`` and
``device_model_types.go``): a DeviceModel lists typed properties (``INT``, ``FLOAT``, ``DOUBLE``,
``STRING``, ``BOOLEAN``, ``BYTES``; ``ReadWrite`` or ``ReadOnly``; optional ``minimum``/``maximum`` kept
as strings, as KubeEdge does) and a protocol name; a Device refers to its model, is bound to a node,
carries the protocol's connection settings (``configData``, free-form) and, per property, a desired value
and the "visitor" telling the adapter how to reach it. Twin values are strings everywhere, as in KubeEdge.

Visitors of the two protocols FleetOps ships adapters for are checked in depth: Modbus (``register``,
``offset``, ``limit``, ``scale``, ``isSwap``, ``isRegisterSwap``, ``dataType``) and OPC-UA (``nodeID``).
A ``camera``'s ``configData`` is checked by ``app.camera.parse_camera_config`` (url, fps, size, JPEG
quality). Any other protocol's ``configData`` is kept as free-form JSON, as KubeEdge's ``CustomizedValue``
does.

Deliberately not done: ``pushMethod`` (HTTP/MQTT/database push of readings) is kept in the stored object
but not modelled; a device's properties are checked against its model only by
:func:`check_device_against_model`, which needs the model and so is the caller's step, not the parser's;
``BYTES`` values are accepted as any string (KubeEdge defines no encoding); and KubeEdge's twin-value
character set (``[a-zA-Z0-9-_.,:/@#]``) is not imposed on STRING values, only its 512-character limit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from app.camera import CAMERA_PROTOCOL, parse_camera_config
from app.errors import ValidationError
from app.resources import JSONObject

PropertyType = Literal["INT", "FLOAT", "DOUBLE", "STRING", "BOOLEAN", "BYTES"]
PROPERTY_TYPES: tuple[PropertyType, ...] = ("INT", "FLOAT", "DOUBLE", "STRING", "BOOLEAN", "BYTES")
NUMERIC_TYPES: frozenset[str] = frozenset({"INT", "FLOAT", "DOUBLE"})
AccessMode = Literal["ReadWrite", "ReadOnly"]
ACCESS_MODES: tuple[AccessMode, ...] = ("ReadWrite", "ReadOnly")
ModbusRegister = Literal["CoilRegister", "DiscreteInputRegister", "HoldingRegister", "InputRegister"]
MODBUS_REGISTERS: tuple[ModbusRegister, ...] = (
    "CoilRegister",
    "DiscreteInputRegister",
    "HoldingRegister",
    "InputRegister",
)
# Protocol names as KubeEdge's mappers spell them; compared case-insensitively.
MODBUS = "modbus"
OPCUA = "opcua"
_OPCUA_ALIASES = frozenset({"opcua", "opc-ua"})

# KubeEdge's twin key pattern (dtcommon.ValidateTwinKey): a property name becomes an MQTT payload key.
_TWIN_KEY = re.compile(r"^[a-zA-Z0-9\-_.,:/@#]{1,128}$")
# KubeEdge's limit on a twin value (dtcommon.ValidateTwinValue): 512 characters.
MAX_VALUE_LEN = 512
# Go's strconv.ParseInt(value, 10, 64): an optional sign and decimal digits, within int64.
_INT_RE = re.compile(r"^[+-]?[0-9]+$")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# A Modbus register address is 16 bits; a read covers at most 125 registers (the protocol's PDU limit).
_MODBUS_ADDRESS_MAX = 65535
_MODBUS_LIMIT_MAX = 125


@dataclass(frozen=True, slots=True)
class ModelProperty:
    """One property of a DeviceModel: its type, whether it may be written, and its numeric range."""

    name: str
    type: PropertyType
    access_mode: AccessMode
    minimum: str = ""
    maximum: str = ""
    unit: str = ""
    description: str = ""

    @property
    def writable(self) -> bool:
        return self.access_mode == "ReadWrite"


@dataclass(frozen=True, slots=True)
class DeviceModel:
    name: str
    namespace: str
    protocol: str
    properties: tuple[ModelProperty, ...]

    def property(self, name: str) -> ModelProperty | None:
        return next((p for p in self.properties if p.name == name), None)


@dataclass(frozen=True, slots=True)
class TwinProperty:
    """KubeEdge's ``TwinProperty``: a string value and string metadata (``timestamp``, ``type``...)."""

    value: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModbusVisitor:
    register: ModbusRegister
    offset: int
    limit: int = 1
    scale: float = 1.0
    is_swap: bool = False
    is_register_swap: bool = False
    data_type: str = ""


@dataclass(frozen=True, slots=True)
class OpcUaVisitor:
    node_id: str


@dataclass(frozen=True, slots=True)
class Visitor:
    """How an adapter reaches one property; ``modbus``/``opcua`` are set for those protocols."""

    protocol_name: str
    config_data: JSONObject = field(default_factory=dict)
    modbus: ModbusVisitor | None = None
    opcua: OpcUaVisitor | None = None


@dataclass(frozen=True, slots=True)
class ProtocolConfig:
    protocol_name: str
    config_data: JSONObject = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeviceProperty:
    name: str
    visitors: Visitor
    desired: TwinProperty | None = None
    report_cycle: int = 0
    collect_cycle: int = 0
    report_to_cloud: bool = False


@dataclass(frozen=True, slots=True)
class StatusTwin:
    property_name: str
    reported: TwinProperty | None = None
    observed_desired: TwinProperty | None = None


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    twins: tuple[StatusTwin, ...] = ()
    state: str = ""
    last_online_time: str = ""


@dataclass(frozen=True, slots=True)
class Device:
    name: str
    namespace: str
    model_ref: str
    node_name: str
    protocol: ProtocolConfig
    properties: tuple[DeviceProperty, ...]
    status: DeviceStatus = DeviceStatus()

    def property(self, name: str) -> DeviceProperty | None:
        return next((p for p in self.properties if p.name == name), None)


# Field helpers ---------------------------------------------------------------------------------------------


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _obj(value: Any, path: str, *, required: bool = False) -> Mapping[str, Any]:
    if value is None and not required:
        return {}
    if value is None:
        raise ValidationError(path, "Required value")
    if not isinstance(value, dict):
        raise ValidationError(path, "must be an object")
    return cast("Mapping[str, Any]", value)


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationError(path, "must be a list")
    return value


def _str(value: Any, path: str, *, required: bool = False) -> str:
    if value is None or value == "":
        if required:
            raise ValidationError(path, "Required value")
        return ""
    if not isinstance(value, str):
        raise ValidationError(path, "must be a string")
    return value


def _int(value: Any, path: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(path, "must be an integer")
    if value < minimum:
        raise ValidationError(path, f"must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise ValidationError(path, f"must be <= {maximum}")
    return value


def _bool(value: Any, path: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValidationError(path, "must be a boolean")
    return value


def _choice(value: Any, path: str, choices: tuple[str, ...]) -> str:
    if value is None or value == "":
        raise ValidationError(path, "Required value")
    if value not in choices:
        supported = ", ".join(f'"{c}"' for c in choices)
        raise ValidationError(path, f"Unsupported value: {value!r}: supported values: {supported}")
    return str(value)


def _twin_key(value: Any, path: str) -> str:
    name = _str(value, path, required=True)
    if not _TWIN_KEY.match(name):
        raise ValidationError(
            path, f"{name!r}: must be 1-128 characters of letters, digits and - _ . , : / @ #"
        )
    return name


def _metadata(value: Any, path: str) -> JSONObject:
    meta = _obj(value, path)
    for k, v in meta.items():
        if not isinstance(v, str):
            raise ValidationError(f"{path}.{k}", "must be a string")
    return dict(meta)


def _twin_property(value: Any, path: str) -> TwinProperty | None:
    if value is None:
        return None
    obj = _obj(value, path)
    raw = obj.get("value", "")
    if not isinstance(raw, str):
        raise ValidationError(f"{path}.value", "must be a string")
    if len(raw) > MAX_VALUE_LEN:
        raise ValidationError(f"{path}.value", f"must be at most {MAX_VALUE_LEN} characters")
    return TwinProperty(raw, _metadata(obj.get("metadata"), f"{path}.metadata"))


def _number(text: str, typ: str) -> float | int | None:
    """The value of ``text`` as ``typ`` (INT/FLOAT/DOUBLE), or None when it does not parse."""
    if typ == "INT":
        if not _INT_RE.match(text):
            return None
        number = int(text)
        return number if _INT64_MIN <= number <= _INT64_MAX else None
    try:
        f = float(text)
    except ValueError:
        return None
    # NaN and infinities parse in Go too, but no range check or register write can use them.
    return f if math.isfinite(f) and "_" not in text else None


def _unique(names: list[str], path: str, key: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ValidationError(f"{path}[{i}].{key}", f"Duplicate value: {name!r}")
        seen.add(name)


# DeviceModel -----------------------------------------------------------------------------------------------


def _model_property(value: Any, path: str) -> ModelProperty:
    obj = _obj(value, path, required=True)
    name = _twin_key(obj.get("name"), f"{path}.name")
    typ = cast("PropertyType", _choice(obj.get("type"), f"{path}.type", PROPERTY_TYPES))
    mode = cast("AccessMode", _choice(obj.get("accessMode"), f"{path}.accessMode", ACCESS_MODES))
    bounds: dict[str, str] = {}
    numbers: dict[str, float] = {}
    for key in ("minimum", "maximum"):
        text = _str(obj.get(key), f"{path}.{key}")
        bounds[key] = text
        if not text:
            continue
        if typ not in NUMERIC_TYPES:
            raise ValidationError(f"{path}.{key}", f"only numeric properties have a {key} (type is {typ})")
        number = _number(text, typ)
        if number is None:
            raise ValidationError(f"{path}.{key}", f"{text!r} is not a valid {typ}")
        numbers[key] = number
    if "minimum" in numbers and "maximum" in numbers and numbers["minimum"] > numbers["maximum"]:
        raise ValidationError(f"{path}.maximum", "must be greater than or equal to minimum")
    return ModelProperty(
        name=name,
        type=typ,
        access_mode=mode,
        minimum=bounds["minimum"],
        maximum=bounds["maximum"],
        unit=_str(obj.get("unit"), f"{path}.unit"),
        description=_str(obj.get("description"), f"{path}.description"),
    )


def parse_device_model(obj: Any) -> DeviceModel:
    """Validate a DeviceModel object (``metadata`` and ``spec``) and return its typed view."""
    root = _obj(obj, "", required=True)
    meta = _obj(root.get("metadata"), "metadata")
    spec = _obj(root.get("spec"), "spec", required=True)
    protocol = _str(spec.get("protocol"), "spec.protocol", required=True)
    items = _list(spec.get("properties"), "spec.properties")
    if not items and protocol.lower() != CAMERA_PROTOCOL:  # a camera's output is its stream
        raise ValidationError("spec.properties", "Required value: a model needs at least one property")
    props = tuple(_model_property(p, f"spec.properties[{i}]") for i, p in enumerate(items))
    _unique([p.name for p in props], "spec.properties", "name")
    return DeviceModel(
        name=_str(meta.get("name"), "metadata.name"),
        namespace=_str(meta.get("namespace"), "metadata.namespace"),
        protocol=protocol,
        properties=props,
    )


# Values ----------------------------------------------------------------------------------------------------


def check_value(prop: ModelProperty, value: str, *, field: str = "", write: bool = True) -> None:
    """Raise ValidationError unless ``value`` is a valid ``prop`` value.

    ``write`` (the default) means the value is a desired one (from a UI, the API or MQTT) and must be
    writable; a reported (actual) value of a ReadOnly property passes with ``write=False``. The error's
    field is ``field`` or, when empty, the property's name.
    """
    path = field or prop.name
    if write and not prop.writable:
        raise ValidationError(path, f"property {prop.name!r} is ReadOnly")
    if len(value) > MAX_VALUE_LEN:
        raise ValidationError(path, f"must be at most {MAX_VALUE_LEN} characters")
    if prop.type == "BOOLEAN":
        if value not in ("true", "false"):
            raise ValidationError(path, f"{value!r} is not a BOOLEAN: must be true or false")
        return
    if prop.type not in NUMERIC_TYPES:
        return
    number = _number(value, prop.type)
    if number is None:
        raise ValidationError(path, f"{value!r} is not a valid {prop.type}")
    low = _number(prop.minimum, prop.type) if prop.minimum else None
    high = _number(prop.maximum, prop.type) if prop.maximum else None
    if low is not None and number < low:
        raise ValidationError(path, f"{value} is below the minimum {prop.minimum}")
    if high is not None and number > high:
        raise ValidationError(path, f"{value} is above the maximum {prop.maximum}")


# Device ----------------------------------------------------------------------------------------------------


def _modbus_visitor(data: Mapping[str, Any], path: str) -> ModbusVisitor:
    register = cast("ModbusRegister", _choice(data.get("register"), f"{path}.register", MODBUS_REGISTERS))
    if data.get("offset") is None:
        raise ValidationError(f"{path}.offset", "Required value")
    scale = data.get("scale", 1)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
        raise ValidationError(f"{path}.scale", "must be a number")
    if scale == 0:
        raise ValidationError(f"{path}.scale", "must not be 0")
    return ModbusVisitor(
        register=register,
        offset=_int(data.get("offset"), f"{path}.offset", 0, maximum=_MODBUS_ADDRESS_MAX),
        limit=_int(data.get("limit"), f"{path}.limit", 1, minimum=1, maximum=_MODBUS_LIMIT_MAX),
        scale=float(scale),
        is_swap=_bool(data.get("isSwap"), f"{path}.isSwap"),
        is_register_swap=_bool(data.get("isRegisterSwap"), f"{path}.isRegisterSwap"),
        data_type=_str(data.get("dataType"), f"{path}.dataType"),
    )


def _visitor(value: Any, path: str, device_protocol: str) -> Visitor:
    obj = _obj(value, path, required=True)
    protocol = _str(obj.get("protocolName"), f"{path}.protocolName", required=True)
    if device_protocol and protocol.lower() != device_protocol.lower():
        raise ValidationError(
            f"{path}.protocolName",
            f"{protocol!r} differs from spec.protocol.protocolName {device_protocol!r}",
        )
    data_path = f"{path}.configData"
    data = _obj(obj.get("configData"), data_path)
    modbus = opcua = None
    if protocol.lower() == MODBUS:
        modbus = _modbus_visitor(_obj(obj.get("configData"), data_path, required=True), data_path)
    elif protocol.lower() in _OPCUA_ALIASES:
        data = _obj(obj.get("configData"), data_path, required=True)
        opcua = OpcUaVisitor(_str(data.get("nodeID"), f"{data_path}.nodeID", required=True))
    return Visitor(protocol_name=protocol, config_data=dict(data), modbus=modbus, opcua=opcua)


def _device_property(value: Any, path: str, device_protocol: str) -> DeviceProperty:
    obj = _obj(value, path, required=True)
    return DeviceProperty(
        name=_twin_key(obj.get("name"), f"{path}.name"),
        desired=_twin_property(obj.get("desired"), f"{path}.desired"),
        visitors=_visitor(obj.get("visitors"), f"{path}.visitors", device_protocol),
        report_cycle=_int(obj.get("reportCycle"), f"{path}.reportCycle", 0),
        collect_cycle=_int(obj.get("collectCycle"), f"{path}.collectCycle", 0),
        report_to_cloud=_bool(obj.get("reportToCloud"), f"{path}.reportToCloud"),
    )


def _status(value: Any, path: str) -> DeviceStatus:
    obj = _obj(value, path)
    twins: list[StatusTwin] = []
    for i, raw in enumerate(_list(obj.get("twins"), f"{path}.twins")):
        tpath = f"{path}.twins[{i}]"
        t = _obj(raw, tpath, required=True)
        twins.append(
            StatusTwin(
                property_name=_twin_key(t.get("propertyName"), f"{tpath}.propertyName"),
                reported=_twin_property(t.get("reported"), f"{tpath}.reported"),
                observed_desired=_twin_property(t.get("observedDesired"), f"{tpath}.observedDesired"),
            )
        )
    _unique([t.property_name for t in twins], f"{path}.twins", "propertyName")
    return DeviceStatus(
        twins=tuple(twins),
        state=_str(obj.get("state"), f"{path}.state"),
        last_online_time=_str(obj.get("lastOnlineTime"), f"{path}.lastOnlineTime"),
    )


def parse_device(obj: Any, field: str = "") -> Device:
    """Validate a Device object and return its typed view; ``field`` prefixes every error path (for a
    Device nested in another message, e.g. ``content``)."""
    root = _obj(obj, field, required=True)
    meta = _obj(root.get("metadata"), _join(field, "metadata"))
    sp = _join(field, "spec")
    spec = _obj(root.get("spec"), sp, required=True)
    ref = _obj(spec.get("deviceModelRef"), f"{sp}.deviceModelRef", required=True)
    model_ref = _str(ref.get("name"), f"{sp}.deviceModelRef.name", required=True)
    proto = _obj(spec.get("protocol"), f"{sp}.protocol", required=True)
    protocol = ProtocolConfig(
        protocol_name=_str(proto.get("protocolName"), f"{sp}.protocol.protocolName", required=True),
        config_data=dict(_obj(proto.get("configData"), f"{sp}.protocol.configData")),
    )
    if protocol.protocol_name.lower() == CAMERA_PROTOCOL:
        parse_camera_config(protocol.config_data, f"{sp}.protocol.configData")
    props = tuple(
        _device_property(p, f"{sp}.properties[{i}]", protocol.protocol_name)
        for i, p in enumerate(_list(spec.get("properties"), f"{sp}.properties"))
    )
    _unique([p.name for p in props], f"{sp}.properties", "name")
    return Device(
        name=_str(meta.get("name"), _join(field, "metadata.name")),
        namespace=_str(meta.get("namespace"), _join(field, "metadata.namespace")),
        model_ref=model_ref,
        node_name=_str(spec.get("nodeName"), f"{sp}.nodeName"),
        protocol=protocol,
        properties=props,
        status=_status(root.get("status"), _join(field, "status")),
    )


@dataclass(frozen=True, slots=True)
class DesiredValueProblem:
    """A desired value of a Device that its model does not allow: ``spec.properties[index]`` of the
    Device, that property's ``name``, and the error (naming ``...spec.properties[index].desired.value``)."""

    index: int
    name: str
    error: ValidationError


def desired_value_problems(device: Device, model: DeviceModel, field: str = "") -> list[DesiredValueProblem]:
    """Every desired value of ``device`` that is not a valid write of its ``model`` property (out of
    minimum/maximum, not of the property's type, or set on a ReadOnly property), in property order, each
    with an error naming ``{field}.spec.properties[i].desired.value``. Properties the model lacks are not
    checked here (:func:`check_device_against_model` refuses them); an empty desired value means "none"."""
    sp = _join(field, "spec")
    problems: list[DesiredValueProblem] = []
    for i, prop in enumerate(device.properties):
        mprop = model.property(prop.name)
        if mprop is None or prop.desired is None or prop.desired.value == "":
            continue
        try:
            check_value(mprop, prop.desired.value, field=f"{sp}.properties[{i}].desired.value")
        except ValidationError as exc:
            problems.append(DesiredValueProblem(i, prop.name, exc))
    return problems


def check_device_against_model(device: Device, model: DeviceModel, field: str = "") -> None:
    """Raise ValidationError unless every property of ``device`` exists in ``model``, its protocol matches
    the model's, and every desired value is a valid write of its property."""
    sp = _join(field, "spec")
    if device.protocol.protocol_name.lower() != model.protocol.lower():
        raise ValidationError(
            f"{sp}.protocol.protocolName",
            f"{device.protocol.protocol_name!r} differs from the model's protocol {model.protocol!r}",
        )
    for i, prop in enumerate(device.properties):
        mprop = model.property(prop.name)
        if mprop is None:
            raise ValidationError(
                f"{sp}.properties[{i}].name", f"{prop.name!r} is not a property of model {model.name!r}"
            )
    problems = desired_value_problems(device, model, field)
    if problems:
        raise problems[0].error

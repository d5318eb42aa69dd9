"""The Modbus TCP adapter: ``python -m edgeservice.workloads.modbus --config FILE``.

Connection settings come from the Device's ``spec.protocol.configData`` as KubeEdge's Modbus mapper
names them: ``ip``, ``port`` (default 502), ``slaveID`` (default 1) and ``timeout`` (milliseconds,
default 2000). Each property's visitor gives ``register`` (Coil, DiscreteInput, Holding, Input),
``offset``, ``limit`` (registers read), ``scale``, ``isSwap``, ``isRegisterSwap`` and ``dataType``.

Conversion follows KubeEdge's mapper (``TransferData`` in mappers-go): the registers are taken as
big-endian bytes; ``isRegisterSwap`` reverses the order of the 16-bit words, then ``isSwap`` swaps the
two bytes of each word; the bytes are decoded as ``dataType`` and the number is *multiplied* by
``scale`` (a register holding tenths has scale 0.1). ``dataType`` is one of ``int16``, ``uint16``,
``int32``, ``uint32``, ``int64``, ``uint64``, ``float32``, ``float64``, or KubeEdge's ``int`` (signed,
as wide as ``limit``), ``float`` (float32), ``double`` (float64), ``boolean`` (uint16, non-zero is true);
empty means ``int``. ``limit`` must cover the type (checked on load: exit 2). A write divides by
``scale``, rounds to the type and refuses a value the type cannot hold. Values are formatted for the
model's type: INT rounds (KubeEdge truncates, which turns 299.99999 into 299), FLOAT/DOUBLE from an
integer register keep as many decimals as the scale has, BOOLEAN is ``true``/``false``. Coils and
discrete inputs are single bits: ``true``/``false`` (``1``/``0`` for an INT property).

Deliberately not done: Modbus RTU (serial), STRING/BYTES properties, writes to more than one coil, and
pymodbus' own reconnect loop (disabled: the adapter reconnects on the next collect cycle, so the failure
count that drives ``offline`` sees every failed attempt).
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from app.devices import DeviceProperty, ModbusVisitor, ModelProperty
from app.errors import ValidationError
from edgeservice.workloads.adapter import AdapterSpec, ConfigError, DeviceConfig, DeviceIOError, main

PROTOCOL = "modbus"
DEFAULT_PORT = 502
DEFAULT_SLAVE_ID = 1
DEFAULT_TIMEOUT_MS = 2000

# dataType -> (registers it spans, struct format, big-endian)
_TYPES: dict[str, tuple[int, str]] = {
    "int16": (1, ">h"),
    "uint16": (1, ">H"),
    "int32": (2, ">i"),
    "uint32": (2, ">I"),
    "int64": (4, ">q"),
    "uint64": (4, ">Q"),
    "float32": (2, ">f"),
    "float64": (4, ">d"),
}
_SIGNED_BY_WIDTH = {1: "int16", 2: "int32", 4: "int64"}
_ALIASES = {"float": "float32", "double": "float64", "boolean": "uint16"}
_BIT_REGISTERS = frozenset({"CoilRegister", "DiscreteInputRegister"})
_FLOAT32_DIGITS = 7  # significant decimal digits a float32 holds


def resolve_data_type(visitor: ModbusVisitor) -> str:
    """The concrete type (``int16``...) of a register visitor; ValueError when unknown or too wide."""
    name = visitor.data_type.lower()
    if name in ("", "int"):
        resolved = _SIGNED_BY_WIDTH.get(visitor.limit)
        if resolved is None:
            raise ValueError(f"dataType {visitor.data_type or 'int'!r} needs limit 1, 2 or 4")
        return resolved
    resolved = _ALIASES.get(name, name)
    if resolved not in _TYPES:
        raise ValueError(f"unsupported dataType {visitor.data_type!r}: use one of {', '.join(_TYPES)}")
    width = _TYPES[resolved][0]
    if visitor.limit < width:
        raise ValueError(
            f"dataType {visitor.data_type!r} spans {width} registers but limit is {visitor.limit}"
        )
    return resolved


def _reorder(data: bytes, visitor: ModbusVisitor) -> bytes:
    """KubeEdge's SwitchRegister then SwitchByte; each is its own inverse and they commute, so the same
    call turns device order into big-endian and back."""
    words = [data[i : i + 2] for i in range(0, len(data), 2)]
    if visitor.is_register_swap:
        words.reverse()
    if visitor.is_swap:
        words = [w[::-1] for w in words]
    return b"".join(words)


def _decimals(scale: float) -> int:
    exponent = Decimal(repr(scale)).normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def format_value(number: float, mprop: ModelProperty, *, data_type: str, scale: float) -> str:
    """A scaled reading as the twin's string for the model's type."""
    if mprop.type == "BOOLEAN":
        return "true" if number != 0 else "false"
    if mprop.type == "INT":
        return str(round(number))
    if data_type == "float32":
        return f"{number:.{_FLOAT32_DIGITS}g}"
    if data_type == "float64":
        return repr(number)
    places = _decimals(scale)
    return f"{number:.{places}f}" if places else repr(float(round(number)))


def decode_registers(registers: list[int], visitor: ModbusVisitor, mprop: ModelProperty) -> str:
    """Register words (as read) to the twin value; ValueError if too few words."""
    data_type = resolve_data_type(visitor)
    width, fmt = _TYPES[data_type]
    if len(registers) < width:
        raise ValueError(f"{len(registers)} register(s) read, {data_type} needs {width}")
    data = _reorder(b"".join((r & 0xFFFF).to_bytes(2, "big") for r in registers[:width]), visitor)
    (number,) = struct.unpack(fmt, data)
    return format_value(float(number) * visitor.scale, mprop, data_type=data_type, scale=visitor.scale)


def encode_registers(value: str, visitor: ModbusVisitor, mprop: ModelProperty) -> list[int]:
    """A desired twin value (already checked against the model) to register words; ValueError when the
    register's type cannot hold it."""
    data_type = resolve_data_type(visitor)
    width, fmt = _TYPES[data_type]
    if mprop.type == "BOOLEAN":
        number: float = 1.0 if value == "true" else 0.0
    else:
        number = float(value) / visitor.scale
    packed_value: float | int = number if data_type.startswith("float") else round(number)
    try:
        data = struct.pack(fmt, packed_value)
    except (struct.error, OverflowError) as exc:
        raise ValueError(f"{value} does not fit a {data_type} register (scale {visitor.scale:g})") from exc
    data = _reorder(data, visitor)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, width * 2, 2)]


def decode_bit(bit: bool, mprop: ModelProperty) -> str:
    if mprop.type == "BOOLEAN":
        return "true" if bit else "false"
    return "1" if bit else "0"


def encode_bit(value: str, mprop: ModelProperty) -> bool:
    if mprop.type == "BOOLEAN":
        return value == "true"
    number = float(value)
    if number not in (0, 1):
        raise ValueError(f"{value} is not a coil value: 0 or 1")
    return number == 1


@dataclass(frozen=True, slots=True)
class Connection:
    host: str
    port: int = DEFAULT_PORT
    slave_id: int = DEFAULT_SLAVE_ID
    timeout_s: float = DEFAULT_TIMEOUT_MS / 1000


def _int_field(data: dict[str, Any], key: str, default: int, where: str, *, lo: int, hi: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValidationError(f"{where}.{key}", f"must be an integer in {lo}..{hi}")
    return value


def connection_of(cfg: DeviceConfig, where: str = "") -> Connection:
    """The device's connection from ``spec.protocol.configData``; ValidationError naming the field."""
    path = f"{where}.spec.protocol.configData" if where else "spec.protocol.configData"
    data = dict(cfg.device.protocol.config_data)
    host = data.get("ip")
    if not isinstance(host, str) or not host:
        raise ValidationError(f"{path}.ip", "Required value: the Modbus TCP server's address")
    return Connection(
        host=host,
        port=_int_field(data, "port", DEFAULT_PORT, path, lo=1, hi=65535),
        slave_id=_int_field(
            data, "slaveID", DEFAULT_SLAVE_ID, path, lo=0, hi=255
        ),  # 0..255: a unit id is a byte
        timeout_s=_int_field(data, "timeout", DEFAULT_TIMEOUT_MS, path, lo=1, hi=600_000) / 1000,
    )


def validate(cfg: DeviceConfig, where: str) -> None:
    """The load-time check of one device: connection, and every visitor's type against its model."""
    connection_of(cfg, where)
    for i, prop in enumerate(cfg.device.properties):
        path = f"{where}.spec.properties[{i}].visitors.configData"
        visitor = prop.visitors.modbus
        assert visitor is not None, "parse_device builds a Modbus visitor for every modbus property"
        mprop = cfg.model_property(prop.name)
        if mprop.type in ("STRING", "BYTES"):
            raise ConfigError(f"{mprop.type} properties are not supported by the Modbus adapter", field=path)
        if visitor.register in _BIT_REGISTERS:
            continue
        try:
            resolve_data_type(visitor)
        except ValueError as exc:
            raise ConfigError(str(exc), field=f"{path}.dataType") from exc


class ModbusDriver:
    """One Modbus TCP connection to one device, opened on first use and after a failure."""

    def __init__(self, cfg: DeviceConfig) -> None:
        self.cfg = cfg
        self.conn = connection_of(cfg)
        self._client: AsyncModbusTcpClient | None = None

    def _error(self, message: str, prop: str = "", *, connection: bool = False) -> DeviceIOError:
        return DeviceIOError(message, device=self.cfg.id, prop=prop, connection=connection)

    async def _connected(self, prop: str) -> AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        await self.close()
        # reconnect_delay=0: no background reconnect; retries=0: a dead link fails the call at once.
        client = AsyncModbusTcpClient(
            self.conn.host, port=self.conn.port, timeout=self.conn.timeout_s, retries=0, reconnect_delay=0
        )
        if not await client.connect():
            client.close()
            raise self._error(f"cannot connect to {self.conn.host}:{self.conn.port}", prop, connection=True)
        self._client = client
        return client

    async def _call(self, prop: str, request: Any) -> Any:
        try:
            response = await request
        except ModbusException as exc:
            await self.close()
            raise self._error(f"request failed: {exc}", prop, connection=True) from exc
        if response.isError():
            raise self._error(f"device refused the request: {response}", prop)
        return response

    async def read(self, prop: DeviceProperty, mprop: ModelProperty) -> str:
        v = prop.visitors.modbus
        assert v is not None
        client = await self._connected(prop.name)
        unit = self.conn.slave_id
        if v.register == "CoilRegister":
            rr = await self._call(prop.name, client.read_coils(v.offset, count=1, device_id=unit))
            return decode_bit(bool(rr.bits[0]), mprop)
        if v.register == "DiscreteInputRegister":
            rr = await self._call(prop.name, client.read_discrete_inputs(v.offset, count=1, device_id=unit))
            return decode_bit(bool(rr.bits[0]), mprop)
        if v.register == "HoldingRegister":
            request = client.read_holding_registers(v.offset, count=v.limit, device_id=unit)
        else:
            request = client.read_input_registers(v.offset, count=v.limit, device_id=unit)
        rr = await self._call(prop.name, request)
        try:
            return decode_registers(list(rr.registers), v, mprop)
        except ValueError as exc:
            raise self._error(str(exc), prop.name) from exc

    async def write(self, prop: DeviceProperty, mprop: ModelProperty, value: str) -> None:
        v = prop.visitors.modbus
        assert v is not None
        if v.register not in ("CoilRegister", "HoldingRegister"):
            raise self._error(f"a {v.register} cannot be written", prop.name)
        try:
            if v.register == "CoilRegister":
                bit = encode_bit(value, mprop)
            else:
                words = encode_registers(value, v, mprop)
        except ValueError as exc:
            raise self._error(str(exc), prop.name) from exc
        client = await self._connected(prop.name)
        unit = self.conn.slave_id
        if v.register == "CoilRegister":
            await self._call(prop.name, client.write_coil(v.offset, bit, device_id=unit))
        elif len(words) == 1:
            await self._call(prop.name, client.write_register(v.offset, words[0], device_id=unit))
        else:
            await self._call(prop.name, client.write_registers(v.offset, words, device_id=unit))

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


SPEC = AdapterSpec(protocol=PROTOCOL, driver=ModbusDriver, validate=validate)

if __name__ == "__main__":
    sys.exit(main(SPEC))

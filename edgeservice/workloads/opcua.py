"""The OPC UA adapter: ``python -m edgeservice.workloads.opcua --config FILE``.

The server comes from the Device's ``spec.protocol.configData.url`` (``opc.tcp://host:port/path``, as
KubeEdge's OPC UA mapper names it) with an optional ``timeout`` (milliseconds, default 4000); each
property's visitor names its variable with ``nodeID`` (``ns=2;s=Line1.Speed``). A read is one Read of
the Value attribute; a write first asks the variable's data type, converts the twin string to it
(Boolean from ``true``/``false``, integers only from whole numbers, floats, strings as they are) and
writes a DataValue of exactly that type, since servers refuse a mismatched variant (BadTypeMismatch).
Values are formatted for the model's type: INT rounds, FLOAT/DOUBLE use Python's shortest repr,
BOOLEAN is ``true``/``false``.

Deliberately not done: security policies, certificates and user logins (anonymous, ``None`` policy),
subscriptions (the adapter polls on ``collectCycle`` as KubeEdge's mapper does, which also drives the
offline detection), arrays and structured types, and asyncua's own auto-reconnect (the adapter reconnects
on the next cycle so every failed attempt counts towards ``offline``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from app.devices import DeviceProperty, ModelProperty
from app.errors import ValidationError
from edgeservice.workloads.adapter import AdapterSpec, DeviceConfig, DeviceIOError, main

log = logging.getLogger(__name__)

PROTOCOL = "opcua"
DEFAULT_TIMEOUT_MS = 4000  # asyncua's own default request timeout
_CLOSE_TIMEOUT_S = 2.0  # a disconnect from a dead server must not hold the device task

_INTEGER_TYPES = frozenset(
    {
        ua.VariantType.SByte,
        ua.VariantType.Byte,
        ua.VariantType.Int16,
        ua.VariantType.UInt16,
        ua.VariantType.Int32,
        ua.VariantType.UInt32,
        ua.VariantType.Int64,
        ua.VariantType.UInt64,
    }
)
_FLOAT_TYPES = frozenset({ua.VariantType.Float, ua.VariantType.Double})
# Link failures: the socket is gone, a request timed out, or asyncua gave up on the session.
_LINK_ERRORS = (OSError, TimeoutError, ConnectionError, UaError)


def format_value(value: Any, mprop: ModelProperty) -> str:
    """An OPC UA value as the twin's string for the model's type."""
    if isinstance(value, bool):
        if mprop.type == "INT":
            return "1" if value else "0"
        return "true" if value else "false"
    if isinstance(value, int | float):
        if mprop.type == "INT":
            return str(round(value))
        if mprop.type in ("FLOAT", "DOUBLE"):
            return repr(float(value))
        if mprop.type == "BOOLEAN":
            return "true" if value != 0 else "false"
    return str(value)


def to_variant(value: str, vtype: ua.VariantType) -> ua.Variant:
    """The twin string as a Variant of the variable's own type; ValueError when it does not convert."""
    if vtype == ua.VariantType.Boolean:
        if value in ("true", "1"):
            return ua.Variant(True, vtype)
        if value in ("false", "0"):
            return ua.Variant(False, vtype)
        raise ValueError(f"{value!r} is not a Boolean")
    if vtype in _FLOAT_TYPES:
        return ua.Variant(float(value), vtype)
    if vtype in _INTEGER_TYPES:
        number = float(value)
        if not number.is_integer():
            raise ValueError(f"{value!r} is not a whole number ({vtype.name})")
        return ua.Variant(int(number), vtype)
    if vtype == ua.VariantType.String:
        return ua.Variant(value, vtype)
    raise ValueError(f"writing a {vtype.name} variable is not supported")


def _url(cfg: DeviceConfig, where: str = "") -> tuple[str, float]:
    path = f"{where}.spec.protocol.configData" if where else "spec.protocol.configData"
    data = cfg.device.protocol.config_data
    url = data.get("url")
    if not isinstance(url, str) or not url.startswith("opc.tcp://"):
        raise ValidationError(f"{path}.url", "Required value: the server's opc.tcp:// endpoint URL")
    timeout = data.get("timeout", DEFAULT_TIMEOUT_MS)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
        raise ValidationError(f"{path}.timeout", "must be a positive integer (milliseconds)")
    return url, timeout / 1000


def validate(cfg: DeviceConfig, where: str) -> None:
    """The load-time check of one device: its endpoint, and every node id parses."""
    _url(cfg, where)
    for i, prop in enumerate(cfg.device.properties):
        visitor = prop.visitors.opcua
        assert visitor is not None, "parse_device builds an OPC UA visitor for every opcua property"
        try:
            ua.NodeId.from_string(visitor.node_id)
        except (ValueError, UaError) as exc:
            raise ValidationError(
                f"{where}.spec.properties[{i}].visitors.configData.nodeID",
                f"{visitor.node_id!r} is not a node id: {exc}",
            ) from exc


class OpcUaDriver:
    """One OPC UA session to one device's server, opened on first use and after a failure."""

    def __init__(self, cfg: DeviceConfig) -> None:
        self.cfg = cfg
        self.url, self.timeout_s = _url(cfg)
        self._client: Client | None = None

    def _error(self, message: str, prop: str, *, connection: bool = False) -> DeviceIOError:
        return DeviceIOError(message, device=self.cfg.id, prop=prop, connection=connection)

    async def _connected(self, prop: str) -> Client:
        if self._client is not None:
            return self._client
        client = Client(self.url, timeout=self.timeout_s)
        try:
            await client.connect()
        except _LINK_ERRORS as exc:
            await self._disconnect(client)
            raise self._error(f"cannot connect to {self.url}: {exc!r}", prop, connection=True) from exc
        self._client = client
        return client

    async def _node_call(self, prop: DeviceProperty, op: str, value: str | None = None) -> Any:
        visitor = prop.visitors.opcua
        assert visitor is not None
        client = await self._connected(prop.name)
        node = client.get_node(visitor.node_id)
        try:
            if op == "read":
                return await node.read_value()
            vtype = await node.read_data_type_as_variant_type()
            assert value is not None
            try:
                variant = to_variant(value, vtype)
            except ValueError as exc:
                raise self._error(str(exc), prop.name) from exc
            await node.write_value(ua.DataValue(variant))
            return None
        except UaStatusCodeError as exc:  # the server answered: this node or value is refused
            raise self._error(f"{op} of {visitor.node_id} refused: {exc}", prop.name) from exc
        except _LINK_ERRORS as exc:
            await self.close()
            raise self._error(
                f"{op} of {visitor.node_id} failed: {exc!r}", prop.name, connection=True
            ) from exc

    async def read(self, prop: DeviceProperty, mprop: ModelProperty) -> str:
        return format_value(await self._node_call(prop, "read"), mprop)

    async def write(self, prop: DeviceProperty, mprop: ModelProperty, value: str) -> None:
        await self._node_call(prop, "write", value)

    async def _disconnect(self, client: Client) -> None:
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await client.disconnect()
        except _LINK_ERRORS as exc:  # a dead server cannot be told goodbye; the socket is closed anyway
            log.debug("device %s: disconnect from %s: %r", self.cfg.id, self.url, exc)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await self._disconnect(client)


SPEC = AdapterSpec(protocol=PROTOCOL, driver=OpcUaDriver, validate=validate)

if __name__ == "__main__":
    sys.exit(main(SPEC))

"""Decode Kubernetes protobuf request bodies (``application/vnd.kubernetes.protobuf``) into JSON objects.

kubectl's typed ``create`` subcommands (``create namespace``, ``create configmap``, ``create secret generic``,
``create deployment``) POST their object protobuf-encoded, and client-go never falls back to JSON. Responses
may stay JSON (client-go decodes by the response's Content-Type), so only this direction is needed.

Design. The body is the Kubernetes envelope: the magic bytes ``k8s\\x00``, then a ``runtime.Unknown`` message
whose ``raw`` field holds the object's own message and whose ``typeMeta`` names its apiVersion and kind.
Two small pieces do the work:

* a protobuf *wire-format* reader (:func:`iter_fields`): varint, 64-bit, length-delimited and 32-bit
  fields, nothing more. The ``protobuf`` package is not a dependency, and generated Kubernetes protos do not
  exist for Python anyway;
* a declarative :data:`SCHEMA`: message name -> {field number: :class:`Field`}, transcribed from the
  ``generated.proto`` files of k8s.io/api (core/v1, apps/v1) and k8s.io/apimachinery (meta/v1, runtime,
  util/intstr, api/resource). One generic walker turns a message into the JSON the same object would
  have had, guided by the table.

Presence. A field absent on the wire is absent from the JSON. What is present needs Go's view: gogo-protobuf
writes every Go *value* field (``string``, ``int32``, ``bool``), zero or not, while the JSON of the same
object leaves zero value fields out (``omitempty``). So kubectl's ``create deployment`` sends
``restartPolicy: ""`` and ``strategy.type: ""`` on the wire, which must read as "unset" for the server to
default them. A zero on a value field is therefore dropped; a Go *pointer* field (``Field.pointer``: replicas,
immutable, optional, defaultMode, ...) is only written when set, so an explicit zero there is kept. A zero
``Time`` (kubectl sends ``creationTimestamp`` as an empty Time) is what JSON writes as null: omitted too.
Go structs embedded inline in JSON (the probe's handler, a volume's source, a key selector's
``LocalObjectReference``) are ``inline:`` fields whose sub-message is merged into the parent.

Deliberately not done: encoding (responses stay JSON); kinds beyond the four objects above (a protobuf body
of another kind is rejected with a clear message, so the client can be pointed at ``-o json``/``apply``);
fields of those kinds that kubectl's generators never set (security contexts, affinity, lifecycle hooks,
status): unknown fields are skipped, not errors, exactly as a proto2 reader does; ``contentEncoding`` (no
Kubernetes client compresses the inner object); groups (wire types 3/4, unused by Kubernetes).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any, NamedTuple

from app.resources import JSONObject
from cloudservice.errors import CloudError

log = logging.getLogger(__name__)

PROTOBUF_CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

# Kubernetes' protobuf serializer prefixes every body with these 4 bytes ("k8s" and a NUL) so that a
# reader can tell protobuf from JSON/YAML without the Content-Type.
MAGIC = b"k8s\x00"

# Protobuf wire types (the low 3 bits of a field's tag).
WIRE_VARINT = 0
WIRE_FIXED64 = 1
WIRE_LEN = 2
WIRE_FIXED32 = 5

_MAX_VARINT_BYTES = 10  # a 64-bit value needs at most ceil(64 / 7) = 10 groups of 7 bits
_UINT64 = 1 << 64
_INT64_MAX = (1 << 63) - 1
_MAX_DEPTH = 64  # nesting far beyond any real object; stops a hostile body from exhausting the stack


class ProtobufDecodeError(CloudError):
    """A protobuf body that cannot be decoded.

    ``path`` is the JSON path of the field being read (``spec.template.spec``; empty at the top level),
    ``offset`` the byte offset within the message being read at that path, ``reason`` what is wrong.
    """

    def __init__(self, reason: str, *, path: str = "", offset: int = 0) -> None:
        where = f" at {path}" if path else ""
        super().__init__(f"{reason}{where} (byte {offset})")
        self.reason = reason
        self.path = path
        self.offset = offset


class UnsupportedKind(ProtobufDecodeError):
    """The envelope names a kind this decoder has no schema for."""

    def __init__(self, api_version: str, kind: str) -> None:
        super().__init__(
            f"protobuf bodies of {api_version or '?'}/{kind or '?'} are not supported; send JSON or YAML"
        )
        self.api_version = api_version
        self.kind = kind


# -- wire format -------------------------------------------------------------------------------------------


def read_varint(buf: bytes, pos: int, *, path: str = "") -> tuple[int, int]:
    """The unsigned varint at ``buf[pos:]`` and the position after it."""
    result = shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(buf):
            raise ProtobufDecodeError("truncated varint", path=path, offset=pos)
        byte = buf[pos + i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & (_UINT64 - 1), pos + i + 1
        shift += 7
    raise ProtobufDecodeError("varint longer than 10 bytes", path=path, offset=pos)


def iter_fields(buf: bytes, *, path: str = "") -> Iterator[tuple[int, int, int | bytes, int]]:
    """Yield ``(field number, wire type, value, offset)`` for each field of one message.

    The value is an int for varint and fixed-width fields and the bytes for length-delimited ones.
    """
    pos = 0
    while pos < len(buf):
        start = pos
        tag, pos = read_varint(buf, pos, path=path)
        number, wire = tag >> 3, tag & 0x7
        if number == 0:
            raise ProtobufDecodeError("field number 0 is invalid", path=path, offset=start)
        value: int | bytes
        if wire == WIRE_VARINT:
            value, pos = read_varint(buf, pos, path=path)
        elif wire in (WIRE_FIXED64, WIRE_FIXED32):
            width = 8 if wire == WIRE_FIXED64 else 4
            if pos + width > len(buf):
                raise ProtobufDecodeError(
                    f"truncated {width * 8}-bit field {number}", path=path, offset=start
                )
            value, pos = int.from_bytes(buf[pos : pos + width], "little"), pos + width
        elif wire == WIRE_LEN:
            length, pos = read_varint(buf, pos, path=path)
            if pos + length > len(buf):
                raise ProtobufDecodeError(
                    f"field {number} claims {length} bytes but only {len(buf) - pos} remain",
                    path=path,
                    offset=start,
                )
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise ProtobufDecodeError(
                f"unsupported wire type {wire} for field {number}", path=path, offset=start
            )
        yield number, wire, value, start


def _signed(value: int) -> int:
    """Two's complement: int32/int64 negatives travel as 10-byte varints of the 64-bit pattern."""
    return value - _UINT64 if value > _INT64_MAX else value


# -- schema ------------------------------------------------------------------------------------------------


class Field(NamedTuple):
    """One field of a message.

    ``kind`` is one of: ``string``, ``int``, ``bool``, ``bytes`` (base64 in JSON), ``quantity``
    (resource.Quantity -> its string), ``time`` (meta/v1 Time -> RFC 3339, omitted when zero),
    ``intorstring`` (util/intstr IntOrString -> int or string), ``message:<Name>``, ``inline:<Name>`` (an
    embedded Go struct whose fields appear in the parent's JSON), ``map:string``, ``map:bytes``,
    ``map:quantity`` (map<string, ...>). ``pointer`` marks a Go pointer field (``*int32``, ``*bool``,
    ``*string``): an explicit zero on the wire is meaningful and kept. Every other scalar is a Go value
    field, which gogo-protobuf writes even when zero and JSON leaves out when zero (``omitempty``), so a
    zero there is dropped, exactly as the JSON kubectl would otherwise have sent.
    """

    json: str
    kind: str
    repeated: bool = False
    pointer: bool = False


def _s(name: str, *, pointer: bool = False) -> Field:
    return Field(name, "string", pointer=pointer)


def _i(name: str, *, pointer: bool = False) -> Field:
    return Field(name, "int", pointer=pointer)


def _b(name: str, *, pointer: bool = False) -> Field:
    return Field(name, "bool", pointer=pointer)


def _m(name: str, message: str, *, repeated: bool = False) -> Field:
    return Field(name, f"message:{message}", repeated)


def _strings(name: str) -> Field:
    return Field(name, "string", repeated=True)


# Field numbers transcribed from the generated.proto files (see the module docstring). Keep entries sorted
# by field number inside a message so a review against the .proto is line by line.
SCHEMA: dict[str, dict[int, Field]] = {
    # k8s.io/apimachinery/pkg/apis/meta/v1
    "ObjectMeta": {
        1: _s("name"),
        2: _s("generateName"),
        3: _s("namespace"),
        4: _s("selfLink"),
        5: _s("uid"),
        6: _s("resourceVersion"),
        7: _i("generation"),
        8: Field("creationTimestamp", "time"),
        9: Field("deletionTimestamp", "time"),
        10: _i("deletionGracePeriodSeconds", pointer=True),
        11: Field("labels", "map:string"),
        12: Field("annotations", "map:string"),
        13: _m("ownerReferences", "OwnerReference", repeated=True),
        14: _strings("finalizers"),
        # 17 managedFields: server-maintained, skipped.
    },
    "OwnerReference": {
        1: _s("kind"),
        3: _s("name"),
        4: _s("uid"),
        5: _s("apiVersion"),
        6: _b("controller", pointer=True),
        7: _b("blockOwnerDeletion", pointer=True),
    },
    "LabelSelector": {
        1: Field("matchLabels", "map:string"),
        2: _m("matchExpressions", "LabelSelectorRequirement", repeated=True),
    },
    "LabelSelectorRequirement": {1: _s("key"), 2: _s("operator"), 3: _strings("values")},
    # k8s.io/api/core/v1
    "Namespace": {1: _m("metadata", "ObjectMeta"), 2: _m("spec", "NamespaceSpec")},
    "NamespaceSpec": {1: _strings("finalizers")},
    "ConfigMap": {
        1: _m("metadata", "ObjectMeta"),
        2: Field("data", "map:string"),
        3: Field("binaryData", "map:bytes"),
        4: _b("immutable", pointer=True),
    },
    "Secret": {
        1: _m("metadata", "ObjectMeta"),
        2: Field("data", "map:bytes"),
        3: _s("type"),
        4: Field("stringData", "map:string"),
        5: _b("immutable", pointer=True),
    },
    "PodTemplateSpec": {1: _m("metadata", "ObjectMeta"), 2: _m("spec", "PodSpec")},
    "PodSpec": {
        1: _m("volumes", "Volume", repeated=True),
        2: _m("containers", "Container", repeated=True),
        3: _s("restartPolicy"),
        4: _i("terminationGracePeriodSeconds", pointer=True),
        5: _i("activeDeadlineSeconds", pointer=True),
        6: _s("dnsPolicy"),
        7: Field("nodeSelector", "map:string"),
        8: _s("serviceAccountName"),
        9: _s("serviceAccount"),
        10: _s("nodeName"),
        11: _b("hostNetwork"),
        12: _b("hostPID"),
        13: _b("hostIPC"),
        15: _m("imagePullSecrets", "LocalObjectReference", repeated=True),
        16: _s("hostname"),
        17: _s("subdomain"),
        19: _s("schedulerName"),
        20: _m("initContainers", "Container", repeated=True),
        21: _b("automountServiceAccountToken", pointer=True),
        22: _m("tolerations", "Toleration", repeated=True),
        24: _s("priorityClassName"),
        25: _i("priority", pointer=True),
        30: _b("enableServiceLinks", pointer=True),
    },
    "Toleration": {
        1: _s("key"),
        2: _s("operator"),
        3: _s("value"),
        4: _s("effect"),
        5: _i("tolerationSeconds", pointer=True),
    },
    "Container": {
        1: _s("name"),
        2: _s("image"),
        3: _strings("command"),
        4: _strings("args"),
        5: _s("workingDir"),
        6: _m("ports", "ContainerPort", repeated=True),
        7: _m("env", "EnvVar", repeated=True),
        8: _m("resources", "ResourceRequirements"),
        9: _m("volumeMounts", "VolumeMount", repeated=True),
        10: _m("livenessProbe", "Probe"),
        11: _m("readinessProbe", "Probe"),
        13: _s("terminationMessagePath"),
        14: _s("imagePullPolicy"),
        16: _b("stdin"),
        17: _b("stdinOnce"),
        18: _b("tty"),
        19: _m("envFrom", "EnvFromSource", repeated=True),
        20: _s("terminationMessagePolicy"),
        22: _m("startupProbe", "Probe"),
    },
    "ContainerPort": {
        1: _s("name"),
        2: _i("hostPort"),
        3: _i("containerPort"),
        4: _s("protocol"),
        5: _s("hostIP"),
    },
    "EnvVar": {1: _s("name"), 2: _s("value"), 3: _m("valueFrom", "EnvVarSource")},
    "EnvVarSource": {
        1: _m("fieldRef", "ObjectFieldSelector"),
        2: _m("resourceFieldRef", "ResourceFieldSelector"),
        3: _m("configMapKeyRef", "ConfigMapKeySelector"),
        4: _m("secretKeyRef", "SecretKeySelector"),
    },
    "EnvFromSource": {
        1: _s("prefix"),
        2: _m("configMapRef", "ConfigMapEnvSource"),
        3: _m("secretRef", "SecretEnvSource"),
    },
    "ConfigMapEnvSource": {1: Field("", "inline:LocalObjectReference"), 2: _b("optional", pointer=True)},
    "SecretEnvSource": {1: Field("", "inline:LocalObjectReference"), 2: _b("optional", pointer=True)},
    "ObjectFieldSelector": {1: _s("apiVersion"), 2: _s("fieldPath")},
    "ResourceFieldSelector": {1: _s("containerName"), 2: _s("resource"), 3: Field("divisor", "quantity")},
    "ConfigMapKeySelector": {
        1: Field("", "inline:LocalObjectReference"),
        2: _s("key"),
        3: _b("optional", pointer=True),
    },
    "SecretKeySelector": {
        1: Field("", "inline:LocalObjectReference"),
        2: _s("key"),
        3: _b("optional", pointer=True),
    },
    "LocalObjectReference": {1: _s("name")},
    "ResourceRequirements": {1: Field("limits", "map:quantity"), 2: Field("requests", "map:quantity")},
    "VolumeMount": {
        1: _s("name"),
        2: _b("readOnly"),
        3: _s("mountPath"),
        4: _s("subPath"),
        5: _s("mountPropagation", pointer=True),
        6: _s("subPathExpr"),
    },
    "Probe": {
        1: Field("", "inline:ProbeHandler"),
        2: _i("initialDelaySeconds"),
        3: _i("timeoutSeconds"),
        4: _i("periodSeconds"),
        5: _i("successThreshold"),
        6: _i("failureThreshold"),
        7: _i("terminationGracePeriodSeconds", pointer=True),
    },
    "ProbeHandler": {
        1: _m("exec", "ExecAction"),
        2: _m("httpGet", "HTTPGetAction"),
        3: _m("tcpSocket", "TCPSocketAction"),
    },
    "ExecAction": {1: _strings("command")},
    "HTTPGetAction": {
        1: _s("path"),
        2: Field("port", "intorstring"),
        3: _s("host"),
        4: _s("scheme"),
        5: _m("httpHeaders", "HTTPHeader", repeated=True),
    },
    "HTTPHeader": {1: _s("name"), 2: _s("value")},
    "TCPSocketAction": {1: Field("port", "intorstring"), 2: _s("host")},
    "Volume": {1: _s("name"), 2: Field("", "inline:VolumeSource")},
    "VolumeSource": {
        1: _m("hostPath", "HostPathVolumeSource"),
        2: _m("emptyDir", "EmptyDirVolumeSource"),
        6: _m("secret", "SecretVolumeSource"),
        10: _m("persistentVolumeClaim", "PersistentVolumeClaimVolumeSource"),
        19: _m("configMap", "ConfigMapVolumeSource"),
    },
    "HostPathVolumeSource": {1: _s("path"), 2: _s("type", pointer=True)},
    "EmptyDirVolumeSource": {1: _s("medium"), 2: Field("sizeLimit", "quantity")},
    "SecretVolumeSource": {
        1: _s("secretName"),
        2: _m("items", "KeyToPath", repeated=True),
        3: _i("defaultMode", pointer=True),
        4: _b("optional", pointer=True),
    },
    "ConfigMapVolumeSource": {
        1: Field("", "inline:LocalObjectReference"),
        2: _m("items", "KeyToPath", repeated=True),
        3: _i("defaultMode", pointer=True),
        4: _b("optional", pointer=True),
    },
    "PersistentVolumeClaimVolumeSource": {1: _s("claimName"), 2: _b("readOnly")},
    "KeyToPath": {1: _s("key"), 2: _s("path"), 3: _i("mode", pointer=True)},
    # k8s.io/api/apps/v1
    "Deployment": {1: _m("metadata", "ObjectMeta"), 2: _m("spec", "DeploymentSpec")},
    "DeploymentSpec": {
        1: _i("replicas", pointer=True),
        2: _m("selector", "LabelSelector"),
        3: _m("template", "PodTemplateSpec"),
        4: _m("strategy", "DeploymentStrategy"),
        5: _i("minReadySeconds"),
        6: _i("revisionHistoryLimit", pointer=True),
        7: _b("paused"),
        9: _i("progressDeadlineSeconds", pointer=True),
    },
    "DeploymentStrategy": {1: _s("type"), 2: _m("rollingUpdate", "RollingUpdateDeployment")},
    "RollingUpdateDeployment": {
        1: Field("maxUnavailable", "intorstring"),
        2: Field("maxSurge", "intorstring"),
    },
}

# The top-level kinds a body may carry: (apiVersion, kind) -> message name.
ROOTS: dict[tuple[str, str], str] = {
    ("v1", "Namespace"): "Namespace",
    ("v1", "ConfigMap"): "ConfigMap",
    ("v1", "Secret"): "Secret",
    ("apps/v1", "Deployment"): "Deployment",
}

# Small fixed messages decoded by hand rather than through SCHEMA (their JSON is a scalar).
_QUANTITY_STRING = 1  # resource.Quantity { optional string string = 1; }
_TIME_SECONDS, _TIME_NANOS = 1, 2  # meta/v1 Time { int64 seconds = 1; int32 nanos = 2; }
_INTSTR_TYPE, _INTSTR_INT, _INTSTR_STR = 1, 2, 3  # IntOrString { type = 1; intVal = 2; strVal = 3; }
_INTSTR_TYPE_STRING = 1  # intstr.Type: 0 = Int, 1 = String
_MAP_KEY, _MAP_VALUE = 1, 2  # a map<K, V> entry is a message { K key = 1; V value = 2; }
# runtime.Unknown { TypeMeta typeMeta = 1; bytes raw = 2; string contentEncoding = 3; contentType = 4; }
_UNKNOWN_TYPEMETA, _UNKNOWN_RAW, _UNKNOWN_ENCODING, _UNKNOWN_CTYPE = 1, 2, 3, 4
_TYPEMETA_APIVERSION, _TYPEMETA_KIND = 1, 2  # runtime.TypeMeta { apiVersion = 1; kind = 2; }


# -- decoding ----------------------------------------------------------------------------------------------


def _join(path: str, name: str) -> str:
    if not name:
        return path
    return f"{path}.{name}" if path else name


def _expect(wire: int, want: int, number: int, path: str, offset: int) -> None:
    if wire != want:
        raise ProtobufDecodeError(
            f"field {number} has wire type {wire}, expected {want}", path=path, offset=offset
        )


def _text(raw: bytes, path: str, offset: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtobufDecodeError("string field is not valid UTF-8", path=path, offset=offset) from exc


def _quantity(raw: bytes, path: str) -> str:
    value = ""
    for number, wire, v, off in iter_fields(raw, path=path):
        if number == _QUANTITY_STRING:
            _expect(wire, WIRE_LEN, number, path, off)
            assert isinstance(v, bytes)
            value = _text(v, path, off)
    return value


def _time(raw: bytes, path: str) -> str | None:
    seconds = nanos = 0
    for number, wire, v, off in iter_fields(raw, path=path):
        if number in (_TIME_SECONDS, _TIME_NANOS):
            _expect(wire, WIRE_VARINT, number, path, off)
            assert isinstance(v, int)
            if number == _TIME_SECONDS:
                seconds = _signed(v)
            else:
                nanos = _signed(v)
    if seconds == 0 and nanos == 0:
        return None  # Go's zero time.Time: JSON writes null, which we leave out
    try:
        when = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise ProtobufDecodeError(f"timestamp {seconds} is out of range", path=path) from exc
    # meta/v1 Time marshals to JSON with second precision.
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _int_or_string(raw: bytes, path: str) -> int | str:
    typ, int_val, str_val = 0, 0, ""
    for number, wire, v, off in iter_fields(raw, path=path):
        if number in (_INTSTR_TYPE, _INTSTR_INT):
            _expect(wire, WIRE_VARINT, number, path, off)
            assert isinstance(v, int)
            if number == _INTSTR_TYPE:
                typ = _signed(v)
            else:
                int_val = _signed(v)
        elif number == _INTSTR_STR:
            _expect(wire, WIRE_LEN, number, path, off)
            assert isinstance(v, bytes)
            str_val = _text(v, path, off)
    return str_val if typ == _INTSTR_TYPE_STRING else int_val


def _map_entry(raw: bytes, value_kind: str, path: str) -> tuple[str, Any]:
    key = ""
    value: Any = "" if value_kind != "quantity" else "0"
    for number, wire, v, off in iter_fields(raw, path=path):
        if number == _MAP_KEY:
            _expect(wire, WIRE_LEN, number, path, off)
            assert isinstance(v, bytes)
            key = _text(v, path, off)
        elif number == _MAP_VALUE:
            _expect(wire, WIRE_LEN, number, path, off)
            assert isinstance(v, bytes)
            if value_kind == "string":
                value = _text(v, path, off)
            elif value_kind == "bytes":
                value = base64.b64encode(v).decode("ascii")
            else:
                value = _quantity(v, path)
    return key, value


def _scalar(field: Field, wire: int, value: int | bytes, number: int, *, path: str, offset: int) -> Any:
    kind = field.kind
    if kind in ("int", "bool"):
        _expect(wire, WIRE_VARINT, number, path, offset)
        assert isinstance(value, int)
        return value != 0 if kind == "bool" else _signed(value)
    _expect(wire, WIRE_LEN, number, path, offset)
    assert isinstance(value, bytes)
    if kind == "string":
        return _text(value, path, offset)
    if kind == "bytes":
        return base64.b64encode(value).decode("ascii")
    if kind == "quantity":
        return _quantity(value, path)
    if kind == "time":
        return _time(value, path)
    if kind == "intorstring":
        return _int_or_string(value, path)
    raise AssertionError(f"unknown field kind {kind!r}")  # SCHEMA is checked by the unit tests


def _omitempty(field: Field) -> bool:
    """Whether a zero value of this field is left out, as Go's JSON ``omitempty`` on a value field does."""
    return not field.pointer and field.kind in ("string", "int", "bool")


def _packed_ints(raw: bytes, path: str) -> list[int]:
    """A packed repeated varint field (proto3 style; accepted although gogo's proto2 output never packs)."""
    out, pos = [], 0
    while pos < len(raw):
        v, pos = read_varint(raw, pos, path=path)
        out.append(_signed(v))
    return out


def decode_message(name: str, raw: bytes, *, path: str = "", depth: int = 0) -> JSONObject:
    """Decode one message of :data:`SCHEMA` type ``name`` into its JSON object."""
    if depth > _MAX_DEPTH:
        raise ProtobufDecodeError("message nesting is too deep", path=path)
    fields = SCHEMA[name]
    out: JSONObject = {}
    for number, wire, value, offset in iter_fields(raw, path=path):
        field = fields.get(number)
        if field is None:
            continue  # proto2: unknown fields are skipped
        here = _join(path, field.json)
        kind = field.kind
        if kind.startswith(("message:", "inline:")):
            _expect(wire, WIRE_LEN, number, path, offset)
            assert isinstance(value, bytes)
            sub_name = kind.split(":", 1)[1]
            if field.repeated:
                items = out.setdefault(field.json, [])
                sub = decode_message(sub_name, value, path=f"{here}[{len(items)}]", depth=depth + 1)
                items.append(sub)
            else:
                sub = decode_message(sub_name, value, path=here, depth=depth + 1)
                if kind.startswith("inline:"):
                    out.update(sub)
                elif isinstance(out.get(field.json), dict):
                    out[field.json].update(sub)  # proto: a repeated singular message merges
                else:
                    out[field.json] = sub
        elif kind.startswith("map:"):
            _expect(wire, WIRE_LEN, number, path, offset)
            assert isinstance(value, bytes)
            key, item = _map_entry(value, kind.split(":", 1)[1], here)
            out.setdefault(field.json, {})[key] = item
        elif field.repeated:
            if wire == WIRE_LEN and kind in ("int", "bool"):
                assert isinstance(value, bytes)
                ints = _packed_ints(value, here)
                out.setdefault(field.json, []).extend(i != 0 if kind == "bool" else i for i in ints)
            else:
                out.setdefault(field.json, []).append(
                    _scalar(field, wire, value, number, path=here, offset=offset)
                )
        else:
            decoded = _scalar(field, wire, value, number, path=here, offset=offset)
            if decoded is None or (_omitempty(field) and decoded in ("", 0)):
                out.pop(field.json, None)  # zero Time, or Go's omitempty on a zero value field
            else:
                out[field.json] = decoded
    return out


def decode_k8s_protobuf(body: bytes) -> JSONObject:
    """The JSON object a Kubernetes protobuf request body encodes.

    Raises :class:`ProtobufDecodeError` (or its :class:`UnsupportedKind`) naming what is wrong.
    """
    if not body.startswith(MAGIC):
        raise ProtobufDecodeError(f"missing the Kubernetes protobuf prefix {MAGIC!r} (got {body[:4]!r})")
    envelope = body[len(MAGIC) :]
    api_version = kind = encoding = content_type = ""
    raw: bytes | None = None
    for number, wire, value, offset in iter_fields(envelope, path="<envelope>"):
        if number == _UNKNOWN_TYPEMETA:
            _expect(wire, WIRE_LEN, number, "<envelope>", offset)
            assert isinstance(value, bytes)
            for n, w, v, off in iter_fields(value, path="<envelope>.typeMeta"):
                if n in (_TYPEMETA_APIVERSION, _TYPEMETA_KIND):
                    _expect(w, WIRE_LEN, n, "<envelope>.typeMeta", off)
                    assert isinstance(v, bytes)
                    text = _text(v, "<envelope>.typeMeta", off)
                    if n == _TYPEMETA_APIVERSION:
                        api_version = text
                    else:
                        kind = text
        elif number in (_UNKNOWN_RAW, _UNKNOWN_ENCODING, _UNKNOWN_CTYPE):
            _expect(wire, WIRE_LEN, number, "<envelope>", offset)
            assert isinstance(value, bytes)
            if number == _UNKNOWN_RAW:
                raw = value
            elif number == _UNKNOWN_ENCODING:
                encoding = _text(value, "<envelope>", offset)
            else:
                content_type = _text(value, "<envelope>", offset)
    if encoding:
        raise ProtobufDecodeError(f"content encoding {encoding!r} is not supported", path="<envelope>")
    if content_type and content_type != PROTOBUF_CONTENT_TYPE:
        raise ProtobufDecodeError(f"inner content type {content_type!r} is not protobuf", path="<envelope>")
    root = ROOTS.get((api_version, kind))
    if root is None:
        raise UnsupportedKind(api_version, kind)
    obj: JSONObject = {"apiVersion": api_version, "kind": kind}
    obj.update(decode_message(root, raw or b""))
    log.debug("decoded protobuf %s/%s (%d bytes)", api_version, kind, len(body))
    return obj

"""Typed, validated views of the parts of a Pod spec that FleetOps executes.

Pods travel as plain Kubernetes JSON (see ``app.resources``); this module turns the ``spec`` of one into
frozen dataclasses that the edge runtime can reason about, and is the validation the cloud API runs on
every manifest. Every rejection is an ``app.errors.ValidationError`` whose ``field`` is the exact JSON
path in Kubernetes' notation (``spec.containers[0].livenessProbe.periodSeconds``), so kubectl can show it.

Volumes are modelled for the four sources an edge box can honour without a cluster: ``emptyDir``,
``hostPath``, ``configMap`` and ``secret``; any other volume source is rejected with the field named, so a
manifest the cloud accepts is one the edge can run. Environment variables may come from a ``fieldRef``,
a ``configMapKeyRef`` or a ``secretKeyRef``, and whole ConfigMaps/Secrets through ``envFrom``; this module
only records the references (``ConfigKeyRef``, ``EnvFromSource``), the edge resolves them at start time.

Deliberately not modelled: resources, security contexts, lifecycle hooks, ephemeral containers, grpc
probes, projected/downwardAPI/PVC volumes, mount propagation and anything else the process runtime
cannot honour. Unknown fields are ignored (the API
server keeps them in the stored object), exactly as a kubelet ignores fields it does not implement.
Named probe ports are resolved against the container's ports at parse time, so a ``Probe`` always holds a
number.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from app.errors import ValidationError

RestartPolicy = Literal["Always", "OnFailure", "Never"]
TerminationMessagePolicy = Literal["File", "FallbackToLogsOnError"]
RESTART_POLICIES: tuple[RestartPolicy, ...] = ("Always", "OnFailure", "Never")

# Kubernetes' own limits: a DNS-1123 label is at most 63 characters, an IANA service name (a named port)
# at most 15; ports are TCP/UDP port numbers.
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL_MAX = 63
# A DNS-1123 subdomain (the name of a ConfigMap or Secret): dot-separated labels, 253 characters at most.
_DNS1123_SUBDOMAIN_MAX = 253
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PORT_NAME_MAX = 15
_PORT_MIN, _PORT_MAX = 1, 65535
# An environment variable name as Kubernetes accepts it (C identifiers plus '.' and '-').
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
# A ConfigMap/Secret data key (Kubernetes' IsConfigMapKey): at most 253 characters (a DNS subdomain's
# length), of alphanumerics, '-', '_' and '.', and never '.', '..' or starting with '..' (the kubelet
# keeps its own '..data' bookkeeping next to the keys in a volume).
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_CONFIG_KEY_MAX = 253
# File modes of projected keys: permission bits only (0777).
_MODE_MAX = 0o777
# The apiserver's default for configMap/secret volumes' defaultMode (0644).
DEFAULT_VOLUME_MODE = 0o644
HOST_PATH_TYPES = (
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
)
ConfigKind = Literal["ConfigMap", "Secret"]

FIELD_PATHS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "status.podIP",
    "status.hostIP",
)


@dataclass(frozen=True, slots=True)
class ConfigKeyRef:
    """One key of a ConfigMap or Secret in the pod's namespace (``configMapKeyRef`` / ``secretKeyRef``)."""

    kind: ConfigKind
    name: str
    key: str
    optional: bool = False


@dataclass(frozen=True, slots=True)
class EnvVar:
    """One environment variable: a literal ``value``, a ``field_ref`` (one of ``FIELD_PATHS``) or a
    ``config_ref`` (a key of a ConfigMap or Secret)."""

    name: str
    value: str = ""
    field_ref: str | None = None
    config_ref: ConfigKeyRef | None = None


@dataclass(frozen=True, slots=True)
class EnvFromSource:
    """Every key of a ConfigMap or Secret as variables, each name prefixed with ``prefix``."""

    kind: ConfigKind
    name: str
    prefix: str = ""
    optional: bool = False


@dataclass(frozen=True, slots=True)
class VolumeMount:
    name: str
    mount_path: str
    read_only: bool = False
    sub_path: str = ""


@dataclass(frozen=True, slots=True)
class KeyToPath:
    """One projected key: ``key`` of the object written at relative ``path``, with ``mode`` if set."""

    key: str
    path: str
    mode: int | None = None


@dataclass(frozen=True, slots=True)
class EmptyDirSource:
    medium: str = ""


@dataclass(frozen=True, slots=True)
class HostPathSource:
    path: str
    type: str = ""


@dataclass(frozen=True, slots=True)
class ConfigVolumeSource:
    """A ``configMap`` or ``secret`` volume: the object's keys (or only ``items``) as files."""

    kind: ConfigKind
    name: str
    items: tuple[KeyToPath, ...] = ()
    default_mode: int = DEFAULT_VOLUME_MODE
    optional: bool = False


VolumeSource = EmptyDirSource | HostPathSource | ConfigVolumeSource


@dataclass(frozen=True, slots=True)
class Volume:
    name: str
    source: VolumeSource


@dataclass(frozen=True, slots=True)
class ContainerPort:
    container_port: int
    name: str = ""
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class ExecAction:
    command: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HTTPGetAction:
    port: int
    path: str = "/"
    host: str = ""
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"
    http_headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class TCPSocketAction:
    port: int
    host: str = ""


@dataclass(frozen=True, slots=True)
class Probe:
    """A probe with exactly one handler; thresholds default as in Kubernetes."""

    handler: ExecAction | HTTPGetAction | TCPSocketAction
    initial_delay_seconds: int = 0
    period_seconds: int = 10
    timeout_seconds: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    env_from: tuple[EnvFromSource, ...] = ()
    volume_mounts: tuple[VolumeMount, ...] = ()
    working_dir: str = ""
    ports: tuple[ContainerPort, ...] = ()
    liveness_probe: Probe | None = None
    readiness_probe: Probe | None = None
    startup_probe: Probe | None = None
    # FallbackToLogsOnError: a failed run's status message is the end of its log (File, the default,
    # reads a file the container wrote, which a process on the host has no /dev/termination-log for).
    termination_message_policy: TerminationMessagePolicy = "File"


@dataclass(frozen=True, slots=True)
class PodSpec:
    containers: tuple[Container, ...]
    init_containers: tuple[Container, ...] = ()
    restart_policy: RestartPolicy = "Always"
    termination_grace_period_seconds: int = 30
    node_selector: Mapping[str, str] = field(default_factory=dict)
    node_name: str = ""
    volumes: tuple[Volume, ...] = ()

    def container(self, name: str) -> Container | None:
        for c in (*self.init_containers, *self.containers):
            if c.name == name:
                return c
        return None

    def volume(self, name: str) -> Volume | None:
        for v in self.volumes:
            if v.name == name:
                return v
        return None

    def config_refs(self) -> set[tuple[ConfigKind, str]]:
        """Every ConfigMap/Secret (kind, name) the pod's env, envFrom and volumes reference."""
        refs: set[tuple[ConfigKind, str]] = set()
        for v in self.volumes:
            if isinstance(v.source, ConfigVolumeSource):
                refs.add((v.source.kind, v.source.name))
        for c in (*self.init_containers, *self.containers):
            refs.update((e.kind, e.name) for e in c.env_from)
            refs.update((e.config_ref.kind, e.config_ref.name) for e in c.env if e.config_ref)
        return refs


def container_hash(c: Container) -> str:
    """A stable hash of what needs a restart when it changes.

    Probes are left out on purpose: they are applied to the running container without restarting it.
    So are the *values* behind ConfigMap/Secret references: as in Kubernetes, a changed ConfigMap does not
    restart the containers that read it into their environment. New fields enter the material only when
    set, so the hash of a container that uses none of them is the same as before they existed (no restart
    of running workloads on upgrade).
    """

    def env_material(e: EnvVar) -> list[Any]:
        item: list[Any] = [e.name, e.value, e.field_ref]
        if e.config_ref is not None:
            r = e.config_ref
            item.append([r.kind, r.name, r.key, r.optional])
        return item

    material: dict[str, Any] = {
        "name": c.name,
        "image": c.image,
        "command": list(c.command),
        "args": list(c.args),
        "env": [env_material(e) for e in c.env],
        "workingDir": c.working_dir,
        "ports": [[p.name, p.container_port, p.protocol] for p in c.ports],
    }
    if c.env_from:
        material["envFrom"] = [[e.kind, e.name, e.prefix, e.optional] for e in c.env_from]
    if c.volume_mounts:
        material["volumeMounts"] = [[m.name, m.mount_path, m.read_only, m.sub_path] for m in c.volume_mounts]
    encoded = json.dumps(material, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


# -- parsing helpers ---------------------------------------------------------------------------------------


def _obj(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(path, f"must be an object, not {type(value).__name__}")
    return value


def _str(value: Any, path: str, *, required: bool = False) -> str:
    if value is None:
        if required:
            raise ValidationError(path, "required")
        return ""
    if not isinstance(value, str):
        raise ValidationError(path, f"must be a string, not {type(value).__name__}")
    if required and not value:
        raise ValidationError(path, "required")
    return value


def _int(value: Any, path: str, default: int, *, minimum: int = 0) -> int:
    if value is None:
        return default
    # bool is an int subclass in Python but not in JSON.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(path, f"must be an integer, not {type(value).__name__}")
    if value < minimum:
        raise ValidationError(path, f"must be greater than or equal to {minimum}")
    return value


def _str_list(value: Any, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValidationError(path, f"must be a list, not {type(value).__name__}")
    return tuple(_str(v, f"{path}[{i}]") for i, v in enumerate(value))


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationError(path, f"must be a list, not {type(value).__name__}")
    return value


def _dns_label(value: Any, path: str) -> str:
    name = _str(value, path, required=True)
    if len(name) > _DNS1123_LABEL_MAX:
        raise ValidationError(path, f"must be no more than {_DNS1123_LABEL_MAX} characters")
    if not _DNS1123_LABEL.match(name):
        raise ValidationError(
            path,
            f"{name!r} is not a DNS-1123 label: lower case alphanumeric characters or '-', "
            "starting and ending with an alphanumeric character",
        )
    return name


def _port_number(value: Any, path: str) -> int:
    port = _int(value, path, 0, minimum=_PORT_MIN)
    if port > _PORT_MAX:
        raise ValidationError(path, f"must be between {_PORT_MIN} and {_PORT_MAX}, inclusive")
    return port


def _bool(value: Any, path: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValidationError(path, f"must be a boolean, not {type(value).__name__}")
    return value


def config_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid ConfigMap/Secret data key (Kubernetes' IsConfigMapKey), or None."""
    if not key:
        return "a valid config key must be a non-empty string"
    if len(key) > _CONFIG_KEY_MAX:
        return f"must be no more than {_CONFIG_KEY_MAX} characters"
    if not _CONFIG_KEY.match(key):
        return (
            f"{key!r} is not a valid config key: it must consist of alphanumeric characters, "
            "'-', '_' or '.' (regex [-._a-zA-Z0-9]+)"
        )
    if key in (".", ".."):
        return f"{key!r} is not a valid config key: must not be '.' or '..'"
    if key.startswith(".."):
        return f"{key!r} is not a valid config key: must not start with '..'"
    return None


def _config_key(value: Any, path: str) -> str:
    key = _str(value, path, required=True)
    problem = config_key_problem(key)
    if problem:
        raise ValidationError(path, problem)
    return key


def _object_name(value: Any, path: str) -> str:
    """A referenced ConfigMap/Secret name: required (the kubelet cannot look up an empty name)."""
    name = _str(value, path, required=True)
    if len(name) > _DNS1123_SUBDOMAIN_MAX or not _DNS1123_SUBDOMAIN.match(name):
        raise ValidationError(path, f"{name!r} is not a valid object name (a DNS-1123 subdomain)")
    return name


def _key_ref(value: Any, path: str, kind: ConfigKind) -> ConfigKeyRef:
    ref = _obj(value, path)
    return ConfigKeyRef(
        kind,
        _object_name(ref.get("name"), f"{path}.name"),
        _config_key(ref.get("key"), f"{path}.key"),
        _bool(ref.get("optional"), f"{path}.optional"),
    )


_VALUE_FROM = {"fieldRef", "configMapKeyRef", "secretKeyRef"}


def _parse_env(value: Any, path: str) -> tuple[EnvVar, ...]:
    out: list[EnvVar] = []
    for i, raw in enumerate(_list(value, path)):
        p = f"{path}[{i}]"
        item = _obj(raw, p)
        name = _str(item.get("name"), f"{p}.name", required=True)
        if not _ENV_NAME.match(name):
            raise ValidationError(f"{p}.name", f"{name!r} is not a valid environment variable name")
        literal = _str(item.get("value"), f"{p}.value")
        source = item.get("valueFrom")
        if source is None:
            out.append(EnvVar(name, literal))
            continue
        if literal:
            raise ValidationError(f"{p}.valueFrom", "may not be specified when `value` is not empty")
        src = _obj(source, f"{p}.valueFrom")
        kinds = sorted(k for k in _VALUE_FROM if src.get(k) is not None)
        if not kinds:
            unsupported = sorted(k for k in src if k not in _VALUE_FROM)
            detail = f" ({', '.join(unsupported)} is not supported)" if unsupported else ""
            raise ValidationError(
                f"{p}.valueFrom",
                f"must specify one of: `fieldRef`, `configMapKeyRef` or `secretKeyRef`{detail}",
            )
        if len(kinds) > 1:
            raise ValidationError(f"{p}.valueFrom", "may not have more than one field specified at a time")
        vp = f"{p}.valueFrom.{kinds[0]}"
        if kinds[0] == "configMapKeyRef":
            out.append(EnvVar(name, config_ref=_key_ref(src[kinds[0]], vp, "ConfigMap")))
            continue
        if kinds[0] == "secretKeyRef":
            out.append(EnvVar(name, config_ref=_key_ref(src[kinds[0]], vp, "Secret")))
            continue
        ref = _obj(src["fieldRef"], vp)
        fp = _str(ref.get("fieldPath"), f"{vp}.fieldPath", required=True)
        if fp not in FIELD_PATHS:
            raise ValidationError(
                f"{vp}.fieldPath",
                f"unsupported value {fp!r}: supported {list(FIELD_PATHS)}",
            )
        out.append(EnvVar(name, "", fp))
    return tuple(out)


def _parse_env_from(value: Any, path: str) -> tuple[EnvFromSource, ...]:
    out: list[EnvFromSource] = []
    for i, raw in enumerate(_list(value, path)):
        p = f"{path}[{i}]"
        item = _obj(raw, p)
        refs = [k for k in ("configMapRef", "secretRef") if item.get(k) is not None]
        if not refs:
            raise ValidationError(p, "must specify one of: `configMapRef` or `secretRef`")
        if len(refs) > 1:
            raise ValidationError(p, "may not have more than one field specified at a time")
        prefix = _str(item.get("prefix"), f"{p}.prefix")
        if prefix and not _ENV_NAME.match(prefix):
            raise ValidationError(f"{p}.prefix", f"{prefix!r} is not a valid environment variable name")
        ref = _obj(item[refs[0]], f"{p}.{refs[0]}")
        out.append(
            EnvFromSource(
                "ConfigMap" if refs[0] == "configMapRef" else "Secret",
                _object_name(ref.get("name"), f"{p}.{refs[0]}.name"),
                prefix,
                _bool(ref.get("optional"), f"{p}.{refs[0]}.optional"),
            )
        )
    return tuple(out)


def _relative_path(value: Any, path: str, *, required: bool) -> str:
    """A path that must stay inside its volume: relative, no '..' element (Kubernetes' validateLocalPath)."""
    rel = _str(value, path, required=required)
    if not rel:
        return ""
    if rel.startswith("/"):
        raise ValidationError(path, f"{rel!r}: must be a relative path")
    if ".." in rel.split("/"):
        raise ValidationError(path, f"{rel!r}: must not contain '..'")
    return rel


def _mode(value: Any, path: str, default: int | None) -> int | None:
    if value is None:
        return default
    mode = _int(value, path, 0)
    if mode > _MODE_MAX:
        raise ValidationError(
            path, f"must be a number between 0 and 0777 (octal), both inclusive, not {mode:#o}"
        )
    return mode


def _parse_config_volume(value: Any, path: str, kind: ConfigKind) -> ConfigVolumeSource:
    raw = _obj(value, path)
    name_key = "name" if kind == "ConfigMap" else "secretName"
    items: list[KeyToPath] = []
    paths: set[str] = set()
    for i, item_raw in enumerate(_list(raw.get("items"), f"{path}.items")):
        ip = f"{path}.items[{i}]"
        item = _obj(item_raw, ip)
        rel = _relative_path(item.get("path"), f"{ip}.path", required=True)
        if rel.startswith(".."):
            raise ValidationError(f"{ip}.path", f"{rel!r}: must not start with '..'")
        if rel in paths:
            raise ValidationError(f"{ip}.path", f"duplicate path {rel!r}")
        paths.add(rel)
        items.append(
            KeyToPath(
                _config_key(item.get("key"), f"{ip}.key"), rel, _mode(item.get("mode"), f"{ip}.mode", None)
            )
        )
    default_mode = _mode(raw.get("defaultMode"), f"{path}.defaultMode", DEFAULT_VOLUME_MODE)
    assert default_mode is not None
    return ConfigVolumeSource(
        kind,
        _object_name(raw.get(name_key), f"{path}.{name_key}"),
        tuple(items),
        default_mode,
        _bool(raw.get("optional"), f"{path}.optional"),
    )


# Volume sources Kubernetes knows that the process runtime does not (rejected, naming the field).
_SOURCES = ("emptyDir", "hostPath", "configMap", "secret")


def _parse_volumes(value: Any, path: str) -> tuple[Volume, ...]:
    out: list[Volume] = []
    names: set[str] = set()
    for i, raw in enumerate(_list(value, path)):
        p = f"{path}[{i}]"
        item = _obj(raw, p)
        name = _dns_label(item.get("name"), f"{p}.name")
        if name in names:
            raise ValidationError(f"{p}.name", f"duplicate volume name {name!r}")
        names.add(name)
        given = [k for k in item if k != "name" and item[k] is not None]
        unsupported = [k for k in given if k not in _SOURCES]
        if unsupported:
            raise ValidationError(
                f"{p}.{unsupported[0]}",
                f"volume type {unsupported[0]!r} is not supported by the edge runtime: "
                f"supported {list(_SOURCES)}",
            )
        if not given:
            raise ValidationError(p, "must specify a volume type")
        if len(given) > 1:
            raise ValidationError(f"{p}.{given[1]}", "may not specify more than 1 volume type")
        kind = given[0]
        sp = f"{p}.{kind}"
        source: VolumeSource
        if kind == "emptyDir":
            ed = _obj(item[kind], sp)
            medium = _str(ed.get("medium"), f"{sp}.medium")
            if medium not in ("", "Memory"):
                raise ValidationError(f"{sp}.medium", f"unsupported value {medium!r}: supported '', 'Memory'")
            source = EmptyDirSource(medium)
        elif kind == "hostPath":
            hp = _obj(item[kind], sp)
            host = _str(hp.get("path"), f"{sp}.path", required=True)
            if not host.startswith("/"):
                raise ValidationError(f"{sp}.path", f"{host!r}: must be an absolute path")
            if ".." in host.split("/"):
                raise ValidationError(f"{sp}.path", f"{host!r}: must not contain '..'")
            typ = _str(hp.get("type"), f"{sp}.type")
            if typ not in HOST_PATH_TYPES:
                raise ValidationError(
                    f"{sp}.type", f"unsupported value {typ!r}: supported {[t for t in HOST_PATH_TYPES if t]}"
                )
            source = HostPathSource(host, typ)
        else:
            source = _parse_config_volume(item[kind], sp, "ConfigMap" if kind == "configMap" else "Secret")
        out.append(Volume(name, source))
    return tuple(out)


def _parse_volume_mounts(value: Any, path: str, volumes: Mapping[str, Volume]) -> tuple[VolumeMount, ...]:
    out: list[VolumeMount] = []
    targets: set[str] = set()
    for i, raw in enumerate(_list(value, path)):
        p = f"{path}[{i}]"
        item = _obj(raw, p)
        name = _str(item.get("name"), f"{p}.name", required=True)
        if name not in volumes:
            raise ValidationError(f"{p}.name", f"volume {name!r} not found in spec.volumes")
        target = _str(item.get("mountPath"), f"{p}.mountPath", required=True)
        if not target.startswith("/"):
            raise ValidationError(f"{p}.mountPath", f"{target!r}: must be an absolute path")
        if ".." in target.split("/"):
            raise ValidationError(f"{p}.mountPath", f"{target!r}: must not contain '..'")
        normal = "/" + "/".join(part for part in target.split("/") if part and part != ".")
        if normal == "/":
            raise ValidationError(f"{p}.mountPath", "may not be '/'")
        if normal in targets:
            raise ValidationError(f"{p}.mountPath", f"{target!r}: must be unique")
        targets.add(normal)
        if item.get("mountPropagation") not in (None, "None"):
            raise ValidationError(f"{p}.mountPropagation", "only 'None' is supported by the edge runtime")
        out.append(
            VolumeMount(
                name,
                normal,
                _bool(item.get("readOnly"), f"{p}.readOnly"),
                _relative_path(item.get("subPath"), f"{p}.subPath", required=False),
            )
        )
    return tuple(out)


def _parse_ports(value: Any, path: str) -> tuple[ContainerPort, ...]:
    out: list[ContainerPort] = []
    names: set[str] = set()
    for i, raw in enumerate(_list(value, path)):
        p = f"{path}[{i}]"
        item = _obj(raw, p)
        if item.get("containerPort") is None:
            raise ValidationError(f"{p}.containerPort", "required")
        number = _port_number(item.get("containerPort"), f"{p}.containerPort")
        name = _str(item.get("name"), f"{p}.name")
        if name:
            if len(name) > _PORT_NAME_MAX or not _PORT_NAME.match(name):
                raise ValidationError(f"{p}.name", f"{name!r} is not a valid port name")
            if name in names:
                raise ValidationError(f"{p}.name", f"duplicate port name {name!r}")
            names.add(name)
        protocol = _str(item.get("protocol"), f"{p}.protocol") or "TCP"
        if protocol not in ("TCP", "UDP", "SCTP"):
            raise ValidationError(f"{p}.protocol", f"unsupported value {protocol!r}")
        out.append(ContainerPort(number, name, protocol))
    return tuple(out)


def _probe_port(value: Any, path: str, ports: tuple[ContainerPort, ...]) -> int:
    if value is None:
        raise ValidationError(path, "required")
    if isinstance(value, str):
        for port in ports:
            if port.name == value:
                return port.container_port
        if value.isdecimal() and value.isascii():  # Kubernetes accepts an int-or-string; "8080" is a number.
            return _port_number(int(value), path)
        raise ValidationError(path, f"named port {value!r} is not defined in the container's ports")
    return _port_number(value, path)


def _parse_probe(value: Any, path: str, ports: tuple[ContainerPort, ...], *, liveness_like: bool) -> Probe:
    raw = _obj(value, path)
    handlers: list[ExecAction | HTTPGetAction | TCPSocketAction] = []
    if raw.get("exec") is not None:
        ex = _obj(raw["exec"], f"{path}.exec")
        command = _str_list(ex.get("command"), f"{path}.exec.command")
        if not command:
            raise ValidationError(f"{path}.exec.command", "required")
        handlers.append(ExecAction(command))
    if raw.get("httpGet") is not None:
        hp = f"{path}.httpGet"
        hg = _obj(raw["httpGet"], hp)
        scheme = _str(hg.get("scheme"), f"{hp}.scheme") or "HTTP"
        if scheme not in ("HTTP", "HTTPS"):
            raise ValidationError(f"{hp}.scheme", f"unsupported value {scheme!r}: supported HTTP, HTTPS")
        headers: list[tuple[str, str]] = []
        for i, h in enumerate(_list(hg.get("httpHeaders"), f"{hp}.httpHeaders")):
            hdr = _obj(h, f"{hp}.httpHeaders[{i}]")
            headers.append(
                (
                    _str(hdr.get("name"), f"{hp}.httpHeaders[{i}].name", required=True),
                    _str(hdr.get("value"), f"{hp}.httpHeaders[{i}].value"),
                )
            )
        path_value = _str(hg.get("path"), f"{hp}.path") or "/"
        if not path_value.startswith("/"):
            path_value = "/" + path_value
        handlers.append(
            HTTPGetAction(
                port=_probe_port(hg.get("port"), f"{hp}.port", ports),
                path=path_value,
                host=_str(hg.get("host"), f"{hp}.host"),
                scheme="HTTPS" if scheme == "HTTPS" else "HTTP",
                http_headers=tuple(headers),
            )
        )
    if raw.get("tcpSocket") is not None:
        tp = f"{path}.tcpSocket"
        ts = _obj(raw["tcpSocket"], tp)
        handlers.append(
            TCPSocketAction(
                port=_probe_port(ts.get("port"), f"{tp}.port", ports), host=_str(ts.get("host"), f"{tp}.host")
            )
        )
    if not handlers:
        raise ValidationError(path, "must specify a handler type (exec, httpGet or tcpSocket)")
    if len(handlers) > 1:
        raise ValidationError(path, "may not specify more than 1 handler type")
    success = _int(raw.get("successThreshold"), f"{path}.successThreshold", 1, minimum=1)
    if liveness_like and success != 1:
        raise ValidationError(f"{path}.successThreshold", "must be 1")
    return Probe(
        handler=handlers[0],
        initial_delay_seconds=_int(raw.get("initialDelaySeconds"), f"{path}.initialDelaySeconds", 0),
        period_seconds=_int(raw.get("periodSeconds"), f"{path}.periodSeconds", 10, minimum=1),
        timeout_seconds=_int(raw.get("timeoutSeconds"), f"{path}.timeoutSeconds", 1, minimum=1),
        success_threshold=success,
        failure_threshold=_int(raw.get("failureThreshold"), f"{path}.failureThreshold", 3, minimum=1),
    )


def _parse_container(value: Any, path: str, *, init: bool, volumes: Mapping[str, Volume]) -> Container:
    raw = _obj(value, path)
    name = _dns_label(raw.get("name"), f"{path}.name")
    image = _str(raw.get("image"), f"{path}.image", required=True)
    ports = _parse_ports(raw.get("ports"), f"{path}.ports")
    probes: dict[str, Probe | None] = {}
    for key in ("livenessProbe", "readinessProbe", "startupProbe"):
        if raw.get(key) is None:
            probes[key] = None
            continue
        if init:
            raise ValidationError(f"{path}.{key}", "may not be set for init containers")
        probes[key] = _parse_probe(raw[key], f"{path}.{key}", ports, liveness_like=key != "readinessProbe")
    return Container(
        name=name,
        image=image,
        command=_str_list(raw.get("command"), f"{path}.command"),
        args=_str_list(raw.get("args"), f"{path}.args"),
        env=_parse_env(raw.get("env"), f"{path}.env"),
        env_from=_parse_env_from(raw.get("envFrom"), f"{path}.envFrom"),
        volume_mounts=_parse_volume_mounts(raw.get("volumeMounts"), f"{path}.volumeMounts", volumes),
        working_dir=_str(raw.get("workingDir"), f"{path}.workingDir"),
        ports=ports,
        liveness_probe=probes["livenessProbe"],
        readiness_probe=probes["readinessProbe"],
        startup_probe=probes["startupProbe"],
        termination_message_policy=_termination_policy(raw, path),
    )


def _termination_policy(raw: Mapping[str, Any], path: str) -> TerminationMessagePolicy:
    value = raw.get("terminationMessagePolicy") or "File"
    if value not in ("File", "FallbackToLogsOnError"):
        raise ValidationError(
            f"{path}.terminationMessagePolicy",
            f'Unsupported value: "{value}": supported values: "File", "FallbackToLogsOnError"',
        )
    return cast("TerminationMessagePolicy", value)


def parse_pod_spec(spec: Any, field: str = "spec") -> PodSpec:
    """Validate a Pod's ``spec`` and return its typed view; raises ``ValidationError`` naming the field."""
    raw = _obj(spec, field)
    containers_raw = _list(raw.get("containers"), f"{field}.containers")
    if not containers_raw:
        raise ValidationError(f"{field}.containers", "required")
    volumes = _parse_volumes(raw.get("volumes"), f"{field}.volumes")
    by_name = {v.name: v for v in volumes}
    seen: set[str] = set()

    def parse_all(items: list[Any], key: str, *, init: bool) -> tuple[Container, ...]:
        out: list[Container] = []
        for i, item in enumerate(items):
            c = _parse_container(item, f"{field}.{key}[{i}]", init=init, volumes=by_name)
            if c.name in seen:
                raise ValidationError(f"{field}.{key}[{i}].name", f"duplicate container name {c.name!r}")
            seen.add(c.name)
            out.append(c)
        return tuple(out)

    init_containers = parse_all(
        _list(raw.get("initContainers"), f"{field}.initContainers"), "initContainers", init=True
    )
    containers = parse_all(containers_raw, "containers", init=False)
    policy = _str(raw.get("restartPolicy"), f"{field}.restartPolicy") or "Always"
    if policy not in RESTART_POLICIES:
        raise ValidationError(
            f"{field}.restartPolicy", f"unsupported value {policy!r}: supported {list(RESTART_POLICIES)}"
        )
    selector_raw = raw.get("nodeSelector")
    selector: dict[str, str] = {}
    if selector_raw is not None:
        for k, v in _obj(selector_raw, f"{field}.nodeSelector").items():
            selector[k] = _str(v, f"{field}.nodeSelector.{k}")
    restart_policy: RestartPolicy = (
        "Always" if policy == "Always" else "OnFailure" if policy == "OnFailure" else "Never"
    )
    return PodSpec(
        containers=containers,
        init_containers=init_containers,
        restart_policy=restart_policy,
        termination_grace_period_seconds=_int(
            raw.get("terminationGracePeriodSeconds"), f"{field}.terminationGracePeriodSeconds", 30
        ),
        node_selector=selector,
        node_name=_str(raw.get("nodeName"), f"{field}.nodeName"),
        volumes=volumes,
    )

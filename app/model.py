"""Typed, validated views of the parts of a Pod spec that FleetOps executes.

Pods travel as plain Kubernetes JSON (see ``app.resources``); this module turns the ``spec`` of one into
frozen dataclasses that the edge runtime can reason about, and is the validation the cloud API runs on
every manifest. Every rejection is an ``app.errors.ValidationError`` whose ``field`` is the exact JSON
path in Kubernetes' notation (``spec.containers[0].livenessProbe.periodSeconds``), so kubectl can show it.

Deliberately not modelled: volumes, resources, security contexts, lifecycle hooks, ephemeral containers,
grpc probes and anything else the process runtime cannot honour. Unknown fields are ignored (the API
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
from typing import Any, Literal

from app.errors import ValidationError

RestartPolicy = Literal["Always", "OnFailure", "Never"]
RESTART_POLICIES: tuple[RestartPolicy, ...] = ("Always", "OnFailure", "Never")

# Kubernetes' own limits: a DNS-1123 label is at most 63 characters, an IANA service name (a named port)
# at most 15; ports are TCP/UDP port numbers.
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL_MAX = 63
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PORT_NAME_MAX = 15
_PORT_MIN, _PORT_MAX = 1, 65535
# An environment variable name as Kubernetes accepts it (C identifiers plus '.' and '-').
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")

FIELD_PATHS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "status.podIP",
    "status.hostIP",
)


@dataclass(frozen=True, slots=True)
class EnvVar:
    """One environment variable: a literal ``value`` or a ``field_ref`` (one of ``FIELD_PATHS``)."""

    name: str
    value: str = ""
    field_ref: str | None = None


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
    working_dir: str = ""
    ports: tuple[ContainerPort, ...] = ()
    liveness_probe: Probe | None = None
    readiness_probe: Probe | None = None
    startup_probe: Probe | None = None


@dataclass(frozen=True, slots=True)
class PodSpec:
    containers: tuple[Container, ...]
    init_containers: tuple[Container, ...] = ()
    restart_policy: RestartPolicy = "Always"
    termination_grace_period_seconds: int = 30
    node_selector: Mapping[str, str] = field(default_factory=dict)
    node_name: str = ""

    def container(self, name: str) -> Container | None:
        for c in (*self.init_containers, *self.containers):
            if c.name == name:
                return c
        return None


def container_hash(c: Container) -> str:
    """A stable hash of what needs a restart when it changes.

    Probes are left out on purpose: they are applied to the running container without restarting it.
    """
    material = {
        "name": c.name,
        "image": c.image,
        "command": list(c.command),
        "args": list(c.args),
        "env": [[e.name, e.value, e.field_ref] for e in c.env],
        "workingDir": c.working_dir,
        "ports": [[p.name, p.container_port, p.protocol] for p in c.ports],
    }
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
        if "fieldRef" not in src:
            raise ValidationError(f"{p}.valueFrom", "only fieldRef is supported")
        ref = _obj(src["fieldRef"], f"{p}.valueFrom.fieldRef")
        fp = _str(ref.get("fieldPath"), f"{p}.valueFrom.fieldRef.fieldPath", required=True)
        if fp not in FIELD_PATHS:
            raise ValidationError(
                f"{p}.valueFrom.fieldRef.fieldPath",
                f"unsupported value {fp!r}: supported {list(FIELD_PATHS)}",
            )
        out.append(EnvVar(name, "", fp))
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
        if value.isdigit():  # Kubernetes accepts an int-or-string; "8080" is a number.
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


def _parse_container(value: Any, path: str, *, init: bool) -> Container:
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
        working_dir=_str(raw.get("workingDir"), f"{path}.workingDir"),
        ports=ports,
        liveness_probe=probes["livenessProbe"],
        readiness_probe=probes["readinessProbe"],
        startup_probe=probes["startupProbe"],
    )


def parse_pod_spec(spec: Any, field: str = "spec") -> PodSpec:
    """Validate a Pod's ``spec`` and return its typed view; raises ``ValidationError`` naming the field."""
    raw = _obj(spec, field)
    containers_raw = _list(raw.get("containers"), f"{field}.containers")
    if not containers_raw:
        raise ValidationError(f"{field}.containers", "required")
    seen: set[str] = set()

    def parse_all(items: list[Any], key: str, *, init: bool) -> tuple[Container, ...]:
        out: list[Container] = []
        for i, item in enumerate(items):
            c = _parse_container(item, f"{field}.{key}[{i}]", init=init)
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
    )

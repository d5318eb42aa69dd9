"""The resource registry: which Kubernetes kinds FleetOps serves and how they are named.

Objects themselves travel as plain JSON-shaped dicts, exactly as the Kubernetes API serves them, so that
kubectl, the store, the tunnel and the edge cache all agree byte for byte without a translation layer.
Typed views of the parts that code reasons about (a pod's containers, probes...) live in ``app.model``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, NewType

JSONObject = dict[str, Any]
NodeName = NewType("NodeName", str)


@dataclass(frozen=True, slots=True)
class ResourceType:
    """One served resource: its group/version, kind, URL plural and scope."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = (
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    )
    categories: tuple[str, ...] = field(default=())
    singular: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def tunnel_type(self) -> str:
        """The lower-case type used in tunnel resource strings (``namespace/type/name``)."""
        return self.kind.lower()


NODES = ResourceType("", "v1", "Node", "nodes", namespaced=False, short_names=("no",), singular="node")
PODS = ResourceType(
    "", "v1", "Pod", "pods", namespaced=True, short_names=("po",), categories=("all",), singular="pod"
)
NAMESPACES = ResourceType(
    "", "v1", "Namespace", "namespaces", namespaced=False, short_names=("ns",), singular="namespace"
)
EVENTS = ResourceType("", "v1", "Event", "events", namespaced=True, short_names=("ev",), singular="event")
DEPLOYMENTS = ResourceType(
    "apps",
    "v1",
    "Deployment",
    "deployments",
    namespaced=True,
    short_names=("deploy",),
    categories=("all",),
    singular="deployment",
)
REPLICASETS = ResourceType(
    "apps",
    "v1",
    "ReplicaSet",
    "replicasets",
    namespaced=True,
    short_names=("rs",),
    categories=("all",),
    singular="replicaset",
)

CONFIGMAPS = ResourceType(
    "", "v1", "ConfigMap", "configmaps", namespaced=True, short_names=("cm",), singular="configmap"
)
SECRETS = ResourceType("", "v1", "Secret", "secrets", namespaced=True, singular="secret")

# KubeEdge's device API (pkg/apis/devices/v1beta1); typed views and validation live in ``app.devices``.
DEVICES_GROUP = "devices.kubeedge.io"
DEVICES = ResourceType(
    DEVICES_GROUP, "v1beta1", "Device", "devices", namespaced=True, short_names=("dev",), singular="device"
)
DEVICEMODELS = ResourceType(
    DEVICES_GROUP,
    "v1beta1",
    "DeviceModel",
    "devicemodels",
    namespaced=True,
    short_names=("dm",),
    singular="devicemodel",
)

ALL: tuple[ResourceType, ...] = (
    NODES,
    PODS,
    NAMESPACES,
    EVENTS,
    DEPLOYMENTS,
    REPLICASETS,
    CONFIGMAPS,
    SECRETS,
    DEVICES,
    DEVICEMODELS,
)
_BY_PLURAL: dict[tuple[str, str], ResourceType] = {(r.group, r.plural): r for r in ALL}
_BY_KIND: dict[tuple[str, str], ResourceType] = {(r.api_version, r.kind): r for r in ALL}


def by_plural(group: str, plural: str) -> ResourceType | None:
    return _BY_PLURAL.get((group, plural))


def by_kind(api_version: str, kind: str) -> ResourceType | None:
    return _BY_KIND.get((api_version, kind))


def now_rfc3339() -> str:
    """Kubernetes' timestamp format: RFC 3339 in UTC with second precision and a ``Z``."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def meta(obj: JSONObject) -> JSONObject:
    """The object's metadata dict, created if absent."""
    m = obj.get("metadata")
    if not isinstance(m, dict):
        m = {}
        obj["metadata"] = m
    return m


def name_of(obj: JSONObject) -> str:
    return str(meta(obj).get("name", ""))


def namespace_of(obj: JSONObject) -> str:
    return str(meta(obj).get("namespace", ""))


def tunnel_resource(rt: ResourceType, namespace: str, name: str) -> str:
    """KubeEdge's ``namespace/type/name`` resource string; cluster-scoped objects have an empty namespace."""
    return f"{namespace}/{rt.tunnel_type}/{name}"


def parse_tunnel_resource(resource: str) -> tuple[str, str, str]:
    """Split ``namespace/type/name``; raises ValueError when it has not exactly three parts."""
    parts = resource.split("/")
    if len(parts) != 3 or not parts[1]:
        raise ValueError(f"resource {resource!r} is not namespace/type/name")
    return parts[0], parts[1], parts[2]

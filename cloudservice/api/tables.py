"""meta.k8s.io/v1 Table rendering: the server-side printing that ``kubectl get`` asks for.

kubectl sends ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` and prints whatever columns the server
defines, so the familiar columns (a node's STATUS from its Ready condition, a pod's STATUS as kubectl computes
it, READY counts, AGE as a short duration) are computed here. Priority-0 columns are the default view,
priority-1 columns appear with ``-o wide``. Each row carries the object as ``includeObject`` asks: ``None``,
``Metadata`` (a PartialObjectMetadata, the default, which ``--show-labels`` reads) or ``Object``.

Deliberately not done: per-column sorting hints and the columns of kinds we do not serve; an unknown kind
falls back to NAME and AGE like the apiserver's default table convertor.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

from app.resources import JSONObject, ResourceType, parse_rfc3339
from cloudservice.api.selectors import format_label_selector

Column = tuple[str, str, int, str]  # name, type, priority, description
Cells = list[Any]


def human_duration(seconds: float) -> str:
    """kubectl's short age: ``45s``, ``3m20s``, ``25m``, ``5h10m``, ``3d4h``, ``2y``.

    The thresholds are kubectl's: seconds up to 2 minutes, minutes+seconds under 10 minutes, minutes under 3
    hours, hours+minutes under 8 hours, hours under 2 days, days+hours under 8 days, days under 2 years.
    """
    s = int(seconds)
    if s < -1:  # more than a second of clock skew between us and the writer
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    years = days // 365
    if days < 365 * 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"


def age(timestamp: Any, now: dt.datetime | None = None) -> str:
    if not isinstance(timestamp, str) or not timestamp:
        return "<unknown>"
    try:
        when = parse_rfc3339(timestamp)
    except ValueError:
        return "<unknown>"
    now = now or dt.datetime.now(dt.UTC)
    return human_duration((now - when).total_seconds())


def _meta(obj: JSONObject) -> JSONObject:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def _dict(value: Any) -> JSONObject:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _name_age(obj: JSONObject) -> Cells:
    return [_meta(obj).get("name", ""), age(_meta(obj).get("creationTimestamp"))]


# Nodes ----------------------------------------------------------------------------------------------------

_ROLE_PREFIX = "node-role.kubernetes.io/"


def node_status(node: JSONObject) -> str:
    ready = "Unknown"
    for cond in _list(_dict(node.get("status")).get("conditions")):
        if isinstance(cond, dict) and cond.get("type") == "Ready":
            ready = str(cond.get("status", "Unknown"))
    text = "Ready" if ready == "True" else "NotReady"
    if _dict(node.get("spec")).get("unschedulable"):
        text += ",SchedulingDisabled"
    return text


def node_roles(node: JSONObject) -> str:
    roles: set[str] = set()
    for key, value in _dict(_meta(node).get("labels")).items():
        if key.startswith(_ROLE_PREFIX) and key[len(_ROLE_PREFIX) :]:
            roles.add(key[len(_ROLE_PREFIX) :])
        elif key == "kubernetes.io/role" and value:
            roles.add(str(value))
    return ",".join(sorted(roles)) or "<none>"


def _node_address(node: JSONObject, kind: str) -> str:
    for addr in _list(_dict(node.get("status")).get("addresses")):
        if isinstance(addr, dict) and addr.get("type") == kind:
            return str(addr.get("address", ""))
    return "<none>"


def _node_row(node: JSONObject) -> Cells:
    info = _dict(_dict(node.get("status")).get("nodeInfo"))
    return [
        _meta(node).get("name", ""),
        node_status(node),
        node_roles(node),
        age(_meta(node).get("creationTimestamp")),
        info.get("kubeletVersion", ""),
        _node_address(node, "InternalIP"),
        _node_address(node, "ExternalIP"),
        info.get("osImage", "<unknown>") or "<unknown>",
        info.get("kernelVersion", "<unknown>") or "<unknown>",
        info.get("containerRuntimeVersion", "<unknown>") or "<unknown>",
    ]


# Pods -----------------------------------------------------------------------------------------------------


def pod_status_reason(pod: JSONObject) -> str:
    """The STATUS column exactly as kubectl derives it from phase, container states and deletion."""
    spec, status = _dict(pod.get("spec")), _dict(pod.get("status"))
    reason = str(status.get("reason") or status.get("phase") or "")
    init_specs = _list(spec.get("initContainers"))
    initializing = False
    for i, cs in enumerate(_list(status.get("initContainerStatuses"))):
        state = _dict(_dict(cs).get("state"))
        term, wait = state.get("terminated"), state.get("waiting")
        if isinstance(term, dict) and term.get("exitCode", 0) == 0:
            continue
        initializing = True
        if isinstance(term, dict):
            if term.get("reason"):
                reason = f"Init:{term['reason']}"
            elif term.get("signal"):
                reason = f"Init:Signal:{term['signal']}"
            else:
                reason = f"Init:ExitCode:{term.get('exitCode', 0)}"
        elif isinstance(wait, dict) and wait.get("reason") and wait.get("reason") != "PodInitializing":
            reason = f"Init:{wait['reason']}"
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        break
    if not initializing:
        has_running = False
        for raw in reversed(_list(status.get("containerStatuses"))):
            cs = _dict(raw)
            state = _dict(cs.get("state"))
            term, wait = state.get("terminated"), state.get("waiting")
            if isinstance(wait, dict) and wait.get("reason"):
                reason = str(wait["reason"])
            elif isinstance(term, dict) and term.get("reason"):
                reason = str(term["reason"])
            elif isinstance(term, dict):
                reason = (
                    f"Signal:{term['signal']}"
                    if term.get("signal")
                    else f"ExitCode:{term.get('exitCode', 0)}"
                )
            elif cs.get("ready") and isinstance(state.get("running"), dict):
                has_running = True
        if reason == "Completed" and has_running:
            ready = any(
                _dict(c).get("type") == "Ready" and _dict(c).get("status") == "True"
                for c in _list(status.get("conditions"))
            )
            reason = "Running" if ready else "NotReady"
    if _meta(pod).get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    return reason


def _restarts(pod: JSONObject) -> str:
    status = _dict(pod.get("status"))
    total = 0
    last: dt.datetime | None = None
    for raw in _list(status.get("containerStatuses")):
        cs = _dict(raw)
        total += int(cs.get("restartCount") or 0)
        finished = _dict(_dict(cs.get("lastState")).get("terminated")).get("finishedAt")
        if isinstance(finished, str) and finished:
            try:
                when = parse_rfc3339(finished)
            except ValueError:
                continue
            last = when if last is None or when > last else last
    if total and last is not None:
        return f"{total} ({human_duration((dt.datetime.now(dt.UTC) - last).total_seconds())} ago)"
    return str(total)


def _pod_row(pod: JSONObject) -> Cells:
    spec, status = _dict(pod.get("spec")), _dict(pod.get("status"))
    total = len(_list(spec.get("containers")))
    ready = sum(
        1
        for cs in _list(status.get("containerStatuses"))
        if _dict(cs).get("ready") and isinstance(_dict(_dict(cs).get("state")).get("running"), dict)
    )
    gates = _list(spec.get("readinessGates"))
    if gates:
        true_conds = {
            _dict(c).get("type") for c in _list(status.get("conditions")) if _dict(c).get("status") == "True"
        }
        gates_cell = f"{sum(1 for g in gates if _dict(g).get('conditionType') in true_conds)}/{len(gates)}"
    else:
        gates_cell = "<none>"
    return [
        _meta(pod).get("name", ""),
        f"{ready}/{total}",
        pod_status_reason(pod),
        _restarts(pod),
        age(_meta(pod).get("creationTimestamp")),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        gates_cell,
    ]


# Workloads ------------------------------------------------------------------------------------------------


def _containers_images(obj: JSONObject) -> tuple[str, str]:
    tmpl_spec = _dict(_dict(_dict(obj.get("spec")).get("template")).get("spec"))
    containers = [_dict(c) for c in _list(tmpl_spec.get("containers"))]
    return (
        ",".join(str(c.get("name", "")) for c in containers),
        ",".join(str(c.get("image", "")) for c in containers),
    )


def _deployment_row(d: JSONObject) -> Cells:
    spec, status = _dict(d.get("spec")), _dict(d.get("status"))
    names, images = _containers_images(d)
    return [
        _meta(d).get("name", ""),
        f"{int(status.get('readyReplicas') or 0)}/{int(spec.get('replicas') or 0)}",
        int(status.get("updatedReplicas") or 0),
        int(status.get("availableReplicas") or 0),
        age(_meta(d).get("creationTimestamp")),
        names,
        images,
        format_label_selector(spec.get("selector")),
    ]


def _replicaset_row(rs: JSONObject) -> Cells:
    spec, status = _dict(rs.get("spec")), _dict(rs.get("status"))
    names, images = _containers_images(rs)
    return [
        _meta(rs).get("name", ""),
        int(spec.get("replicas") or 0),
        int(status.get("replicas") or 0),
        int(status.get("readyReplicas") or 0),
        age(_meta(rs).get("creationTimestamp")),
        names,
        images,
        format_label_selector(spec.get("selector")),
    ]


def _namespace_row(ns: JSONObject) -> Cells:
    return [
        _meta(ns).get("name", ""),
        _dict(ns.get("status")).get("phase", "Active"),
        age(_meta(ns).get("creationTimestamp")),
    ]


def _event_row(ev: JSONObject) -> Cells:
    inv = _dict(ev.get("involvedObject"))
    source = _dict(ev.get("source"))
    last = (
        ev.get("lastTimestamp")
        or ev.get("eventTime")
        or ev.get("firstTimestamp")
        or _meta(ev).get("creationTimestamp")
    )
    first = ev.get("firstTimestamp") or ev.get("eventTime") or _meta(ev).get("creationTimestamp")
    src = ",".join(str(x) for x in (source.get("component"), source.get("host")) if x)
    return [
        age(last),
        ev.get("type", ""),
        ev.get("reason", ""),
        f"{str(inv.get('kind', '')).lower()}/{inv.get('name', '')}",
        ev.get("message", ""),
        inv.get("fieldPath", ""),
        src,
        age(first),
        int(ev.get("count") or 1),
        _meta(ev).get("name", ""),
    ]


def _data_count(obj: JSONObject) -> int:
    return len(_dict(obj.get("data"))) + len(_dict(obj.get("binaryData")))


def _configmap_row(cm: JSONObject) -> Cells:
    return [_meta(cm).get("name", ""), _data_count(cm), age(_meta(cm).get("creationTimestamp"))]


def _secret_row(secret: JSONObject) -> Cells:
    return [
        _meta(secret).get("name", ""),
        secret.get("type", ""),
        _data_count(secret),
        age(_meta(secret).get("creationTimestamp")),
    ]


def _device_row(device: JSONObject) -> Cells:
    spec, status = _dict(device.get("spec")), _dict(device.get("status"))
    return [
        _meta(device).get("name", ""),
        _dict(spec.get("deviceModelRef")).get("name") or "<none>",
        spec.get("nodeName") or "<none>",
        _dict(spec.get("protocol")).get("protocolName") or "<none>",
        status.get("state") or "<unknown>",
        age(_meta(device).get("creationTimestamp")),
    ]


def _devicemodel_row(model: JSONObject) -> Cells:
    spec = _dict(model.get("spec"))
    return [
        _meta(model).get("name", ""),
        spec.get("protocol") or "<none>",
        len(_list(spec.get("properties"))),
        age(_meta(model).get("creationTimestamp")),
    ]


_NAME: Column = ("Name", "string", 0, "Name must be unique within a namespace.")
_AGE: Column = (
    "Age",
    "string",
    0,
    "CreationTimestamp is a timestamp representing when this object was created.",
)

_TABLES: dict[str, tuple[list[Column], Callable[[JSONObject], Cells]]] = {
    "Node": (
        [
            _NAME,
            ("Status", "string", 0, "The status of the node"),
            ("Roles", "string", 0, "The roles of the node"),
            _AGE,
            ("Version", "string", 0, "Kubelet Version reported by the node."),
            ("Internal-IP", "string", 1, "List of internal IPs."),
            ("External-IP", "string", 1, "List of external IPs."),
            ("OS-Image", "string", 1, "OS Image reported by the node."),
            ("Kernel-Version", "string", 1, "Kernel Version reported by the node."),
            ("Container-Runtime", "string", 1, "Container Runtime Version reported by the node."),
        ],
        _node_row,
    ),
    "Pod": (
        [
            _NAME,
            ("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
            ("Status", "string", 0, "The aggregate status of the containers in this pod."),
            ("Restarts", "string", 0, "The number of times the containers in this pod have been restarted."),
            _AGE,
            ("IP", "string", 1, "IP address allocated to the pod."),
            ("Node", "string", 1, "Name of the Node this pod is assigned to."),
            ("Nominated Node", "string", 1, "Name of the node nominated by the scheduler."),
            ("Readiness Gates", "string", 1, "Pod readiness gates."),
        ],
        _pod_row,
    ),
    "Deployment": (
        [
            _NAME,
            ("Ready", "string", 0, "Number of the pod with ready state"),
            ("Up-to-date", "integer", 0, "Total number of non-terminated pods with the desired template."),
            ("Available", "integer", 0, "Number of available pods ready for at least minReadySeconds."),
            _AGE,
            ("Containers", "string", 1, "Names of each container in the template."),
            ("Images", "string", 1, "Images referenced by each container in the template."),
            ("Selector", "string", 1, "Label selector for pods."),
        ],
        _deployment_row,
    ),
    "ReplicaSet": (
        [
            _NAME,
            ("Desired", "integer", 0, "Number of desired pods."),
            ("Current", "integer", 0, "Number of actual replicas."),
            ("Ready", "integer", 0, "Number of ready replicas."),
            _AGE,
            ("Containers", "string", 1, "Names of each container in the template."),
            ("Images", "string", 1, "Images referenced by each container in the template."),
            ("Selector", "string", 1, "Label selector for pods."),
        ],
        _replicaset_row,
    ),
    "Namespace": (
        [_NAME, ("Status", "string", 0, "The status of the namespace"), _AGE],
        _namespace_row,
    ),
    "ConfigMap": (
        [_NAME, ("Data", "string", 0, "Number of keys in the ConfigMap (data and binaryData)."), _AGE],
        _configmap_row,
    ),
    "Secret": (
        [
            _NAME,
            ("Type", "string", 0, "The type of the secret"),
            ("Data", "string", 0, "The number of entries in the data"),
            _AGE,
        ],
        _secret_row,
    ),
    "Device": (
        [
            _NAME,
            ("Model", "string", 0, "The DeviceModel this device is an instance of."),
            ("Node", "string", 0, "The edge node the device is bound to."),
            ("Protocol", "string", 0, "The protocol used to reach the device."),
            ("State", "string", 0, "The device state reported by the edge."),
            _AGE,
        ],
        _device_row,
    ),
    "DeviceModel": (
        [
            _NAME,
            ("Protocol", "string", 0, "The protocol of devices of this model."),
            ("Properties", "integer", 0, "Number of properties in the model."),
            _AGE,
        ],
        _devicemodel_row,
    ),
    "Event": (
        [
            ("Last Seen", "string", 0, "Time when this Event was last seen"),
            ("Type", "string", 0, "Type of this event (Normal, Warning)."),
            ("Reason", "string", 0, "Why the action was taken."),
            ("Object", "string", 0, "The object that this event is about."),
            ("Message", "string", 0, "A human-readable description of the status of this operation."),
            ("Subobject", "string", 1, "The field of the object this event is about."),
            ("Source", "string", 1, "The component reporting this event."),
            ("First Seen", "string", 1, "The time at which the event was first recorded."),
            ("Count", "integer", 1, "The number of times this event has occurred."),
            ("Name", "string", 1, "The name of the event."),
        ],
        _event_row,
    ),
}


def column_definitions(rt: ResourceType) -> list[JSONObject]:
    columns, _ = _TABLES.get(rt.kind, ([_NAME, _AGE], _name_age))
    return [
        {
            "name": name,
            "type": typ,
            "format": "name" if name == "Name" and i == 0 else "",
            "description": desc,
            "priority": prio,
        }
        for i, (name, typ, prio, desc) in enumerate(columns)
    ]


def partial_metadata(obj: JSONObject) -> JSONObject:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": _meta(obj)}


def table_row(rt: ResourceType, obj: JSONObject, include: str = "Metadata") -> JSONObject:
    _, render = _TABLES.get(rt.kind, ([_NAME, _AGE], _name_age))
    row: JSONObject = {"cells": render(obj)}
    if include == "Object":
        row["object"] = obj
    elif include != "None":
        row["object"] = partial_metadata(obj)
    return row


def to_table(
    rt: ResourceType,
    objects: Iterable[JSONObject],
    *,
    resource_version: str = "",
    include: str = "Metadata",
    headers: bool = True,
) -> JSONObject:
    """A meta.k8s.io/v1 Table of ``objects``; ``headers=False`` leaves columnDefinitions empty."""
    table: JSONObject = {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version} if resource_version else {},
        "columnDefinitions": column_definitions(rt) if headers else [],
        "rows": [table_row(rt, o, include) for o in objects],
    }
    return table

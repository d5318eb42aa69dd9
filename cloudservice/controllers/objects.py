"""Small readers and builders over Kubernetes JSON dicts shared by the controllers.

Everything here is pure: no store, no clock (timestamps are passed in as RFC 3339 strings)."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from app.resources import JSONObject, ResourceType, meta

# The label the deployment controller adds to tell the pods of one template apart (Kubernetes' name).
POD_TEMPLATE_HASH = "pod-template-hash"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
FOREGROUND_FINALIZER = "foregroundDeletion"
ORPHAN_FINALIZER = "orphan"
# Kubernetes' default when a pod does not say how long its processes get to stop.
DEFAULT_GRACE_SECONDS = 30


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def uid_of(obj: JSONObject) -> str:
    return str(meta(obj).get("uid", ""))


def labels_of(obj: JSONObject) -> dict[str, str]:
    labels = meta(obj).get("labels")
    return dict(labels) if isinstance(labels, dict) else {}


def is_deleting(obj: JSONObject) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def finalizers_of(obj: JSONObject) -> list[str]:
    f = meta(obj).get("finalizers")
    return [str(x) for x in f] if isinstance(f, list) else []


def owner_refs(obj: JSONObject) -> list[JSONObject]:
    refs = meta(obj).get("ownerReferences")
    return [r for r in refs if isinstance(r, dict)] if isinstance(refs, list) else []


def controller_ref(obj: JSONObject) -> JSONObject | None:
    """The ownerReference with ``controller: true``, if any."""
    for ref in owner_refs(obj):
        if ref.get("controller"):
            return ref
    return None


def make_controller_ref(rt: ResourceType, owner: JSONObject) -> JSONObject:
    m = meta(owner)
    return {
        "apiVersion": rt.api_version,
        "kind": rt.kind,
        "name": m.get("name", ""),
        "uid": m.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def spec_of(obj: JSONObject) -> JSONObject:
    s = obj.get("spec")
    return s if isinstance(s, dict) else {}


def status_of(obj: JSONObject) -> JSONObject:
    s = obj.get("status")
    return s if isinstance(s, dict) else {}


def replicas_of(obj: JSONObject) -> int:
    """``spec.replicas`` with Kubernetes' default of 1."""
    value = spec_of(obj).get("replicas", 1)
    return int(value) if value is not None else 1


def get_condition(obj: JSONObject, ctype: str) -> JSONObject | None:
    for c in status_of(obj).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == ctype:
            return c
    return None


def with_condition(
    conditions: Iterable[JSONObject],
    ctype: str,
    status: str,
    reason: str,
    message: str,
    *,
    now: str,
    update_time_field: str | None = None,
) -> list[JSONObject]:
    """The condition list with ``ctype`` set. Timestamps move only when status, reason or message
    change, so that re-running a controller on an unchanged world writes nothing."""
    out: list[JSONObject] = []
    found = False
    for c in conditions:
        if c.get("type") != ctype:
            out.append(c)
            continue
        found = True
        if c.get("status") == status and c.get("reason") == reason and c.get("message") == message:
            out.append(c)
            continue
        new = dict(c, status=status, reason=reason, message=message)
        if c.get("status") != status:
            new["lastTransitionTime"] = now
        if update_time_field:
            new[update_time_field] = now
        out.append(new)
    if not found:
        new = {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now,
        }
        if update_time_field:
            new[update_time_field] = now
        out.append(new)
    return out


def pod_is_active(pod: JSONObject) -> bool:
    """Counts towards a ReplicaSet: not being deleted and not finished."""
    return not is_deleting(pod) and status_of(pod).get("phase") not in ("Succeeded", "Failed")


def pod_is_ready(pod: JSONObject) -> bool:
    c = get_condition(pod, "Ready")
    return c is not None and c.get("status") == "True"


def node_ready_status(node: JSONObject) -> str:
    """The Ready condition's status: "True", "False" or "Unknown" (also when it is missing)."""
    c = get_condition(node, "Ready")
    return str(c.get("status", "Unknown")) if c else "Unknown"


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector (matchLabels + matchExpressions) against labels. An empty selector matches all."""
    if not selector:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    return all(expression_matches(e, labels) for e in selector.get("matchExpressions") or [])


def expression_matches(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """One ``{key, operator, values}`` requirement (In, NotIn, Exists, DoesNotExist, Gt, Lt)."""
    key = str(expr.get("key", ""))
    op = expr.get("operator")
    values = [str(v) for v in expr.get("values") or []]
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt") and key in labels and values:
        try:
            have, want = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def deep_copy(obj: JSONObject) -> JSONObject:
    return copy.deepcopy(obj)


def sort_key_created(obj: JSONObject) -> tuple[str, str]:
    """Oldest first, ties by name (Kubernetes' ReplicaSetsByCreationTimestamp)."""
    m = meta(obj)
    return (str(m.get("creationTimestamp", "")), str(m.get("name", "")))


def resource_version(obj: JSONObject) -> int:
    try:
        return int(meta(obj).get("resourceVersion") or 0)
    except ValueError:
        return 0

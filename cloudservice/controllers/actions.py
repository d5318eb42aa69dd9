"""What controllers decide, as data, and the one place that turns those decisions into store writes.

Each controller's reconcile is a pure function returning a list of actions; :func:`apply_actions` runs
them in order against the store and returns the highest revision it wrote, so that the controller can
wait for its informer to have seen its own writes before deciding again (this plays the role of
Kubernetes' "expectations": without it a ReplicaSet would create its pods twice).

Pods are never removed directly: :func:`delete_pod_gracefully` sets ``deletionTimestamp`` on a bound pod so
that its edge stops the processes and then removes it, as the kubelet does. A pod on an edge that never
comes back therefore stays Terminating, exactly as in Kubernetes; nothing here force-deletes it.

Events go through :func:`record_event`, which aggregates repeats into one Event (count, lastTimestamp).
Events are best effort: a failure to record one is logged and never fails the controller.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.resources import EVENTS, PODS, JSONObject, ResourceType, meta
from cloudservice.errors import AlreadyExists, Conflict, NotFound, StoreError
from cloudservice.store.base import Store

from .objects import (
    DEFAULT_GRACE_SECONDS,
    finalizers_of,
    resource_version,
    rfc3339,
    spec_of,
    uid_of,
)

log = logging.getLogger(__name__)

Path = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Create:
    rt: ResourceType
    obj: JSONObject


@dataclass(frozen=True, slots=True)
class Patch:
    """Set fields by JSON path (``("spec", "replicas")``; a value of None removes the field) with a
    read-modify-write that is skipped when the object's uid is no longer ``uid`` (it was replaced)."""

    rt: ResourceType
    namespace: str
    name: str
    uid: str
    set: Mapping[Path, Any]


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete an object; pods go through :func:`delete_pod_gracefully`."""

    rt: ResourceType
    obj: JSONObject


@dataclass(frozen=True, slots=True)
class RemoveFinalizer:
    """Drop one finalizer; when none remain on an object being deleted, remove it from the store."""

    rt: ResourceType
    obj: JSONObject
    finalizer: str


@dataclass(frozen=True, slots=True)
class Event:
    rt: ResourceType
    obj: JSONObject
    type: str
    reason: str
    message: str
    fields: Mapping[str, str] = field(default_factory=dict)


Action = Create | Patch | Delete | RemoveFinalizer | Event


def set_path(obj: JSONObject, path: Path, value: Any) -> None:
    """Set (or with None, remove) ``obj[path...]``, creating intermediate dicts."""
    cur = obj
    for part in path[:-1]:
        nxt = cur.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[part] = nxt
        cur = nxt
    if value is None:
        cur.pop(path[-1], None)
    else:
        cur[path[-1]] = value


async def apply_actions(store: Store, actions: Sequence[Action], *, component: str, now: dt.datetime) -> int:
    """Run actions in order; returns the highest resourceVersion written (0 if none).

    A failing write raises (the caller requeues the key with backoff); later actions are not run, so an
    Event is never recorded for a write that did not happen."""
    written = 0
    for action in actions:
        result: JSONObject | None = None
        if isinstance(action, Create):
            result = await store.create(action.rt, action.obj)
        elif isinstance(action, Patch):
            result = await _patch(store, action)
        elif isinstance(action, Delete):
            if action.rt == PODS:
                result = await delete_pod_gracefully(store, action.obj)
            else:
                m = meta(action.obj)
                try:
                    result = await store.delete(
                        action.rt, str(m.get("namespace", "")), str(m.get("name", ""))
                    )
                except NotFound:
                    result = None
        elif isinstance(action, RemoveFinalizer):
            result = await _remove_finalizer(store, action)
        else:
            await record_event(
                store,
                action.obj,
                action.type,
                action.reason,
                action.message,
                component=component,
                now=now,
                rt=action.rt,
            )
        if result is not None:
            written = max(written, resource_version(result))
    return written


async def _patch(store: Store, action: Patch) -> JSONObject | None:
    def fn(cur: JSONObject) -> JSONObject | None:
        if uid_of(cur) != action.uid:
            return None
        new = copy.deepcopy(cur)
        for path, value in action.set.items():
            set_path(new, path, value)
        return None if new == cur else new

    try:
        return await store.guaranteed_update(action.rt, action.namespace, action.name, fn)
    except NotFound:
        return None


async def _remove_finalizer(store: Store, action: RemoveFinalizer) -> JSONObject | None:
    m = meta(action.obj)
    ns, name, uid = str(m.get("namespace", "")), str(m.get("name", "")), uid_of(action.obj)

    def fn(cur: JSONObject) -> JSONObject | None:
        if uid_of(cur) != uid or action.finalizer not in finalizers_of(cur):
            return None
        meta(cur)["finalizers"] = [f for f in finalizers_of(cur) if f != action.finalizer]
        return cur

    try:
        updated = await store.guaranteed_update(action.rt, ns, name, fn)
        if updated is not None and not finalizers_of(updated) and meta(updated).get("deletionTimestamp"):
            # The store keeps objects until told otherwise; the last finalizer gone means "delete now".
            return await store.delete(
                action.rt, ns, name, resource_version=str(meta(updated)["resourceVersion"])
            )
        return updated
    except NotFound:
        return None


async def delete_pod_gracefully(
    store: Store, pod: JSONObject, *, now: dt.datetime | None = None
) -> JSONObject | None:
    """Delete a pod the way the API server does for the kubelet.

    A pod bound to a node (``spec.nodeName``) gets ``metadata.deletionTimestamp`` and
    ``deletionGracePeriodSeconds`` (its ``terminationGracePeriodSeconds``, default 30) and stays in the
    store: its edge stops the processes and then removes it. An unbound pod is removed at once. The
    decision is taken on the stored pod, not on ``pod``, so a pod bound meanwhile is not yanked from under
    its edge. Returns the marked or removed pod, or None when it was already gone or is another pod now
    (``pod``'s uid no longer matches)."""
    m = meta(pod)
    ns, name, uid = str(m.get("namespace", "")), str(m.get("name", "")), uid_of(pod)
    stamp = rfc3339(now or dt.datetime.now(dt.UTC))
    while True:
        try:
            cur = await store.get(PODS, ns, name)
        except NotFound:
            return None
        if uid and uid_of(cur) != uid:
            return None
        if not spec_of(cur).get("nodeName"):
            try:
                return await store.delete(
                    PODS, ns, name, resource_version=str(meta(cur).get("resourceVersion"))
                )
            except NotFound:
                return None
            except Conflict:
                continue  # changed (maybe bound) since we read it: decide again on the new state

        def mark(p: JSONObject) -> JSONObject | None:
            if uid and uid_of(p) != uid:
                return None
            pm = meta(p)
            if pm.get("deletionTimestamp"):
                return None
            grace = spec_of(p).get("terminationGracePeriodSeconds")
            pm["deletionTimestamp"] = stamp
            pm["deletionGracePeriodSeconds"] = int(grace) if grace is not None else DEFAULT_GRACE_SECONDS
            return p

        try:
            return await store.guaranteed_update(PODS, ns, name, mark)
        except NotFound:
            return None


def _event_name(involved: JSONObject, etype: str, reason: str, message: str, component: str) -> str:
    """A stable name per (object, type, reason, message, source), so repeats land on one Event."""
    m = meta(involved)
    key = "\x00".join((str(m.get("uid", "")), etype, reason, message, component))
    # 16 hex digits (64 bits) make an accidental clash between two different events negligible.
    return f"{m.get('name', '')}.{hashlib.sha256(key.encode()).hexdigest()[:16]}"


async def record_event(
    store: Store,
    obj: JSONObject,
    type: str,  # Kubernetes' field name, shadowing the builtin on purpose
    reason: str,
    message: str,
    *,
    component: str = "fleetops-controller-manager",
    now: dt.datetime | None = None,
    rt: ResourceType | None = None,
) -> JSONObject | None:
    """Record a core/v1 Event about ``obj``; a repeat of the same (type, reason, message) increments
    ``count`` and moves ``lastTimestamp``, as Kubernetes' event correlator does. Cluster-scoped objects'
    events go to the ``default`` namespace, as in Kubernetes. Never raises StoreError: events are best
    effort, so a failure is logged and None returned."""
    m = meta(obj)
    namespace = str(m.get("namespace") or "default")
    name = _event_name(obj, type, reason, message, component)
    stamp = rfc3339(now or dt.datetime.now(dt.UTC))
    involved: JSONObject = {
        "apiVersion": rt.api_version if rt else obj.get("apiVersion", ""),
        "kind": rt.kind if rt else obj.get("kind", ""),
        "name": m.get("name", ""),
        "uid": m.get("uid", ""),
        "resourceVersion": m.get("resourceVersion", ""),
    }
    if m.get("namespace"):
        involved["namespace"] = m["namespace"]

    def bump(ev: JSONObject) -> JSONObject:
        ev["count"] = int(ev.get("count") or 1) + 1
        ev["lastTimestamp"] = stamp
        ev["involvedObject"] = involved
        return ev

    try:
        try:
            return await store.guaranteed_update(EVENTS, namespace, name, bump)
        except NotFound:
            pass
        event: JSONObject = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": type,
            "source": {"component": component},
            "reportingComponent": component,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            return await store.create(EVENTS, event)
        except AlreadyExists:
            return await store.guaranteed_update(EVENTS, namespace, name, bump)
    except StoreError as exc:
        log.warning("could not record event %s/%s %s: %s", namespace, name, reason, exc)
        return None

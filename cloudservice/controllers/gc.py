"""The garbage collector: dependents follow their owners (``metadata.ownerReferences``) out of the store.

Pure decisions, per object:

* :func:`plan_gc_dependent` looks at one dependent and what became of each owner it names. Background
  propagation (``kubectl delete``'s default): when every owner is gone (its uid no longer exists) the
  dependent is deleted, pods gracefully; when some owners remain, the dangling references are dropped and
  the dependent stays. An owner being deleted with the ``orphan`` finalizer has its references removed
  from its dependents (they live on). An owner being deleted with the ``foregroundDeletion`` finalizer
  counts as gone, so its dependents are deleted while it waits.
* :func:`plan_gc_owner` finishes an owner's deletion: ``orphan`` is removed once no dependent refers to
  it any more, ``foregroundDeletion`` once no dependent exists at all (Terminating pods included, so a
  foreground delete waits for the edges); when the last finalizer goes, the owner is removed.

What is deliberately simpler than Kubernetes: no dependency graph is kept; the loop scans the informer
cache (a few thousand objects at most here). Dependents are deleted with background propagation even
under a foreground owner (Kubernetes would foreground them too), and ``blockOwnerDeletion`` is not
distinguished from a plain reference. Owners of kinds the informer does not cache are never judged gone.
Before deleting, the loop confirms that the owner is really absent with a live read from the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from app.resources import JSONObject, ResourceType, name_of, namespace_of
from cloudservice.errors import NotFound
from cloudservice.store.base import EventType

from .actions import Action, Delete, Patch, RemoveFinalizer
from .controller import Controller
from .errors import ControllerError
from .informer import ObjKey, key_of
from .objects import FOREGROUND_FINALIZER, ORPHAN_FINALIZER, finalizers_of, is_deleting, owner_refs, uid_of


def plan_gc_dependent(
    rt: ResourceType, dependent: JSONObject, owners: Mapping[str, JSONObject | None]
) -> list[Action]:
    """``owners`` maps an owner uid to the owner object, or to None when that owner is known to be gone;
    a uid missing from the mapping is unknown and treated as alive."""
    if is_deleting(dependent):
        return []
    refs = owner_refs(dependent)
    if not refs:
        return []
    solid: list[JSONObject] = []
    dangling: list[JSONObject] = []
    waiting: list[JSONObject] = []
    orphaning: list[JSONObject] = []
    for ref in refs:
        uid = str(ref.get("uid", ""))
        if uid not in owners:
            solid.append(ref)
            continue
        owner = owners[uid]
        if owner is None or uid_of(owner) != uid:
            dangling.append(ref)
        elif is_deleting(owner) and FOREGROUND_FINALIZER in finalizers_of(owner):
            waiting.append(ref)
        elif is_deleting(owner) and ORPHAN_FINALIZER in finalizers_of(owner):
            orphaning.append(ref)
        else:
            solid.append(ref)
    if not (dangling or waiting or orphaning):
        return []
    if solid or not (dangling or waiting):
        return [
            Patch(
                rt,
                namespace_of(dependent),
                name_of(dependent),
                uid_of(dependent),
                {("metadata", "ownerReferences"): solid or None},
            )
        ]
    return [Delete(rt, dependent)]


def plan_gc_owner(rt: ResourceType, owner: JSONObject, dependents: Sequence[JSONObject]) -> list[Action]:
    """Remove the ``orphan`` / ``foregroundDeletion`` finalizers of an owner being deleted once their
    work is done. ``dependents`` are the objects whose ownerReferences name the owner's uid."""
    if not is_deleting(owner):
        return []
    finalizers = finalizers_of(owner)
    uid = uid_of(owner)
    actions: list[Action] = []
    if ORPHAN_FINALIZER in finalizers and not any(
        str(r.get("uid")) == uid for d in dependents for r in owner_refs(d)
    ):
        actions.append(RemoveFinalizer(rt, owner, ORPHAN_FINALIZER))
    if FOREGROUND_FINALIZER in finalizers and not dependents:
        actions.append(RemoveFinalizer(rt, owner, FOREGROUND_FINALIZER))
    return actions


class OwnerStillExists(ControllerError):
    """The cache says an owner is gone but the store still has it: retry once the cache catches up."""

    def __init__(self, kind: str, namespace: str, name: str) -> None:
        super().__init__(f"owner {kind} {namespace}/{name} still exists")
        self.kind = kind
        self.namespace = namespace
        self.name = name


class GarbageCollector(Controller):
    """Keys are any cached object with owners, or being deleted with a GC finalizer."""

    name = "garbagecollector"

    def on_event(self, etype: EventType, rt: ResourceType, obj: JSONObject, prev: JSONObject | None) -> None:
        if etype == "DELETED":
            uid = uid_of(obj)
            for drt, dep in self.informer.all_objects():
                if any(str(r.get("uid")) == uid for r in owner_refs(dep)):
                    self.queue.add(key_of(drt, dep))
            # A dependent going away may let an owner waiting in foreground deletion finish.
            for ref in owner_refs(obj):
                found = self.informer.by_uid(str(ref.get("uid", "")))
                if found is not None and is_deleting(found[1]):
                    self.queue.add(key_of(*found))
            return
        if owner_refs(obj) or (is_deleting(obj) and finalizers_of(obj)):
            self.queue.add(key_of(rt, obj))

    async def plan(self, key: ObjKey) -> list[Action]:
        rt = self.informer.kind(key[0])
        obj = self.informer.get(rt, key[1], key[2]) if rt is not None else None
        if rt is None or obj is None:
            return []
        owners: dict[str, JSONObject | None] = {}
        for ref in owner_refs(obj):
            ort = self.informer.kind_for_ref(ref)
            if ort is None:
                continue
            uid = str(ref.get("uid", ""))
            found = self.informer.by_uid(uid)
            owners[uid] = found[1] if found is not None else None
            if found is None:
                await self._confirm_gone(ort, key[1] if ort.namespaced else "", ref)
        actions = plan_gc_dependent(rt, obj, owners)
        if is_deleting(obj):
            uid = uid_of(obj)
            dependents = [
                d
                for _, d in self.informer.all_objects()
                if any(str(r.get("uid")) == uid for r in owner_refs(d))
            ]
            actions.extend(plan_gc_owner(rt, obj, dependents))
        return actions

    async def _confirm_gone(self, rt: ResourceType, namespace: str, ref: JSONObject) -> None:
        """A live read before acting on an absence, as Kubernetes' GC does: the cache may lag."""
        try:
            live = await self.store.get(rt, namespace, str(ref.get("name", "")))
        except NotFound:
            return
        if uid_of(live) == str(ref.get("uid", "")):
            raise OwnerStillExists(rt.kind, namespace, str(ref.get("name", "")))

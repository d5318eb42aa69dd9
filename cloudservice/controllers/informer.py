"""The shared informer: one in-memory cache of the kinds the controllers read, kept by list + watch.

All kinds are watched through one ``store.watch(None, since=...)`` stream, so the cache advances in the
store's revision order and :attr:`Informer.revision` means "every write up to here is reflected". A
controller that has just written revision R waits for ``revision >= R`` before deciding again; that is
how it avoids acting twice on a world it already changed (client-go uses "expectations" for this).

Start-up and recovery are one path, :meth:`Informer._relist`: each kind is listed, the cache is replaced,
and handlers are told about what appeared, changed or vanished since the previous cache; the watch then
resumes from the oldest list revision. Kinds are listed one after another, so the watch replays some
events a newer list already reflects; an event is applied only when it is newer than the cached object's
``resourceVersion``, which makes the replay harmless. ``Gone`` (the event log no longer reaches back, or
the watch fell behind) leads back to a relist.

Handlers run synchronously in the informer task and must only enqueue keys.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TypeAlias

from app.resources import JSONObject, ResourceType, by_kind, meta
from cloudservice.errors import Gone
from cloudservice.store.base import EventType, Store, WatchEvent

from .errors import ControllerError
from .objects import resource_version, uid_of

log = logging.getLogger(__name__)

ObjKey: TypeAlias = tuple[str, str, str]
"""(plural, namespace, name); namespace is "" for cluster-scoped kinds."""

Handler = Callable[[EventType, ResourceType, JSONObject, JSONObject | None], None]
"""Called with (event type, kind, new object or last state when deleted, previous cached object)."""


def key_of(rt: ResourceType, obj: JSONObject) -> ObjKey:
    m = meta(obj)
    return (rt.plural, str(m.get("namespace", "")) if rt.namespaced else "", str(m.get("name", "")))


class WatchEnded(ControllerError):
    """The store ended the informer's watch without an error (it is closing)."""


class Informer:
    def __init__(self, store: Store, kinds: Iterable[ResourceType]) -> None:
        self._store = store
        self._kinds: dict[tuple[str, str], ResourceType] = {(rt.group, rt.plural): rt for rt in kinds}
        self._cache: dict[str, dict[tuple[str, str], JSONObject]] = {
            rt.plural: {} for rt in self._kinds.values()
        }
        self._uids: dict[str, tuple[ResourceType, JSONObject]] = {}
        self._handlers: list[Handler] = []
        self.revision = 0
        self.synced = asyncio.Event()
        self._advanced = asyncio.Event()

    # ----------------------------------------------------------------------------------- reads

    def tracks(self, rt: ResourceType) -> bool:
        return (rt.group, rt.plural) in self._kinds

    def kind(self, plural: str) -> ResourceType | None:
        return next((rt for rt in self._kinds.values() if rt.plural == plural), None)

    def kind_for_ref(self, ref: JSONObject) -> ResourceType | None:
        """The cached kind an ownerReference points at, or None when the informer does not cache it."""
        rt = by_kind(str(ref.get("apiVersion", "")), str(ref.get("kind", "")))
        return rt if rt is not None and self.tracks(rt) else None

    def get(self, rt: ResourceType, namespace: str, name: str) -> JSONObject | None:
        return self._cache[rt.plural].get((namespace if rt.namespaced else "", name))

    def objects(self, rt: ResourceType, namespace: str | None = None) -> list[JSONObject]:
        objs = self._cache[rt.plural].values()
        if namespace is None or not rt.namespaced:
            return list(objs)
        return [o for o in objs if meta(o).get("namespace") == namespace]

    def by_uid(self, uid: str) -> tuple[ResourceType, JSONObject] | None:
        return self._uids.get(uid)

    def all_objects(self) -> list[tuple[ResourceType, JSONObject]]:
        return [(rt, o) for rt in self._kinds.values() for o in self._cache[rt.plural].values()]

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)

    async def wait_for(self, revision: int) -> None:
        """Return once the cache reflects every write up to ``revision``."""
        while self.revision < revision:
            await self._advanced.wait()

    # ----------------------------------------------------------------------------------- the loop

    async def run(self) -> None:
        """List, then watch; relist on Gone. Returns never; raises WatchEnded when the store closes."""
        while True:
            since = await self._relist()
            watch = self._store.watch(None, since=since)
            try:
                async for ev in watch:
                    self._apply(ev)
            except Gone as exc:
                log.info("informer watch expired at revision %d (%s); listing again", self.revision, exc)
                continue
            finally:
                aclose = getattr(watch, "aclose", None)
                if aclose is not None:
                    await aclose()
            raise WatchEnded("the store ended the watch")

    async def _relist(self) -> int:
        fresh: dict[str, dict[tuple[str, str], JSONObject]] = {}
        revisions: list[int] = []
        for rt in self._kinds.values():
            objs, rev = await self._store.list(rt)
            revisions.append(rev)
            fresh[rt.plural] = {key_of(rt, o)[1:]: o for o in objs}
        since = min(revisions) if revisions else await self._store.revision()
        old_cache = self._cache
        self._cache = fresh
        self._uids = {uid_of(o): (rt, o) for rt in self._kinds.values() for o in fresh[rt.plural].values()}
        for rt in self._kinds.values():
            before, after = old_cache.get(rt.plural, {}), fresh[rt.plural]
            for k, obj in before.items():
                if k not in after:
                    self._notify("DELETED", rt, obj, obj)
            for k, obj in after.items():
                prev = before.get(k)
                if prev is None:
                    self._notify("ADDED", rt, obj, None)
                elif resource_version(prev) != resource_version(obj):
                    self._notify("MODIFIED", rt, obj, prev)
        log.debug("informer listed %d kinds at revision %d", len(self._kinds), since)
        self._advance(since)
        self.synced.set()
        return since

    def _apply(self, ev: WatchEvent) -> None:
        rt = self._kinds.get((ev.resource.group, ev.resource.plural))
        if rt is not None:
            k = key_of(rt, ev.object)[1:]
            bucket = self._cache[rt.plural]
            prev = bucket.get(k)
            if prev is None or resource_version(prev) < ev.revision:
                if ev.type == "DELETED":
                    if prev is not None:
                        del bucket[k]
                        self._uids.pop(uid_of(prev), None)
                        self._notify("DELETED", rt, ev.object, prev)
                else:
                    bucket[k] = ev.object
                    if prev is not None and uid_of(prev) != uid_of(ev.object):
                        self._uids.pop(uid_of(prev), None)
                    self._uids[uid_of(ev.object)] = (rt, ev.object)
                    self._notify(ev.type, rt, ev.object, prev)
        self._advance(ev.revision)

    def _advance(self, revision: int) -> None:
        if revision > self.revision:
            self.revision = revision
            self._advanced.set()
            self._advanced = asyncio.Event()

    def _notify(self, etype: EventType, rt: ResourceType, obj: JSONObject, prev: JSONObject | None) -> None:
        for handler in self._handlers:
            try:
                handler(etype, rt, obj, prev)
            except Exception:
                log.exception("informer handler failed on %s %s", etype, key_of(rt, obj))

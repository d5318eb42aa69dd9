"""The loop around a pure decision: a work queue of keys, the informer's cache, and the store writes.

Each controller subclass supplies :meth:`Controller.on_event` (which keys an informer event concerns)
and :meth:`Controller.plan` (the actions for one key, computed from the cache by a pure function). The
loop here takes a key, waits until the informer has seen this controller's previous writes, plans,
applies, and on a store error re-adds the key with exponential backoff. An InvalidSpec is recorded as a
Warning event on the object and not retried: the object has to change first.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from app.resources import JSONObject, ResourceType
from cloudservice.store.base import EventType, Store

from .actions import Action, apply_actions, record_event
from .clock import Clock
from .errors import InvalidSpec
from .informer import Informer, ObjKey
from .objects import rfc3339
from .queue import WorkQueue

log = logging.getLogger(__name__)

COMPONENT = "fleetops-controller-manager"


class Controller:
    name: ClassVar[str] = "controller"

    def __init__(self, store: Store, informer: Informer, clock: Clock) -> None:
        self.store = store
        self.informer = informer
        self.clock = clock
        self.queue: WorkQueue[ObjKey] = WorkQueue()
        self._written = 0
        informer.add_handler(self.on_event)

    def now(self) -> str:
        return rfc3339(self.clock.now())

    def on_event(self, etype: EventType, rt: ResourceType, obj: JSONObject, prev: JSONObject | None) -> None:
        raise NotImplementedError

    async def plan(self, key: ObjKey) -> list[Action]:
        raise NotImplementedError

    def object_for(self, key: ObjKey) -> tuple[ResourceType, JSONObject] | None:
        rt = self.informer.kind(key[0])
        found = self.informer.get(rt, key[1], key[2]) if rt is not None else None
        return (rt, found) if rt is not None and found is not None else None

    async def run(self) -> None:
        await self.informer.synced.wait()
        while True:
            key = await self.queue.get()
            try:
                await self.sync(key)
            finally:
                self.queue.done(key)

    async def sync(self, key: ObjKey) -> None:
        """One key, errors handled: the loop never dies because one object is bad."""
        try:
            await self.informer.wait_for(self._written)
            actions = await self.plan(key)
            written = await apply_actions(self.store, actions, component=COMPONENT, now=self.clock.now())
            self._written = max(self._written, written)
            self.queue.forget(key)
        except InvalidSpec as exc:
            log.warning("%s: %s", self.name, exc)
            self.queue.forget(key)
            found = self.object_for(key)
            if found is not None:
                await record_event(
                    self.store,
                    found[1],
                    "Warning",
                    "InvalidSpec",
                    str(exc),
                    component=COMPONENT,
                    now=self.clock.now(),
                    rt=found[0],
                )
        except Exception as exc:
            delay = self.queue.add_rate_limited(key)
            log.warning("%s: syncing %s failed (%s); retrying in %.3fs", self.name, "/".join(key), exc, delay)
            log.debug("%s: failure detail", self.name, exc_info=True)

    def close(self) -> None:
        self.queue.close()

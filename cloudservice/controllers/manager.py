"""The controller manager: one informer, the controllers, their supervision.

Everything runs inside one ``asyncio.TaskGroup`` owned by a background task, with named tasks
(``controller[informer]``, ``controller[deployment]``, ``controller[replicaset]``, ``controller[scheduler]``,
``controller[garbagecollector]``, ``controller[nodelifecycle]``, ``controller[nodelifecycle].monitor``).
Each is supervised: a loop that raises is logged with its traceback and restarted after a jittered
exponential delay, so one bug cannot silently stop the others (a controller's per-key errors never get
this far: they are retried per key). :meth:`ControllerManager.start` returns once the informer has
listed the store, so the controllers act on a complete cache from their first decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

from app.resources import DEPLOYMENTS, NODES, PODS, REPLICASETS
from cloudservice.store.base import Store

from .clock import Clock, SystemClock
from .controller import Controller
from .deployment import DeploymentController
from .gc import GarbageCollector
from .informer import Informer
from .nodelifecycle import DEFAULT_GRACE_PERIOD, DEFAULT_MONITOR_PERIOD, NodeLifecycleController
from .replicaset import ReplicaSetController
from .scheduler import SchedulerController

log = logging.getLogger(__name__)

# Restart delays for a loop that died: 0.1 s doubling to 30 s, with up to 50 % jitter so that loops
# failing on a shared cause (the store restarting) do not retry in lockstep.
RESTART_BASE = 0.1
RESTART_MAX = 30.0


class ControllerManager:
    def __init__(
        self,
        store: Store,
        *,
        node_grace_period: float = DEFAULT_GRACE_PERIOD,
        node_monitor_period: float = DEFAULT_MONITOR_PERIOD,
        scheduler: bool = True,
        garbage_collector: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.informer = Informer(store, (NODES, PODS, DEPLOYMENTS, REPLICASETS))
        self.node_lifecycle = NodeLifecycleController(
            store, self.informer, self.clock, grace_period=node_grace_period, period=node_monitor_period
        )
        self.controllers: list[Controller] = [
            DeploymentController(store, self.informer, self.clock),
            ReplicaSetController(store, self.informer, self.clock),
            self.node_lifecycle,
        ]
        if scheduler:
            self.controllers.append(SchedulerController(store, self.informer, self.clock))
        if garbage_collector:
            self.controllers.append(GarbageCollector(store, self.informer, self.clock))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start every loop; returns once the informer's first list is in the cache."""
        if self._task is not None:
            return
        self._task = asyncio.create_task(self._run(), name="controller-manager")
        synced = asyncio.create_task(self.informer.synced.wait(), name="controller-manager.synced")
        done, _ = await asyncio.wait({self._task, synced}, return_when=asyncio.FIRST_COMPLETED)
        if synced not in done:
            synced.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await synced
            await self._task  # re-raises why the manager stopped

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for c in self.controllers:
            c.close()

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._supervise("informer", self.informer.run), name="controller[informer]")
            for c in self.controllers:
                tg.create_task(self._supervise(c.name, c.run), name=f"controller[{c.name}]")
            tg.create_task(
                self._supervise("nodelifecycle.monitor", self.node_lifecycle.monitor),
                name="controller[nodelifecycle].monitor",
            )

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        failures = 0
        while True:
            try:
                await loop()
                log.warning("controller loop %s returned; restarting", name)
            except Exception:
                log.exception("controller loop %s died; restarting", name)
            failures += 1
            delay = min(RESTART_MAX, RESTART_BASE * 2.0 ** min(failures - 1, 16))
            await asyncio.sleep(delay * (0.5 + random.random() / 2))

"""A work queue of object keys, as client-go's: deduplicating, one worker per key, retry with backoff.

A key added several times before a worker takes it is processed once. A key added while a worker holds it
is queued again when the worker calls :meth:`WorkQueue.done`, so no change is lost and no key is processed
by two workers at once. :meth:`WorkQueue.add_rate_limited` re-adds a failed key after a per-key
exponential delay; :meth:`WorkQueue.forget` resets it after a success.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

# client-go's item backoff: 5 ms doubling per failure; capped lower than its 1000 s because a controller
# here has few objects and an operator watching a stuck rollout should not wait a quarter of an hour.
BASE_DELAY = 0.005
MAX_DELAY = 60.0


class WorkQueue(Generic[K]):
    def __init__(self, *, base_delay: float = BASE_DELAY, max_delay: float = MAX_DELAY) -> None:
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._failures: dict[K, int] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._wake = asyncio.Event()
        self._base = base_delay
        self._max = max_delay

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: K) -> None:
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._wake.set()

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def add_rate_limited(self, key: K) -> float:
        """Re-add after the key's backoff; returns the delay used."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = min(self._max, self._base * 2.0 ** min(failures, 32))
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    async def get(self) -> K:
        while not self._queue:
            self._wake.clear()
            await self._wake.wait()
        key = self._queue.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._wake.set()

    def close(self) -> None:
        """Cancel pending delayed adds (call on shutdown)."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

"""The GUI's threading: the asyncio client runs on its own event loop in one worker thread, and results
come back to the UI thread through Qt signals.

Why a worker thread and not qasync (one loop driven by Qt's): the UI thread must never run the client's
work. Decoding a watch event, projecting 100,000 pods into rows or reading a log stream happens on the
I/O thread, so a slow step there delays data, never painting; and no dependency is added (qasync is not
one of ours). Qt's queued signals are the one thread-safe door between the two: :class:`AsyncBridge`
emits a signal carrying a callable from the I/O thread, and Qt runs it on the UI thread at its next event
loop turn. UI code never touches the loop's objects and loop code never touches a widget; the one other
thing the threads share is a gate, :data:`UI_FIRST` (below).

Two ways back to the UI:

* :meth:`AsyncBridge.submit` runs a coroutine and delivers its result (or its exception) to callbacks on
  the UI thread, once. The returned :class:`Job` cancels it; a cancelled job, or one whose ``owner``
  QObject has been destroyed, delivers nothing.
* :class:`Mailbox` is for streams (log lines, frames, changes): the I/O thread ``put`` s items and the UI
  thread ``drain`` s them. Only the put that finds the mailbox empty emits a wake-up, so a stream of
  10,000 lines costs one signal per UI turn, not one per line: the UI can never be flooded with events.

:meth:`AsyncBridge.stop` cancels every task, waits for them (their ``finally`` blocks close streams and
sessions), closes the loop and joins the thread, so tests can assert that nothing was left behind.

:data:`UI_FIRST` is a gate the UI thread closes while it paints or applies a batch, and at which the I/O
thread's long loops (a relist's projection, freeing old rows) wait between slices. The threads share one
GIL: while the I/O thread computes, every Python call Qt makes on the UI thread (a repaint is ~2,000
``data()`` calls) would wait up to the 5 ms switch interval for it, turning an 8 ms repaint into a 200 ms
one. With the gate the I/O thread steps aside for that long instead (see :class:`UiFirst`).

Deliberately not done: more than one I/O thread (one loop multiplexes every socket; CPU-heavy work such
as JPEG decoding has its own pool, see ``gui.camera``) and priorities between jobs.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

import shiboken6
from PySide6.QtCore import QObject, Qt, Signal

from gui.errors import GuiError

logger = logging.getLogger(__name__)

T = TypeVar("T")
# How long stop() waits for the tasks' cleanup (closing sockets) before giving up on them.
STOP_TIMEOUT = 5.0


class BridgeStopped(GuiError):
    """Work was submitted to a bridge that is not running."""


class UiFirst:
    """A gate that gives the UI thread the interpreter while it paints (see the module docstring).

    The UI thread wraps its work in ``with UI_FIRST:``; the I/O thread calls :meth:`step_aside` between
    slices of CPU work (every few milliseconds), which hands the GIL over at once (``time.sleep(0)``
    releases it) and, while the gate is closed, waits for it to open (with a timeout, so that a UI
    that forgot to open it only slows the I/O thread down). Nesting is allowed."""

    def __init__(self, timeout: float = 0.1) -> None:
        self.timeout = timeout
        self._open = threading.Event()
        self._open.set()
        self._depth = 0

    def __enter__(self) -> None:
        self._depth += 1
        self._open.clear()

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth <= 0:
            self._depth = 0
            self._open.set()

    def step_aside(self) -> None:
        """On the I/O thread: let the UI thread run now, and wait while it is busy."""
        time.sleep(0)
        if not self._open.is_set():
            self._open.wait(self.timeout)


UI_FIRST = UiFirst()


class _Relay(QObject):
    """Lives in the UI thread; its signal carries a callable to run there."""

    deliver = Signal(object)


class Job(Generic[T]):
    """A coroutine running on the I/O loop. ``cancel()`` from the UI thread stops it and its callbacks."""

    def __init__(self, future: concurrent.futures.Future[T], name: str) -> None:
        self._future = future
        self.name = name
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True
        self._future.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: float | None = None) -> T:
        """Block until the result is there: for tests and shutdown only, never on a UI path."""
        return self._future.result(timeout)


class AsyncBridge(QObject):
    """An asyncio loop in a daemon thread named ``fleetops-gui-io``, and the signals back to the UI."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._relay = _Relay()
        self._relay.deliver.connect(self._run_delivery, Qt.ConnectionType.QueuedConnection)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="fleetops-gui-io", daemon=True)
        self._ready = threading.Event()
        self._running = False
        self._stopped = False

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._running or self._stopped:
            return
        self._running = True
        self._thread.start()
        self._ready.wait()

    @property
    def running(self) -> bool:
        return self._running and not self._stopped

    def in_io_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._ready.set)
        try:
            self._loop.run_forever()
        finally:
            try:
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
                self._loop.run_until_complete(self._loop.shutdown_default_executor())
            finally:
                self._loop.close()

    async def _shutdown(self) -> None:
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for t in tasks:
            t.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            for t in pending:
                logger.warning(
                    "task %s did not finish within %.0fs of cancellation", t.get_name(), STOP_TIMEOUT
                )
        self._loop.stop()

    def stop(self) -> None:
        """Cancel every task, let them clean up, stop the loop and join the thread. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if not self._running:
            self._loop.close()
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        self._thread.join(STOP_TIMEOUT + 2.0)
        if self._thread.is_alive():
            logger.error("the GUI's I/O thread did not stop")

    # -- work -----------------------------------------------------------------------------------------

    def submit(
        self,
        coro: Coroutine[Any, Any, T],
        *,
        on_result: Callable[[T], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        owner: QObject | None = None,
        name: str = "",
    ) -> Job[T]:
        """Run ``coro`` on the I/O loop; its result or exception goes to the callbacks on the UI thread
        (an exception without ``on_error`` is logged). Nothing is delivered once the job is cancelled or
        ``owner`` is destroyed."""
        if not self.running:
            coro.close()
            raise BridgeStopped("the GUI's I/O loop is not running")
        future = asyncio.run_coroutine_threadsafe(_named(coro, name), self._loop)
        job: Job[T] = Job(future, name or getattr(coro, "__qualname__", "job"))

        def done(f: concurrent.futures.Future[T]) -> None:
            if job.cancelled or f.cancelled():
                return
            exc = f.exception()
            if exc is None:
                if on_result is not None:
                    result = f.result()
                    self.post(lambda: on_result(result), owner=owner, job=job)
            elif on_error is not None:
                self.post(lambda: on_error(exc), owner=owner, job=job)
            else:
                logger.error("GUI job %s failed: %s", job.name, exc, exc_info=exc)

        future.add_done_callback(done)
        return job

    def post(
        self, fn: Callable[[], None], *, owner: QObject | None = None, job: Job[Any] | None = None
    ) -> None:
        """Run ``fn`` on the UI thread soon (callable from any thread)."""
        if self._stopped:
            return
        self._relay.deliver.emit(_Delivery(fn, owner, job))

    def _run_delivery(self, delivery: object) -> None:
        assert isinstance(delivery, _Delivery)
        if self._stopped or (delivery.job is not None and delivery.job.cancelled):
            return
        if delivery.owner is not None and not shiboken6.isValid(delivery.owner):
            return
        try:
            delivery.fn()
        except Exception:
            logger.exception("a GUI callback failed")


class _Delivery:
    __slots__ = ("fn", "job", "owner")

    def __init__(self, fn: Callable[[], None], owner: QObject | None, job: Job[Any] | None) -> None:
        self.fn = fn
        self.owner = owner
        self.job = job


async def _named(coro: Coroutine[Any, Any, T], name: str) -> T:
    """Run ``coro`` as a task carrying ``name`` (so a stuck task names itself in logs)."""
    task = asyncio.current_task()
    if task is not None and name:
        task.set_name(name)
    return await coro


class Mailbox(Generic[T]):
    """Items from the I/O thread to the UI thread, with one wake-up per drain (see the module docstring).

    ``maxlen`` bounds it: when the UI falls behind, the oldest items are dropped (a log view keeps the
    newest lines). ``on_ready`` runs on the UI thread; it should call :meth:`drain`."""

    def __init__(
        self,
        bridge: AsyncBridge,
        on_ready: Callable[[], None],
        *,
        owner: QObject | None = None,
        maxlen: int | None = None,
    ) -> None:
        self._bridge = bridge
        self._on_ready = on_ready
        self._owner = owner
        self._items: collections.deque[T] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._armed = False
        self.dropped = 0

    def put(self, item: T) -> None:
        with self._lock:
            if self._items.maxlen is not None and len(self._items) == self._items.maxlen:
                self.dropped += 1
            self._items.append(item)
            if self._armed:
                return
            self._armed = True
        self._bridge.post(self._on_ready, owner=self._owner)

    def drain(self) -> list[T]:
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self._armed = False
        return items

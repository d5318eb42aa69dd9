"""Shared fixtures. Every test must leave no asyncio task and no child process behind."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import sys
import time
from collections.abc import AsyncIterator

import psutil
import pytest

_PR_SET_CHILD_SUBREAPER = 36
# Seconds a test's leftover processes get to finish exiting before they count as leaked.
_EXIT_GRACE = 5.0


def pytest_configure(config: pytest.Config) -> None:
    """Make the test process a child subreaper, so that a workload orphaned by a killed edge service is
    re-parented here (not to init) and the leak check below can see and stop it."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


@pytest.fixture(autouse=True)
async def _no_leaks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks running on the loop or child processes alive."""
    me = psutil.Process()
    children_before = {p.pid for p in me.children(recursive=True)}
    tasks_before = set(asyncio.all_tasks())
    yield
    leaked = [
        t
        for t in asyncio.all_tasks()
        if t not in tasks_before and t is not asyncio.current_task() and not t.done()
    ]
    for t in leaked:
        t.cancel()
    alive = await _surviving_children(me, children_before)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    assert not leaked, f"test left tasks running: {[t.get_name() for t in leaked]}"
    assert not alive, f"test left processes running: {[(p.pid, _cmdline(p)) for p in alive]}"


async def _surviving_children(me: psutil.Process, before: set[int]) -> list[psutil.Process]:
    """New descendants still alive, after giving exiting ones (a shim writing its exit file as its edge
    stops) a moment to finish: a process that is on its way out is not a leak, one that stays is."""
    deadline = time.monotonic() + _EXIT_GRACE
    while True:
        alive = []
        for p in me.children(recursive=True):
            if p.pid in before:
                continue
            with contextlib.suppress(psutil.NoSuchProcess):
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
        if not alive or time.monotonic() > deadline:
            return alive
        await asyncio.sleep(0.05)


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []

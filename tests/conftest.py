"""Shared fixtures. Every test must leave no asyncio task and no child process behind."""

from __future__ import annotations

import asyncio
import ctypes
import sys
from collections.abc import AsyncIterator

import psutil
import pytest

_PR_SET_CHILD_SUBREAPER = 36


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
    children = [p for p in me.children(recursive=True) if p.pid not in children_before]
    alive = []
    for p in children:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            continue
    for p in alive:
        p.kill()
    assert not leaked, f"test left tasks running: {[t.get_name() for t in leaked]}"
    assert not alive, f"test left processes running: {[(p.pid, p.cmdline()) for p in alive]}"

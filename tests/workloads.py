"""A workload module (`python -m edgeservice.workloads.X --config FILE`) as a real process in a test."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


async def run_workload(module: str, config: Path) -> asyncio.subprocess.Process:
    # The log goes to a file next to the config: a pipe nobody reads during the test would fill up (an
    # adapter logs while a device is away) and block the process on write.
    with (config.parent / f"{module}.log").open("wb") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"edgeservice.workloads.{module}",
            "--config",
            str(config),
            cwd=REPO,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )


async def stop_workload(proc: asyncio.subprocess.Process, log: Path) -> bytes:
    """SIGTERM; after 10 s SIGABRT (the workload's faulthandler writes every thread's stack to the log, so
    a hang says where it is), then SIGKILL; the process's log."""
    if proc.returncode is None:
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.send_signal(signal.SIGABRT)
        try:
            await asyncio.wait_for(proc.wait(), 3)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return log.read_bytes()

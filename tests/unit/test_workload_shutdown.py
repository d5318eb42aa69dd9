"""How a workload process ends (``serve_until_signalled``): its exit status tells the kubelet whether to
restart it, so a failure must never end as 0, however the clean-up goes. Each case is a real process."""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from edgeservice.workloads.adapter import EXIT_FAILED
from tests.workloads import REPO

# Short bounds, so a case that hangs on its way out ends in well under a second.
SHUTDOWN_TIMEOUT_S = 0.3
EXIT_GRACE_S = 0.3

# A workload whose behaviour is chosen by argv[1]. "ready" on stdout: run() is running (signals go to it).
SCRIPT = textwrap.dedent(
    f"""
    import asyncio, logging, sys, threading, time
    from edgeservice.workloads.adapter import serve_until_signalled

    case = sys.argv[1]

    async def stuck_task(blocking):
        try:
            await asyncio.Event().wait()
        finally:
            if blocking:
                time.sleep(3600)  # blocks the loop: only the watchdog can end this
            else:
                while True:  # ignores cancellation: the shutdown timeout ends this
                    try:
                        await asyncio.sleep(3600)
                    except asyncio.CancelledError:
                        pass

    async def run():
        if case == "crash_then_blocked_cleanup":
            asyncio.create_task(stuck_task(blocking=True))
        elif case == "crash_then_stuck_task":
            asyncio.create_task(stuck_task(blocking=False))
        await asyncio.sleep(0)
        print("ready", flush=True)
        if case.startswith("crash"):
            raise RuntimeError("the device driver crashed")
        if case == "returns":
            return
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if case == "blocked_after_stop":
                time.sleep(3600)
            elif case == "stuck_after_stop":
                await stuck_task(blocking=False)
            elif case == "fails_on_stop":
                raise RuntimeError("could not close the device") from None
            raise

    logging.basicConfig(level=logging.INFO)
    asyncio.run(
        serve_until_signalled(
            run, "test", shutdown_timeout_s={SHUTDOWN_TIMEOUT_S}, exit_grace_s={EXIT_GRACE_S}
        )
    )
    # A clean stop cancels the watchdog: joining it returns at once instead of ending the process.
    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.join()
    print("returned, no watchdog left", flush=True)
    """
)

WATCHDOG = "still running"  # what the watchdog writes before it ends the process
TIMED_OUT = "did not close within"  # what the shutdown timeout logs


async def _run(tmp_path: Path, case: str, sig: signal.Signals | None) -> tuple[int, str, str]:
    script = tmp_path / "workload.py"
    script.write_text(SCRIPT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        case,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
        if sig is not None:
            proc.send_signal(sig)
        out, err = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_clean_stop_exits_0_and_cancels_the_watchdog(tmp_path: Path, sig: signal.Signals) -> None:
    code, out, err = await _run(tmp_path, "clean", sig)
    assert code == 0, err
    assert out == "returned, no watchdog left\n"
    assert WATCHDOG not in err and TIMED_OUT not in err


@pytest.mark.parametrize(
    ("case", "how"),
    [
        ("blocked_after_stop", WATCHDOG),  # a clean-up that blocks the loop
        ("stuck_after_stop", TIMED_OUT),  # a clean-up that ignores cancellation
    ],
)
async def test_a_stop_that_hangs_is_ended_with_0(tmp_path: Path, case: str, how: str) -> None:
    code, out, err = await _run(tmp_path, case, signal.SIGTERM)
    assert code == 0, err
    assert how in err and out == ""


@pytest.mark.parametrize(
    ("case", "sig", "why"),
    [
        ("crash", None, "the device driver crashed"),
        ("returns", None, "ended by itself"),
        ("fails_on_stop", signal.SIGTERM, "could not close the device"),
    ],
)
async def test_a_failure_exits_1(tmp_path: Path, case: str, sig: signal.Signals | None, why: str) -> None:
    code, out, err = await _run(tmp_path, case, sig)
    assert code == EXIT_FAILED == 1, err
    assert why in err and out == ""
    assert WATCHDOG not in err and TIMED_OUT not in err


@pytest.mark.parametrize(
    ("case", "how"),
    [
        ("crash_then_blocked_cleanup", WATCHDOG),
        ("crash_then_stuck_task", TIMED_OUT),
    ],
)
async def test_a_crash_whose_clean_up_hangs_still_exits_1(tmp_path: Path, case: str, how: str) -> None:
    # Not Completed: a restartPolicy OnFailure must restart it.
    code, out, err = await _run(tmp_path, case, None)
    assert code == EXIT_FAILED, err
    assert "the device driver crashed" in err and how in err and out == ""

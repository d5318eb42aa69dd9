"""The TUI driven the way a person over SSH drives it: in tmux, with keys sent and the screen read back.

Runs the real ``fleetops tui --kubeconfig K`` in a detached tmux session on its own socket against a real
cloud and edge, types ``:pods``, a filter, opens the pod and runs a command in its shell (``s``: ``kubectl
exec -it``), then ``:q``, reading the pane with ``capture-pane``. Skipped
with a reason when tmux is missing, except under ``CI=true``, where tmux is required.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from app.launcher import LocalCluster

pytestmark = pytest.mark.slow


def _tmux() -> str:
    path = shutil.which("tmux")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is required in CI but is not on PATH")
        pytest.skip("tmux is not installed (apt-get install tmux)")
    return path


class Tmux:
    def __init__(self, binary: str, socket: Path) -> None:
        self.binary = binary
        self.socket = socket

    async def run(self, *args: str, check: bool = True) -> str:
        proc = await asyncio.create_subprocess_exec(
            self.binary,
            "-S",
            str(self.socket),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if check and proc.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)}: {err.decode()}")
        return out.decode()

    async def screen(self) -> str:
        return await self.run("capture-pane", "-p", "-t", "tui")

    async def keys(self, *keys: str) -> None:
        await self.run("send-keys", "-t", "tui", *keys)

    async def wait_for(self, predicate: object, what: str, timeout: float = 20.0) -> str:
        """Poll the pane until ``predicate(text)``: a terminal offers no event to await."""
        deadline = time.monotonic() + timeout
        while True:
            text = await self.screen()
            if callable(predicate) and predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the screen:\n{text}")
            await asyncio.sleep(0.1)


async def test_tui_in_tmux(live: LocalCluster, tmp_path: Path) -> None:
    tmux = Tmux(_tmux(), tmp_path / "tmux.sock")
    command = (
        f"{sys.executable} -m app.cli tui --kubeconfig {live.kubeconfig} --log-file {tmp_path / 'tui.log'}"
    )
    env_args = ["-e", "TERM=xterm-256color", "-e", "TEXTUAL_COLOR_SYSTEM=256"]
    await tmux.run("new-session", "-d", "-s", "tui", "-x", "160", "-y", "40", *env_args, command)
    try:
        await tmux.wait_for(
            lambda t: "printer-" in t and "Running" in t, "the pods view with the printer pod"
        )
        # TEXTUAL_COLOR_SYSTEM=256 is obeyed: colours from the 256-colour palette, no 24-bit ones (which
        # the same capture shows as "38;2;R;G;B" when the variable says truecolor).
        styled = await tmux.run("capture-pane", "-p", "-e", "-t", "tui")
        assert re.search(r"\x1b\[[0-9;]*[34]8;5;", styled), "no 256-colour sequences on screen"
        assert not re.search(r"\x1b\[[0-9;]*[34]8;2;", styled), "24-bit colour under TEXTUAL_COLOR_SYSTEM=256"
        await tmux.keys(":", "nodes", "Enter")  # typed ahead: the prompt must get every key
        screen = await tmux.wait_for(lambda t: "Nodes (1/1)" in t, "the nodes view")
        assert "edge-1" in screen and "Ready" in screen
        await tmux.keys(":", "pods", "Enter")
        await tmux.wait_for(lambda t: "Pods (" in t, "the pods view")
        await tmux.keys("/", "nothing-like-this")
        await tmux.wait_for(lambda t: "Pods (0/1)" in t, "the filter hiding every row")
        await tmux.keys("Escape")  # a terminal's Esc is only known as such after a pause: wait for it
        await tmux.wait_for(lambda t: "Pods (1/1)" in t and "filter:" not in t, "the filter cleared")
        await tmux.keys("/", "print")
        screen = await tmux.wait_for(lambda t: "Pods (1/1)" in t and "filter: print" in t, "the filter")
        row = next(line for line in screen.splitlines() if "printer-" in line)
        assert row.split()[0] == "default" and "1/1" in row and "edge-1" in row
        await tmux.keys("Enter")
        await tmux.wait_for(lambda t: "/print" not in t, "the filter prompt closed")

        # Exec: the pod screen's shell key suspends the TUI for `kubectl exec -it ... -- sh`.
        await tmux.keys("Enter")
        await tmux.wait_for(lambda t: "pod default/printer-" in t and "Name:" in t, "the pod screen")
        await tmux.keys("s")
        await tmux.wait_for(
            lambda t: "Name:" not in t and t.rstrip().endswith(("#", "$")), "the shell's prompt", 30
        )
        marker = f"hi-{os.getpid()}"
        # Typed as "hi-$((PID+0))" so that the echoed command line cannot pass for its output.
        await tmux.keys("echo hi-$((", str(os.getpid()), "+0))", "Enter")
        screen = await tmux.wait_for(
            lambda t: any(line.strip() == marker for line in t.splitlines()), "the shell's output", 30
        )
        await tmux.keys("exit", "Enter")
        await tmux.wait_for(lambda t: "pod default/printer-" in t and "Name:" in t, "the TUI back after exit")
        await tmux.keys("Escape")
        await tmux.wait_for(lambda t: "Pods (1/1)" in t, "the pods view again")
        await tmux.keys(":", "q", "Enter")
        deadline = time.monotonic() + 15
        while "tui" in await tmux.run("list-sessions", "-F", "#{session_name}", check=False):
            assert time.monotonic() < deadline, "the TUI did not quit on :q"
            await asyncio.sleep(0.1)
    finally:
        await tmux.run("kill-server", check=False)

"""`make demo` runs the whole pipeline: checked here the way a user starts it (`fleetops demo`), once."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


async def test_the_demo_comes_up_and_stops_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "demo",
        "--data-dir",
        str(data),
        "--check",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(180):
        out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "FleetOps demo is running." in text
    assert "admin.kubeconfig" in text and "Stopping ..." in text
    if os.environ.get("CI") == "true":
        assert "Devices skipped" not in text, "CI has a broker: the demo must run its devices"
    if "Devices skipped" not in text:
        assert "pump-1" in text and "line2-camera" in text and "online" in text
    # A second run over the same directory is allowed (it is the demo's own), a foreign one is not.
    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("do not delete")
    refused = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "demo",
        "--data-dir",
        str(foreign),
        "--check",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        out, _ = await refused.communicate()
    assert refused.returncode == 2 and "not a demo directory" in out.decode()
    assert (foreign / "thesis.txt").read_text() == "do not delete"

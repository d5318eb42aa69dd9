"""The services the machine provides to the tests (see the README): a test that needs one and does not
find it is skipped with the reason, and fails instead under ``CI=true``, where nothing may skip for that."""

from __future__ import annotations

import os
import socket

import pytest

MOSQUITTO = ("127.0.0.1", 1883)


def require_mosquitto() -> None:
    """Skip (or, in CI, fail) the calling test unless Mosquitto accepts connections at 127.0.0.1:1883."""
    with socket.socket() as s:
        s.settimeout(1)
        if s.connect_ex(MOSQUITTO) == 0:
            return
    reason = "Mosquitto is not reachable at 127.0.0.1:1883 (start it: `mosquitto -d`)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must provide it")
    pytest.skip(reason)

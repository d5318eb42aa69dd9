"""The few machine figures the edge reads from ``/proc`` itself.

The edge's idle footprint is a product target (<= 45 MB RSS) and psutil costs ~0.7 MB to import for two
numbers we can read in a handful of lines: the CPU time counters of ``/proc/stat`` and the memory figures of
``/proc/meminfo`` (proc(5)). Linux only, as the edge is.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def meminfo() -> dict[str, int]:
    """``/proc/meminfo`` in bytes (the file says kB, meaning KiB)."""
    out: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * 1024
    return out


def memory_total() -> int:
    return meminfo().get("MemTotal", 0)


def memory_in_use() -> int:
    """Total minus available, as ``free`` and psutil count the memory in use."""
    info = meminfo()
    return info.get("MemTotal", 0) - info.get("MemAvailable", info.get("MemFree", 0))


def cpu_busy_seconds() -> float:
    """CPU seconds this machine spent working, all cores: user, nice, system, irq and softirq. Idle,
    iowait and steal are not this node's work; guest time is already inside user (guest_nice inside nice)."""
    with Path("/proc/stat").open() as fh:
        fields = fh.readline().split()
    # cpu user nice system idle iowait irq softirq steal guest guest_nice
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    return (user + nice + system + irq + softirq) / _TICK

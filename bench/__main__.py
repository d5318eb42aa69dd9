"""Run the benchmarks: `python -m bench [name ...]`. Each prints a table row set and one JSON line."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from pathlib import Path

ALL = [
    "tunnel",
    "footprint",
    "pod_startup",
    "list_pods",
    "watch_latency",
    "log_follow",
    "twin_roundtrip",
    "telemetry",
    "camera_stream",
    "inference",
    "tui_filter",
    "gui_table",
    "gui_camera",
    "tui_start",
]


def main() -> int:
    names = sys.argv[1:] or ALL
    results = {}
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"\n== {name}: {module.__doc__.strip().splitlines()[0]}")
        results[name] = asyncio.run(module.run())
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=1) + "\n")
    print("\nJSON:", json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

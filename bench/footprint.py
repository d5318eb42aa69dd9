"""Edge footprint: resident memory of an idle, connected edge service with no pods.

Next to it, in the same run: a bare Python interpreter idling in asyncio (the floor any Python service
pays) and the cloud process, for scale. Target: edge RSS <= 45 MB (KubeEdge's edgecore claims ~70 MB).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil

from app.launcher import LocalCluster
from bench.common import table

MB = 1024 * 1024


async def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        cluster = LocalCluster(Path(d), status_interval=1.0, ping_interval=5.0)
        bare = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import asyncio; asyncio.run(asyncio.sleep(30))"
        )
        try:
            await cluster.start_cloud()
            edge = await cluster.start_edge("edge-1")
            await cluster.wait_until(
                "/api/v1/nodes/edge-1",
                lambda n: any(
                    c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"]
                ),
                what="the edge to be Ready",
            )
            await asyncio.sleep(3)  # idle: a few heartbeats, nothing else
            edge_rss = psutil.Process(edge.pid).memory_info().rss / MB
            assert cluster.cloud is not None
            cloud_rss = psutil.Process(cluster.cloud.pid).memory_info().rss / MB
            bare_rss = psutil.Process(bare.pid).memory_info().rss / MB
        finally:
            bare.kill()
            await bare.wait()
            await cluster.stop()
    table(
        [
            ("bare python + asyncio (MB)", f"{bare_rss:.1f}", "floor"),
            ("idle edge service (MB)", f"{edge_rss:.1f}", "target <= 45"),
            ("cloud service (MB)", f"{cloud_rss:.1f}", "for scale"),
        ]
    )
    return {"edge_rss_mb": edge_rss, "bare_python_rss_mb": bare_rss, "cloud_rss_mb": cloud_rss}

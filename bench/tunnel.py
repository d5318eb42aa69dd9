"""Tunnel throughput: small reliable messages through our tunnel stack vs a bare websockets echo.

Same machine, same run, same websockets settings (permessage-deflate on, as in production).
- bare: a websockets client sends N small frames, the server echoes each, the client reads N frames.
- tunnel: the cloud side queues N reliable messages (distinct keys) on a Channel driven by ChannelRunner;
  the edge side, also Channel + ChannelRunner, acknowledges each; done when the cloud has N acks.
  That is twice the frames of the bare echo's round trip per message (message + ack) plus the envelope
  JSON encode/decode and the window/resend bookkeeping.
- tunnel+persist: as above, but the edge makes each received batch durable in MetaManager (SQLite, WAL,
  synchronous=FULL, one transaction per batch) before acknowledging: the real edge path.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from app.envelope import Message
from app.tunnel import Acked, Channel, Delivered, Event
from app.tunnelio import ChannelRunner
from bench.common import table
from edgeservice.metamanager import MetaManager

N = 20_000
PAYLOAD = {"metadata": {"name": "p", "namespace": "default"}, "spec": {"nodeName": "edge-1"}}


async def bare_echo(n: int) -> float:
    async def echo(ws: ServerConnection) -> None:
        async for frame in ws:
            await ws.send(frame)

    async with serve(echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", proxy=None) as ws:
            frame = Message("update", "default/pod/p", PAYLOAD).encode()

            async def reader() -> None:
                for _ in range(n):
                    await ws.recv()

            started = time.perf_counter()
            task = asyncio.create_task(reader())
            for _ in range(n):
                await ws.send(frame)
            await task
            return n / (time.perf_counter() - started)


async def through_tunnel(n: int, persist: MetaManager | None) -> float:
    done = asyncio.Event()
    acked = 0

    async def edge_side(ws: ServerConnection) -> None:
        channel = Channel("edge-1")

        async def handle(events: list[Event]) -> None:
            batch = [e.message for e in events if isinstance(e, Delivered)]
            if persist is not None and batch:
                persist.apply(batch)
            for m in batch:
                channel.ack(m)

        await ChannelRunner(ws, channel, handle, name="bench.edge").run()

    async with serve(edge_side, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", proxy=None) as ws:
            cloud = Channel("cloudhub")

            async def on_cloud(events: list[Event]) -> None:
                nonlocal acked
                acked += sum(isinstance(e, Acked) for e in events)
                if acked >= n:
                    done.set()

            runner = ChannelRunner(ws, cloud, on_cloud, name="bench.cloud")
            task = asyncio.create_task(runner.run())
            started = time.perf_counter()
            for i in range(n):
                key = f"default/pod/p{i}"
                cloud.send_reliable(Message("update", key, PAYLOAD, resourceversion=str(i + 1)), key)
                if i % 256 == 0:
                    runner.kick()
                    await asyncio.sleep(0)
            runner.kick()
            await done.wait()
            rate = n / (time.perf_counter() - started)
            await ws.close()
            await task
            return rate


async def run() -> dict[str, Any]:
    bare = await bare_echo(N)
    tunnel = await through_tunnel(N, None)
    with tempfile.TemporaryDirectory() as d:
        meta = MetaManager(Path(d) / "edge.db")
        meta.open()
        try:
            persisted = await through_tunnel(N // 4, meta)
        finally:
            meta.close()
    table(
        [
            ("bare websockets echo (msg/s)", f"{bare:,.0f}", "baseline"),
            ("tunnel, reliable + ack (msg/s)", f"{tunnel:,.0f}", f"ratio {tunnel / bare:.2f} (>= 0.5)"),
            ("tunnel + SQLite persist (msg/s)", f"{persisted:,.0f}", f"ratio {persisted / bare:.2f}"),
        ]
    )
    return {
        "bare_msgs_per_s": bare,
        "tunnel_msgs_per_s": tunnel,
        "ratio": tunnel / bare,
        "tunnel_persist_msgs_per_s": persisted,
        "persist_ratio": persisted / bare,
    }

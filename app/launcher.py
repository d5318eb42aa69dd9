"""Start a cloud and edges as real processes on this machine: the demo and the end-to-end tests share it.

Each process is a real ``fleetops cloud`` / ``fleetops edge`` with its own data directory and log file,
on ports the kernel picks (port 0; the cloud writes what it bound to ``endpoints.json``). ``LocalCluster``
also carries a tiny authenticated HTTP helper against the cloud API; the full client is ``app.client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from app.kubeconfig import load_kubeconfig

FLEETOPS = [sys.executable, "-m", "app.cli"]


class LaunchError(RuntimeError):
    """A process did not come up; the message includes the tail of its log."""


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Proc:
    name: str
    args: list[str]
    log_path: Path
    proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.args, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def signal(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            await self.signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await self.proc.wait()
            except TimeoutError:
                await self.kill()
        return self.proc.returncode

    async def kill(self) -> None:
        """SIGKILL the service process alone (its workloads, in their own sessions, survive)."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


@dataclass
class LocalCluster:
    root: Path
    node_grace_period: float = 40.0
    status_interval: float = 10.0
    ping_interval: float = 10.0
    restart_backoff: float = 10.0
    # Demo and tests own their workloads: stopping an edge stops its pods. In production an edge restart
    # leaves workloads running, which is the whole point.
    stop_pods_on_exit: bool = True
    cloud: Proc | None = None
    edges: dict[str, Proc] = field(default_factory=dict)
    api: str = ""
    hub: str = ""
    token: str = ""
    join_token: str = ""
    _ssl: ssl.SSLContext | None = None

    @property
    def cloud_dir(self) -> Path:
        return self.root / "cloud"

    @property
    def kubeconfig(self) -> Path:
        return self.cloud_dir / "admin.kubeconfig"

    async def start_cloud(self, *extra: str, timeout: float = 30.0) -> None:
        self.cloud_dir.mkdir(parents=True, exist_ok=True)
        endpoints = self.cloud_dir / "endpoints.json"
        endpoints.unlink(missing_ok=True)
        self.cloud = Proc(
            "cloud",
            [
                *FLEETOPS,
                "cloud",
                "--data-dir",
                str(self.cloud_dir),
                "--api-addr",
                "127.0.0.1:0" if not self.api else self.api.rsplit("/", 1)[-1],
                "--hub-addr",
                "127.0.0.1:0" if not self.hub else self.hub.rsplit("/", 1)[-1],
                "--node-grace-period",
                str(self.node_grace_period),
                "--hub-ping-interval",
                str(self.ping_interval),
                *extra,
            ],
            self.root / "logs" / "cloud.log",
        )
        await self.cloud.start()
        try:
            await self._wait_for(endpoints.exists, self.cloud, timeout, "cloud endpoints")
            data = json.loads(endpoints.read_text())
            self.api, self.hub = data["api"], data["hub"]
            kc = load_kubeconfig(self.kubeconfig)
            self.token = kc.token or ""
            self._ssl = ssl.create_default_context(cafile=kc.certificate_authority)
            self.join_token = (self.cloud_dir / "join-token").read_text().strip()
        except BaseException:
            await self.cloud.stop()  # the caller gets no cluster to stop: leave no cloud behind
            raise

    async def start_edge(self, name: str, labels: dict[str, str] | None = None, *extra: str) -> Proc:
        label_arg = ",".join(f"{k}={v}" for k, v in (labels or {}).items())
        # The token goes in a private file, not on the command line where `ps` shows it to everyone.
        token_file = self.root / f"{name}.token"
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.touch(mode=0o600)
        token_file.write_text(self.join_token + "\n")
        proc = Proc(
            name,
            [
                *FLEETOPS,
                "edge",
                "--name",
                name,
                "--cloud",
                self.hub,
                "--token-file",
                str(token_file),
                "--data-dir",
                str(self.root / name),
                "--labels",
                label_arg,
                "--status-interval",
                str(self.status_interval),
                "--ping-interval",
                str(self.ping_interval),
                "--restart-backoff",
                str(self.restart_backoff),
                "--address",
                "127.0.0.1",
                "--local-api-addr",
                "127.0.0.1:0",
                *(["--stop-pods-on-exit"] if self.stop_pods_on_exit else []),
                *extra,
            ],
            self.root / "logs" / f"{name}.log",
        )
        await proc.start()
        self.edges[name] = proc
        return proc

    async def _wait_for(self, ready: Any, proc: Proc, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if not proc.running:
                raise LaunchError(f"{proc.name} exited while waiting for {what}:\n{tail(proc.log_path)}")
            if time.monotonic() > deadline:
                raise LaunchError(f"timed out waiting for {what}:\n{tail(proc.log_path)}")
            await asyncio.sleep(0.05)

    # -- API helper -------------------------------------------------------------------------------

    async def request(self, method: str, path: str, body: Any = None, *, content_type: str = "") -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        if content_type:
            headers["Content-Type"] = content_type
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method, self.api + path, json=body, headers=headers, ssl=self._ssl or True
            ) as resp,
        ):
            data = await resp.json(content_type=None)
            if resp.status >= 400:
                raise LaunchError(f"{method} {path}: HTTP {resp.status}: {data.get('message', data)}")
            return data

    async def wait_until(self, path: str, predicate: Any, timeout: float = 60.0, what: str = "") -> Any:
        """Poll an API path until predicate(obj) holds (the end-to-end tests' one waiting primitive)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            with contextlib.suppress(LaunchError, aiohttp.ClientError):
                last = await self.request("GET", path)
                if predicate(last):
                    return last
            if time.monotonic() > deadline:
                raise LaunchError(f"timed out waiting for {what or path}; last: {json.dumps(last)[:2000]}")
            await asyncio.sleep(0.1)

    async def wait_ready_nodes(self, names: list[str], timeout: float = 60.0) -> None:
        """Wait until every named node reports Ready=True."""

        def ready(lst: Any) -> bool:
            up = {
                n["metadata"]["name"]
                for n in lst.get("items", [])
                for c in n.get("status", {}).get("conditions", [])
                if c.get("type") == "Ready" and c.get("status") == "True"
            }
            return set(names) <= up

        await self.wait_until("/api/v1/nodes", ready, timeout=timeout, what=f"nodes {names} Ready")

    async def stop(self) -> None:
        for proc in self.edges.values():
            await proc.stop()
        if self.cloud is not None:
            await self.cloud.stop()

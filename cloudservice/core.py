"""CloudCore: the cloud service. One process runs the store, the Kubernetes-compatible API, the
controllers and the hub, each a named module with a start and a stop (STYLE.md item 4).

On first start it mints an admin token (written into ``DATA_DIR/admin.kubeconfig``) and a node join token
(``DATA_DIR/join-token``). Only hashes are kept in ``tokens.json``. The addresses actually bound (port 0
is allowed) are written to ``DATA_DIR/endpoints.json`` so scripts and tests can find them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from app.kubeconfig import load_kubeconfig, write_kubeconfig
from cloudservice.api import ApiServer, build_app
from cloudservice.auth import AuthError, TokenStore
from cloudservice.cameras import CameraStreams
from cloudservice.controllers import ControllerManager
from cloudservice.history import History
from cloudservice.hub import CloudHub
from cloudservice.metrics import install_metrics
from cloudservice.pki import ensure_pki
from cloudservice.store.sql import open_store
from cloudservice.usage import UsageStore

log = logging.getLogger(__name__)


@dataclass
class CloudConfig:
    data_dir: Path
    api_host: str = "127.0.0.1"
    api_port: int = 6443
    hub_host: str = "0.0.0.0"
    hub_port: int = 10000
    store_url: str = ""
    node_grace_period: float = 40.0
    hub_ping_interval: float = 10.0


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


class CloudCore:
    def __init__(self, config: CloudConfig) -> None:
        self.config = config
        # Private: tokens, keys and the store (which holds Secrets) live here.
        config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not config.store_url:
            db = config.data_dir / "cloud.db"
            os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))  # SQLite's -wal/-shm inherit this mode
        self.tokens = TokenStore(config.data_dir / "tokens.json")
        self.store = open_store(config.store_url or str(config.data_dir / "cloud.db"))
        self.usage = UsageStore()
        self.history = History(store=self.store)
        self.hub = CloudHub(
            self.store,
            self.tokens,
            host=config.hub_host,
            port=config.hub_port,
            ping_interval=config.hub_ping_interval,
            ping_timeout=config.hub_ping_interval,
            usage=self.usage,
            history=self.history,
        )
        self.cameras = CameraStreams()
        self.controllers = ControllerManager(self.store, node_grace_period=config.node_grace_period)
        self.pki = ensure_pki(config.data_dir / "pki", config.api_host)
        app = build_app(
            self.store,
            authenticate=self._authenticate,
            streams=self.hub,
            usage=self.usage,
            history=self.history,
            cameras=self.cameras,
        )
        self.metrics = install_metrics(app, self.hub, self.store, cameras=self.cameras)
        self.api = ApiServer(
            app,
            config.api_host,
            config.api_port,
            ssl_context=self.pki.server_context(),
        )

    def _authenticate(self, token: str) -> str | None:
        try:
            return self.tokens.verify(token, "admin").name
        except AuthError:
            return None

    async def run(self, stop: asyncio.Event) -> None:
        d = self.config.data_dir
        await self.store.start()
        await self.api.start()
        await self.hub.start()
        await self.controllers.start()
        try:
            self._write_credentials()
            log.info(
                "cloud ready: API https://%s:%d, hub ws://%s:%d, data in %s",
                self.config.api_host,
                self.api.port,
                self.config.hub_host,
                self.hub.port,
                d,
            )
            await stop.wait()
        finally:
            await self.controllers.stop()
            await self.cameras.close()
            await self.hub.stop()
            await self.api.stop()
            await self.store.close()
            log.info("cloud stopped")

    def _write_credentials(self) -> None:
        d = self.config.data_dir
        host = self.config.api_host
        server = f"https://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.api.port}"
        kubeconfig = d / "admin.kubeconfig"
        token = ""
        if kubeconfig.exists():
            try:
                token = load_kubeconfig(kubeconfig).token or ""
                self.tokens.verify(token, "admin")
            except (AuthError, OSError, ValueError) as exc:
                log.warning("existing %s is not usable (%s); writing a new one", kubeconfig, exc)
                token = ""
        if not token:
            token = self.tokens.create("admin", "admin")
        write_kubeconfig(kubeconfig, server, token, certificate_authority=str(self.pki.ca_cert.resolve()))
        join = d / "join-token"
        if not join.exists() or not self.tokens.first("join"):
            write_private(join, self.tokens.create("join", "nodes") + "\n")
        endpoints = {"api": server, "hub": f"ws://{self._hub_host()}:{self.hub.port}"}
        # Written last and atomically: a reader that sees the file sees it whole, and everything above.
        tmp = d / "endpoints.json.tmp"
        tmp.write_text(json.dumps(endpoints, indent=1) + "\n")
        tmp.replace(d / "endpoints.json")

    def _hub_host(self) -> str:
        host = self.config.hub_host
        return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host

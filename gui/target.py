"""Where the GUI connects: what ``fleetops gui`` was told, in the shape QSettings remembers.

A :class:`Target` is a kubeconfig (and context), or ``--server`` with ``--token`` and
``--certificate-authority`` / ``--insecure-skip-tls-verify``. Tokens are never written to the settings
file: a remembered ``--server`` entry asks for its token again (a kubeconfig holds its own credentials,
as kubectl's does). This module imports no Qt, so the CLI can resolve its arguments before Qt loads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.client import DEFAULT_CONNECT_TIMEOUT, AsyncClient
from app.kubeconfig import KubeconfigError
from gui.errors import TargetError


def default_kubeconfig() -> str:
    """kubectl's choice: ``$KUBECONFIG``'s first file, else ``~/.kube/config``."""
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), "")
    return first or str(Path.home() / ".kube" / "config")


@dataclass(frozen=True, slots=True)
class Target:
    """A server to connect to: a kubeconfig (and context), or a URL with a token. ``connect_timeout`` is
    how long a new connection (TCP and TLS handshake) may take before the server counts as unreachable;
    it is not remembered."""

    kubeconfig: str = ""
    context: str | None = None
    server: str = ""
    token: str = field(default="", repr=False, compare=False)
    ca_file: str | None = None
    insecure: bool = False
    connect_timeout: float = field(default=DEFAULT_CONNECT_TIMEOUT, compare=False)

    def __post_init__(self) -> None:
        if not self.connect_timeout > 0:
            raise TargetError(
                f"the connect timeout must be a positive number of seconds, not {self.connect_timeout}"
            )

    @property
    def label(self) -> str:
        if self.server:
            return self.server
        where = self.kubeconfig or default_kubeconfig()
        return f"{where} ({self.context})" if self.context else where

    @property
    def needs_token(self) -> bool:
        return bool(self.server) and not self.token

    def with_token(self, token: str) -> Target:
        return replace(self, token=token)

    def to_settings(self) -> dict[str, str]:
        """What QSettings keeps (never the token)."""
        if self.server:
            out = {"server": self.server, "insecure": "1" if self.insecure else "0"}
            if self.ca_file:
                out["ca"] = self.ca_file
            return out
        out = {"kubeconfig": self.kubeconfig or default_kubeconfig()}
        if self.context:
            out["context"] = self.context
        return out

    @classmethod
    def from_settings(cls, data: Mapping[str, Any]) -> Target | None:
        server, kubeconfig = str(data.get("server") or ""), str(data.get("kubeconfig") or "")
        if server:
            return cls(
                server=server, ca_file=str(data.get("ca") or "") or None, insecure=data.get("insecure") == "1"
            )
        if kubeconfig:
            return cls(kubeconfig=kubeconfig, context=str(data.get("context") or "") or None)
        return None

    def client(self) -> AsyncClient:
        """A client for this target; :class:`TargetError` when the kubeconfig cannot be used."""
        if self.server:
            return AsyncClient(
                self.server,
                self.token,
                ca_file=self.ca_file,
                insecure=self.insecure,
                connect_timeout=self.connect_timeout,
            )
        try:
            return AsyncClient.from_kubeconfig(
                self.kubeconfig or default_kubeconfig(), self.context, connect_timeout=self.connect_timeout
            )
        except KubeconfigError as exc:
            raise TargetError(str(exc)) from exc

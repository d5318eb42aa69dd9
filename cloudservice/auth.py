"""Bearer tokens for the API (users) and the hub (edge join tokens).

Tokens have the shape ``<id>.<secret>`` (as kubeadm's bootstrap tokens): the id names the token in logs
and files, the secret is shown once and only its SHA-256 is kept, in ``DATA_DIR/tokens.json``. The file
is re-read when it changes, so ``fleetops token create`` takes effect on a running cloud without a restart.

Every authenticated connection gets an :class:`Identity`; the hub keeps it on the node's session and
authorises each message against it (an edge may only report on its own node's pods). The mutual-TLS work
adds identities from client certificates; the rest of the code does not care where one came from.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cloudservice.errors import CloudError

log = logging.getLogger(__name__)

TokenKind = Literal["admin", "join"]


class AuthError(CloudError):
    """A credential was missing, malformed or unknown."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is on the other end: a user (``admin``) or a node joining with a join token."""

    kind: TokenKind
    name: str
    token_id: str
    method: str = "token"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_token() -> tuple[str, str]:
    # 6 + 16 lowercase alphanumerics, as kubeadm's bootstrap tokens: ~82 bits in the secret part.
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    token_id = "".join(secrets.choice(alphabet) for _ in range(6))
    secret = "".join(secrets.choice(alphabet) for _ in range(16))
    return token_id, secret


class TokenStore:
    """Hashed tokens in a JSON file, safe to share between the cloud and the ``token`` CLI."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime_ns = -1
        self._tokens: dict[str, dict[str, object]] = {}

    def _load(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._tokens, self._mtime_ns = {}, -1
            return
        if st.st_mtime_ns == self._mtime_ns:
            return
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise AuthError(f"token file {self.path} is unreadable: {exc}") from exc
        self._tokens = data.get("tokens", {}) if isinstance(data, dict) else {}
        self._mtime_ns = st.st_mtime_ns

    def create(self, kind: TokenKind, name: str = "", ttl: float | None = None) -> str:
        """Mint a token, persist its hash, and return the token (the only time it is visible)."""
        self._load()
        token_id, secret = _new_token()
        self._tokens[token_id] = {
            "kind": kind,
            "name": name or kind,
            "sha256": _digest(secret),
            "created": time.time(),
            "expires": time.time() + ttl if ttl else None,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"tokens": self._tokens}, fh, indent=1)
        tmp.replace(self.path)
        self._mtime_ns = -1
        return f"{token_id}.{secret}"

    def verify(self, token: str, kind: TokenKind) -> Identity:
        """The identity behind a token of the given kind; AuthError otherwise (constant-time compare)."""
        token_id, sep, secret = token.partition(".")
        if not sep or not token_id or not secret:
            raise AuthError("malformed token: expected <id>.<secret>")
        self._load()
        entry = self._tokens.get(token_id)
        if entry is None or entry.get("kind") != kind:
            raise AuthError(f"unknown {kind} token {token_id}")
        if not hmac.compare_digest(str(entry.get("sha256", "")), _digest(secret)):
            raise AuthError(f"wrong secret for {kind} token {token_id}")
        expires = entry.get("expires")
        if isinstance(expires, int | float) and expires < time.time():
            raise AuthError(f"{kind} token {token_id} has expired")
        return Identity(kind=kind, name=str(entry.get("name", kind)), token_id=token_id)

    def first(self, kind: TokenKind) -> bool:
        """Whether at least one token of this kind exists."""
        self._load()
        return any(e.get("kind") == kind for e in self._tokens.values())


def bearer(header: str | None) -> str | None:
    """The token from an ``Authorization: Bearer ...`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None

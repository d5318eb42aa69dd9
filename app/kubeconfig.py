"""Reading and writing kubeconfig files, so kubectl and our own client share one credential file.

``write_kubeconfig`` writes the minimal file kubectl needs for a bearer-token cluster (one cluster, one
user, one context, ``current-context`` set), mode 0600 because it holds a secret. ``load_kubeconfig``
resolves a context (the current one by default) to what a client needs: the server URL, the token and
optional CA / client certificate paths (relative paths are resolved against the file's directory, as
kubectl does). Deliberately not done: merging several files from ``$KUBECONFIG``, exec/auth-provider
plugins and inline ``*-data`` certificates (they are reported as absent, not decoded).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app.errors import FleetOpsError


class KubeconfigError(FleetOpsError):
    """A kubeconfig that cannot be read or lacks what was asked; ``path`` names the file."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class KubeConfig:
    server: str
    token: str = ""
    context: str = ""
    cluster: str = ""
    user: str = ""
    namespace: str = "default"
    certificate_authority: str | None = None
    client_certificate: str | None = None
    client_key: str | None = None
    insecure_skip_tls_verify: bool = False


def write_kubeconfig(
    path: str | os.PathLike[str],
    server: str,
    token: str,
    *,
    name: str = "fleetops",
    certificate_authority: str | None = None,
    namespace: str | None = None,
) -> None:
    """Write a kubeconfig with cluster, user and context all called ``name`` (mode 0600)."""
    cluster: dict[str, Any] = {"server": server}
    if certificate_authority:
        cluster["certificate-authority"] = str(certificate_authority)
    context: dict[str, Any] = {"cluster": name, "user": name}
    if namespace:
        context["namespace"] = namespace
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 from the start (not chmod-ed afterwards), so the token is never world-readable.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(doc, fh, sort_keys=False)
    target.chmod(0o600)


def _named(entries: Any, name: str, what: str, path: str) -> dict[str, Any]:
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(what)
            return body if isinstance(body, dict) else {}
    raise KubeconfigError(path, f"no {what} named {name!r}")


def load_kubeconfig(path: str | os.PathLike[str], context: str | None = None) -> KubeConfig:
    """Resolve ``context`` (default: current-context) of the kubeconfig at ``path``."""
    p = Path(path)
    where = str(p)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KubeconfigError(where, f"cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise KubeconfigError(where, f"not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise KubeconfigError(where, "not a kubeconfig (expected a mapping)")
    ctx_name = context or doc.get("current-context") or ""
    if not ctx_name:
        raise KubeconfigError(where, "no context given and no current-context set")
    ctx = _named(doc.get("contexts"), ctx_name, "context", where)
    cluster_name, user_name = str(ctx.get("cluster") or ""), str(ctx.get("user") or "")
    cluster = _named(doc.get("clusters"), cluster_name, "cluster", where)
    user = _named(doc.get("users"), user_name, "user", where) if user_name else {}
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise KubeconfigError(where, f"cluster {cluster_name!r} has no server")

    def resolve(value: Any) -> str | None:
        if not isinstance(value, str) or not value:
            return None
        return str(p.parent / value) if not Path(value).is_absolute() else value

    token = user.get("token")
    token_file = resolve(user.get("tokenFile"))
    if not token and token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise KubeconfigError(where, f"cannot read tokenFile {token_file}: {exc.strerror}") from exc
    return KubeConfig(
        server=server,
        token=str(token or ""),
        context=str(ctx_name),
        cluster=cluster_name,
        user=user_name,
        namespace=str(ctx.get("namespace") or "default"),
        certificate_authority=resolve(cluster.get("certificate-authority")),
        client_certificate=resolve(user.get("client-certificate")),
        client_key=resolve(user.get("client-key")),
        insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
    )

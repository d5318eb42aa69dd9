"""The real kubectl against the API: what a Kubernetes user types must just work.

kubectl sends bearer tokens only over TLS (client-go drops kubeconfig credentials for http:// servers),
so the server runs with a throwaway self-signed certificate made by the openssl CLI, and the kubeconfig
written by app.kubeconfig trusts it. Nodes are created directly in the store (the edge is not under test).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.kubeconfig import load_kubeconfig, write_kubeconfig
from app.resources import NODES
from cloudservice.api import ApiServer, build_app
from cloudservice.store.sql import SqlStore, open_store

pytestmark = pytest.mark.kubectl

TOKEN = "kubectl-test-token"

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: IMAGE
        command: ["python", "-m", "http.server"]
        ports:
        - containerPort: 8000
"""


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} is required in CI but is not on PATH")
        pytest.skip(f"{tool} is not on PATH")
    return path


@dataclass
class Kubectl:
    binary: str
    env: dict[str, str]
    cwd: Path
    store: SqlStore

    async def run(self, *args: str, check: bool = True) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            self.binary,
            *args,
            env=self.env,
            cwd=self.cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        rc = proc.returncode if proc.returncode is not None else -1
        if check:
            assert rc == 0, f"kubectl {' '.join(args)} failed ({rc}): {err.decode()}"
        return rc, out.decode(), err.decode()

    def manifest(self, name: str, text: str) -> str:
        path = self.cwd / name
        path.write_text(text)
        return str(path)


async def _make_certificate(openssl: str, directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "tls.crt", directory / "tls.key"
    proc = await asyncio.create_subprocess_exec(
        openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=fleetops-test",
        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return cert, key


@pytest.fixture
async def kubectl(tmp_path: Path) -> AsyncIterator[Kubectl]:
    binary = _require("kubectl")
    openssl = _require("openssl")
    cert, key = await _make_certificate(openssl, tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    store = open_store(str(tmp_path / "cloud.db"))
    await store.start()
    server = ApiServer(build_app(store, tokens={TOKEN: "admin"}), ssl_context=ctx)
    await server.start()
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, server.url, TOKEN, certificate_authority=str(cert))
    assert load_kubeconfig(kubeconfig).token == TOKEN
    # HOME keeps kubectl's discovery cache inside tmp_path, so no test sees another's cache.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "KUBECONFIG": str(kubeconfig)}
    try:
        yield Kubectl(binary, env, tmp_path, store)
    finally:
        await server.stop()
        await store.close()


def _node(name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/agent": ""},
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}],
            "nodeInfo": {"kubeletVersion": "v1.32.0-fleetops", "osImage": "Debian GNU/Linux 12"},
        },
    }


def _table(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


async def test_get_nodes_and_pods_show_the_columns(kubectl: Kubectl) -> None:
    await kubectl.store.create(NODES, _node("edge-1"))
    _, out, _ = await kubectl.run("get", "nodes")
    rows = _table(out)
    assert rows[0] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert rows[1][:3] == ["edge-1", "Ready", "agent,edge"] and rows[1][4] == "v1.32.0-fleetops"
    _, out, _ = await kubectl.run("get", "nodes", "-o", "wide")
    assert "INTERNAL-IP" in out and "10.0.0.5" in out
    _, out, _ = await kubectl.run("get", "nodes", "--show-labels")
    assert "node-role.kubernetes.io/edge=" in out

    await kubectl.run("run", "p1", "--image=busybox:1.36", "--overrides", '{"spec":{"nodeName":"edge-1"}}')
    _, out, _ = await kubectl.run("get", "pods", "-o", "wide")
    rows = _table(out)
    assert rows[0][:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert rows[1][:3] == ["p1", "0/1", "Pending"] and "edge-1" in rows[1]


async def test_apply_twice_then_unchanged_scale_patch_delete(kubectl: Kubectl) -> None:
    path = kubectl.manifest("web.yaml", DEPLOYMENT.replace("IMAGE", "python:3.11"))
    _, out, _ = await kubectl.run("apply", "-f", path)
    assert out.strip() == "deployment.apps/web created"
    kubectl.manifest("web.yaml", DEPLOYMENT.replace("IMAGE", "python:3.12"))
    _, out, _ = await kubectl.run("apply", "-f", path)  # a strategic merge patch
    assert out.strip() == "deployment.apps/web configured"
    _, out, _ = await kubectl.run("apply", "-f", path)
    assert out.strip() == "deployment.apps/web unchanged"
    _, out, _ = await kubectl.run(
        "get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"
    )
    assert out == "python:3.12"

    _, out, _ = await kubectl.run("get", "deploy")
    rows = _table(out)
    assert rows[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert rows[1][:4] == ["web", "0/2", "0", "0"]
    _, out, _ = await kubectl.run("get", "deploy", "-o", "wide")
    assert _table(out)[1][5:] == ["web", "python:3.12", "app=web"]

    _, out, _ = await kubectl.run("scale", "deployment/web", "--replicas=5")
    assert "scaled" in out
    await kubectl.run("patch", "deployment", "web", "--type", "merge", "-p", '{"spec":{"replicas":3}}')
    _, out, _ = await kubectl.run("get", "deploy", "web", "-o", "jsonpath={.spec.replicas}")
    assert out == "3"
    patch = '[{"op":"replace","path":"/spec/replicas","value":1}]'
    await kubectl.run("patch", "deployment", "web", "--type", "json", "-p", patch)
    _, out, _ = await kubectl.run("get", "deploy", "web", "-o", "jsonpath={.spec.replicas}")
    assert out == "1"

    _, out, _ = await kubectl.run("delete", "-f", path)
    assert out.strip() == 'deployment.apps "web" deleted'
    rc, _, err = await kubectl.run("get", "deploy", "web", check=False)
    assert rc != 0 and "NotFound" in err


async def test_invalid_manifest_names_the_field(kubectl: Kubectl) -> None:
    bad = DEPLOYMENT.replace("IMAGE", "python:3.12").replace("replicas: 2", "replicas: -1")
    path = kubectl.manifest("bad.yaml", bad)
    rc, _, err = await kubectl.run("apply", "-f", path, check=False)
    assert rc != 0
    assert 'The Deployment "web" is invalid: spec.replicas: Invalid value: -1: must be >= 0' in err


async def test_get_pods_watch_sees_a_change(kubectl: Kubectl) -> None:
    await kubectl.run("run", "w1", "--image=busybox:1.36")
    proc = await asyncio.create_subprocess_exec(
        kubectl.binary, "get", "pods", "-w", env=kubectl.env, cwd=kubectl.cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        header = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert header.split()[:3] == [b"NAME", b"READY", b"STATUS"]
        first = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert first.split()[:3] == [b"w1", b"0/1", b"Pending"]
        await kubectl.run("patch", "pod", "w1", "--subresource=status", "--type", "merge", "-p",
                          '{"status":{"phase":"Running"}}')  # fmt: skip
        changed = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert changed.split()[:3] == [b"w1", b"0/1", b"Running"]
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.communicate()

"""kubectl's typed ``create`` subcommands POST protobuf bodies: against a real cloud they must just work.

A real cloud process (``app.launcher.LocalCluster``) and the real kubectl binary; what was created is read
back with ``kubectl get -o json``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.launcher import LocalCluster

pytestmark = pytest.mark.kubectl


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubectl is required in CI but is not on PATH")
        pytest.skip("kubectl is not on PATH")
    return path


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    c = LocalCluster(tmp_path)
    try:
        await c.start_cloud()
        yield c
    finally:
        await c.stop()


async def kubectl(binary: str, c: LocalCluster, *args: str) -> str:
    env = {**os.environ, "KUBECONFIG": str(c.kubeconfig), "HOME": str(c.root)}
    proc = await asyncio.create_subprocess_exec(
        binary, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, f"kubectl {' '.join(args)} failed ({proc.returncode}): {err.decode()}"
    return out.decode()


async def get_json(binary: str, c: LocalCluster, *args: str) -> Any:
    return json.loads(await kubectl(binary, c, "get", *args, "-o", "json"))


async def test_kubectl_create_subcommands_send_protobuf(cluster: LocalCluster) -> None:
    k = _kubectl()

    await kubectl(k, cluster, "create", "namespace", "team-a")
    ns = await get_json(k, cluster, "namespace", "team-a")
    assert ns["kind"] == "Namespace"
    assert ns["metadata"]["name"] == "team-a"
    assert ns["metadata"]["creationTimestamp"]  # set by the server, not the empty Time kubectl sent

    await kubectl(
        k, cluster, "-n", "team-a", "create", "configmap", "cfg", "--from-literal=a=b", "--from-literal=c="
    )
    cm = await get_json(k, cluster, "-n", "team-a", "configmap", "cfg")
    assert cm["data"] == {"a": "b", "c": ""}
    assert cm["metadata"]["namespace"] == "team-a"

    await kubectl(
        k, cluster, "-n", "team-a", "create", "secret", "generic", "creds", "--from-literal=password=s3cr3t"
    )
    secret = await get_json(k, cluster, "-n", "team-a", "secret", "creds")
    assert secret["type"] == "Opaque"
    assert secret["data"] == {"password": base64.b64encode(b"s3cr3t").decode()}

    await kubectl(
        k, cluster, "-n", "team-a", "create", "deployment", "web", "--image=nginx:1.27", "--replicas=2"
    )
    dep = await get_json(k, cluster, "-n", "team-a", "deployment", "web")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    template = dep["spec"]["template"]
    assert template["metadata"]["labels"] == {"app": "web"}
    assert [(c["name"], c["image"]) for c in template["spec"]["containers"]] == [("nginx", "nginx:1.27")]


async def test_malformed_protobuf_body_is_a_400_status(cluster: LocalCluster) -> None:
    assert cluster._ssl is not None
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            cluster.api + "/api/v1/namespaces",
            data=b"k8s\x00\x12\x05ab",
            headers={
                "Authorization": f"Bearer {cluster.token}",
                "Content-Type": "application/vnd.kubernetes.protobuf",
            },
            ssl=cluster._ssl,
        ) as resp,
    ):
        status = await resp.json(content_type=None)
    assert resp.status == 400
    assert status["kind"] == "Status"
    assert status["reason"] == "BadRequest"
    assert "not valid Kubernetes protobuf" in status["message"]
    assert "field 2 claims 5 bytes" in status["message"]

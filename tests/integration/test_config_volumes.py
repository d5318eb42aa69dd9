"""ConfigMaps, Secrets and volumes, end to end on each side of the seam.

Edge: Edged with real processes reads ConfigMaps/Secrets through a ``ConfigSource`` (the seam the edge
service implements over its cache; here a dict), puts them in the environment and in volumes, and shows
the volumes at their mountPaths in a private mount namespace when the tests run as root.
Cloud: the real kubectl creates, applies and lists ConfigMaps and Secrets against the API.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgeservice.edged import Edged, ProcessRuntime
from tests.integration.test_edged_runtime import (
    Sink,
    alive,
    container,
    cstatus,
    pid_of,
    pod,
    poll,
    running,
)
from tests.integration.test_kubectl import Kubectl, kubectl  # noqa: F401 - the fixture

JSONObject = dict[str, Any]
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")


class Configs:
    """The ConfigSource seam: what the edge cache would hold, per (namespace, name)."""

    def __init__(self) -> None:
        self.configmaps: dict[tuple[str, str], JSONObject] = {}
        self.secrets: dict[tuple[str, str], JSONObject] = {}

    def configmap(self, namespace: str, name: str) -> JSONObject | None:
        return self.configmaps.get((namespace, name))

    def secret(self, namespace: str, name: str) -> JSONObject | None:
        return self.secrets.get((namespace, name))

    def put_configmap(self, name: str, data: dict[str, str], namespace: str = "default") -> None:
        self.configmaps[namespace, name] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": data,
        }

    def put_secret(self, name: str, data: dict[str, str], namespace: str = "default") -> None:
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        self.secrets[namespace, name] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque",
            "data": encoded,
        }


@pytest.fixture
def configs() -> Configs:
    return Configs()


@pytest.fixture
async def edged(tmp_path: Path, sink: Sink, configs: Configs) -> AsyncIterator[Edged]:
    e = Edged(tmp_path / "edged", "edge-1", sink, backoff_base=0.05, backoff_max=0.4, config=configs)
    await e.start()
    try:
        yield e
    finally:
        await e.stop_all_pods()
        await e.stop()


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def mount_root() -> Path:
    """A mountPath parent that does not exist on the host (and must not, after the test)."""
    root = Path("/tmp") / f"fleetops-mnt-{uuid.uuid4().hex[:12]}"
    assert not root.exists()
    return root


def log_text(e: Edged, uid: str, name: str = "c") -> str:
    path = e.log_path(uid, name)
    return path.read_text() if path is not None and path.exists() else ""


def waiting(status: JSONObject, name: str = "c") -> JSONObject:
    return dict(cstatus(status, name).get("state", {}).get("waiting", {}))


def condition(status: JSONObject, kind: str) -> JSONObject:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


# -- environment --------------------------------------------------------------------------------------------


async def test_env_from_configmap_secret_and_env_from_with_prefix(
    edged: Edged, sink: Sink, configs: Configs
) -> None:
    configs.put_configmap("app", {"mode": "fast", "level": "3"})
    configs.put_secret("creds", {"password": "s3cr3t"})
    script = 'echo "MODE=$MODE PASS=$PASS CFG_level=$CFG_level CFG_mode=$CFG_mode OVR=$CFG_level-$LIT"'
    c = container(
        "c",
        "sh",
        "-c",
        script + "; exec sleep 300",
        envFrom=[{"configMapRef": {"name": "app"}, "prefix": "CFG_"}],
        env=[
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "mode"}}},
            {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {"name": "LIT", "value": "$(CFG_mode)"},
            {
                "name": "GONE",
                "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "x", "optional": True}},
            },
        ],
    )
    edged.upsert(pod("e1", c))
    await sink.wait_status("e1", running)
    await poll(lambda: "MODE=" in log_text(edged, "e1"))
    assert "MODE=fast PASS=s3cr3t CFG_level=3 CFG_mode=fast OVR=3-fast" in log_text(edged, "e1")
    spec_json = edged.root / "pods" / "e1" / "c" / "spec.json"
    assert spec_json.stat().st_mode & 0o777 == 0o600  # it holds the secret's value


async def test_missing_configmap_waits_then_starts_when_it_arrives(
    edged: Edged, sink: Sink, configs: Configs
) -> None:
    c = container(
        "c",
        "sh",
        "-c",
        'echo "got $V"; exec sleep 300',
        env=[{"name": "V", "valueFrom": {"configMapKeyRef": {"name": "late", "key": "v"}}}],
    )
    edged.upsert(pod("e2", c))
    status = await sink.wait_status("e2", lambda s: bool(waiting(s)))
    assert waiting(status) == {
        "reason": "CreateContainerConfigError",
        "message": 'configmap "late" not found',
    }
    assert status["phase"] == "Pending"

    configs.put_configmap("late", {"other": "x"})
    edged.config_changed("default", "ConfigMap", "late")
    status = await sink.wait_status("e2", lambda s: "couldn't find key" in waiting(s).get("message", ""))
    assert waiting(status)["message"] == "couldn't find key v in ConfigMap default/late"

    configs.put_configmap("late", {"v": "here"})
    edged.config_changed("default", "ConfigMap", "late")
    await sink.wait_status("e2", running)
    await poll(lambda: "got here" in log_text(edged, "e2"))


async def test_missing_secret_volume_waits_naming_it(edged: Edged, sink: Sink, mount_root: Path) -> None:
    c = container(
        "c",
        "sleep",
        "300",
        volumeMounts=[{"name": "tls", "mountPath": str(mount_root / "tls")}],
    )
    edged.upsert(pod("e3", c, volumes=[{"name": "tls", "secret": {"secretName": "certs"}}]))
    status = await sink.wait_status("e3", lambda s: bool(waiting(s)))
    assert waiting(status)["reason"] == "CreateContainerConfigError"
    assert waiting(status)["message"] == "volume 'tls': secret \"certs\" not found"


# -- volumes in a mount namespace ----------------------------------------------------------------------------


@as_root
async def test_configmap_volume_at_its_mount_path_updates_in_place(
    edged: Edged, sink: Sink, configs: Configs, mount_root: Path
) -> None:
    configs.put_configmap("web", {"index.html": "v1", "mode": "a"})
    target = mount_root / "config"
    script = (
        f'cat {target}/index.html; echo; echo "env=$MODE"; '
        f"touch {target}/new 2>/dev/null && echo writable || echo read-only; "
        f'while [ "$(cat {target}/index.html)" != v2 ]; do sleep 0.05; done; echo updated; exec sleep 300'
    )
    c = container(
        "c",
        "sh",
        "-c",
        script,
        env=[{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "web", "key": "mode"}}}],
        volumeMounts=[{"name": "web", "mountPath": str(target), "readOnly": True}],
    )
    edged.upsert(pod("v1", c, volumes=[{"name": "web", "configMap": {"name": "web"}}]))
    status = await sink.wait_status("v1", running)
    assert condition(status, "VolumesHonoured")["status"] == "True"
    await poll(lambda: "read-only" in log_text(edged, "v1"))
    lines = [line.split(" ", 3)[3] for line in log_text(edged, "v1").splitlines()]
    assert lines[:3] == ["v1", "env=a", "read-only"]
    # The mountPath exists in the container's namespace only.
    assert not mount_root.exists()
    volume = edged.root / "pods" / "v1" / "volumes" / "web"
    assert (volume / "index.html").read_text() == "v1"
    assert (volume / "..data").is_symlink()

    pid = pid_of(status)
    configs.put_configmap("web", {"index.html": "v2", "mode": "b"})
    edged.config_changed("default", "ConfigMap", "web")
    await poll(lambda: "updated" in log_text(edged, "v1"))
    # The environment does not follow the ConfigMap: no restart, as in Kubernetes.
    assert pid_of(sink.latest("v1")) == pid and alive(pid)
    assert cstatus(sink.latest("v1"))["restartCount"] == 0
    assert sorted(p.name for p in volume.iterdir() if not p.name.startswith("..")) == ["index.html", "mode"]
    assert len([p for p in volume.iterdir() if p.name.startswith("..") and p.is_dir()]) == 2  # ..data + 1


@as_root
async def test_secret_volume_items_modes_and_directory(
    edged: Edged, sink: Sink, configs: Configs, mount_root: Path
) -> None:
    configs.put_secret("db", {"password": "pw", "user": "admin"})
    target = mount_root / "secret"
    c = container(
        "c",
        "sh",
        "-c",
        f'echo "$(stat -c %a {target}/creds/pass) $(cat {target}/creds/pass) $(ls {target})"; exec sleep 300',
        volumeMounts=[{"name": "db", "mountPath": str(target)}],
    )
    volumes = [
        {
            "name": "db",
            "secret": {
                "secretName": "db",
                "defaultMode": 0o400,
                "items": [{"key": "password", "path": "creds/pass"}],
            },
        }
    ]
    edged.upsert(pod("v2", c, volumes=volumes))
    await sink.wait_status("v2", running)
    await poll(lambda: " pw " in log_text(edged, "v2"))
    assert log_text(edged, "v2").splitlines()[0].endswith("400 pw creds")
    volume = edged.root / "pods" / "v2" / "volumes" / "db"
    assert volume.stat().st_mode & 0o777 == 0o700
    assert not (volume / "user").exists()
    assert not mount_root.exists()


@as_root
async def test_empty_dir_shared_and_host_path_checked(
    edged: Edged, sink: Sink, tmp_path: Path, mount_root: Path
) -> None:
    host = tmp_path / "host-data"
    shared = str(mount_root / "shared")
    writer = container(
        "w",
        "sh",
        "-c",
        f"echo hi > {shared}/msg; exec sleep 300",
        volumeMounts=[{"name": "s", "mountPath": shared}],
    )
    reader = container(
        "r",
        "sh",
        "-c",
        f"while [ ! -f {shared}/msg ]; do sleep 0.05; done; cat {shared}/msg > /data/seen; exec sleep 300",
        volumeMounts=[{"name": "s", "mountPath": shared}, {"name": "h", "mountPath": "/data"}],
    )
    volumes = [
        {"name": "s", "emptyDir": {}},
        {"name": "h", "hostPath": {"path": str(host), "type": "DirectoryOrCreate"}},
    ]
    edged.upsert(pod("v3", writer, reader, volumes=volumes))
    await sink.wait_status("v3", lambda s: running(s, "w") and running(s, "r"))
    await poll(lambda: (host / "seen").exists() and (host / "seen").read_text() == "hi\n")
    assert (edged.root / "pods" / "v3" / "volumes" / "s" / "msg").read_text() == "hi\n"
    assert not mount_root.exists()

    missing = tmp_path / "not-there"
    c = container("c", "sleep", "300", volumeMounts=[{"name": "h", "mountPath": "/data"}])
    edged.upsert(
        pod("v4", c, volumes=[{"name": "h", "hostPath": {"path": str(missing), "type": "Directory"}}])
    )
    status = await sink.wait_status("v4", lambda s: bool(waiting(s)))
    assert waiting(status) == {
        "reason": "CreateContainerConfigError",
        "message": f"volume 'h': hostPath type check failed: {missing} does not exist",
    }


async def test_without_mount_namespaces_the_pod_says_so(
    tmp_path: Path, sink: Sink, configs: Configs, mount_root: Path
) -> None:
    configs.put_configmap("web", {"index.html": "v1"})
    runtime = ProcessRuntime(mount_namespaces=False)
    e = Edged(tmp_path / "edged", "edge-1", sink, runtime=runtime, config=configs)
    await e.start()
    try:
        target = str(mount_root / "config")
        c = container(
            "c",
            "sh",
            "-c",
            'echo "from env: $(cat "$FLEETOPS_VOLUME_WEB_FILES/index.html")"; exec sleep 300',
            volumeMounts=[{"name": "web-files", "mountPath": target}],
        )
        e.upsert(pod("f1", c, volumes=[{"name": "web-files", "configMap": {"name": "web"}}]))
        status = await sink.wait_status("f1", lambda s: running(s) and bool(condition(s, "VolumesHonoured")))
        cond = condition(status, "VolumesHonoured")
        assert (cond["status"], cond["reason"]) == ("False", "MountNamespaceUnavailable")
        assert "container c: mount namespaces are disabled" in cond["message"]
        assert f"{target} (web-files)" in cond["message"]
        await poll(lambda: "from env:" in log_text(e, "f1"))
        assert "from env: v1" in log_text(e, "f1")
        assert not mount_root.exists()
    finally:
        await e.stop_all_pods()
        await e.stop()


# -- the cloud side, with the real kubectl ------------------------------------------------------------------


SECRET_MANIFEST = """\
apiVersion: v1
kind: Secret
metadata:
  name: api-key
stringData:
  token: hunter2-very-secret
"""


@pytest.mark.kubectl
async def test_kubectl_configmaps_and_secrets(kubectl: Kubectl, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    caplog.set_level(logging.DEBUG)
    # `kubectl create configmap|secret` send protobuf, which the API does not read (yet); the generators
    # with --dry-run=client, applied, are the same objects.
    for generator in (
        ["configmap", "app", "--from-literal=mode=fast", "--from-literal=level=3"],
        ["secret", "generic", "db", "--from-literal=password=pw-value-123"],
    ):
        _, out, _ = await kubectl.run("create", *generator, "--dry-run=client", "-o", "yaml")
        await kubectl.run("apply", "-f", kubectl.manifest("generated.yaml", out))
    await kubectl.run("apply", "-f", kubectl.manifest("secret.yaml", SECRET_MANIFEST))
    _, out, _ = await kubectl.run("get", "cm,secret")
    rows = [line.split() for line in out.splitlines() if line.strip()]
    assert ["NAME", "DATA", "AGE"] in rows
    assert ["NAME", "TYPE", "DATA", "AGE"] in rows
    assert rows[rows.index(["NAME", "DATA", "AGE"]) + 1][:2] == ["configmap/app", "2"]
    assert ["secret/api-key", "Opaque", "1"] in [r[:3] for r in rows]
    assert ["secret/db", "Opaque", "1"] in [r[:3] for r in rows]

    _, out, _ = await kubectl.run("get", "secret", "api-key", "-o", "jsonpath={.data.token}")
    assert base64.b64decode(out).decode() == "hunter2-very-secret"
    _, out, _ = await kubectl.run("get", "secret", "api-key", "-o", "json")
    assert "stringData" not in json.loads(out)  # merged into data on write
    # Re-applying the same manifest is a no-op; changing it updates data.
    await kubectl.run("apply", "-f", kubectl.manifest("secret.yaml", SECRET_MANIFEST))

    rc, _, err = await kubectl.run(
        "apply",
        "-f",
        kubectl.manifest(
            "bad.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad}\ndata: {'a b': x}\n"
        ),
        check=False,
    )
    assert rc != 0
    assert "data[a b]" in err and "valid config key" in err

    immutable = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: frozen}\nimmutable: true\ndata: {k: first}\n"
    )
    await kubectl.run("apply", "-f", kubectl.manifest("frozen.yaml", immutable))
    rc, _, err = await kubectl.run(
        "apply", "-f", kubectl.manifest("frozen.yaml", immutable.replace("first", "second")), check=False
    )
    assert rc != 0
    assert "field is immutable when `immutable` is set" in err

    # Our own log lines (a library's DEBUG output of SQL parameters is not ours to police here).
    ours = [r for r in caplog.records if r.name.split(".")[0] in ("app", "cloudservice", "edgeservice")]
    assert any("created Secret" in r.getMessage() for r in ours)
    everything = "\n".join(r.getMessage() for r in ours)
    for value in ("hunter2-very-secret", "pw-value-123"):
        assert value not in everything
        assert base64.b64encode(value.encode()).decode() not in everything

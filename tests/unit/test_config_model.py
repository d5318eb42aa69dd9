"""ConfigMaps, Secrets and volumes as pure functions: the pod model, the API strategy and tables, and the
edge's env resolution and atomic volume writer."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

from app.errors import ValidationError
from app.model import (
    ConfigKeyRef,
    ConfigVolumeSource,
    Container,
    EmptyDirSource,
    EnvFromSource,
    EnvVar,
    HostPathSource,
    KeyToPath,
    VolumeMount,
    config_key_problem,
    container_hash,
    parse_pod_spec,
)
from app.resources import CONFIGMAPS, SECRETS, by_plural
from cloudservice.api import strategy, tables
from cloudservice.api.status import ApiError
from edgeservice.edged.reconcile import ContainerView, container_status
from edgeservice.edged.volumes import (
    ConfigMissing,
    VolumeError,
    check_host_path,
    resolve_env,
    write_projection,
)

JSONObject = dict[str, Any]


def _spec(volumes: list[Any] | None = None, **container: Any) -> JSONObject:
    spec: JSONObject = {"containers": [{"name": "c", "image": "x", "command": ["true"], **container}]}
    if volumes is not None:
        spec["volumes"] = volumes
    return spec


CM_VOLUME = {"name": "cfg", "configMap": {"name": "app"}}

# -- the pod model -------------------------------------------------------------------------------------------

BAD: list[tuple[str, JSONObject, str, str]] = [
    (
        "configMapKeyRef without key",
        _spec(env=[{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "app"}}}]),
        "spec.containers[0].env[0].valueFrom.configMapKeyRef.key",
        "required",
    ),
    (
        "configMapKeyRef bad key",
        _spec(env=[{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "a b"}}}]),
        "spec.containers[0].env[0].valueFrom.configMapKeyRef.key",
        "not a valid config key",
    ),
    (
        "secretKeyRef bad name",
        _spec(env=[{"name": "A", "valueFrom": {"secretKeyRef": {"name": "Bad_Name", "key": "k"}}}]),
        "spec.containers[0].env[0].valueFrom.secretKeyRef.name",
        "DNS-1123 subdomain",
    ),
    (
        "secretKeyRef optional not a bool",
        _spec(
            env=[{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": "yes"}}}]
        ),
        "spec.containers[0].env[0].valueFrom.secretKeyRef.optional",
        "boolean",
    ),
    (
        "two sources",
        _spec(
            env=[
                {
                    "name": "A",
                    "valueFrom": {
                        "secretKeyRef": {"name": "s", "key": "k"},
                        "configMapKeyRef": {"name": "c", "key": "k"},
                    },
                }
            ]
        ),
        "spec.containers[0].env[0].valueFrom",
        "more than one",
    ),
    (
        "unsupported source",
        _spec(env=[{"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}]),
        "spec.containers[0].env[0].valueFrom",
        "resourceFieldRef is not supported",
    ),
    (
        "envFrom without a ref",
        _spec(envFrom=[{"prefix": "X_"}]),
        "spec.containers[0].envFrom[0]",
        "configMapRef",
    ),
    (
        "envFrom with both refs",
        _spec(envFrom=[{"configMapRef": {"name": "a"}, "secretRef": {"name": "b"}}]),
        "spec.containers[0].envFrom[0]",
        "more than one",
    ),
    (
        "envFrom bad prefix",
        _spec(envFrom=[{"configMapRef": {"name": "a"}, "prefix": "1 2"}]),
        "spec.containers[0].envFrom[0].prefix",
        "not a valid environment variable name",
    ),
    (
        "envFrom without name",
        _spec(envFrom=[{"secretRef": {}}]),
        "spec.containers[0].envFrom[0].secretRef.name",
        "required",
    ),
    ("volume without name", _spec([{"emptyDir": {}}]), "spec.volumes[0].name", "required"),
    (
        "duplicate volume names",
        _spec([{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]),
        "spec.volumes[1].name",
        "duplicate volume name",
    ),
    ("volume without a type", _spec([{"name": "v"}]), "spec.volumes[0]", "must specify a volume type"),
    (
        "volume with two types",
        _spec([{"name": "v", "emptyDir": {}, "hostPath": {"path": "/x"}}]),
        "spec.volumes[0].hostPath",
        "more than 1 volume type",
    ),
    (
        "unsupported volume type",
        _spec([{"name": "v", "persistentVolumeClaim": {"claimName": "c"}}]),
        "spec.volumes[0].persistentVolumeClaim",
        "not supported by the edge runtime",
    ),
    (
        "emptyDir medium",
        _spec([{"name": "v", "emptyDir": {"medium": "HugePages"}}]),
        "spec.volumes[0].emptyDir.medium",
        "unsupported value",
    ),
    (
        "hostPath relative",
        _spec([{"name": "v", "hostPath": {"path": "data"}}]),
        "spec.volumes[0].hostPath.path",
        "absolute",
    ),
    (
        "hostPath dot-dot",
        _spec([{"name": "v", "hostPath": {"path": "/data/../etc"}}]),
        "spec.volumes[0].hostPath.path",
        "'..'",
    ),
    (
        "hostPath type",
        _spec([{"name": "v", "hostPath": {"path": "/d", "type": "Folder"}}]),
        "spec.volumes[0].hostPath.type",
        "unsupported value",
    ),
    (
        "configMap without name",
        _spec([{"name": "v", "configMap": {}}]),
        "spec.volumes[0].configMap.name",
        "required",
    ),
    (
        "secret uses secretName",
        _spec([{"name": "v", "secret": {"name": "s"}}]),
        "spec.volumes[0].secret.secretName",
        "required",
    ),
    (
        "defaultMode too big",
        _spec([{"name": "v", "secret": {"secretName": "s", "defaultMode": 0o1777}}]),
        "spec.volumes[0].secret.defaultMode",
        "0777",
    ),
    (
        "item mode negative",
        _spec([{"name": "v", "configMap": {"name": "c", "items": [{"key": "k", "path": "p", "mode": -1}]}}]),
        "spec.volumes[0].configMap.items[0].mode",
        "greater than or equal to 0",
    ),
    (
        "item absolute path",
        _spec([{"name": "v", "configMap": {"name": "c", "items": [{"key": "k", "path": "/etc/p"}]}}]),
        "spec.volumes[0].configMap.items[0].path",
        "relative",
    ),
    (
        "item path escapes",
        _spec([{"name": "v", "configMap": {"name": "c", "items": [{"key": "k", "path": "a/../../p"}]}}]),
        "spec.volumes[0].configMap.items[0].path",
        "'..'",
    ),
    (
        "item path starts with ..",
        _spec([{"name": "v", "configMap": {"name": "c", "items": [{"key": "k", "path": "..data"}]}}]),
        "spec.volumes[0].configMap.items[0].path",
        "must not start with '..'",
    ),
    (
        "item duplicate path",
        _spec(
            [
                {
                    "name": "v",
                    "configMap": {
                        "name": "c",
                        "items": [{"key": "a", "path": "p"}, {"key": "b", "path": "p"}],
                    },
                }
            ]
        ),
        "spec.volumes[0].configMap.items[1].path",
        "duplicate path",
    ),
    (
        "item bad key",
        _spec([{"name": "v", "configMap": {"name": "c", "items": [{"key": "..k", "path": "p"}]}}]),
        "spec.volumes[0].configMap.items[0].key",
        "must not start with '..'",
    ),
    (
        "mount of an unknown volume",
        _spec([CM_VOLUME], volumeMounts=[{"name": "nope", "mountPath": "/etc/x"}]),
        "spec.containers[0].volumeMounts[0].name",
        "not found in spec.volumes",
    ),
    (
        "relative mountPath",
        _spec([CM_VOLUME], volumeMounts=[{"name": "cfg", "mountPath": "etc/x"}]),
        "spec.containers[0].volumeMounts[0].mountPath",
        "absolute",
    ),
    (
        "mountPath missing",
        _spec([CM_VOLUME], volumeMounts=[{"name": "cfg"}]),
        "spec.containers[0].volumeMounts[0].mountPath",
        "required",
    ),
    (
        "mountPath is /",
        _spec([CM_VOLUME], volumeMounts=[{"name": "cfg", "mountPath": "/"}]),
        "spec.containers[0].volumeMounts[0].mountPath",
        "may not be '/'",
    ),
    (
        "duplicate mountPath",
        _spec(
            [CM_VOLUME],
            volumeMounts=[{"name": "cfg", "mountPath": "/etc/x"}, {"name": "cfg", "mountPath": "/etc/x/"}],
        ),
        "spec.containers[0].volumeMounts[1].mountPath",
        "must be unique",
    ),
    (
        "subPath escapes",
        _spec([CM_VOLUME], volumeMounts=[{"name": "cfg", "mountPath": "/x", "subPath": "../y"}]),
        "spec.containers[0].volumeMounts[0].subPath",
        "'..'",
    ),
    (
        "readOnly not a bool",
        _spec([CM_VOLUME], volumeMounts=[{"name": "cfg", "mountPath": "/x", "readOnly": "true"}]),
        "spec.containers[0].volumeMounts[0].readOnly",
        "boolean",
    ),
    (
        "mount propagation",
        _spec(
            [CM_VOLUME],
            volumeMounts=[{"name": "cfg", "mountPath": "/x", "mountPropagation": "Bidirectional"}],
        ),
        "spec.containers[0].volumeMounts[0].mountPropagation",
        "only 'None'",
    ),
    ("volumes not a list", _spec({"name": "v"}), "spec.volumes", "must be a list"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("spec", "field", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_specs_name_their_field(spec: JSONObject, field: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_pod_spec(spec)
    assert info.value.field == field
    assert message in info.value.message


def test_a_full_spec_parses() -> None:
    spec = parse_pod_spec(
        _spec(
            [
                {
                    "name": "cfg",
                    "configMap": {
                        "name": "app",
                        "items": [{"key": "a.conf", "path": "conf/a", "mode": 0o600}],
                    },
                },
                {"name": "tls", "secret": {"secretName": "certs", "defaultMode": 0o400, "optional": True}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "dev", "hostPath": {"path": "/dev/ttyUSB0", "type": "CharDevice"}},
            ],
            env=[
                {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "a"}}},
                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw", "optional": True}}},
            ],
            envFrom=[{"configMapRef": {"name": "app"}, "prefix": "APP_"}, {"secretRef": {"name": "db"}}],
            volumeMounts=[
                {"name": "cfg", "mountPath": "/etc/app/"},
                {"name": "tls", "mountPath": "/tls", "readOnly": True, "subPath": "certs/x"},
            ],
        )
    )
    c = spec.containers[0]
    assert c.env == (
        EnvVar("A", config_ref=ConfigKeyRef("ConfigMap", "app", "a")),
        EnvVar("B", config_ref=ConfigKeyRef("Secret", "db", "pw", optional=True)),
    )
    assert c.env_from == (EnvFromSource("ConfigMap", "app", "APP_"), EnvFromSource("Secret", "db"))
    assert c.volume_mounts == (
        VolumeMount("cfg", "/etc/app"),
        VolumeMount("tls", "/tls", read_only=True, sub_path="certs/x"),
    )
    assert [v.source for v in spec.volumes] == [
        ConfigVolumeSource("ConfigMap", "app", (KeyToPath("a.conf", "conf/a", 0o600),)),
        ConfigVolumeSource("Secret", "certs", default_mode=0o400, optional=True),
        EmptyDirSource(),
        HostPathSource("/dev/ttyUSB0", "CharDevice"),
    ]
    assert spec.config_refs() == {("ConfigMap", "app"), ("Secret", "db"), ("Secret", "certs")}


def test_hash_is_unchanged_for_containers_without_the_new_fields() -> None:
    # The value before ConfigMap/Secret support existed: running workloads are not restarted on upgrade.
    plain = Container("c", "x", command=("sleep", "1"), env=(EnvVar("A", "1"),))
    assert container_hash(plain) == "7276dd18d2641a39"
    with_ref = Container(
        "c", "x", command=("sleep", "1"), env=(EnvVar("A", config_ref=ConfigKeyRef("ConfigMap", "m", "k")),)
    )
    with_mount = Container(
        "c", "x", command=("sleep", "1"), env=plain.env, volume_mounts=(VolumeMount("v", "/v"),)
    )
    assert len({container_hash(plain), container_hash(with_ref), container_hash(with_mount)}) == 3


@pytest.mark.parametrize(
    ("key", "ok"),
    [("a", True), ("a.b-c_D9", True), (".hidden", True), ("", False), (".", False), ("..", False),
     ("..data", False), ("a b", False), ("a/b", False), ("k" * 253, True), ("k" * 254, False)],
)  # fmt: skip
def test_config_keys(key: str, ok: bool) -> None:
    assert (config_key_problem(key) is None) is ok


# -- the API strategy and tables -----------------------------------------------------------------------------


def _cm(data: Any = None, **extra: Any) -> JSONObject:
    obj: JSONObject = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "app", "namespace": "default"},
    }
    if data is not None:
        obj["data"] = data
    return {**obj, **extra}


def _secret(**extra: Any) -> JSONObject:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"}, **extra}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _causes(rt: Any, obj: JSONObject, old: JSONObject | None = None) -> list[tuple[str, str]]:
    strategy.prepare_create(rt, obj) if old is None else strategy.prepare_update(rt, obj, old)
    try:
        strategy.validate(rt, obj, old)
    except ApiError as exc:
        return [(c.field, c.message) for c in exc.details.causes]
    return []


def test_kinds_are_served() -> None:
    assert by_plural("", "configmaps") is CONFIGMAPS and CONFIGMAPS.short_names == ("cm",)
    assert by_plural("", "secrets") is SECRETS


BAD_CONFIG: list[tuple[str, Any, JSONObject, str, str]] = [
    ("configmap key", CONFIGMAPS, _cm({"a b": "x"}), "data[a b]", "not a valid config key"),
    ("configmap value", CONFIGMAPS, _cm({"a": 1}), "data[a]", "must be a string"),
    ("configmap data not a map", CONFIGMAPS, _cm(["a"]), "data", "map of string keys"),
    ("binaryData base64", CONFIGMAPS, _cm(binaryData={"b": "%%%"}), "binaryData[b]", "illegal base64"),
    ("key in both maps", CONFIGMAPS, _cm({"k": "x"}, binaryData={"k": _b64("y")}), "data[k]", "duplicate"),
    ("too big", CONFIGMAPS, _cm({"k": "x" * (1024 * 1024 + 1)}), "", "at most 1048576 bytes"),
    ("immutable not a bool", CONFIGMAPS, _cm({}, immutable="yes"), "immutable", "must be a boolean"),
    ("secret base64", SECRETS, _secret(data={"k": "not base64!"}), "data[k]", "illegal base64"),
    ("secret key", SECRETS, _secret(data={"..k": _b64("x")}), "data[..k]", "must not start with '..'"),
    ("stringData value", SECRETS, _secret(stringData={"k": 5}), "stringData[k]", "must be a string"),
    ("tls keys", SECRETS, _secret(type="kubernetes.io/tls", data={"tls.crt": _b64("c")}),
     "data[tls.key]", "Required"),
    ("basic-auth", SECRETS, _secret(type="kubernetes.io/basic-auth", data={}),
     "data", "username or password"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rt", "obj", "field", "message"), [b[1:] for b in BAD_CONFIG], ids=[b[0] for b in BAD_CONFIG]
)
def test_bad_configmaps_and_secrets(rt: Any, obj: JSONObject, field: str, message: str) -> None:
    causes = _causes(rt, obj)
    assert any(f == field and message in m for f, m in causes), causes


def test_secret_values_never_appear_in_messages() -> None:
    causes = _causes(SECRETS, _secret(data={"k": "hunter2!"}, stringData={"j": ["hunter3"]}))
    assert causes
    assert not any("hunter" in m for _, m in causes)


def test_secret_defaults_and_string_data_merge() -> None:
    obj = _secret(data={"a": _b64("old"), "b": _b64("keep")}, stringData={"a": "new", "c": "ü"})
    assert _causes(SECRETS, obj) == []
    assert obj["type"] == "Opaque"
    assert "stringData" not in obj
    assert {k: base64.b64decode(v).decode() for k, v in obj["data"].items()} == {
        "a": "new",
        "b": "keep",
        "c": "ü",
    }


def test_immutable_objects_and_secret_type() -> None:
    old = _cm({"k": "v"}, immutable=True)
    assert _causes(CONFIGMAPS, _cm({"k": "v"}, immutable=True), old) == []
    assert [f for f, _ in _causes(CONFIGMAPS, _cm({"k": "w"}, immutable=True), old)] == ["data"]
    assert [f for f, _ in _causes(CONFIGMAPS, _cm({"k": "v"}, immutable=False), old)] == ["immutable"]
    assert _causes(CONFIGMAPS, _cm({"k": "w"}), _cm({"k": "v"})) == []  # mutable: fine
    old_secret = _secret(type="Opaque", data={})
    assert [f for f, _ in _causes(SECRETS, _secret(type="example.com/x", data={}), old_secret)] == ["type"]


def test_pod_volume_defaults() -> None:
    pod: JSONObject = {
        "metadata": {"name": "p"},
        "spec": _spec([CM_VOLUME, {"name": "h", "hostPath": {"path": "/d"}}]),
    }
    strategy.default_pod_spec(pod["spec"])
    assert pod["spec"]["volumes"][0]["configMap"]["defaultMode"] == 0o644
    assert pod["spec"]["volumes"][1]["hostPath"]["type"] == ""


def test_tables() -> None:
    cm = _cm({"a": "1", "b": "2"}, binaryData={"c": _b64("3")})
    table = tables.to_table(CONFIGMAPS, [cm])
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert table["rows"][0]["cells"][:2] == ["app", 3]
    table = tables.to_table(SECRETS, [_secret(type="kubernetes.io/tls", data={"tls.crt": "", "tls.key": ""})])
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Type", "Data", "Age"]
    assert table["rows"][0]["cells"][:3] == ["s", "kubernetes.io/tls", 2]


# -- the edge: env resolution, container status, volume files ------------------------------------------------


class Source:
    def __init__(self, configmaps: dict[str, JSONObject], secrets: dict[str, JSONObject]) -> None:
        self.configmaps, self.secrets = configmaps, secrets

    def configmap(self, namespace: str, name: str) -> JSONObject | None:
        return self.configmaps.get(f"{namespace}/{name}")

    def secret(self, namespace: str, name: str) -> JSONObject | None:
        return self.secrets.get(f"{namespace}/{name}")


SOURCE = Source(
    {
        "ns/app": {
            "metadata": {"name": "app"},
            "data": {"mode": "fast", "bad key": "x"},
            "binaryData": {"bin": _b64("b")},
        }
    },
    {"ns/db": {"metadata": {"name": "db"}, "data": {"pw": _b64("s3cr3t")}}},
)

REF = ConfigKeyRef
RESOLVE: list[tuple[str, Container, dict[str, str] | str, dict[str, str]]] = [
    ("key refs", Container("c", "x", env=(EnvVar("M", config_ref=REF("ConfigMap", "app", "mode")),
                                          EnvVar("P", config_ref=REF("Secret", "db", "pw")))),
     {}, {"M": "fast", "P": "s3cr3t"}),
    ("envFrom skips invalid names", Container("c", "x", env_from=(EnvFromSource("ConfigMap", "app", "X_"),)),
     {"X_bin": "b", "X_mode": "fast"}, {}),
    ("optional missing object",
     Container("c", "x", env=(EnvVar("M", config_ref=REF("ConfigMap", "no", "k", True)),),
               env_from=(EnvFromSource("Secret", "no", optional=True),)),
     {}, {}),
    ("optional missing key",
     Container("c", "x", env=(EnvVar("M", config_ref=REF("Secret", "db", "no", True)),)),
     {}, {}),
    ("missing object", Container("c", "x", env=(EnvVar("M", config_ref=REF("ConfigMap", "no", "k")),)),
     'configmap "no" not found', {}),
    ("missing envFrom", Container("c", "x", env_from=(EnvFromSource("Secret", "no"),)),
     'secret "no" not found', {}),
    ("missing key", Container("c", "x", env=(EnvVar("M", config_ref=REF("Secret", "db", "user")),)),
     "couldn't find key user in Secret ns/db", {}),
]  # fmt: skip


@pytest.mark.parametrize(("c", "env_from", "values"), [r[1:] for r in RESOLVE], ids=[r[0] for r in RESOLVE])
def test_resolve_env(c: Container, env_from: dict[str, str] | str, values: dict[str, str]) -> None:
    if isinstance(env_from, str):
        with pytest.raises(ConfigMissing) as info:
            resolve_env(c, "ns", SOURCE)
        assert info.value.message == env_from
        return
    resolved = resolve_env(c, "ns", SOURCE)
    assert (resolved.env_from, resolved.values) == (env_from, values)


def test_a_restart_blocked_by_missing_config_says_so() -> None:
    from edgeservice.edged.reconcile import ExitInfo

    view = ContainerView(
        "c", phase="exited", last_exit=ExitInfo(1, "Error", 0, 1), config_error='secret "s" not found'
    )
    status = container_status(Container("c", "x"), view, policy="Always", pod_ref="p", now=10.0)
    assert status["state"] == {
        "waiting": {"reason": "CreateContainerConfigError", "message": 'secret "s" not found'}
    }


def test_write_projection_swaps_atomically(tmp_path: Path) -> None:
    d = tmp_path / "vol"
    assert write_projection(d, {"a": (b"1", 0o644), "sub/b": (b"2", 0o400)}, dir_mode=0o700)
    assert (d / "a").read_bytes() == b"1" and (d / "sub" / "b").read_bytes() == b"2"
    assert os.readlink(d / "a") == "..data/a" and (d / "..data").is_symlink()
    assert (d / "sub" / "b").stat().st_mode & 0o777 == 0o400
    assert d.stat().st_mode & 0o777 == 0o700
    first = os.readlink(d / "..data")
    assert not write_projection(d, {"a": (b"1", 0o644), "sub/b": (b"2", 0o400)}, dir_mode=0o700)
    assert os.readlink(d / "..data") == first  # unchanged: nothing rewritten
    assert write_projection(d, {"c": (b"3", 0o644)}, dir_mode=0o700)
    assert sorted(p.name for p in d.iterdir()) == sorted(["..data", os.readlink(d / "..data"), "c"])
    assert (d / "c").read_bytes() == b"3"


def test_host_path_types(tmp_path: Path) -> None:
    made = tmp_path / "made" / "deep"
    assert check_host_path(str(made), "DirectoryOrCreate") == made and made.is_dir()
    f = tmp_path / "f"
    check_host_path(str(f), "FileOrCreate")
    assert f.is_file()
    check_host_path(str(f), "File")
    for path, typ, message in [
        (f, "Directory", "is not a directory"),
        (made, "File", "is not a file"),
        (f, "Socket", "is not a socket file"),
        (tmp_path / "none", "Directory", "does not exist"),
        (tmp_path / "no" / "file", "FileOrCreate", "parent directory"),
    ]:
        with pytest.raises(VolumeError) as info:
            check_host_path(str(path), typ)
        assert message in info.value.message

"""The Kubernetes protobuf body decoder: bodies built with a tiny test-only encoder decode to the JSON kubectl
would have sent, and malformed bodies fail with a typed error that says what is wrong."""

from __future__ import annotations

import base64

import pytest

from cloudservice.api import kprotobuf
from cloudservice.api.kprotobuf import (
    MAGIC,
    ROOTS,
    SCHEMA,
    ProtobufDecodeError,
    UnsupportedKind,
    decode_k8s_protobuf,
)

# -- a minimal protobuf encoder (test-only) ---------------------------------------------------------------


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negatives as 64-bit two's complement, as Go encodes int32/int64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def tag(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def f_int(number: int, value: int) -> bytes:
    return tag(number, 0) + varint(value)


def f_bytes(number: int, value: bytes) -> bytes:
    return tag(number, 2) + varint(len(value)) + value


def f_str(number: int, value: str) -> bytes:
    return f_bytes(number, value.encode())


def f_msg(number: int, *parts: bytes) -> bytes:
    return f_bytes(number, b"".join(parts))


def f_map(number: int, entries: dict[str, bytes]) -> bytes:
    return b"".join(f_msg(number, f_str(1, k), f_bytes(2, v)) for k, v in entries.items())


def envelope(api_version: str, kind: str, raw: bytes, **extra: str) -> bytes:
    unknown = f_msg(1, f_str(1, api_version), f_str(2, kind)) + f_bytes(2, raw)
    if "encoding" in extra:
        unknown += f_str(3, extra["encoding"])
    unknown += f_str(4, extra.get("content_type", "application/vnd.kubernetes.protobuf"))
    return MAGIC + unknown


EMPTY_TIME = f_msg(8)  # metadata.creationTimestamp as kubectl sends it: a present but zero Time


def meta(name: str, *more: bytes) -> bytes:
    return f_msg(1, f_str(1, name), EMPTY_TIME, *more)


# -- decoding ---------------------------------------------------------------------------------------------


def test_namespace() -> None:
    body = envelope("v1", "Namespace", meta("team-a") + f_msg(2) + f_msg(3))
    assert decode_k8s_protobuf(body) == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "team-a"},
        "spec": {},
    }


def test_configmap_keeps_data_and_binary_data() -> None:
    raw = (
        meta("cfg", f_str(3, "default"), f_map(11, {"app": b"web"}))
        + f_map(2, {"a": b"b", "empty": b""})
        + f_map(3, {"blob": b"\x00\xff"})
        + f_int(4, 1)
    )
    assert decode_k8s_protobuf(envelope("v1", "ConfigMap", raw)) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": "default", "labels": {"app": "web"}},
        "data": {"a": "b", "empty": ""},
        "binaryData": {"blob": base64.b64encode(b"\x00\xff").decode()},
        "immutable": True,
    }


def test_secret_data_is_base64_in_json() -> None:
    raw = meta("s") + f_map(2, {"password": b"hunter2"}) + f_str(3, "Opaque") + f_map(4, {"user": b"bob"})
    assert decode_k8s_protobuf(envelope("v1", "Secret", raw)) == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "data": {"password": base64.b64encode(b"hunter2").decode()},
        "type": "Opaque",
        "stringData": {"user": "bob"},
    }


def test_deployment_as_kubectl_create_deployment_builds_it() -> None:
    labels = f_map(11, {"app": b"web"})
    probe = f_msg(1, f_msg(2, f_str(1, "/healthz"), f_msg(2, f_int(1, 0), f_int(2, 8080)))) + f_int(3, 2)
    container = (
        f_str(1, "nginx")
        + f_str(2, "nginx:1.27")
        + f_str(3, "python")
        + f_str(3, "-m")
        + f_msg(6, f_str(1, "http"), f_int(3, 80), f_str(4, "TCP"))
        + f_msg(7, f_str(1, "MODE"), f_str(2, "prod"))
        + f_msg(7, f_str(1, "PASS"), f_msg(3, f_msg(4, f_msg(1, f_str(1, "s")), f_str(2, "password"))))
        + f_msg(7, f_str(1, "POD"), f_msg(3, f_msg(1, f_str(2, "metadata.name"))))
        + f_msg(8, f_map(1, {"cpu": f_str(1, "500m")}), f_map(2, {"memory": f_str(1, "64Mi")}))
        + f_msg(9, f_str(1, "cfg"), f_int(2, 1), f_str(3, "/etc/cfg"))
        + f_msg(11, probe)
        + f_str(14, "IfNotPresent")
        + f_int(18, 0)
    )
    pod_spec = (
        f_msg(1, f_str(1, "cfg"), f_msg(2, f_msg(19, f_msg(1, f_str(1, "cfg")), f_int(3, 420))))
        + f_msg(1, f_str(1, "scratch"), f_msg(2, f_msg(2)))
        + f_msg(1, f_str(1, "host"), f_msg(2, f_msg(1, f_str(1, "/var/log"), f_str(2, ""))))
        + f_msg(1, f_str(1, "sec"), f_msg(2, f_msg(6, f_str(1, "s"))))
        + f_msg(2, container)
        + f_str(3, "Always")
        + f_int(4, 30)
        + f_str(6, "ClusterFirst")
        + f_map(7, {"zone": b"a"})
        + f_str(19, "default-scheduler")
        + f_msg(20, f_str(1, "init"), f_str(2, "busybox"))
    )
    in_tier = f_msg(2, f_str(1, "tier"), f_str(2, "In"), f_str(3, "web"), f_str(3, "api"))
    spec = (
        f_int(1, 2)
        + f_msg(2, f_map(1, {"app": b"web"}), in_tier)
        + f_msg(3, f_msg(1, EMPTY_TIME, labels), f_msg(2, pod_spec))
        + f_msg(
            4,
            f_str(1, "RollingUpdate"),
            f_msg(2, f_msg(1, f_int(1, 1), f_str(3, "25%")), f_msg(2, f_int(2, 1))),
        )
        + f_int(5, 0)
        + f_int(6, 10)
        + f_int(7, 0)
        + f_int(9, 600)
    )
    got = decode_k8s_protobuf(envelope("apps/v1", "Deployment", meta("web", labels) + f_msg(2, spec)))
    assert got == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]}],
            },
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "volumes": [
                        {"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420}},
                        {"name": "scratch", "emptyDir": {}},
                        {"name": "host", "hostPath": {"path": "/var/log", "type": ""}},
                        {"name": "sec", "secret": {"secretName": "s"}},
                    ],
                    "containers": [
                        {
                            "name": "nginx",
                            "image": "nginx:1.27",
                            "command": ["python", "-m"],
                            "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                            "env": [
                                {"name": "MODE", "value": "prod"},
                                {
                                    "name": "PASS",
                                    "valueFrom": {"secretKeyRef": {"name": "s", "key": "password"}},
                                },
                                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            ],
                            "resources": {"limits": {"cpu": "500m"}, "requests": {"memory": "64Mi"}},
                            "volumeMounts": [{"name": "cfg", "readOnly": True, "mountPath": "/etc/cfg"}],
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": 8080},
                                "timeoutSeconds": 2,
                            },
                            "imagePullPolicy": "IfNotPresent",
                        }
                    ],
                    "restartPolicy": "Always",
                    "terminationGracePeriodSeconds": 30,
                    "dnsPolicy": "ClusterFirst",
                    "nodeSelector": {"zone": "a"},
                    "schedulerName": "default-scheduler",
                    "initContainers": [{"name": "init", "image": "busybox"}],
                },
            },
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1}},
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
    }


@pytest.mark.parametrize(
    ("time_fields", "expected"),
    [
        (b"", None),
        (f_int(1, 0) + f_int(2, 0), None),
        (f_int(1, 1_700_000_000), "2023-11-14T22:13:20Z"),
        (f_int(1, 1_700_000_000) + f_int(2, 5), "2023-11-14T22:13:20Z"),
    ],
)
def test_time_is_rfc3339_and_zero_is_omitted(time_fields: bytes, expected: str | None) -> None:
    got = decode_k8s_protobuf(envelope("v1", "Namespace", f_msg(1, f_str(1, "n"), f_msg(8, time_fields))))
    assert got["metadata"].get("creationTimestamp") == expected
    assert ("creationTimestamp" in got["metadata"]) is (expected is not None)


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        (f_int(1, -1), -1),  # negative int32 travels as a 10-byte varint
        (f_int(1, 0), 0),  # replicas is a Go *int32: an explicit zero is kept
        (f_int(1, 3), 3),
    ],
)
def test_ints_signed_and_explicit_zero_kept(field: bytes, expected: int) -> None:
    got = decode_k8s_protobuf(envelope("apps/v1", "Deployment", f_msg(2, field)))
    assert got["spec"] == {"replicas": expected}


def test_zero_value_fields_are_dropped_but_pointer_zeros_kept() -> None:
    # kubectl (gogo-protobuf) writes every Go value field, zero or not; JSON would have omitted them.
    pod = f_msg(2, f_str(1, "c"), f_str(5, ""), f_int(16, 0)) + f_str(3, "") + f_int(4, 0) + f_str(6, "")
    spec = f_msg(3, f_msg(2, pod)) + f_msg(4, f_str(1, "")) + f_int(5, 0) + f_int(6, 0) + f_int(7, 0)
    strategy_ints = f_msg(4, f_msg(2, f_msg(1, f_int(1, 0), f_int(2, 0))))
    got = decode_k8s_protobuf(envelope("apps/v1", "Deployment", f_msg(2, spec + strategy_ints)))
    assert got["spec"] == {
        "template": {"spec": {"containers": [{"name": "c"}], "terminationGracePeriodSeconds": 0}},
        "strategy": {"rollingUpdate": {"maxUnavailable": 0}},
        "revisionHistoryLimit": 0,
    }


def test_unknown_fields_are_skipped_of_every_wire_type() -> None:
    unknown = f_int(99, 7) + tag(98, 1) + b"\x01" * 8 + tag(97, 5) + b"\x02" * 4 + f_str(96, "x")
    raw = f_msg(1, f_str(1, "n"), unknown, f_msg(17, f_str(1, "kubectl"))) + unknown
    assert decode_k8s_protobuf(envelope("v1", "Namespace", raw)) == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "n"},
    }


def test_every_schema_reference_resolves_and_kinds_are_known() -> None:
    scalar = {"string", "int", "bool", "bytes", "quantity", "time", "intorstring"}
    maps = {"map:string", "map:bytes", "map:quantity"}
    for name, fields in SCHEMA.items():
        for number, field in fields.items():
            assert number > 0
            if field.kind.startswith(("message:", "inline:")):
                assert field.kind.split(":", 1)[1] in SCHEMA, f"{name}.{field.json}"
                assert field.kind.startswith("message:") or field.json == "", (
                    f"{name}: inline fields have no name"
                )
            else:
                assert field.kind in scalar | maps, f"{name}.{field.json}: {field.kind}"
    assert set(ROOTS.values()) <= set(SCHEMA)


# -- malformed bodies -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"kind": "Namespace"}', "missing the Kubernetes protobuf prefix"),
        (b"k8s", "missing the Kubernetes protobuf prefix"),
        (MAGIC + b"\x08", "truncated varint"),
        (MAGIC + b"\x12\x80", "truncated varint"),
        (MAGIC + b"\x08" + b"\xff" * 11, "varint longer than 10 bytes"),
        (MAGIC + f_bytes(2, b"abc")[:-1], "field 2 claims 3 bytes but only 2 remain"),
        (MAGIC + tag(5, 1) + b"\x00" * 3, "truncated 64-bit field 5"),
        (MAGIC + tag(5, 5) + b"\x00", "truncated 32-bit field 5"),
        (MAGIC + tag(5, 3), "unsupported wire type 3"),
        (MAGIC + b"\x00", "field number 0 is invalid"),
        (envelope("v1", "Namespace", f_msg(1, f_int(1, 5))), "field 1 has wire type 0, expected 2"),
        (envelope("v1", "Namespace", f_msg(1, f_bytes(1, b"\xff\xfe"))), "not valid UTF-8"),
        (
            envelope("v1", "Namespace", f_msg(1, f_msg(11, f_str(1, "k") + f_bytes(2, b"\x01\x02")[:-1]))),
            "claims",
        ),
        (envelope("v1", "Namespace", b"", encoding="gzip"), "content encoding 'gzip' is not supported"),
        (envelope("v1", "Namespace", b"", content_type="application/json"), "is not protobuf"),
    ],
)
def test_malformed_bodies_raise_a_clear_typed_error(body: bytes, reason: str) -> None:
    with pytest.raises(ProtobufDecodeError) as info:
        decode_k8s_protobuf(body)
    assert reason in str(info.value)


def test_error_names_the_field_path() -> None:
    bad_replicas = f_msg(2, f_str(1, "x"))  # replicas as a string: wrong wire type
    with pytest.raises(ProtobufDecodeError) as info:
        decode_k8s_protobuf(envelope("apps/v1", "Deployment", bad_replicas))
    assert info.value.path == "spec.replicas"
    assert "wire type 2, expected 0" in info.value.reason


def test_unsupported_kind_is_named() -> None:
    with pytest.raises(UnsupportedKind) as info:
        decode_k8s_protobuf(envelope("v1", "Pod", b""))
    assert (info.value.api_version, info.value.kind) == ("v1", "Pod")
    assert "v1/Pod" in str(info.value)


def test_nesting_limit_is_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    # No Kubernetes message here is recursive, so a tiny limit stands in for a hostile, deeply nested body.
    monkeypatch.setattr(kprotobuf, "_MAX_DEPTH", 0)
    with pytest.raises(ProtobufDecodeError, match="too deep"):
        decode_k8s_protobuf(envelope("v1", "Namespace", meta("n")))

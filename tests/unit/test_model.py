"""Pod spec validation: every bad input names its exact field; good input parses with Kubernetes' defaults."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from app.errors import ValidationError
from app.model import ExecAction, HTTPGetAction, TCPSocketAction, container_hash, parse_pod_spec


def _spec(**container: Any) -> dict[str, Any]:
    c = {"name": "web", "image": "nginx", "command": ["sleep", "1"]}
    c.update(container)
    return {"containers": [c]}


BAD: list[tuple[str, Any, str, str]] = [
    ("spec not an object", [], "spec", "must be an object"),
    ("no containers", {"containers": []}, "spec.containers", "required"),
    ("containers not a list", {"containers": {}}, "spec.containers", "must be a list"),
    ("container not an object", {"containers": ["x"]}, "spec.containers[0]", "must be an object"),
    ("missing name", {"containers": [{"image": "x"}]}, "spec.containers[0].name", "required"),
    ("name wrong type", {"containers": [{"name": 3, "image": "x"}]}, "spec.containers[0].name", "string"),
    (
        "name upper case",
        {"containers": [{"name": "Web", "image": "x"}]},
        "spec.containers[0].name",
        "DNS-1123",
    ),
    ("name too long", {"containers": [{"name": "a" * 64, "image": "x"}]}, "spec.containers[0].name", "63"),
    ("missing image", {"containers": [{"name": "a"}]}, "spec.containers[0].image", "required"),
    (
        "duplicate names",
        {"containers": [{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]},
        "spec.containers[1].name",
        "duplicate",
    ),
    (
        "duplicate across init and app",
        {"initContainers": [{"name": "a", "image": "x"}], "containers": [{"name": "a", "image": "y"}]},
        "spec.containers[0].name",
        "duplicate",
    ),
    ("bad restartPolicy", {**_spec(), "restartPolicy": "Sometimes"}, "spec.restartPolicy", "unsupported"),
    (
        "negative grace",
        {**_spec(), "terminationGracePeriodSeconds": -1},
        "spec.terminationGracePeriodSeconds",
        "greater than or equal to 0",
    ),
    (
        "grace as bool",
        {**_spec(), "terminationGracePeriodSeconds": True},
        "spec.terminationGracePeriodSeconds",
        "integer",
    ),
    ("command not a list", _spec(command="sleep 1"), "spec.containers[0].command", "must be a list"),
    ("arg not a string", _spec(args=["a", 1]), "spec.containers[0].args[1]", "string"),
    ("env without name", _spec(env=[{"value": "x"}]), "spec.containers[0].env[0].name", "required"),
    (
        "env unknown fieldPath",
        _spec(env=[{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.hostname"}}}]),
        "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath",
        "unsupported",
    ),
    (
        "env secretKeyRef without a name",
        _spec(env=[{"name": "X", "valueFrom": {"secretKeyRef": {}}}]),
        "spec.containers[0].env[0].valueFrom.secretKeyRef.name",
        "required",
    ),
    (
        "port out of range",
        _spec(ports=[{"containerPort": 70000}]),
        "spec.containers[0].ports[0].containerPort",
        "65535",
    ),
    (
        "port missing",
        _spec(ports=[{"name": "http"}]),
        "spec.containers[0].ports[0].containerPort",
        "required",
    ),
    (
        "probe without handler",
        _spec(livenessProbe={"periodSeconds": 5}),
        "spec.containers[0].livenessProbe",
        "handler",
    ),
    (
        "probe with two handlers",
        _spec(readinessProbe={"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}}),
        "spec.containers[0].readinessProbe",
        "more than 1",
    ),
    (
        "negative initialDelaySeconds",
        _spec(livenessProbe={"exec": {"command": ["true"]}, "initialDelaySeconds": -5}),
        "spec.containers[0].livenessProbe.initialDelaySeconds",
        "greater than or equal to 0",
    ),
    (
        "zero periodSeconds",
        _spec(livenessProbe={"exec": {"command": ["true"]}, "periodSeconds": 0}),
        "spec.containers[0].livenessProbe.periodSeconds",
        "greater than or equal to 1",
    ),
    (
        "liveness successThreshold must be 1",
        _spec(livenessProbe={"exec": {"command": ["true"]}, "successThreshold": 2}),
        "spec.containers[0].livenessProbe.successThreshold",
        "must be 1",
    ),
    (
        "unknown named port",
        _spec(readinessProbe={"httpGet": {"port": "http"}}),
        "spec.containers[0].readinessProbe.httpGet.port",
        "named port",
    ),
    (
        "bad scheme",
        _spec(readinessProbe={"httpGet": {"port": 80, "scheme": "FTP"}}),
        "spec.containers[0].readinessProbe.httpGet.scheme",
        "unsupported",
    ),
    (
        "init container probe",
        {
            "initContainers": [{"name": "i", "image": "x", "livenessProbe": {"exec": {"command": ["true"]}}}],
            **_spec(),
        },
        "spec.initContainers[0].livenessProbe",
        "init containers",
    ),
    ("nodeSelector value", {**_spec(), "nodeSelector": {"zone": 1}}, "spec.nodeSelector.zone", "string"),
]


@pytest.mark.parametrize(("spec", "field", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_specs_name_their_field(spec: Any, field: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_pod_spec(spec)
    assert info.value.field == field
    assert message in info.value.message


def test_field_prefix_is_the_callers() -> None:
    with pytest.raises(ValidationError) as info:
        parse_pod_spec({"containers": [{"name": "a"}]}, field="spec.template.spec")
    assert info.value.field == "spec.template.spec.containers[0].image"


def test_full_spec_parses_with_defaults() -> None:
    spec = parse_pod_spec(
        {
            "nodeName": "edge-1",
            "nodeSelector": {"zone": "a"},
            "restartPolicy": "OnFailure",
            "initContainers": [{"name": "init", "image": "busybox", "command": ["true"]}],
            "containers": [
                {
                    "name": "web",
                    "image": "python:3",
                    "command": ["python", "-m", "http.server"],
                    "args": ["8080"],
                    "workingDir": "/srv",
                    "env": [
                        {"name": "A", "value": "1"},
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    ],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "livenessProbe": {"httpGet": {"port": "http", "path": "healthz"}},
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2},
                    "startupProbe": {"exec": {"command": ["true"]}, "failureThreshold": 30},
                }
            ],
        }
    )
    assert spec.restart_policy == "OnFailure"
    assert spec.termination_grace_period_seconds == 30
    assert spec.node_name == "edge-1"
    assert dict(spec.node_selector) == {"zone": "a"}
    assert [c.name for c in spec.init_containers] == ["init"]
    web = spec.containers[0]
    assert web.args == ("8080",)
    assert web.env[1].field_ref == "metadata.name"
    assert web.liveness_probe is not None
    assert web.liveness_probe.handler == HTTPGetAction(port=8080, path="/healthz")
    assert (web.liveness_probe.period_seconds, web.liveness_probe.timeout_seconds) == (10, 1)
    assert (web.liveness_probe.success_threshold, web.liveness_probe.failure_threshold) == (1, 3)
    assert web.readiness_probe is not None
    assert web.readiness_probe.handler == TCPSocketAction(port=8080)
    assert web.startup_probe is not None
    assert web.startup_probe.handler == ExecAction(("true",))
    assert spec.container("init") is spec.init_containers[0]


def test_container_hash_tracks_what_needs_a_restart() -> None:
    base: dict[str, Any] = _spec(readinessProbe={"tcpSocket": {"port": 80}})
    h = container_hash(parse_pod_spec(base).containers[0])
    assert h == container_hash(parse_pod_spec(copy.deepcopy(base)).containers[0])
    probe_only = copy.deepcopy(base)
    probe_only["containers"][0]["readinessProbe"]["periodSeconds"] = 3
    assert container_hash(parse_pod_spec(probe_only).containers[0]) == h
    for key, value in [("args", ["x"]), ("image", "other"), ("env", [{"name": "A", "value": "b"}])]:
        changed = copy.deepcopy(base)
        changed["containers"][0][key] = value
        assert container_hash(parse_pod_spec(changed).containers[0]) != h, key

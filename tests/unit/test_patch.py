"""The three PATCH flavours kubectl sends: RFC 7386, RFC 6902 and Kubernetes' strategic merge patch."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from app.errors import ValidationError
from app.patch import PatchError, json_merge_patch, json_patch, strategic_merge_patch
from app.resources import JSONObject

# --------------------------------------------------------------------------------------------------
# RFC 7386, appendix A: every example, in order.

RFC7386_EXAMPLES: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "expected"), RFC7386_EXAMPLES)
def test_json_merge_patch_rfc7386_examples(target: Any, patch: Any, expected: Any) -> None:
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)
    assert json_merge_patch(target, patch) == expected
    assert (target, patch) == (target_before, patch_before)


def test_json_merge_patch_result_shares_nothing_with_its_inputs() -> None:
    target = {"keep": {"deep": [1]}}
    patch = {"new": {"list": [1, 2]}}
    result = json_merge_patch(target, patch)
    result["keep"]["deep"].append(2)
    result["new"]["list"].append(3)
    assert target == {"keep": {"deep": [1]}}
    assert patch == {"new": {"list": [1, 2]}}


# --------------------------------------------------------------------------------------------------
# RFC 6902, appendix A (A.13, duplicate "op" members, cannot exist once the JSON is parsed).

RFC6902_EXAMPLES: list[tuple[str, JSONObject, list[Any], JSONObject]] = [
    ("A.1 add object member", {"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}],
     {"baz": "qux", "foo": "bar"}),
    ("A.2 add array element", {"foo": ["bar", "baz"]}, [{"op": "add", "path": "/foo/1", "value": "qux"}],
     {"foo": ["bar", "qux", "baz"]}),
    ("A.3 remove object member", {"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}],
     {"foo": "bar"}),
    ("A.4 remove array element", {"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}],
     {"foo": ["bar", "baz"]}),
    ("A.5 replace", {"baz": "qux", "foo": "bar"}, [{"op": "replace", "path": "/baz", "value": "boo"}],
     {"baz": "boo", "foo": "bar"}),
    ("A.6 move value", {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
     [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
     {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}),
    ("A.7 move array element", {"foo": ["all", "grass", "cows", "eat"]},
     [{"op": "move", "from": "/foo/1", "path": "/foo/3"}], {"foo": ["all", "cows", "eat", "grass"]}),
    ("A.8 test success", {"baz": "qux", "foo": ["a", 2, "c"]},
     [{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}],
     {"baz": "qux", "foo": ["a", 2, "c"]}),
    ("A.10 add nested member object", {"foo": "bar"},
     [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
     {"foo": "bar", "child": {"grandchild": {}}}),
    ("A.11 ignore unrecognized members", {"foo": "bar"},
     [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}], {"foo": "bar", "baz": "qux"}),
    ("A.14 ~ escape ordering", {"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10}],
     {"/": 9, "~1": 10}),
    ("A.16 add array value", {"foo": ["bar"]}, [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
     {"foo": ["bar", ["abc", "def"]]}),
    # Beyond the appendix: what kubectl users write.
    ("~1 names a key with a slash", {"metadata": {"labels": {}}},
     [{"op": "add", "path": "/metadata/labels/app.kubernetes.io~1name", "value": "web"}],
     {"metadata": {"labels": {"app.kubernetes.io/name": "web"}}}),
    ("copy then replace the copy", {"a": {"x": 1}},
     [{"op": "copy", "from": "/a", "path": "/b"}, {"op": "replace", "path": "/b/x", "value": 2}],
     {"a": {"x": 1}, "b": {"x": 2}}),
    ("1 equals 1.0", {"n": 1}, [{"op": "test", "path": "/n", "value": 1.0}], {"n": 1}),
    ("move onto itself", {"a": 1}, [{"op": "move", "from": "/a", "path": "/a"}], {"a": 1}),
    ("replace the whole document", {"a": 1}, [{"op": "replace", "path": "", "value": {"b": 2}}], {"b": 2}),
    ("scale a deployment", {"spec": {"replicas": 1}},
     [{"op": "test", "path": "/spec/replicas", "value": 1},
      {"op": "replace", "path": "/spec/replicas", "value": 3}],
     {"spec": {"replicas": 3}}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("target", "operations", "expected"),
    [case[1:] for case in RFC6902_EXAMPLES],
    ids=[case[0] for case in RFC6902_EXAMPLES],
)
def test_json_patch_examples(target: JSONObject, operations: list[Any], expected: JSONObject) -> None:
    target_before, operations_before = copy.deepcopy(target), copy.deepcopy(operations)
    assert json_patch(target, operations) == expected
    assert (target, operations) == (target_before, operations_before)


RFC6902_ERRORS: list[tuple[str, JSONObject, Any, str]] = [
    ("A.9 test failure", {"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}], "/baz"),
    ("A.12 add to a nonexistent target", {"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}],
     "/baz/bat"),
    ("A.15 a string is not a number", {"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": "10"}],
     "/~01"),
    ("true is not 1", {"n": 1}, [{"op": "test", "path": "/n", "value": True}], "/n"),
    ("remove a missing member", {"a": 1}, [{"op": "remove", "path": "/nope"}], "/nope"),
    ("replace a missing member", {"a": 1}, [{"op": "replace", "path": "/nope", "value": 2}], "/nope"),
    ("index past the end", {"foo": ["bar"]}, [{"op": "add", "path": "/foo/2", "value": 1}], "/foo/2"),
    ("index with a leading zero", {"foo": ["a", "b"]}, [{"op": "remove", "path": "/foo/01"}], "/foo/01"),
    ("- only appends", {"foo": ["a"]}, [{"op": "remove", "path": "/foo/-"}], "/foo/-"),
    ("bad ~ escape", {"a": 1}, [{"op": "remove", "path": "/a~2"}], "/a~2"),
    ("pointer without a leading slash", {"a": 1}, [{"op": "remove", "path": "a"}], "a"),
    ("index into a scalar", {"a": 1}, [{"op": "add", "path": "/a/b", "value": 1}], "/a/b"),
    ("move into its own child", {"a": {"b": 1}}, [{"op": "move", "from": "/a", "path": "/a/c"}], "/a/c"),
    ("move from a missing path", {"a": 1}, [{"op": "move", "from": "/x", "path": "/y"}], "/x"),
    ("remove the whole document", {"a": 1}, [{"op": "remove", "path": ""}], ""),
    ("unknown op", {"a": 1}, [{"op": "frobnicate", "path": "/a"}], "[0].op"),
    ("missing value", {"a": 1}, [{"op": "add", "path": "/b"}], "[0].value"),
    ("missing from", {"a": 1}, [{"op": "copy", "path": "/b"}], "[0].from"),
    ("missing path", {"a": 1}, [{"op": "remove"}], "[0].path"),
    ("operation not an object", {"a": 1}, ["remove /a"], "[0]"),
    ("second operation is malformed", {"a": 1}, [{"op": "remove", "path": "/a"}, {"path": "/b"}], "[1].op"),
    ("patch not an array", {"a": 1}, {"op": "remove", "path": "/a"}, ""),
    ("result not an object", {"a": 1}, [{"op": "replace", "path": "", "value": [1]}], ""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("target", "operations", "field"),
    [case[1:] for case in RFC6902_ERRORS],
    ids=[case[0] for case in RFC6902_ERRORS],
)
def test_json_patch_errors_name_the_pointer(target: JSONObject, operations: Any, field: str) -> None:
    target_before = copy.deepcopy(target)
    with pytest.raises(PatchError) as caught:
        json_patch(target, operations)
    assert caught.value.field == field
    assert target == target_before


def test_json_patch_is_all_or_nothing() -> None:
    target = {"spec": {"replicas": 1}}
    operations = [
        {"op": "replace", "path": "/spec/replicas", "value": 5},
        {"op": "test", "path": "/spec/paused", "value": True},
    ]
    with pytest.raises(PatchError, match="path not found"):
        json_patch(target, operations)
    assert target == {"spec": {"replicas": 1}}


def test_patch_error_is_a_validation_error_with_its_field() -> None:
    with pytest.raises(ValidationError) as caught:
        json_patch({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}])
    assert isinstance(caught.value, PatchError)
    assert str(caught.value).startswith("/baz: test failed")


# --------------------------------------------------------------------------------------------------
# Strategic merge patch


def deployment() -> JSONObject:
    """A stored Deployment, with the fields the server adds."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "resourceVersion": "7",
            "finalizers": ["a.example/one", "b.example/two"],
            "annotations": {"deployment.kubernetes.io/revision": "1"},
            "ownerReferences": [{"uid": "u1", "kind": "Fleet", "name": "f1"}],
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {"labels": {"app": "web", "tier": "front"}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "app:1",
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                            "terminationMessagePath": "/dev/termination-log",
                        },
                        {"name": "sidecar", "image": "proxy:1"},
                    ],
                    "tolerations": [{"key": "edge", "operator": "Exists"}],
                    "restartPolicy": "Always",
                },
            },
        },
        "status": {
            "replicas": 1,
            "conditions": [
                {"type": "Available", "status": "True"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ],
        },
    }


def pod() -> JSONObject:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "labels": {"app": "web", "tier": "front"}},
        "spec": {"nodeName": "edge-1", "containers": [{"name": "app", "image": "app:1"}]},
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
            ],
        },
    }


def node() -> JSONObject:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "edge-1"},
        "spec": {
            "podCIDRs": ["10.0.1.0/24"],
            "taints": [
                {"key": "edge", "effect": "NoSchedule"},
                {"key": "gpu", "effect": "NoSchedule"},
            ],
        },
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": "10.0.0.5"},
                {"type": "Hostname", "address": "edge-1"},
            ],
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}],
        },
    }


def widget() -> JSONObject:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "spec": {"items": [{"name": "a"}], "size": 1}}


def at(obj: Any, path: str) -> Any:
    """The value at a dotted path; ``MISSING`` when a key is absent."""
    for key in path.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return MISSING
        obj = obj[key]
    return obj


MISSING = "<missing>"
CONTAINERS = "spec.template.spec.containers"


def in_template_spec(spec: JSONObject) -> JSONObject:
    return {"spec": {"template": {"spec": spec}}}


def names(items: list[JSONObject], key: str = "name") -> list[Any]:
    return [item[key] for item in items]


# (id, original, patch, path to look at, expected value there)
STRATEGIC_CASES: list[tuple[str, JSONObject, JSONObject, str, Any]] = [
    (
        "change one container's image among two",
        deployment(),
        in_template_spec({"containers": [{"name": "sidecar", "image": "proxy:2"}]}),
        CONTAINERS,
        [deployment()["spec"]["template"]["spec"]["containers"][0], {"name": "sidecar", "image": "proxy:2"}],
    ),
    (
        "add an env var by name, ordered as kubectl sends it",
        deployment(),
        in_template_spec(
            {
                "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                "containers": [
                    {
                        "name": "app",
                        "$setElementOrder/env": [{"name": "A"}, {"name": "B"}, {"name": "C"}],
                        "env": [{"name": "C", "value": "3"}],
                    }
                ],
            }
        ),
        CONTAINERS + ".0.env",
        [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}],
    ),
    (
        "a new item without $setElementOrder goes first, as in Kubernetes",
        deployment(),
        in_template_spec({"containers": [{"name": "app", "env": [{"name": "C", "value": "3"}]}]}),
        CONTAINERS + ".0.env",
        [{"name": "C", "value": "3"}, {"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
    ),
    (
        "change an env var's value in place",
        deployment(),
        in_template_spec({"containers": [{"name": "app", "env": [{"name": "A", "value": "one"}]}]}),
        CONTAINERS + ".0.env",
        [{"name": "A", "value": "one"}, {"name": "B", "value": "2"}],
    ),
    (
        "remove an env var by name",
        deployment(),
        in_template_spec({"containers": [{"name": "app", "env": [{"name": "A", "$patch": "delete"}]}]}),
        CONTAINERS + ".0.env",
        [{"name": "B", "value": "2"}],
    ),
    (
        "null deletes an env var's value",
        deployment(),
        in_template_spec({"containers": [{"name": "app", "env": [{"name": "B", "value": None}]}]}),
        CONTAINERS + ".0.env",
        [{"name": "A", "value": "1"}, {"name": "B"}],
    ),
    (
        "ports merge by containerPort",
        deployment(),
        in_template_spec(
            {
                "containers": [
                    {
                        "name": "app",
                        "$setElementOrder/ports": [{"containerPort": 8080}, {"containerPort": 9090}],
                        "ports": [{"containerPort": 9090, "name": "metrics"}],
                    }
                ]
            }
        ),
        CONTAINERS + ".0.ports",
        [{"containerPort": 8080, "protocol": "TCP"}, {"containerPort": 9090, "name": "metrics"}],
    ),
    (
        "$setElementOrder/containers reorders",
        deployment(),
        in_template_spec({"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]}),
        CONTAINERS + ".names",
        ["sidecar", "app"],
    ),
    (
        "$patch: delete removes a list item",
        deployment(),
        in_template_spec({"containers": [{"name": "sidecar", "$patch": "delete"}]}),
        CONTAINERS + ".names",
        ["app"],
    ),
    (
        "$patch: replace on a list item replaces the list",
        deployment(),
        in_template_spec({"containers": [{"$patch": "replace"}, {"name": "only", "image": "only:1"}]}),
        CONTAINERS,
        [{"name": "only", "image": "only:1"}],
    ),
    (
        "$patch: replace on a map",
        deployment(),
        {"spec": {"template": {"metadata": {"labels": {"$patch": "replace", "app": "web2"}}}}},
        "spec.template.metadata.labels",
        {"app": "web2"},
    ),
    (
        "$patch: merge on a map is a plain merge",
        deployment(),
        {"spec": {"template": {"metadata": {"labels": {"$patch": "merge", "app": "web2"}}}}},
        "spec.template.metadata.labels",
        {"app": "web2", "tier": "front"},
    ),
    (
        "$patch: delete on a map empties it",
        deployment(),
        {"spec": {"template": {"metadata": {"labels": {"$patch": "delete"}}}}},
        "spec.template.metadata.labels",
        {},
    ),
    (
        "$deleteFromPrimitiveList/finalizers",
        deployment(),
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.example/one"]}},
        "metadata.finalizers",
        ["b.example/two"],
    ),
    (
        "finalizers merge as a set, ordered as kubectl sends it",
        deployment(),
        {
            "metadata": {
                "$setElementOrder/finalizers": ["a.example/one", "c.example/three", "b.example/two"],
                "finalizers": ["c.example/three"],
            }
        },
        "metadata.finalizers",
        ["a.example/one", "c.example/three", "b.example/two"],
    ),
    (
        "finalizers merge as a set; new ones go first without $setElementOrder",
        deployment(),
        {"metadata": {"finalizers": ["c.example/three", "a.example/one"]}},
        "metadata.finalizers",
        ["c.example/three", "a.example/one", "b.example/two"],
    ),
    (
        "ownerReferences merge by uid",
        deployment(),
        {"metadata": {"ownerReferences": [{"uid": "u1", "controller": True}]}},
        "metadata.ownerReferences",
        [{"uid": "u1", "kind": "Fleet", "name": "f1", "controller": True}],
    ),
    (
        "$retainKeys: RollingUpdate to Recreate drops rollingUpdate",
        deployment(),
        {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}},
        "spec.strategy",
        {"type": "Recreate"},
    ),
    (
        "without $retainKeys the strategy map merges",
        deployment(),
        {"spec": {"strategy": {"rollingUpdate": {"maxSurge": 1}}}},
        "spec.strategy",
        {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}},
    ),
    (
        "Deployment conditions merge by type",
        deployment(),
        {"status": {"conditions": [{"type": "Progressing", "status": "False", "reason": "Stalled"}]}},
        "status.conditions",
        [
            {"type": "Available", "status": "True"},
            {"type": "Progressing", "status": "False", "reason": "Stalled"},
        ],
    ),
    (
        "lists without a strategy are replaced: tolerations",
        deployment(),
        in_template_spec({"tolerations": [{"key": "gpu", "operator": "Exists"}]}),
        "spec.template.spec.tolerations",
        [{"key": "gpu", "operator": "Exists"}],
    ),
    (
        "null deletes a field",
        deployment(),
        in_template_spec({"tolerations": None}),
        "spec.template.spec.tolerations",
        MISSING,
    ),
    (
        "null for a missing field is ignored",
        deployment(),
        {"spec": {"paused": None}},
        "spec.paused",
        MISSING,
    ),
    (
        "Pod containers merge by name at spec.containers",
        pod(),
        {"spec": {"containers": [{"name": "app", "image": "app:2"}]}},
        "spec.containers",
        [{"name": "app", "image": "app:2"}],
    ),
    (
        "Pod conditions merge by type",
        pod(),
        {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": None}]}},
        "status.conditions",
        [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
    ),
    (
        "Node addresses merge by type",
        node(),
        {"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.6"}]}},
        "status.addresses",
        [{"type": "InternalIP", "address": "10.0.0.6"}, {"type": "Hostname", "address": "edge-1"}],
    ),
    (
        "Node conditions merge by type",
        node(),
        {"status": {"conditions": [{"type": "DiskPressure", "status": "True"}]}},
        "status.conditions",
        [{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "True"}],
    ),
    (
        # NodeSpec.Taints has no patchStrategy tag: `kubectl taint node edge-1 gpu-` sends the remaining list.
        "Node taints are replaced atomically",
        node(),
        {"spec": {"taints": [{"key": "edge", "effect": "NoSchedule"}]}},
        "spec.taints",
        [{"key": "edge", "effect": "NoSchedule"}],
    ),
    (
        "Node podCIDRs merge as a set",
        node(),
        {"spec": {"$setElementOrder/podCIDRs": ["10.0.1.0/24", "fd00::/64"], "podCIDRs": ["fd00::/64"]}},
        "spec.podCIDRs",
        ["10.0.1.0/24", "fd00::/64"],
    ),
    (
        "unknown kinds replace lists like a JSON merge patch",
        widget(),
        {"spec": {"items": [{"name": "b"}]}},
        "spec",
        {"items": [{"name": "b"}], "size": 1},
    ),
    (
        "directives inside a new value are applied, not stored",
        pod(),
        {"spec": {"securityContext": {"runAsUser": 1000, "fsGroup": None, "$patch": "merge"}}},
        "spec.securityContext",
        {"runAsUser": 1000},
    ),
]


def look(obj: JSONObject, path: str) -> Any:
    """``at`` plus two conveniences for the table: ``containers.0.env`` and ``containers.names``."""
    if path.endswith(".names"):
        return names(at(obj, path.removesuffix(".names")))
    if ".0." in path:
        head, tail = path.split(".0.", 1)
        return at(at(obj, head)[0], tail)
    return at(obj, path)


@pytest.mark.parametrize(
    ("original", "patch", "path", "expected"),
    [case[1:] for case in STRATEGIC_CASES],
    ids=[case[0] for case in STRATEGIC_CASES],
)
def test_strategic_merge_patch(original: JSONObject, patch: JSONObject, path: str, expected: Any) -> None:
    original_before, patch_before = copy.deepcopy(original), copy.deepcopy(patch)
    result = strategic_merge_patch(original, patch, original["apiVersion"], original["kind"])
    assert look(result, path) == expected
    assert (original, patch) == (original_before, patch_before), "the inputs must not change"


def test_order_without_set_element_order_follows_the_kubernetes_design_example() -> None:
    """From the "Preserve Order in Strategic Merge Patch" proposal: patch items keep the patch's order,
    live-only items keep their live position relative to them."""
    original = pod()
    original["spec"]["containers"] = [{"name": n, "image": f"{n}:1"} for n in ("b", "c", "a")]
    patch = {"spec": {"containers": [{"name": n, "image": f"{n}:2"} for n in ("a", "b", "d")]}}
    result = strategic_merge_patch(original, patch, "v1", "Pod")
    assert [(c["name"], c["image"]) for c in result["spec"]["containers"]] == [
        ("c", "c:1"),
        ("a", "a:2"),
        ("b", "b:2"),
        ("d", "d:2"),
    ]


def test_kubectl_apply_changing_replicas_and_image() -> None:
    """What `kubectl apply` sends (three-way diff against the last-applied annotation) when the manifest
    changes replicas from 1 to 3 and the app image from app:1 to app:2: changed scalars, the changed
    container by its merge key, $setElementOrder for the list it touched, and the new annotation."""
    last_applied = (
        '{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"replicas":3}}'
    )
    patch = {
        "metadata": {
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied + "\n"}
        },
        "spec": {
            "replicas": 3,
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                    "containers": [{"image": "app:2", "name": "app"}],
                }
            },
        },
    }
    expected = deployment()
    expected["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = (
        last_applied + "\n"
    )
    expected["spec"]["replicas"] = 3
    expected["spec"]["template"]["spec"]["containers"][0]["image"] = "app:2"

    assert strategic_merge_patch(deployment(), patch, "apps/v1", "Deployment") == expected


def test_kubectl_apply_removing_a_container_and_a_finalizer() -> None:
    """The deletions kubectl apply sends: a $patch: delete item and a $deleteFromPrimitiveList."""
    patch = {
        "metadata": {
            "$setElementOrder/finalizers": ["b.example/two"],
            "$deleteFromPrimitiveList/finalizers": ["a.example/one"],
        },
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "app"}],
                    "containers": [{"$patch": "delete", "name": "sidecar"}],
                }
            }
        },
    }
    result = strategic_merge_patch(deployment(), patch, "apps/v1", "Deployment")
    assert result["metadata"]["finalizers"] == ["b.example/two"]
    assert names(result["spec"]["template"]["spec"]["containers"]) == ["app"]


def test_strategic_patch_on_replicaset_template_uses_pod_spec_keys() -> None:
    rs = deployment()
    rs["kind"] = "ReplicaSet"
    patch = in_template_spec({"containers": [{"name": "app", "env": [{"name": "B", "$patch": "delete"}]}]})
    result = strategic_merge_patch(rs, patch, "apps/v1", "ReplicaSet")
    assert result["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]


@pytest.mark.parametrize(
    ("directive", "expected"),
    [("replace", {"metadata": {"name": "new"}}), ("delete", {})],
)
def test_top_level_directive(directive: str, expected: JSONObject) -> None:
    patch: JSONObject = {"$patch": directive}
    if directive == "replace":
        patch["metadata"] = {"name": "new"}
    assert strategic_merge_patch(pod(), patch, "v1", "Pod") == expected


def test_result_shares_nothing_with_the_patch() -> None:
    patch = in_template_spec({"containers": [{"name": "new", "image": "x", "args": ["--a"]}]})
    result = strategic_merge_patch(deployment(), patch, "apps/v1", "Deployment")
    added = next(c for c in result["spec"]["template"]["spec"]["containers"] if c["name"] == "new")
    added["args"].append("--b")
    assert patch["spec"]["template"]["spec"]["containers"][0]["args"] == ["--a"]


MALFORMED: list[tuple[str, Any, str]] = [
    ("patch is not an object", [{"op": "replace"}], ""),
    (
        "list item without its merge key",
        in_template_spec({"containers": [{"name": "app", "image": "a"}, {"image": "x"}]}),
        "spec.template.spec.containers[1]",
    ),
    (
        "unknown $patch on a map",
        {"spec": {"strategy": {"$patch": "explode"}}},
        "spec.strategy.$patch",
    ),
    (
        "unknown $patch on a list item",
        in_template_spec({"containers": [{"name": "app", "$patch": "explode"}]}),
        "spec.template.spec.containers[0].$patch",
    ),
    (
        "delete item without its merge key",
        in_template_spec({"containers": [{"$patch": "delete", "image": "x"}]}),
        "spec.template.spec.containers[0]",
    ),
    (
        "merged list item that is not an object",
        in_template_spec({"containers": [{"name": "app", "env": ["A=1"]}]}),
        "spec.template.spec.containers[0].env[0]",
    ),
    (
        "$retainKeys that is not a list",
        {"spec": {"strategy": {"$retainKeys": "type", "type": "Recreate"}}},
        "spec.strategy.$retainKeys",
    ),
    (
        "$retainKeys that leaves out a patched key",
        {"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 1}}}},
        "spec.strategy.$retainKeys",
    ),
    (
        "$setElementOrder that is not a list",
        in_template_spec({"$setElementOrder/containers": {"name": "app"}}),
        "spec.template.spec.$setElementOrder/containers",
    ),
    (
        "$setElementOrder entry without the merge key",
        in_template_spec({"$setElementOrder/containers": [{"image": "x"}]}),
        "spec.template.spec.$setElementOrder/containers[0]",
    ),
    (
        "$setElementOrder that disagrees with the patch list",
        in_template_spec(
            {"$setElementOrder/containers": [{"name": "app"}], "containers": [{"name": "new", "image": "n"}]}
        ),
        "spec.template.spec.containers",
    ),
    (
        "$setElementOrder without a field name",
        {"spec": {"$setElementOrder": []}},
        "spec.$setElementOrder",
    ),
    (
        "$deleteFromPrimitiveList that is not a list",
        {"metadata": {"$deleteFromPrimitiveList/finalizers": "a.example/one"}},
        "metadata.$deleteFromPrimitiveList/finalizers",
    ),
]


@pytest.mark.parametrize(
    ("patch", "field"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED]
)
def test_malformed_strategic_patch_names_the_field(patch: Any, field: str) -> None:
    original = deployment()
    with pytest.raises(PatchError) as caught:
        strategic_merge_patch(original, patch, "apps/v1", "Deployment")
    assert caught.value.field == field
    assert original == deployment()

"""app.manifest: parsing multi-document YAML with per-document errors, and diffs against live objects."""

from __future__ import annotations

import pytest

from app.manifest import (
    DocumentError,
    ManifestError,
    diff_against_live,
    parse,
    strip_server_fields,
)
from app.resources import DEPLOYMENTS, NODES, PODS

DEPLOY = """\
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
        image: example/web:1
"""


def errors_of(text: str) -> tuple[DocumentError, ...]:
    with pytest.raises(ManifestError) as info:
        parse(text)
    return info.value.errors


def test_multi_document_manifest_in_order_with_lines_and_default_namespace() -> None:
    text = (
        "# leading comment\n---\n"
        + DEPLOY
        + "---\n# only a comment\n---\n"
        + "apiVersion: v1\nkind: Node\nmetadata:\n  name: edge-1\n"
        + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: other}\n...\n"
    )
    objs = parse(text)
    assert [(o.rt, o.name, o.namespace) for o in objs] == [
        (DEPLOYMENTS, "web", "default"),
        (NODES, "edge-1", ""),  # cluster-scoped: no namespace added
        (PODS, "p", "other"),
    ]
    assert [o.document for o in objs] == [1, 3, 4]  # the comment-only document 2 still counts
    assert [o.line for o in objs] == [3, 21, 26]
    assert objs[0].obj["spec"]["replicas"] == 2
    assert objs[0].ref == "default/Deployment/web"


def test_kind_list_is_expanded() -> None:
    text = "apiVersion: v1\nkind: List\nitems:\n- " + DEPLOY.replace("\n", "\n  ").rstrip() + "\n"
    (obj,) = parse(text)
    assert obj.rt is DEPLOYMENTS and obj.name == "web"


def test_syntax_error_names_document_and_line_and_later_documents_are_still_checked() -> None:
    text = DEPLOY + "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: [oops\n---\nkind: Pod\n"
    errs = errors_of(text)
    assert len(errs) == 2
    assert errs[0].document == 2 and "YAML syntax error" in errs[0].message
    assert 18 <= errs[0].line <= 20  # the unclosed flow sequence, in the whole text's numbering
    assert errs[1].document == 3 and errs[1].field == "apiVersion" and errs[1].line == 22
    assert str(errs[1]) == "document 3 (line 22): apiVersion: Required value"


@pytest.mark.parametrize(
    ("doc", "field", "message"),
    [
        ("apiVersion: v1\nkind: Gadget\nmetadata: {name: g}\n", "kind", "unknown kind 'Gadget'"),
        ("apiVersion: v1\nkind: Deployment\nmetadata: {name: g}\n", "kind", "served as apps/v1"),
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {}\n", "metadata.name", "Required value"),
        ("apiVersion: apps/v1\nkind: Deployment\nspec: {}\n", "metadata", "Required value"),
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: x\n", "metadata", "must be a mapping"),
        ("- a\n- b\n", "", "must be a mapping (an object), not list"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: 3}\n", "metadata.namespace", "string"),
    ],
)
def test_bad_documents(doc: str, field: str, message: str) -> None:
    (err,) = errors_of(doc)
    assert err.document == 1 and err.field == field and message in err.message


def test_generate_name_is_enough() -> None:
    (obj,) = parse("apiVersion: v1\nkind: Pod\nmetadata: {generateName: job-}\n")
    assert obj.name == "" and obj.ref == "default/Pod/job-*"


def test_empty_manifests_are_an_error() -> None:
    for text in ("", "\n\n", "# nothing\n---\n---\n"):
        (err,) = errors_of(text)
        assert err.message == "the manifest holds no object"


def test_the_same_object_twice_is_an_error() -> None:
    (err,) = errors_of(DEPLOY + "---\n" + DEPLOY.replace("replicas: 2", "replicas: 3"))
    assert err.document == 2 and "already in document 1" in err.message


def live_deployment() -> dict[str, object]:
    (obj,) = parse(DEPLOY)
    live = strip_server_fields(obj.obj)
    live["metadata"].update(
        {"uid": "u1", "resourceVersion": "42", "generation": 3, "creationTimestamp": "2026-01-01T00:00:00Z"}
    )
    live["spec"]["strategy"] = {"type": "RollingUpdate"}  # a server default the manifest leaves out
    live["status"] = {"replicas": 2}
    return live


def test_diff_shows_only_the_changed_field() -> None:
    (changed,) = parse(DEPLOY.replace("example/web:1", "example/web:2"))
    diff = diff_against_live(live_deployment(), changed)
    lines = diff.splitlines()
    assert lines[0] == "--- live/default/Deployment/web" and lines[1] == "+++ manifest/default/Deployment/web"
    assert [line for line in lines[2:] if line[:1] in "+-"] == [
        "-        image: example/web:1",
        "+        image: example/web:2",
    ]
    for hidden in ("resourceVersion", "uid", "status", "generation", "creationTimestamp"):
        assert hidden not in diff


def test_diff_empty_when_nothing_changes_and_full_for_a_new_object() -> None:
    (same,) = parse(DEPLOY)
    assert diff_against_live(live_deployment(), same) == ""
    diff = diff_against_live(None, same)
    assert diff.startswith("--- /dev/null\n+++ manifest/default/Deployment/web\n")
    assert "+  replicas: 2\n" in diff

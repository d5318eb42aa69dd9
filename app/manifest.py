"""Manifests as people write them: multi-document YAML, checked before anything is sent, and diffed.

A front end's "apply" (the TUI's deploy screen, the GUI's editor) takes the text a person typed or loaded
and must answer three questions before it touches the cloud: which objects are these, what is wrong with
each one (so the person can fix the right line), and what would change. :func:`parse` answers the first
two, :func:`diff_against_live` the third; the apply itself is :meth:`app.client.AsyncClient.apply`.

Parsing splits the text on ``---`` document markers *before* handing it to YAML, so a syntax error in one
document does not hide the problems of the next ones, and every error names its document (1-based, as a
person counts) and the line in the whole text (1-based, as an editor shows it). Documents that hold nothing
(only comments or blank lines, as editors leave around markers) are skipped, as kubectl does; a manifest
with no object at all is an error. A ``kind: List`` (what ``kubectl get -o yaml`` prints) is expanded into
its items. Each object must be a mapping with ``apiVersion``, ``kind`` and ``metadata.name`` (or
``generateName``) and its kind must be one the cloud serves (``app.resources``); a namespaced object without
a namespace gets the caller's default one, so the diff and the apply address the same object. The same
object twice in one manifest is an error: the second would silently win.

Diffing follows what :meth:`AsyncClient.apply` does on the server: a strategic merge patch of the manifest
onto the live object, fields absent from the manifest left alone. The diff is therefore of the live object
against the *patched* live object, both as YAML with server-managed fields dropped (``status``,
``metadata.resourceVersion``, ``uid``, ``creationTimestamp``, ``generation``, ``managedFields``,
``selfLink``), so it shows exactly the lines the apply changes and not every defaulted field the manifest
leaves out. A new object diffs against nothing.

Deliberately not done: schema validation of fields beyond the identity (the API answers 422 naming the
field, which the caller shows), server-side dry run (the cloud does not serve ``dryRun`` for every kind),
YAML anchors across documents, and ``---`` inside a document-level block scalar (a marker at column 0 always
starts a new document here, which is what every manifest in practice means).
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from app.errors import FleetOpsError
from app.patch import strategic_merge_patch
from app.resources import ALL, JSONObject, ResourceType, by_kind

# A document marker: "---" at column 0, alone or followed by whitespace/a comment; "..." ends a document.
_MARKER = re.compile(r"^---(?:\s.*)?$")
_END = re.compile(r"^\.\.\.\s*$")
# Metadata the server owns: never part of what a person changes, so never part of a diff.
SERVER_METADATA = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink")


class ManifestError(FleetOpsError):
    """A manifest that cannot be applied; ``errors`` has one entry per problem, in document order."""

    def __init__(self, errors: Sequence[DocumentError]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(str(e) for e in self.errors) or "invalid manifest")


@dataclass(frozen=True, slots=True)
class DocumentError:
    """One problem: the document (1-based) and line (1-based, in the whole text) it is at."""

    document: int
    line: int
    message: str
    field: str = ""

    def __str__(self) -> str:
        where = f"document {self.document} (line {self.line})"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class ManifestObject:
    """One object of a manifest, its served type and where it came from."""

    document: int
    line: int
    obj: JSONObject
    rt: ResourceType

    @property
    def name(self) -> str:
        return str(self.obj["metadata"].get("name") or "")

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"].get("namespace") or "")

    @property
    def ref(self) -> str:
        """``kind/name`` (``ns/kind/name`` when namespaced), as notifications and diff headers show it."""
        base = f"{self.rt.kind}/{self.name or self.obj['metadata'].get('generateName', '') + '*'}"
        return f"{self.namespace}/{base}" if self.rt.namespaced and self.namespace else base


@dataclass(frozen=True, slots=True)
class _Chunk:
    document: int
    line: int  # 1-based line of the chunk's first line in the whole text
    text: str


def _chunks(text: str) -> list[_Chunk]:
    """Split on document markers, keeping each chunk's starting line; the marker lines themselves are
    blanked (not dropped) so line numbers inside a chunk stay those of the text."""
    chunks: list[_Chunk] = []
    current: list[str] = []
    start = 1
    for number, line in enumerate(text.splitlines(), start=1):
        if _MARKER.match(line) or _END.match(line):
            chunks.append(_Chunk(len(chunks) + 1, start, "\n".join(current)))
            current, start = [], number + 1
            continue
        current.append(line)
    chunks.append(_Chunk(len(chunks) + 1, start, "\n".join(current)))
    if len(chunks) > 1 and not _has_content(chunks[0].text):
        # Comments before the first marker are not a document, for YAML nor for a person counting.
        chunks = [_Chunk(c.document - 1, c.line, c.text) for c in chunks[1:]]
    return chunks


def _has_content(text: str) -> bool:
    return any(line.strip() and not line.strip().startswith("#") for line in text.splitlines())


def _first_content_line(chunk: _Chunk) -> int:
    for offset, line in enumerate(chunk.text.splitlines()):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return chunk.line + offset
    return chunk.line


def _kind_hint(kind: str) -> str:
    served = sorted({rt.api_version for rt in ALL if rt.kind == kind})
    return f" (served as {', '.join(served)})" if served else ""


def _check(
    obj: Any, document: int, line: int, default_namespace: str, where: str = ""
) -> tuple[ManifestObject | None, list[DocumentError]]:
    prefix = f"{where}." if where else ""

    def err(message: str, field: str = "") -> tuple[None, list[DocumentError]]:
        return None, [DocumentError(document, line, message, prefix + field if field else where)]

    if not isinstance(obj, dict):
        return err(f"must be a mapping (an object), not {type(obj).__name__}")
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not api_version:
        return err("Required value", "apiVersion")
    if not isinstance(kind, str) or not kind:
        return err("Required value", "kind")
    rt = by_kind(api_version, kind)
    if rt is None:
        return err(f"unknown kind {kind!r} in apiVersion {api_version!r}{_kind_hint(kind)}", "kind")
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return err("Required value" if metadata is None else "must be a mapping", "metadata")
    name, generate = metadata.get("name"), metadata.get("generateName")
    if not (isinstance(name, str) and name) and not (isinstance(generate, str) and generate):
        return err("Required value: name or generateName is required", "metadata.name")
    namespace = metadata.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        return err("must be a string", "metadata.namespace")
    obj = copy.deepcopy(obj)
    if rt.namespaced and not namespace and default_namespace:
        obj["metadata"]["namespace"] = default_namespace
    return ManifestObject(document, line, obj, rt), []


def parse(text: str, default_namespace: str = "default") -> list[ManifestObject]:
    """The objects of a (multi-document) YAML manifest, in order; raises :class:`ManifestError` naming
    every problem of every document (not only the first)."""
    objects: list[ManifestObject] = []
    errors: list[DocumentError] = []
    for chunk in _chunks(text):
        try:
            doc = yaml.safe_load(chunk.text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = chunk.line + mark.line if mark is not None else chunk.line
            problem = exc.problem or exc.context or "invalid YAML"
            errors.append(DocumentError(chunk.document, line, f"YAML syntax error: {problem}"))
            continue
        except yaml.YAMLError as exc:
            errors.append(DocumentError(chunk.document, chunk.line, f"YAML error: {exc}"))
            continue
        if doc is None:
            continue  # an empty document: comments, blank lines, a trailing marker
        line = _first_content_line(chunk)
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            for i, item in enumerate(doc["items"]):
                found, problems = _check(item, chunk.document, line, default_namespace, f"items[{i}]")
                errors.extend(problems)
                if found is not None:
                    objects.append(found)
            continue
        found, problems = _check(doc, chunk.document, line, default_namespace)
        errors.extend(problems)
        if found is not None:
            objects.append(found)
    seen: dict[tuple[str, str, str, str], ManifestObject] = {}
    for o in objects:
        if not o.name:
            continue  # generateName: a new object each time
        key = (o.rt.api_version, o.rt.kind, o.namespace if o.rt.namespaced else "", o.name)
        if key in seen:
            first = seen[key]
            errors.append(
                DocumentError(o.document, o.line, f"{o.ref} is already in document {first.document}")
            )
        else:
            seen[key] = o
    if errors:
        raise ManifestError(sorted(errors, key=lambda e: (e.document, e.line)))
    if not objects:
        raise ManifestError([DocumentError(1, 1, "the manifest holds no object")])
    return objects


# -- diff -------------------------------------------------------------------------------------------------


def strip_server_fields(obj: JSONObject) -> JSONObject:
    """A copy of ``obj`` without what the server manages (status and server metadata)."""
    out = copy.deepcopy(obj)
    out.pop("status", None)
    metadata = out.get("metadata")
    if isinstance(metadata, dict):
        for key in SERVER_METADATA:
            metadata.pop(key, None)
    return out


def to_yaml(obj: JSONObject) -> str:
    """Block-style YAML in the object's own key order (the order the server and the manifest use)."""
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, allow_unicode=True)


def planned(live: JSONObject, manifest: ManifestObject) -> JSONObject:
    """What the server will hold after :meth:`AsyncClient.apply` patches ``live`` with the manifest."""
    return strategic_merge_patch(live, manifest.obj, manifest.rt.api_version, manifest.rt.kind)


def diff_against_live(live: JSONObject | None, manifest: ManifestObject, context: int = 3) -> str:
    """A unified diff (``live`` -> after the apply), empty when the apply changes nothing. ``live`` is
    None for an object that does not exist yet: every line of the manifest is an addition."""
    before = "" if live is None else to_yaml(strip_server_fields(live))
    after_obj = manifest.obj if live is None else planned(live, manifest)
    after = to_yaml(strip_server_fields(after_obj))
    if before == after:
        return ""
    label = manifest.ref
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"live/{label}" if live is not None else "/dev/null",
            tofile=f"manifest/{label}",
            n=context,
        )
    )


# What a deploy editor opens with when it has no file: a Deployment to edit into one's own.
STARTER_MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-app
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels:
      app: my-app
  template:
    metadata:
      labels:
        app: my-app
    spec:
      containers:
      - name: main
        image: example/my-app:1
        command: ["sleep", "infinity"]
"""

"""The three PATCH flavours kubectl sends, applied to plain JSON-shaped objects.

* ``application/merge-patch+json`` -- :func:`json_merge_patch`, RFC 7386 to the letter: objects merge
  recursively, ``null`` deletes a member, anything else (lists included) replaces.
* ``application/json-patch+json`` -- :func:`json_patch`, RFC 6902: a list of ``add``/``remove``/``replace``/
  ``move``/``copy``/``test`` operations addressed by RFC 6901 JSON Pointers (``~0``/``~1`` escapes, ``-`` to
  append). The operations apply all or nothing.
* ``application/strategic-merge-patch+json`` -- :func:`strategic_merge_patch`, what ``kubectl apply`` and a
  plain ``kubectl patch`` send. It is a JSON merge patch in which some lists merge item by item instead of
  being replaced. Which lists, and by which key, Kubernetes declares with ``patchStrategy`` /
  ``patchMergeKey`` struct tags on its Go types; :data:`_SCHEMA` below is that table for the kinds we serve,
  transcribed tag by tag (struct name -> field -> tag), so a reviewer can check it against ``k8s.io/api``.

The strategic algorithm follows ``k8s.io/apimachinery/pkg/util/strategicpatch`` as the API server runs it
(``StrategicMergeMapPatch``: parallel lists merged, unmatched nulls ignored):

1. A map carrying ``$patch: replace`` becomes the patch map; ``$patch: delete`` makes it ``{}``.
2. ``$retainKeys: [...]`` drops every key of the live map not named there (used for the ``retainKeys``
   strategy, e.g. switching a Deployment's strategy to ``Recreate`` clears ``rollingUpdate``).
3. ``$setElementOrder/<list>`` merges that list first, then orders it: items named in the directive follow
   its order, live-only items keep their live order, and the two are interleaved by live position.
4. Every other key: ``null`` deletes; a key missing from the live object takes the patch value; maps merge
   recursively; a list with the ``merge`` strategy merges by its merge key (items carrying
   ``$patch: delete`` remove the matching live items, one carrying ``$patch: replace`` makes the list the
   patch's items) or, for a list of primitives, becomes the union; ``$deleteFromPrimitiveList/<list>``
   removes values from a primitive list; every other list is replaced atomically.

Ordering without ``$setElementOrder`` is Kubernetes' too, including its one surprise: an item that is new
to a merged list is placed *before* the live items it is compared with (``[a, b]`` patched with ``[c]``
gives ``[c, a, b]``). ``kubectl apply`` always sends ``$setElementOrder`` when a list changes, so this only
shows in hand-written patches, where matching the real API server is what users expect.

Deliberately not done:

* No OpenAPI lookup or CRD support: kinds outside the table merge with the same directives but with every
  list replaced, as in a JSON merge patch (the real API server rejects strategic patches for CRDs).
* Unknown fields of known types are accepted (maps merge, lists are replaced) rather than rejected; the
  manifest validation of the API layer is the place that knows which fields exist.
* Where the API server is stricter than useful we are lenient, never the reverse: ``$patch: merge`` is
  accepted as a no-op on maps and list items (Kubernetes rejects it), and ``$deleteFromPrimitiveList`` on
  a missing list is a no-op (Kubernetes would store the deletion list itself). Directives inside a value that
  is new to the object are applied, so no ``$``-key or ``null`` is ever stored.
* No three-way diff (``CreateThreeWayMergePatch``): computing patches is kubectl's side, not ours.

Every function returns new objects and leaves its arguments untouched, so a caller may patch the object it
holds from the store and still compare it with the result.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from app import resources
from app.errors import ValidationError
from app.resources import JSONObject

logger = logging.getLogger(__name__)

__all__ = ["PatchError", "json_merge_patch", "json_patch", "strategic_merge_patch"]


class PatchError(ValidationError):
    """A patch that cannot be applied: malformed, or (JSON patch) addressing a path that is not there.

    ``field`` names the fault: a Kubernetes-style path into the patched object for merge patches
    (``spec.template.spec.containers[1]``, ``spec.strategy.$retainKeys``; ``""`` is the whole patch), the
    JSON Pointer for a JSON patch operation that fails (``/spec/replicas``), or ``[i].member`` for a
    malformed operation ``i`` of a JSON patch. The API turns it into a 422 Status naming the field.
    """


# --------------------------------------------------------------------------------------------------
# Shared helpers


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality (RFC 6902 section 4.6): ``1 == 1.0``, but ``1 != true`` and ``"1" != 1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(v, b[k]) for k, v in a.items())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _index_of(values: Sequence[Any], wanted: Any) -> int:
    """Position of ``wanted`` in ``values`` by JSON equality, or -1."""
    for i, value in enumerate(values):
        if _json_equal(value, wanted):
            return i
    return -1


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _item(path: str, index: int) -> str:
    return f"{path}[{index}]"


# --------------------------------------------------------------------------------------------------
# RFC 7386 JSON merge patch


def json_merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch. ``target`` is usually an object but may be any JSON value."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: JSONObject = copy.deepcopy(target) if isinstance(target, dict) else {}
    _merge_into(result, patch)
    return result


def _merge_into(target: JSONObject, patch: JSONObject) -> None:
    """Merge ``patch`` into ``target``, which the caller owns (a copy)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            existing = target.get(key)
            if not isinstance(existing, dict):
                existing = {}
            _merge_into(existing, value)
            target[key] = existing
        else:
            target[key] = copy.deepcopy(value)


# --------------------------------------------------------------------------------------------------
# RFC 6902 JSON patch

_ARRAY_INDEX: Final = re.compile(r"(0|[1-9][0-9]*)")  # RFC 6901: no leading zeros, no sign
_BAD_ESCAPE: Final = re.compile(r"~(?![01])")  # "~" must be followed by 0 or 1
_OPS_WITH_VALUE: Final = frozenset({"add", "replace", "test"})
_OPS_WITH_FROM: Final = frozenset({"move", "copy"})
_OPS: Final = _OPS_WITH_VALUE | _OPS_WITH_FROM | {"remove"}


def json_patch(target: JSONObject, operations: Any) -> JSONObject:
    """Apply an RFC 6902 JSON patch; all operations apply or none does (the input is never touched)."""
    if not isinstance(operations, list):
        raise PatchError("", f"a JSON patch must be an array of operations, not {_json_type(operations)}")
    doc: Any = copy.deepcopy(target)
    for i, operation in enumerate(operations):
        doc = _apply_operation(doc, operation, i)
    if not isinstance(doc, dict):
        raise PatchError("", f"the patched document must be an object, not {_json_type(doc)}")
    return doc


def _operation_member(operation: JSONObject, index: int, member: str) -> Any:
    if member not in operation:
        raise PatchError(
            f"[{index}].{member}", f"operation {operation.get('op')!r} needs a {member!r} member"
        )
    return operation[member]


def _apply_operation(doc: Any, operation: Any, index: int) -> Any:
    if not isinstance(operation, dict):
        raise PatchError(f"[{index}]", f"an operation must be an object, not {_json_type(operation)}")
    op = _operation_member(operation, index, "op")
    if op not in _OPS:
        raise PatchError(f"[{index}].op", f"unknown operation {op!r}; expected one of {sorted(_OPS)}")
    pointer = _operation_member(operation, index, "path")
    tokens = _parse_pointer(pointer, f"[{index}].path")
    if op in _OPS_WITH_VALUE:
        value = copy.deepcopy(_operation_member(operation, index, "value"))
        if op == "add":
            return _add(doc, tokens, value, pointer)
        if op == "replace":
            return _replace(doc, tokens, value, pointer)
        actual = _resolve(doc, tokens, pointer)
        if not _json_equal(actual, value):
            raise PatchError(pointer, "test failed: the value there is not the one the patch expects")
        return doc
    if op == "remove":
        doc, _ = _remove(doc, tokens, pointer)
        return doc
    source = _operation_member(operation, index, "from")
    from_tokens = _parse_pointer(source, f"[{index}].from")
    if op == "copy":
        return _add(doc, tokens, copy.deepcopy(_resolve(doc, from_tokens, source)), pointer)
    # move
    if tokens == from_tokens:
        _resolve(doc, from_tokens, source)  # it must exist, even though nothing changes
        return doc
    if tokens[: len(from_tokens)] == from_tokens:
        raise PatchError(pointer, f"cannot move {source!r} into one of its own children")
    doc, value = _remove(doc, from_tokens, source)
    return _add(doc, tokens, value, pointer)


def _parse_pointer(pointer: Any, field: str) -> list[str]:
    """RFC 6901: ``""`` is the whole document, otherwise ``/``-separated tokens with ``~1``=/ and ``~0``=~."""
    if not isinstance(pointer, str):
        raise PatchError(field, f"a JSON pointer must be a string, not {_json_type(pointer)}")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(pointer, "a JSON pointer must be empty or start with '/'")
    tokens = []
    for raw in pointer[1:].split("/"):
        if _BAD_ESCAPE.search(raw):
            raise PatchError(pointer, "'~' must be followed by 0 or 1 in a JSON pointer")
        # ~1 first: "~01" is the literal "~1", not "/".
        tokens.append(raw.replace("~1", "/").replace("~0", "~"))
    return tokens


def _array_index(segment: str, length: int, pointer: str, *, for_insert: bool) -> int:
    if for_insert and segment == "-":
        return length
    if not _ARRAY_INDEX.fullmatch(segment):
        raise PatchError(pointer, f"{segment!r} is not an array index")
    index = int(segment)
    if index > length or (index == length and not for_insert):
        raise PatchError(pointer, f"index {index} is out of range for an array of {length}")
    return index


def _resolve(doc: Any, tokens: list[str], pointer: str) -> Any:
    node = doc
    for token in tokens:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(pointer, "path not found")
            node = node[token]
        elif isinstance(node, list):
            node = node[_array_index(token, len(node), pointer, for_insert=False)]
        else:
            raise PatchError(pointer, f"path not found: cannot index into {_json_type(node)}")
    return node


def _add(doc: Any, tokens: list[str], value: Any, pointer: str) -> Any:
    if not tokens:
        return value
    parent = _resolve(doc, tokens[:-1], pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_array_index(last, len(parent), pointer, for_insert=True), value)
    else:
        raise PatchError(pointer, f"cannot add a member to {_json_type(parent)}")
    return doc


def _remove(doc: Any, tokens: list[str], pointer: str) -> tuple[Any, Any]:
    """Remove the value at ``tokens``; returns the document and the removed value."""
    if not tokens:
        raise PatchError(pointer, "cannot remove the whole document")
    parent = _resolve(doc, tokens[:-1], pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(pointer, "path not found")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_array_index(last, len(parent), pointer, for_insert=False))
    raise PatchError(pointer, f"path not found: cannot index into {_json_type(parent)}")


def _replace(doc: Any, tokens: list[str], value: Any, pointer: str) -> Any:
    if not tokens:
        return value
    parent = _resolve(doc, tokens[:-1], pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(pointer, "path not found")
        parent[last] = value
    elif isinstance(parent, list):
        parent[_array_index(last, len(parent), pointer, for_insert=False)] = value
    else:
        raise PatchError(pointer, f"path not found: cannot index into {_json_type(parent)}")
    return doc


# --------------------------------------------------------------------------------------------------
# Strategic merge patch: the table


@dataclass(frozen=True, slots=True)
class _Field:
    """The patch metadata of one field, as the Go struct tags declare it.

    ``type`` is the schema entry of the field's value (for a list: of its items); ``""`` means nothing below
    it has a strategy. ``strategy`` is the ``patchStrategy`` tag verbatim and ``merge_key`` the
    ``patchMergeKey`` tag. A list merges iff ``merge`` is among the strategies; with a merge key its items
    are objects matched by that key, without one it is a set of primitives.
    """

    type: str = ""
    strategy: str = ""
    merge_key: str = ""

    @property
    def merges_list(self) -> bool:
        return "merge" in self.strategy.split(",")


_UNTYPED: Final = _Field()
_PRIMITIVE_SET: Final = _Field(strategy="merge")


def _struct(type_name: str) -> _Field:
    return _Field(type=type_name)


def _merged_by(merge_key: str, type_name: str = "", strategy: str = "merge") -> _Field:
    return _Field(type=type_name, strategy=strategy, merge_key=merge_key)


# Struct name -> JSON field -> tags, from k8s.io/api core/v1 and apps/v1 types.go. Only fields that carry a
# strategy, or lead to one, are listed; every other list is atomic. Notably atomic (no tag) although they
# look mergeable: PodSpec tolerations and readinessGates, Container envFrom, NodeSpec taints (kubectl taint
# sends the whole list), NodeStatus images, NamespaceSpec finalizers, the status containerStatuses lists.
_SCHEMA: Final[dict[str, dict[str, _Field]]] = {
    # The kinds we serve.
    "Pod": {"metadata": _struct("ObjectMeta"), "spec": _struct("PodSpec"), "status": _struct("PodStatus")},
    "Node": {"metadata": _struct("ObjectMeta"), "spec": _struct("NodeSpec"), "status": _struct("NodeStatus")},
    "Namespace": {"metadata": _struct("ObjectMeta"), "status": _struct("NamespaceStatus")},
    "Event": {"metadata": _struct("ObjectMeta")},
    "Deployment": {
        "metadata": _struct("ObjectMeta"),
        "spec": _struct("DeploymentSpec"),
        "status": _struct("DeploymentStatus"),
    },
    "ReplicaSet": {
        "metadata": _struct("ObjectMeta"),
        "spec": _struct("ReplicaSetSpec"),
        "status": _struct("ReplicaSetStatus"),
    },
    # meta/v1
    "ObjectMeta": {
        "finalizers": _PRIMITIVE_SET,
        "ownerReferences": _merged_by("uid"),
    },
    # core/v1
    "PodTemplateSpec": {"metadata": _struct("ObjectMeta"), "spec": _struct("PodSpec")},
    "PodSpec": {
        "volumes": _merged_by("name", strategy="merge,retainKeys"),
        "initContainers": _merged_by("name", "Container"),
        "containers": _merged_by("name", "Container"),
        # EphemeralContainerCommon repeats Container's fields and tags.
        "ephemeralContainers": _merged_by("name", "Container"),
        "imagePullSecrets": _merged_by("name"),
        "hostAliases": _merged_by("ip"),
        "topologySpreadConstraints": _merged_by("topologyKey"),
        "schedulingGates": _merged_by("name"),
        "resourceClaims": _merged_by("name", strategy="merge,retainKeys"),
    },
    "Container": {
        "ports": _merged_by("containerPort"),
        "env": _merged_by("name"),
        "volumeMounts": _merged_by("mountPath"),
        "volumeDevices": _merged_by("devicePath"),
    },
    "PodStatus": {
        "conditions": _merged_by("type"),
        "podIPs": _merged_by("ip"),
        "hostIPs": _merged_by("ip"),
        "resourceClaimStatuses": _merged_by("name", strategy="merge,retainKeys"),
    },
    "NodeSpec": {"podCIDRs": _PRIMITIVE_SET},
    "NodeStatus": {"conditions": _merged_by("type"), "addresses": _merged_by("type")},
    "NamespaceStatus": {"conditions": _merged_by("type")},
    # apps/v1
    "DeploymentSpec": {
        "template": _struct("PodTemplateSpec"),
        "strategy": _Field(type="DeploymentStrategy", strategy="retainKeys"),
    },
    "DeploymentStatus": {"conditions": _merged_by("type")},
    "ReplicaSetSpec": {"template": _struct("PodTemplateSpec")},
    "ReplicaSetStatus": {"conditions": _merged_by("type")},
}

_ROOT_TYPES: Final[dict[tuple[str, str], str]] = {
    (rt.api_version, rt.kind): rt.kind
    for rt in (
        resources.PODS,
        resources.NODES,
        resources.NAMESPACES,
        resources.EVENTS,
        resources.DEPLOYMENTS,
        resources.REPLICASETS,
    )
}

_DIRECTIVE: Final = "$patch"
_RETAIN_KEYS: Final = "$retainKeys"
_SET_ORDER: Final = "$setElementOrder"
_DELETE_PRIMITIVES: Final = "$deleteFromPrimitiveList"
_NO_KEY: Final = object()  # identity of a live list item that lacks its merge key: matches nothing

_Ident = Callable[[Any], Any]


def _field(type_name: str, key: str) -> _Field:
    return _SCHEMA.get(type_name, {}).get(key, _UNTYPED)


def _identity(field: _Field) -> _Ident:
    """How items of a merged list are told apart: by merge key for objects, by value for primitives."""
    merge_key = field.merge_key
    if not merge_key:
        return lambda value: value
    return lambda item: item.get(merge_key, _NO_KEY) if isinstance(item, dict) else _NO_KEY


# --------------------------------------------------------------------------------------------------
# Strategic merge patch: the algorithm


def strategic_merge_patch(original: JSONObject, patch: Any, api_version: str, kind: str) -> JSONObject:
    """Apply a Kubernetes strategic merge patch to an object of the given kind (see the module docstring)."""
    if not isinstance(patch, dict):
        raise PatchError("", f"a strategic merge patch must be a JSON object, not {_json_type(patch)}")
    root = _ROOT_TYPES.get((api_version, kind), "")
    if not root:
        logger.debug("no patch strategies known for %s %s: every list is replaced", api_version, kind)
    return _merge_map(copy.deepcopy(original), patch, root, "")


def _directive_target(key: str, prefix: str, path: str) -> str | None:
    """The list a ``prefix/<list>`` key addresses, None if ``key`` is not such a directive."""
    if not key.startswith(prefix):
        return None
    name = key[len(prefix) + 1 :] if key[len(prefix) : len(prefix) + 1] == "/" else ""
    if not name:
        raise PatchError(_child(path, key), f"expected {prefix}/<field>")
    return name


def _merge_map(original: JSONObject, patch: JSONObject, type_name: str, path: str) -> JSONObject:
    """Merge ``patch`` into ``original``, which the caller owns and which may be changed and returned."""
    if _DIRECTIVE in patch:
        directive = patch[_DIRECTIVE]
        if directive == "replace":
            body = {k: v for k, v in patch.items() if k != _DIRECTIVE}
            return _merge_map({}, body, type_name, path)
        if directive == "delete":
            return {}
        if directive != "merge":
            raise PatchError(
                _child(path, _DIRECTIVE),
                f"unknown directive {directive!r}; expected replace, merge or delete",
            )
    _apply_retain_keys(original, patch, path)
    ordered = _apply_element_orders(original, patch, type_name, path)
    for key, value in patch.items():
        if key in (_DIRECTIVE, _RETAIN_KEYS) or key in ordered:
            continue
        if _directive_target(key, _SET_ORDER, path) is not None:
            continue  # handled by _apply_element_orders
        target = _directive_target(key, _DELETE_PRIMITIVES, path)
        if target is not None:
            _delete_from_primitive_list(original, target, value, _child(path, key))
        elif value is None:
            original.pop(key, None)
        else:
            original[key] = _merge_value(original.get(key), value, _field(type_name, key), _child(path, key))
    return original


def _merge_value(live: Any, value: Any, field: _Field, path: str) -> Any:
    """The merge of one non-null patch value with the live value (None when absent)."""
    if isinstance(value, dict):
        return _merge_map(live if isinstance(live, dict) else {}, value, field.type, path)
    if isinstance(value, list):
        return _merge_list(live if isinstance(live, list) else [], value, field, path)
    return value  # a scalar replaces whatever was there


def _apply_retain_keys(original: JSONObject, patch: JSONObject, path: str) -> None:
    if _RETAIN_KEYS not in patch:
        return
    keep = patch[_RETAIN_KEYS]
    field = _child(path, _RETAIN_KEYS)
    if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
        raise PatchError(field, "must be a list of field names")
    for key, value in patch.items():
        if value is not None and not key.startswith("$") and key not in keep:
            raise PatchError(field, f"the patch sets {key!r}, which is not among the keys to retain")
    for key in [k for k in original if k not in keep]:
        del original[key]


def _delete_from_primitive_list(original: JSONObject, name: str, doomed: Any, path: str) -> None:
    if not isinstance(doomed, list):
        raise PatchError(path, f"must be a list of values to delete, not {_json_type(doomed)}")
    live = original.get(name)
    if isinstance(live, list):
        original[name] = [v for v in live if _index_of(doomed, v) < 0]


def _merge_list(live: list[Any], patch: list[Any], field: _Field, path: str) -> list[Any]:
    if not field.merges_list:
        return copy.deepcopy(patch)  # atomic: the patch's list replaces the live one
    if field.merge_key:
        return _merge_keyed_list(live, patch, field, path)
    merged: list[Any] = []
    for value in (*live, *patch):
        if _index_of(merged, value) < 0:
            merged.append(copy.deepcopy(value))
    return _ordered(merged, patch, live, _identity(field))


def _merge_keyed_list(live: list[Any], patch: list[Any], field: _Field, path: str) -> list[Any]:
    key = field.merge_key
    result = list(live)
    plain: list[tuple[int, JSONObject]] = []  # patch items without a delete/replace directive
    replace = False
    for i, item in enumerate(patch):
        item_path = _item(path, i)
        if not isinstance(item, dict):
            raise PatchError(item_path, f"must be an object merged by {key!r}, not {_json_type(item)}")
        directive = item.get(_DIRECTIVE, "merge")
        if directive not in ("merge", "replace", "delete"):
            raise PatchError(
                _child(item_path, _DIRECTIVE),
                f"unknown directive {directive!r}; expected replace, merge or delete",
            )
        if directive == "replace":
            replace = True
            continue
        if key not in item:
            raise PatchError(item_path, f"does not contain the merge key {key!r}")
        if directive == "delete":
            result = [live_item for live_item in result if not _has_key(live_item, key, item[key])]
        else:
            plain.append((i, item))
    if replace:
        return [_merge_map({}, item, field.type, _item(path, i)) for i, item in plain]
    ident = _identity(field)
    server_order = [ident(live_item) for live_item in result]
    for i, item in plain:
        position = next((n for n, live_item in enumerate(result) if _has_key(live_item, key, item[key])), -1)
        if position < 0:
            result.append(_merge_map({}, item, field.type, _item(path, i)))
        else:
            result[position] = _merge_map(result[position], item, field.type, _item(path, i))
    return _ordered(result, [item[key] for _, item in plain], server_order, ident)


def _has_key(item: Any, key: str, value: Any) -> bool:
    return isinstance(item, dict) and key in item and _json_equal(item[key], value)


def _apply_element_orders(original: JSONObject, patch: JSONObject, type_name: str, path: str) -> set[str]:
    """Merge and order each list named by a ``$setElementOrder/<list>``; returns the lists it has done."""
    done: set[str] = set()
    for key, order in patch.items():
        name = _directive_target(key, _SET_ORDER, path)
        if name is None:
            continue
        order_path = _child(path, key)
        if not isinstance(order, list):
            raise PatchError(order_path, f"must be a list, not {_json_type(order)}")
        field = _field(type_name, name)
        if not field.merges_list or (name in patch and patch[name] is None):
            continue  # an atomic list already has the patch's order; a deleted one has none
        list_path = _child(path, name)
        wanted = _order_identities(order, field.merge_key, order_path)
        live = original.get(name)
        live_list = live if isinstance(live, list) else None
        patch_list = patch.get(name)
        if patch_list is not None and not isinstance(patch_list, list):
            raise PatchError(list_path, f"must be a list to go with {key}, not {_json_type(patch_list)}")
        if live_list is None and patch_list is None:
            continue
        merged = _merge_list(live_list or [], patch_list or [], field, list_path)
        ident = _identity(field)
        if patch_list:
            _check_order(patch_list, wanted, ident, list_path, key)
        server_order = [ident(item) for item in live_list or []]
        original[name] = _ordered(merged, wanted, server_order, ident)
        done.add(name)
    return done


def _order_identities(order: list[Any], merge_key: str, path: str) -> list[Any]:
    if not merge_key:
        return order
    identities = []
    for i, entry in enumerate(order):
        if not isinstance(entry, dict) or merge_key not in entry:
            raise PatchError(_item(path, i), f"must be an object with the merge key {merge_key!r}")
        identities.append(entry[merge_key])
    return identities


def _check_order(patch_list: list[Any], wanted: list[Any], ident: _Ident, path: str, directive: str) -> None:
    """The patch's own items must appear in ``$setElementOrder``, in the same relative order."""
    position = 0
    for item in patch_list:
        if isinstance(item, dict) and _DIRECTIVE in item:
            continue
        identity = ident(item)
        while position < len(wanted) and not _json_equal(wanted[position], identity):
            position += 1
        if position == len(wanted):
            raise PatchError(path, f"the patch's items are missing from {directive} or out of its order")
        position += 1


def _ordered(merged: list[Any], patch_order: list[Any], server_order: list[Any], ident: _Ident) -> list[Any]:
    """Kubernetes' ``normalizeElementOrder``: patch items in patch order, live-only items in live order,
    interleaved by their live positions (an item unknown to the live list goes before the one it meets)."""
    in_patch = [item for item in merged if _index_of(patch_order, ident(item)) >= 0]
    server_only = [item for item in merged if _index_of(patch_order, ident(item)) < 0]
    in_patch = _sorted_by(in_patch, patch_order, ident)
    server_only = _sorted_by(server_only, server_order, ident)
    result: list[Any] = []
    i = j = 0
    while i < len(server_only) or j < len(in_patch):
        if j == len(in_patch):
            result.append(server_only[i])
            i += 1
        elif i == len(server_only):
            result.append(in_patch[j])
            j += 1
        else:
            left = _index_of(server_order, ident(server_only[i]))
            right = _index_of(server_order, ident(in_patch[j]))
            if 0 <= left < right:
                result.append(server_only[i])
                i += 1
            else:
                result.append(in_patch[j])
                j += 1
    return result


def _sorted_by(items: list[Any], order: list[Any], ident: _Ident) -> list[Any]:
    """Stable sort by position in ``order``; items not in it keep their relative order at the end."""

    def rank(item: Any) -> int:
        position = _index_of(order, ident(item))
        return position if position >= 0 else len(order)

    return sorted(items, key=rank)

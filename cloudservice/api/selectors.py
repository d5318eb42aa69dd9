"""Label and field selectors, parsed once per request and matched against plain JSON objects.

Label selectors take the apiserver's string syntax: equality (``a=b``, ``a==b``, ``a!=b``), sets
(``a in (x,y)``, ``a notin (x)``), existence (``a``, ``!a``) and numeric ``a>1`` / ``a<1``, ANDed by commas.
Field selectors take ``f=v``, ``f==v`` and ``f!=v`` over the handful of fields each kind indexes
(``metadata.name``, ``metadata.namespace``, and for pods ``spec.nodeName`` and ``status.phase``), and reject
any other field as the apiserver does, rather than silently matching nothing. The same module also turns a
``LabelSelector`` object (``matchLabels`` / ``matchExpressions``) into a requirement list, for validation and
for the SELECTOR column of tables. No indexing: selectors filter what the store lists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.resources import JSONObject, ResourceType
from cloudservice.errors import CloudError


class SelectorError(CloudError):
    """A selector string that does not parse; ``selector`` is the offending text."""

    def __init__(self, selector: str, message: str) -> None:
        super().__init__(f"unable to parse requirement: {message} in {selector!r}")
        self.selector = selector
        self.message = message


# Label keys: an optional DNS subdomain prefix and a name of at most 63 characters; values likewise short.
_KEY_RE = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_OPS = ("in", "notin", "=", "==", "!=", "exists", "!", "gt", "lt")


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str  # one of _OPS; "=" and "==" are normalised to "="
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        # gt / lt: both sides must be integers, an absent or non-numeric label never matches.
        try:
            have, want = int(value), int(self.values[0])
        except ValueError:
            return False
        return have > want if self.op == "gt" else have < want


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


_SET_RE = re.compile(r"^\s*(?P<key>[^\s!=<>()]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\s*$")
_CMP_RE = re.compile(r"^\s*(?P<key>[^\s!=<>()]+)\s*(?P<op>==|!=|=|>|<)\s*(?P<value>[^\s!=<>(),]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(?P<neg>!?)\s*(?P<key>[^\s!=<>(),]+)\s*$")


def _check_key(selector: str, key: str) -> None:
    if not _KEY_RE.match(key):
        raise SelectorError(selector, f"invalid label key {key!r}")


def _check_value(selector: str, value: str) -> None:
    if len(value) > 63 or not _VALUE_RE.match(value):
        raise SelectorError(selector, f"invalid label value {value!r}")


def parse_label_selector(text: str) -> LabelSelector:
    """Parse the ``labelSelector`` query parameter; an empty string selects everything."""
    if not text.strip():
        return LabelSelector()
    requirements: list[Requirement] = []
    for part in _split_top_level(text):
        if not part.strip():
            raise SelectorError(text, "empty requirement")
        if m := _SET_RE.match(part):
            key = m["key"]
            _check_key(text, key)
            values = tuple(v.strip() for v in m["values"].split(",") if v.strip())
            for v in values:
                _check_value(text, v)
            if not values:
                raise SelectorError(text, f"{m['op']} needs at least one value")
            requirements.append(Requirement(key, m["op"], values))
        elif m := _CMP_RE.match(part):
            key, op, value = m["key"], m["op"], m["value"]
            _check_key(text, key)
            if op in (">", "<"):
                if not value.lstrip("-").isdigit():
                    raise SelectorError(text, f"{op} needs an integer value")
                requirements.append(Requirement(key, "gt" if op == ">" else "lt", (value,)))
                continue
            _check_value(text, value)
            requirements.append(Requirement(key, "!=" if op == "!=" else "=", (value,)))
        elif m := _EXISTS_RE.match(part):
            _check_key(text, m["key"])
            requirements.append(Requirement(m["key"], "!" if m["neg"] else "exists"))
        else:
            raise SelectorError(text, f"cannot parse {part.strip()!r}")
    return LabelSelector(tuple(requirements))


def selector_from_object(sel: Any, field: str = "spec.selector") -> LabelSelector:
    """A metav1.LabelSelector (``matchLabels`` + ``matchExpressions``) as requirements.

    Raises :class:`app.errors.ValidationError` naming the field when the object is malformed.
    """
    from app.errors import ValidationError

    if not isinstance(sel, dict):
        raise ValidationError(field, "Required value")
    requirements: list[Requirement] = []
    match_labels = sel.get("matchLabels") or {}
    if not isinstance(match_labels, dict):
        raise ValidationError(f"{field}.matchLabels", "must be a map of strings")
    for k, v in sorted(match_labels.items()):
        if not isinstance(v, str) or not _KEY_RE.match(str(k)) or not _VALUE_RE.match(v):
            raise ValidationError(f"{field}.matchLabels", f"Invalid value: {k!r}: {v!r}: not a valid label")
        requirements.append(Requirement(str(k), "=", (v,)))
    exprs = sel.get("matchExpressions") or []
    if not isinstance(exprs, list):
        raise ValidationError(f"{field}.matchExpressions", "must be a list")
    for i, expr in enumerate(exprs):
        where = f"{field}.matchExpressions[{i}]"
        if not isinstance(expr, dict) or not isinstance(expr.get("key"), str):
            raise ValidationError(f"{where}.key", "Required value")
        op = expr.get("operator")
        values = expr.get("values") or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValidationError(f"{where}.values", "must be a list of strings")
        mapped = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}.get(str(op))
        if mapped is None:
            raise ValidationError(
                f"{where}.operator",
                f'Unsupported value: "{op}": supported values: "In", "NotIn", "Exists", "DoesNotExist"',
            )
        if mapped in ("in", "notin") and not values:
            raise ValidationError(
                f"{where}.values", "Required value: must be specified when `operator` is 'In' or 'NotIn'"
            )
        if mapped in ("exists", "!") and values:
            raise ValidationError(
                f"{where}.values",
                "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )
        requirements.append(Requirement(expr["key"], mapped, tuple(values)))
    return LabelSelector(tuple(requirements))


def format_label_selector(sel: Any) -> str:
    """kubectl's rendering of a LabelSelector object: ``app=web,tier in (a,b)``; ``<none>`` when empty."""
    if not isinstance(sel, dict):
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for expr in sel.get("matchExpressions") or []:
        key, op = expr.get("key", ""), expr.get("operator", "")
        values = ",".join(expr.get("values") or [])
        if op == "In":
            parts.append(f"{key} in ({values})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({values})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts) or "<none>"


def labels_of(obj: JSONObject) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


# Field selectors -----------------------------------------------------------------------------------------

_COMMON_FIELDS = ("metadata.name", "metadata.namespace")
_KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec.nodeName", "status.phase", "spec.restartPolicy", "spec.schedulerName", "status.podIP"),
    "Node": ("spec.unschedulable",),
    "Event": (
        "involvedObject.kind",
        "involvedObject.name",
        "involvedObject.namespace",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
}


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    field: str
    equal: bool
    value: str


@dataclass(frozen=True, slots=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, obj: JSONObject) -> bool:
        return all((field_value(obj, r.field) == r.value) == r.equal for r in self.requirements)


def field_value(obj: JSONObject, path: str) -> str:
    """The string value a field selector compares; absent fields read as "" (booleans as true/false)."""
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


_FIELD_RE = re.compile(r"^\s*(?P<field>[A-Za-z0-9_.]+)\s*(?P<op>==|!=|=)\s*(?P<value>[^,]*?)\s*$")


def parse_field_selector(text: str, rt: ResourceType) -> FieldSelector:
    """Parse ``fieldSelector`` for kind ``rt``; unknown fields raise SelectorError as the apiserver's 400."""
    if not text.strip():
        return FieldSelector()
    allowed = _COMMON_FIELDS + _KIND_FIELDS.get(rt.kind, ())
    reqs: list[FieldRequirement] = []
    for part in text.split(","):
        m = _FIELD_RE.match(part)
        if not m:
            raise SelectorError(text, f"invalid field selector {part.strip()!r}")
        if m["field"] not in allowed:
            raise SelectorError(text, f"field label not supported: {m['field']}")
        reqs.append(FieldRequirement(m["field"], m["op"] != "!=", m["value"]))
    return FieldSelector(tuple(reqs))


@dataclass(frozen=True, slots=True)
class Selection:
    """A request's label and field selectors together."""

    labels: LabelSelector = LabelSelector()
    fields: FieldSelector = FieldSelector()

    @property
    def empty(self) -> bool:
        return self.labels.empty and self.fields.empty

    def matches(self, obj: JSONObject) -> bool:
        return self.labels.matches(labels_of(obj)) and self.fields.matches(obj)

"""meta/v1 Status: the one error shape the API answers with, and the exception that carries it.

Every failure the API reports leaves as a Status object (``kind: Status, status: Failure``) with the HTTP
code, a machine-readable ``reason`` and ``details`` naming the object and, for 422 Invalid, one ``cause`` per
offending field. kubectl formats its messages from these fields (``The Deployment "x" is invalid:
spec.replicas: Invalid value: -1: must be >= 0``), so the wording follows the apiserver's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.resources import JSONObject, ResourceType
from cloudservice.errors import CloudError, StoreError


@dataclass(frozen=True, slots=True)
class Cause:
    """One ``details.causes`` entry: which field, why (``FieldValueInvalid``...), and the message."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"

    def to_json(self) -> JSONObject:
        return {"reason": self.reason, "message": self.message, "field": self.field}


@dataclass(slots=True)
class _Details:
    name: str = ""
    kind: str = ""
    group: str = ""
    causes: list[Cause] = field(default_factory=list)


class ApiError(CloudError):
    """A request the API refuses; rendered as a meta/v1 Status with ``code`` and ``reason``.

    Deliberately not a :class:`StoreError`: the store's ``guaranteed_update`` retries on its own
    ``Conflict``, whereas an ApiError raised inside an update function must end the request.
    """

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        name: str = "",
        kind: str = "",
        group: str = "",
        causes: list[Cause] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = _Details(name=name, kind=kind, group=group, causes=list(causes or []))

    def to_status(self) -> JSONObject:
        return failure_status(
            self.code,
            self.reason,
            self.message,
            name=self.details.name,
            kind=self.details.kind,
            group=self.details.group,
            causes=self.details.causes,
        )


def failure_status(
    code: int,
    reason: str,
    message: str,
    *,
    name: str = "",
    kind: str = "",
    group: str = "",
    causes: list[Cause] | None = None,
) -> JSONObject:
    """A meta/v1 Status with ``status: Failure``; empty detail fields are left out as the apiserver does."""
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    if kind:
        details["kind"] = kind
    if causes:
        details["causes"] = [c.to_json() for c in causes]
    status: JSONObject = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        status["details"] = details
    return status


def qualified(rt: ResourceType) -> str:
    """``pods`` or ``deployments.apps``: how the apiserver names a resource in messages."""
    return f"{rt.plural}.{rt.group}" if rt.group else rt.plural


def qualified_kind(rt: ResourceType) -> str:
    """``Pod`` or ``Deployment.apps``: how the apiserver names a kind in Invalid messages."""
    return f"{rt.kind}.{rt.group}" if rt.group else rt.kind


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{qualified(rt)} "{name}" not found', name=name, kind=rt.plural, group=rt.group
    )


def conflict(rt: ResourceType, name: str, why: str = "") -> ApiError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(rt)} "{name}": {why}',
        name=name,
        kind=rt.plural,
        group=rt.group,
    )


def invalid(rt: ResourceType, name: str, causes: list[Cause]) -> ApiError:
    """422 Invalid naming each field; the message is ``Kind.group "name" is invalid: field: message``."""
    joined = ", ".join(f"{c.field}: {c.message}" if c.field else c.message for c in causes)
    return ApiError(
        422,
        "Invalid",
        f'{qualified_kind(rt)} "{name}" is invalid: {joined}',
        name=name,
        kind=rt.kind,
        group=rt.group,
        causes=causes,
    )


def from_store_error(exc: StoreError, rt: ResourceType, name: str) -> ApiError:
    """Map a store error onto the Status the apiserver would send for the same condition."""
    if exc.code == 404:
        return not_found(rt, exc.name or name)
    if exc.reason == "AlreadyExists":
        n = exc.name or name
        return ApiError(
            409,
            "AlreadyExists",
            f'{qualified(rt)} "{n}" already exists',
            name=n,
            kind=rt.plural,
            group=rt.group,
        )
    if exc.reason == "Conflict":
        return conflict(rt, exc.name or name)
    if exc.code == 410:
        return gone(exc.message)
    return ApiError(exc.code, exc.reason, exc.message, name=exc.name or name, kind=rt.plural, group=rt.group)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message or "too old resource version")

"""Errors of the controllers. ``ControllerError`` derives from CloudCore's root ``CloudError``."""

from __future__ import annotations

from cloudservice.errors import CloudError


class ControllerError(CloudError):
    """Root of the errors the controllers raise on purpose."""


class InvalidSpec(ControllerError):
    """An object's spec cannot be acted on (e.g. ``maxSurge: "abc"``). Retrying will not help: the
    controller records a Warning event and waits for the object to change."""

    def __init__(self, kind: str, namespace: str, name: str, field: str, message: str) -> None:
        super().__init__(f"{kind} {namespace}/{name}: {field}: {message}")
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.field = field
        self.message = message

"""CloudCore's errors. ``CloudError`` is the root; the store's errors map one to one onto Kubernetes
Status reasons so the API layer can answer kubectl without guessing."""

from __future__ import annotations

from app.errors import FleetOpsError


class CloudError(FleetOpsError):
    """Root of every error CloudCore raises on purpose."""


class StoreError(CloudError):
    """A store operation failed; ``code`` and ``reason`` are the Kubernetes Status fields it maps to."""

    code = 500
    reason = "InternalError"

    def __init__(self, message: str, *, kind: str = "", name: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.name = name


class NotFound(StoreError):
    code = 404
    reason = "NotFound"


class AlreadyExists(StoreError):
    code = 409
    reason = "AlreadyExists"


class Conflict(StoreError):
    """The object changed since the caller read it (resourceVersion precondition failed)."""

    code = 409
    reason = "Conflict"


class Gone(StoreError):
    """A watch asked for a resourceVersion older than the store still remembers (HTTP 410)."""

    code = 410
    reason = "Expired"

"""Errors shared by every FleetOps package.

Each service has one root exception (``CloudError``, ``EdgeError``) deriving from :class:`FleetOpsError`;
subclasses carry the fields a caller needs to react (which field of a manifest, which node, which frame)
instead of hiding them in a message string. Library errors are chained with ``raise ... from exc``.
"""

from __future__ import annotations


class FleetOpsError(Exception):
    """Root of every error FleetOps raises on purpose."""


class ValidationError(FleetOpsError):
    """A manifest or message field is malformed.

    ``field`` is the JSON path of the offending field in Kubernetes' notation (``spec.containers[0].name``),
    so the API can name it in a Status and the edge can name it in a rejected frame.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class ProtocolError(FleetOpsError):
    """A tunnel frame that cannot be accepted (bad JSON, unknown operation, oversized)."""

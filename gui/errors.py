"""The GUI's own errors: one root, subclasses that say what the person should fix."""

from __future__ import annotations

from app.client import ApiError, ConnectionFailed
from app.errors import FleetOpsError


class GuiError(FleetOpsError):
    """Root of the errors the GUI raises on purpose."""


class TargetError(GuiError):
    """A server to connect to that cannot be used (no token, unreadable kubeconfig...)."""


def describe_error(exc: BaseException) -> str:
    """The text an inline message shows for a failure: the server's message and its field causes (an
    :class:`~app.client.ApiError`), what broke for a :class:`~app.client.ConnectionFailed` (without the
    server's name, which the caller shows), else the exception's own text."""
    if isinstance(exc, ApiError):
        text = exc.message or exc.reason or f"HTTP {exc.code}"
        causes = "; ".join(exc.field_errors)
        return f"{text} ({causes})" if causes and causes not in text else text
    if isinstance(exc, ConnectionFailed):
        return exc.message  # the caller names the server; ConnectionFailed's own text repeats it
    return str(exc) or type(exc).__name__

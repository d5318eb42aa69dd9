"""EdgeCore's errors. ``EdgeError`` is the root; subclasses carry the pod and container they concern so a
caller (and the log) can name them without parsing a message."""

from __future__ import annotations

from app.errors import FleetOpsError


class EdgeError(FleetOpsError):
    """Root of every error EdgeCore raises on purpose."""


class ContainerRuntimeError(EdgeError):
    """The container runtime could not do what was asked for one container."""

    def __init__(self, message: str, *, pod_uid: str = "", container: str = "") -> None:
        super().__init__(f"{pod_uid}/{container}: {message}" if container else message)
        self.message = message
        self.pod_uid = pod_uid
        self.container = container


class ContainerStartError(ContainerRuntimeError):
    """The container's process could not be started (no such executable, bad working directory...).

    Reported in the pod status as a terminated state with reason ``StartError`` and exit code 128, and
    retried with back-off like any other failure."""

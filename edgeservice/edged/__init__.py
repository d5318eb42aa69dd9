"""Edged, the edge's pod runtime: runs each pod's containers as supervised processes and reports
Kubernetes PodStatus (see ``manager`` for the loop, ``reconcile`` for the pure decisions, ``runtime`` and
``shim`` for the processes)."""

from edgeservice.edged.manager import Edged, PodStatusSink
from edgeservice.edged.runtime import (
    ContainerProcess,
    ContainerRuntime,
    ExitStatus,
    PodContext,
    ProcessRuntime,
)

__all__ = [
    "ContainerProcess",
    "ContainerRuntime",
    "Edged",
    "ExitStatus",
    "PodContext",
    "PodStatusSink",
    "ProcessRuntime",
]

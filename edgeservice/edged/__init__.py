"""Edged, the edge's pod runtime: runs each pod's containers as supervised processes and reports
Kubernetes PodStatus (see ``manager`` for the loop, ``reconcile`` for the pure decisions, ``runtime`` and
``shim`` for the processes, ``volumes`` for ConfigMaps, Secrets and volumes)."""

from edgeservice.edged.manager import Edged, PodStatusSink
from edgeservice.edged.runtime import (
    ContainerConfig,
    ContainerProcess,
    ContainerRuntime,
    ExitStatus,
    Mount,
    PodContext,
    ProcessRuntime,
)
from edgeservice.edged.volumes import ConfigSource

__all__ = [
    "ConfigSource",
    "ContainerConfig",
    "ContainerProcess",
    "ContainerRuntime",
    "Edged",
    "ExitStatus",
    "Mount",
    "PodContext",
    "PodStatusSink",
    "ProcessRuntime",
]

"""The overview's content, a pure function of the live tables: what a control room looks at first.

Counts come from the Fleet's per-group counters (nodes by readiness, pods by phase, devices by state), so
they cost nothing at 100,000 pods. "Link lost" lists the nodes that are not Ready now, longest-lost last,
with when their Ready condition changed and the cloud's reason (``NodeStatusUnknown``: "Kubelet stopped
posting node status." is the cloud noticing an edge that went silent). "Recent events" are the newest
events (warnings first among equals), and "link changes" the node transitions the window has seen since
it connected: together they answer "what changed".
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from app.camera import is_camera
from gui.fleet import LinkChange
from gui.rows import DEVICE_GROUPS, NODE_GROUPS, POD_PHASES, Kind, Row

RECENT_EVENTS = 15


@dataclass(frozen=True, slots=True)
class OfflineNode:
    name: str
    state: str  # NotReady or Unknown
    since: float  # epoch seconds the Ready condition changed (NO_TIME when unknown)
    reason: str


@dataclass(frozen=True, slots=True)
class Summary:
    nodes: Mapping[str, int]
    pods: Mapping[str, int]
    devices: Mapping[str, int]
    cameras: int
    offline: tuple[OfflineNode, ...]
    events: tuple[Row, ...]  # newest first
    link_changes: tuple[LinkChange, ...]  # newest first

    @property
    def node_total(self) -> int:
        return sum(self.nodes.values())

    @property
    def pod_total(self) -> int:
        return sum(self.pods.values())

    @property
    def device_total(self) -> int:
        return sum(self.devices.values())


def _reason(row: Row) -> str:
    status = row.raw.get("status")
    for c in (status.get("conditions") if isinstance(status, dict) else None) or []:
        if isinstance(c, dict) and c.get("type") == "Ready":
            reason, message = str(c.get("reason") or ""), str(c.get("message") or "")
            if reason and message:
                return f"{reason}: {message}"
            return reason or message or "(no reason given)"
    return "no Ready condition reported"


def summarize(
    *,
    groups: Mapping[Kind, Mapping[str, int]],
    nodes: Iterable[Row],
    devices: Iterable[Row],
    events: Iterable[Row],
    link_changes: Sequence[LinkChange] = (),
    recent: int = RECENT_EVENTS,
) -> Summary:
    """``groups`` is the Fleet's counters by kind (``nodes``, ``pods``, ``devices``)."""
    offline = sorted(
        (OfflineNode(r.name, r.group, r.since, _reason(r)) for r in nodes if r.group != "Ready"),
        key=lambda o: (-o.since, o.name),
    )
    newest = heapq.nlargest(recent, events, key=lambda r: (r.since, r.group == "Warning"))
    return Summary(
        nodes={g: groups.get("nodes", {}).get(g, 0) for g in NODE_GROUPS},
        pods={g: groups.get("pods", {}).get(g, 0) for g in POD_PHASES},
        devices={g: groups.get("devices", {}).get(g, 0) for g in DEVICE_GROUPS},
        cameras=sum(1 for r in devices if is_camera(r.raw)),
        offline=tuple(offline),
        events=tuple(newest),
        link_changes=tuple(link_changes),
    )

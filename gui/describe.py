"""The events of an object for the detail pane's describe text (``app.describe``, shared with the TUI):
:func:`events_for` picks them from the events table the GUI already holds, so describing costs no
request."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from app.describe import involved
from app.resources import JSONObject
from gui.rows import Kind, Row

INVOLVED_KINDS: dict[Kind, str] = {
    "nodes": "Node",
    "pods": "Pod",
    "deploy": "Deployment",
    "devices": "Device",
    "events": "Event",
}


def _d(value: Any) -> JSONObject:
    return value if isinstance(value, dict) else {}


def events_for(kind: Kind, obj: JSONObject, events: Iterable[Row]) -> list[JSONObject]:
    """The events about ``obj`` (by involvedObject kind, namespace and name), oldest first."""
    want = INVOLVED_KINDS[kind]
    m = _d(obj.get("metadata"))
    ns, name = str(m.get("namespace") or ""), str(m.get("name") or "")
    found = [
        r
        for r in events
        if involved(r.raw)[0] == want and involved(r.raw)[2] == name and involved(r.raw)[1] in (ns, "")
    ]
    found.sort(key=lambda r: r.since)
    return [r.raw for r in found]

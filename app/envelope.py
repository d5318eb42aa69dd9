"""The one message type every FleetOps module speaks, in KubeEdge's beehive shape.

```
{"header": {"msg_id", "parent_msg_id", "timestamp", "resourceversion", "sync"},
 "route":  {"source", "group", "operation", "resource"},
 "content": ...}
```

``timestamp`` is milliseconds since the epoch; ``resourceversion`` is the store revision of the object a
message carries ("" when none). ``sync`` marks a message the receiver must acknowledge (a ``response``
whose ``parent_msg_id`` is the message's id) once it has made the effect durable. ``seq`` is our one
addition: the edge's outbox sequence number, so the cloud can drop a redelivered status write.

Parsing is strict: an envelope that is not a JSON object of this shape raises :class:`ProtocolError`
naming the field, and the caller rejects that one message without tearing down anything else. A frame
may carry a JSON array of envelopes: the tunnel batches what is ready to go into one WebSocket message.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Final

from app.errors import ProtocolError

OPERATIONS: Final = frozenset({"insert", "update", "patch", "delete", "query", "response", "error"})

# Route groups: "resource" carries Kubernetes objects; "hub" carries the tunnel's own control messages.
GROUP_RESOURCE: Final = "resource"
GROUP_HUB: Final = "hub"
# "stream" carries byte streams that the cloud opens on an edge (pod logs, exec): see app.streams.
GROUP_STREAM: Final = "stream"


# Message ids: a random per-process prefix and a counter. Unique across processes and restarts like a
# uuid4, without a call to the OS's random source per message (a measurable cost at telemetry rates).
_id_prefix = secrets.token_hex(8)
_id_counter = itertools.count(1)


def _new_id_prefix() -> None:  # a forked child must not repeat its parent's ids
    global _id_prefix
    _id_prefix = secrets.token_hex(8)


os.register_at_fork(after_in_child=_new_id_prefix)


def new_msg_id() -> str:
    return f"{_id_prefix}{next(_id_counter):016x}"


@dataclass(slots=True)
class Message:
    operation: str
    resource: str
    content: Any = None
    source: str = ""
    group: str = GROUP_RESOURCE
    msg_id: str = field(default_factory=new_msg_id)
    parent_msg_id: str = ""
    timestamp: int = field(default_factory=lambda: int(time.time() * 1000))
    resourceversion: str = ""
    sync: bool = False
    seq: int = 0

    def to_dict(self) -> dict[str, Any]:
        header: dict[str, Any] = {
            "msg_id": self.msg_id,
            "parent_msg_id": self.parent_msg_id,
            "timestamp": self.timestamp,
            "resourceversion": self.resourceversion,
            "sync": self.sync,
        }
        if self.seq:
            header["seq"] = self.seq
        return {
            "header": header,
            "route": {
                "source": self.source,
                "group": self.group,
                "operation": self.operation,
                "resource": self.resource,
            },
            "content": self.content,
        }

    def encode(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def reply(self, operation: str = "response", content: Any = None, *, source: str = "") -> Message:
        """A response (or error) to this message, routed back to the same resource."""
        return Message(
            operation=operation,
            resource=self.resource,
            content=content,
            source=source,
            group=self.group,
            parent_msg_id=self.msg_id,
        )


def _field(obj: dict[str, Any], name: str, kind: type, where: str) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"{where}.{name}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _parse(frame: str | bytes, max_size: int | None) -> Any:
    if max_size is not None and len(frame) > max_size:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds the limit of {max_size}")
    try:
        return json.loads(frame)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"frame is not valid JSON: {exc}") from exc


def decode(frame: str | bytes, *, max_size: int | None = None) -> Message:
    """Parse a frame holding one envelope; raises ProtocolError for anything else."""
    return from_dict(_parse(frame, max_size))


def decode_batch(frame: str | bytes, *, max_size: int | None = None) -> list[Any]:
    """Parse a frame holding one envelope or a JSON array of them (see ``encode_batch``).

    Returns the raw items; each is checked with :func:`from_dict`, so that one bad envelope in a batch
    is rejected alone."""
    raw = _parse(frame, max_size)
    return raw if isinstance(raw, list) else [raw]


def encode_batch(encoded: list[str]) -> str:
    """Several encoded envelopes in one frame: one WebSocket message, one compression flush, one syscall."""
    return encoded[0] if len(encoded) == 1 else "[" + ",".join(encoded) + "]"


def from_dict(raw: Any) -> Message:
    """Validate one decoded envelope."""
    if not isinstance(raw, dict):
        raise ProtocolError("frame is not a JSON object")
    header = _field(raw, "header", dict, "message")
    route = _field(raw, "route", dict, "message")
    operation = _field(route, "operation", str, "route")
    if operation not in OPERATIONS:
        raise ProtocolError(f"route.operation: unknown operation {operation!r}")
    seq = header.get("seq", 0)
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ProtocolError("header.seq: expected a non-negative integer")
    return Message(
        operation=operation,
        resource=_field(route, "resource", str, "route"),
        content=raw.get("content"),
        source=_field(route, "source", str, "route"),
        group=_field(route, "group", str, "route"),
        msg_id=_field(header, "msg_id", str, "header"),
        parent_msg_id=str(header.get("parent_msg_id") or ""),
        timestamp=_field(header, "timestamp", int, "header"),
        resourceversion=str(header.get("resourceversion") or ""),
        sync=bool(header.get("sync", False)),
        seq=seq,
    )

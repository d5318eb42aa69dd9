"""Streams through the tunnel: pod logs now, exec and camera frames later.

The cloud never connects to an edge, so anything interactive rides the edge's one outbound WebSocket. A
stream is a conversation inside the tunnel, named by the id of the message that opened it:

```
cloud -> edge  query    <ns>/<what>/<name>  {params}          opens stream S (S = this message's msg_id)
edge  -> cloud response stream/S            {}                accepted: the cloud answers its HTTP client 200
edge  -> cloud error    stream/S            {code, reason, message}   refused (404 no such container...)
either way     update   stream/S            {"data": text}    a chunk (exec: {"ch": n, "b64": bytes})
cloud -> edge  patch    stream/S            {"credit": n}     the cloud consumed n chunks: send n more
either way     delete   stream/S            {"error": ...}    the end (client gone; exec adds exitCode)
```

Flow control is credit-based: the edge may have at most ``WINDOW`` chunks of at most ``CHUNK`` characters
outstanding per stream, and the cloud grants more as its HTTP client actually takes them. A slow
``kubectl logs -f`` therefore slows the edge's reader instead of filling the cloud's memory, and one busy
stream cannot starve the node's control messages (they share the connection, not a queue).
Chunks are not acknowledged or resent: a stream lives and dies with its connection, as an HTTP response
does; the client reconnects (``kubectl logs -f`` is re-run, ``--since`` picks up).
"""

from __future__ import annotations

from typing import Final

from app.envelope import GROUP_STREAM, Message

WINDOW: Final = 16
# 32 KiB of text per chunk: large enough that a `--tail 10000` costs a handful of frames, small enough
# that a chunk never holds the tunnel for long on a slow link.
CHUNK: Final = 32 * 1024


def window_of(params: object) -> int:
    """The credit window a stream was opened with: ``params["window"]`` (1 to WINDOW), else WINDOW. Video
    asks for a small one, so at most that many frames are ever in flight: on a slow link the edge drops
    frames instead of the link queueing them."""
    value = params.get("window") if isinstance(params, dict) else None
    if isinstance(value, bool) or not isinstance(value, int):
        return WINDOW
    return max(1, min(WINDOW, value))


def stream_resource(sid: str) -> str:
    return f"stream/{sid}"


def stream_id(message: Message) -> str:
    """The stream a message belongs to ("" when it is not a stream message)."""
    if message.group != GROUP_STREAM:
        return ""
    if message.operation == "query":
        return message.msg_id
    if message.operation in ("response", "error"):
        return message.parent_msg_id
    return message.resource.removeprefix("stream/")


def data(sid: str, text: str, source: str = "") -> Message:
    return item(sid, {"data": text}, source)


def item(sid: str, content: dict[str, object], source: str = "") -> Message:
    """A chunk of any shape: exec sends ``{"ch": n, "b64": ...}`` (binary, per Kubernetes channel)."""
    return Message("update", stream_resource(sid), content, source=source, group=GROUP_STREAM)


def credit(sid: str, n: int, source: str = "") -> Message:
    return Message("patch", stream_resource(sid), {"credit": n}, source=source, group=GROUP_STREAM)


def close(sid: str, error: str = "", source: str = "", **result: object) -> Message:
    """The end of a stream; ``result`` carries what the far end needs to know (exec: ``exitCode``)."""
    return Message(
        "delete", stream_resource(sid), {"error": error, **result}, source=source, group=GROUP_STREAM
    )


def accepted(open_msg: Message, source: str = "") -> Message:
    return Message(
        "response",
        stream_resource(open_msg.msg_id),
        {},
        source=source,
        group=GROUP_STREAM,
        parent_msg_id=open_msg.msg_id,
    )


def refused(open_msg: Message, code: int, reason: str, message: str, source: str = "") -> Message:
    return Message(
        "error",
        stream_resource(open_msg.msg_id),
        {"code": code, "reason": reason, "message": message},
        source=source,
        group=GROUP_STREAM,
        parent_msg_id=open_msg.msg_id,
    )

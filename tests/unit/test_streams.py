"""The cloud's end of a tunnel stream: acceptance, credit granting, and the bound on what it buffers."""

from __future__ import annotations

import pytest

from app import streams
from app.envelope import Message
from cloudservice.streams import CloudStream, StreamClosed, StreamRefused


def make() -> tuple[CloudStream, list[Message], list[str]]:
    sent: list[Message] = []
    closed: list[str] = []
    return CloudStream("s1", sent.append, on_close=closed.append), sent, closed


async def test_chunks_flow_and_credit_is_granted_as_they_are_taken() -> None:
    stream, sent, closed = make()
    stream.on_message(Message("response", "stream/s1", {}, group="stream", parent_msg_id="s1"))
    await stream.wait_accepted(timeout=1)
    for i in range(streams.WINDOW):
        stream.on_message(streams.data("s1", f"line {i}\n"))
    chunks = stream.chunks()
    got = [await anext(chunks) for _ in range(streams.WINDOW)]
    assert got == [f"line {i}\n" for i in range(streams.WINDOW)]
    # Credit is granted in halves of the window as the client takes chunks.
    assert [m.content["credit"] for m in sent if m.operation == "patch"] == [streams.WINDOW // 2] * 2
    stream.on_message(streams.close("s1"))
    assert [chunk async for chunk in chunks] == []
    assert closed == ["s1"]


async def test_a_refusal_carries_the_edges_status() -> None:
    stream, _, _ = make()
    stream.on_message(
        Message(
            "error",
            "stream/s1",
            {"code": 404, "reason": "NotFound", "message": "no pod"},
            group="stream",
            parent_msg_id="s1",
        )
    )
    with pytest.raises(StreamRefused) as err:
        await stream.wait_accepted(timeout=1)
    assert (err.value.code, err.value.reason, err.value.message) == (404, "NotFound", "no pod")


async def test_an_edge_sending_past_its_credit_is_cut_off() -> None:
    stream, sent, closed = make()
    for i in range(3 * streams.WINDOW):
        stream.on_message(streams.data("s1", f"{i}"))
    assert closed == ["s1"] and sent[-1].operation == "delete"
    with pytest.raises(StreamClosed):
        async for _ in stream.chunks():
            pass


async def test_losing_the_node_ends_a_waiting_client() -> None:
    stream, _, _ = make()
    stream.lost("node edge-1 disconnected")
    with pytest.raises(StreamClosed, match="disconnected"):
        await stream.wait_accepted(timeout=1)

"""The sans-I/O tunnel protocol, asserted on messages: two channels wired back to back."""

from __future__ import annotations

import json

import pytest

from app.envelope import Message, decode, decode_batch
from app.tunnel import Acked, Channel, Delivered, FrameRejected, Replied, hello, is_hello


def pod_update(name: str, rv: int) -> Message:
    return Message("update", f"default/pod/{name}", {"metadata": {"name": name}}, resourceversion=str(rv))


def pipe(src: Channel, dst: Channel, *, drop: bool = False) -> int:
    """Move every frame from src to dst; returns how many envelopes crossed."""
    frames = src.data_to_send()
    if not drop:
        for frame in frames:
            dst.receive_data(frame)
    return sum(len(decode_batch(f)) for f in frames)


def delivered(ch: Channel) -> list[Message]:
    return [e.message for e in ch.events_received() if isinstance(e, Delivered)]


def test_reliable_message_is_delivered_acked_and_forgotten() -> None:
    cloud, edge = Channel("cloud"), Channel("edge-1")
    cloud.send_reliable(pod_update("a", 5), key="default/pod/a")
    assert cloud.in_flight == 1
    pipe(cloud, edge)
    [msg] = delivered(edge)
    assert msg.sync and msg.resourceversion == "5" and msg.source == "cloud"
    edge.ack(msg)
    pipe(edge, cloud)
    [event] = cloud.events_received()
    assert isinstance(event, Acked) and event.message.msg_id == msg.msg_id
    assert cloud.in_flight == 0
    assert cloud.tick(100.0) is None  # nothing left to resend


def test_unsent_updates_to_one_object_coalesce_to_the_newest() -> None:
    cloud = Channel("cloud", window=1)
    cloud.send_reliable(pod_update("busy", 1), key="k-busy")  # occupies the window
    cloud.send_reliable(pod_update("a", 2), key="k-a")
    cloud.send_reliable(pod_update("b", 3), key="k-b")
    cloud.send_reliable(pod_update("a", 4), key="k-a")
    assert cloud.queued == 2 and cloud.stats["coalesced"] == 1
    edge = Channel("edge")
    order = []
    for _ in range(3):
        pipe(cloud, edge)
        [m] = delivered(edge)
        order.append((m.resource, m.resourceversion))
        edge.ack(m)
        pipe(edge, cloud)
        cloud.events_received()
    # "a" kept its first queue position but carries the newest version.
    assert order == [("default/pod/busy", "1"), ("default/pod/a", "4"), ("default/pod/b", "3")]


def test_one_key_never_has_two_versions_in_flight() -> None:
    cloud, edge = Channel("cloud"), Channel("edge")
    cloud.send_reliable(pod_update("a", 1), key="a")
    cloud.send_reliable(pod_update("a", 2), key="a")
    assert (cloud.in_flight, cloud.queued) == (1, 1)
    pipe(cloud, edge)
    [first] = delivered(edge)
    assert first.resourceversion == "1"
    edge.ack(first)
    pipe(edge, cloud)
    cloud.events_received()
    pipe(cloud, edge)
    [second] = delivered(edge)
    assert second.resourceversion == "2"


def test_unkeyed_messages_are_never_coalesced_and_keep_order() -> None:
    edge, cloud = Channel("edge"), Channel("cloud")
    for seq in range(1, 6):
        edge.send_reliable(Message("update", "default/podstatus/a", {"n": seq}, seq=seq), key=None)
    pipe(edge, cloud)
    assert [m.seq for m in delivered(cloud)] == [1, 2, 3, 4, 5]


def test_window_limits_messages_in_flight() -> None:
    cloud, edge = Channel("cloud", window=3), Channel("edge")
    for i in range(10):
        cloud.send_reliable(pod_update(f"p{i}", i + 1), key=f"p{i}")
    assert pipe(cloud, edge) == 3
    for m in delivered(edge):
        edge.ack(m)
    pipe(edge, cloud)
    assert len([e for e in cloud.events_received() if isinstance(e, Acked)]) == 3
    assert pipe(cloud, edge) == 3


def test_unacked_message_is_resent_with_backoff_until_acked() -> None:
    cloud, edge = Channel("cloud", resend_after=1.0, resend_max=4.0), Channel("edge")
    cloud.send_reliable(pod_update("a", 1), key="a")
    pipe(cloud, edge, drop=True)  # lost
    assert cloud.tick(0.0) == 1.0  # the first tick after sending starts the resend timer
    assert cloud.tick(0.5) == 1.0
    assert cloud.data_to_send() == []
    assert cloud.tick(1.0) == 3.0  # resent at 1.0, next after 2 s
    pipe(cloud, edge)
    [m] = delivered(edge)
    assert cloud.tick(3.0) == 7.0  # resent again, interval capped at 4 s
    assert cloud.stats["resent"] == 2
    pipe(cloud, edge)
    [again] = delivered(edge)
    assert again.msg_id == m.msg_id  # a resend is the same message: the receiver can deduplicate
    edge.ack(again)
    pipe(edge, cloud)
    assert cloud.in_flight == 0 and cloud.tick(10.0) is None


def test_error_reply_settles_a_reliable_message() -> None:
    cloud, edge = Channel("cloud"), Channel("edge")
    cloud.send_reliable(pod_update("bad", 1), key="bad")
    pipe(cloud, edge)
    [m] = delivered(edge)
    edge.reject(m, "spec.containers: required")
    pipe(edge, cloud)
    [event] = cloud.events_received()
    assert isinstance(event, Acked) and cloud.in_flight == 0


def test_reply_to_a_plain_request_is_reported_as_replied() -> None:
    edge, cloud = Channel("edge-1"), Channel("cloud")
    request = hello("edge-1", {"inventory": {}})
    edge.send(request)
    pipe(edge, cloud)
    [h] = delivered(cloud)
    assert is_hello(h) and h.content == {"inventory": {}}
    cloud.send(h.reply(content={"applied_seq": 7}))
    pipe(cloud, edge)
    [event] = edge.events_received()
    assert isinstance(event, Replied) and event.message.content == {"applied_seq": 7}
    assert event.message.parent_msg_id == request.msg_id


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("42", "not a JSON object"),
        ('{"header": {}, "route": {}}', "route.operation"),
        (
            json.dumps(
                {
                    "header": {"msg_id": "x", "timestamp": 1},
                    "route": {
                        "source": "e",
                        "group": "resource",
                        "operation": "explode",
                        "resource": "a/b/c",
                    },
                }
            ),
            "unknown operation 'explode'",
        ),
        (
            json.dumps(
                {
                    "header": {"msg_id": 5, "timestamp": 1},
                    "route": {"source": "e", "group": "resource", "operation": "insert", "resource": "a/b/c"},
                }
            ),
            "header.msg_id",
        ),
        ("x" * 2000, "exceeds the limit of 1024"),
    ],
)
def test_bad_frames_are_rejected_alone_and_answered(frame: str, reason: str) -> None:
    cloud, edge = Channel("cloud", max_frame=1024), Channel("edge")
    cloud.receive_data(frame)
    [event] = cloud.events_received()
    assert isinstance(event, FrameRejected) and reason in event.reason
    [error] = [decode(f) for f in cloud.data_to_send()]
    assert error.operation == "error" and reason in error.content["reason"]
    # The channel keeps working for the next, good frame.
    edge.send_reliable(pod_update("ok", 1), key="ok")
    pipe(edge, cloud)
    assert [m.resource for m in delivered(cloud)] == ["default/pod/ok"]
    assert cloud.stats["rejected"] == 1


def test_envelope_round_trip_keeps_every_field() -> None:
    m = Message(
        "patch", "ns/pod/x", {"a": 1}, source="s", parent_msg_id="p", resourceversion="9", sync=True, seq=3
    )
    assert decode(m.encode()) == m
    assert set(m.to_dict()["header"]) == {
        "msg_id",
        "parent_msg_id",
        "timestamp",
        "resourceversion",
        "sync",
        "seq",
    }


def test_a_burst_travels_in_one_frame_within_the_size_budget() -> None:
    cloud, edge = Channel("cloud", max_frame=4096), Channel("edge")
    for i in range(40):
        cloud.send_reliable(pod_update(f"p{i}", i + 1), key=f"p{i}")
    frames = cloud.data_to_send()
    assert 1 < len(frames) < 40 and all(len(f) <= 2048 for f in frames)
    for f in frames:
        edge.receive_data(f)
    assert [m.resource for m in delivered(edge)] == [f"default/pod/p{i}" for i in range(40)]


def test_one_bad_envelope_in_a_batch_is_rejected_alone() -> None:
    good = pod_update("ok", 1)
    good.sync = True
    frame = "[" + good.encode() + ', {"header": {}}]'
    cloud = Channel("cloud")
    cloud.receive_data(frame)
    events = cloud.events_received()
    assert [type(e).__name__ for e in events] == ["Delivered", "FrameRejected"]
    assert cloud.stats["rejected"] == 1

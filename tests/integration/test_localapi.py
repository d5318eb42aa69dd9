"""The edge's local API over real HTTP, with a real MetaManager, a real Edged and real container processes."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.envelope import Message
from edgeservice.edged import Edged
from edgeservice.localapi import LocalApi
from edgeservice.metamanager import MetaManager

JSONObject = dict[str, Any]
DEADLINE = 15.0
NODE = "edge-1"
# Three lines at start, then a fourth once the test creates the trigger file.
SCRIPT = (
    "for i in 1 2 3; do echo line $i; done; "
    'while [ ! -e "$TRIGGER" ]; do sleep 0.02; done; echo line 4; sleep 30'
)
TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z line \d$")


class Sink:
    """Edged's sink, as EdgeCore wires it: statuses are persisted in MetaManager's local status copy."""

    def __init__(self, meta: MetaManager) -> None:
        self.meta = meta
        self.latest: dict[str, JSONObject] = {}
        self._changed = asyncio.Event()

    def pod_status_changed(self, pod: JSONObject, status: JSONObject) -> None:
        m = pod["metadata"]
        self.meta.set_status(f"{m['namespace']}/pod/{m['name']}", status)
        self.latest[m["uid"]] = status
        self._changed.set()

    def pod_terminated(self, pod: JSONObject) -> None:
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(DEADLINE):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


@dataclass
class Edge:
    api: LocalApi
    edged: Edged
    meta: MetaManager
    http: aiohttp.ClientSession
    trigger: Path
    restarted: list[str]
    link: dict[str, bool]  # {"connected": ...}, what cloud_connected() answers

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.api.port}{path}"


def make_pod(name: str, uid: str, containers: list[JSONObject]) -> JSONObject:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "site", "uid": uid, "labels": {"app": name}},
        "spec": {"nodeName": NODE, "containers": containers, "terminationGracePeriodSeconds": 2},
        "status": {"phase": "Pending"},
    }


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    meta = MetaManager(tmp_path / "edge.db")
    meta.open()
    sink = Sink(meta)
    edged = Edged(tmp_path / "edged", NODE, sink, backoff_base=0.05, backoff_max=0.4)
    trigger = tmp_path / "trigger"
    web = make_pod(
        "web",
        "uid-web",
        [
            {
                "name": "app",
                "image": "busybox",
                "command": ["sh", "-c", SCRIPT],
                "env": [{"name": "TRIGGER", "value": str(trigger)}],
            }
        ],
    )
    two = make_pod(
        "two",
        "uid-two",
        [{"name": n, "image": "busybox", "command": ["sleep", "30"]} for n in ("a", "b")],
    )
    meta.apply(
        Message("insert", f"site/pod/{p['metadata']['name']}", p, resourceversion="5") for p in (web, two)
    )
    await edged.start()
    http = aiohttp.ClientSession()
    api: LocalApi | None = None
    try:
        edged.sync(meta.objects("pod"))
        await sink.wait_for(
            lambda: all(sink.latest.get(u, {}).get("phase") == "Running" for u in ("uid-web", "uid-two"))
        )
        restarted: list[str] = []
        link = {"connected": False}
        api = LocalApi(
            meta,
            edged,
            NODE,
            node_status=lambda: {"conditions": [{"type": "Ready", "status": "True"}]},
            cloud_connected=lambda: link["connected"],
            restart_pod=restarted.append,
            port=0,
        )
        await api.start()
        yield Edge(api, edged, meta, http, trigger, restarted, link)
    finally:
        await http.close()
        if api is not None:
            await api.stop()
        await edged.stop_all_pods()
        await edged.stop()
        meta.close()


async def get_json(edge: Edge, path: str, status: int = 200) -> JSONObject:
    async with edge.http.get(edge.url(path)) as r:
        assert r.status == status, await r.text()
        assert r.headers["X-FleetOps-Source"] == "edge-cache"
        body: JSONObject = await r.json()
        return body


async def get_text(edge: Edge, path: str) -> str:
    async with edge.http.get(edge.url(path)) as r:
        assert r.status == 200, await r.text()
        assert r.headers["X-FleetOps-Source"] == "edge-cache"
        return await r.text()


async def wait_log(edge: Edge, path: str, predicate: Callable[[str], bool]) -> str:
    """The shim writes the log asynchronously: poll with a short interval and a deadline."""
    async with asyncio.timeout(DEADLINE):
        while not predicate(text := await get_text(edge, path)):
            await asyncio.sleep(0.02)
    return text


LOG = "/api/v1/namespaces/site/pods/web/log"


async def test_lists_and_gets_pods_with_the_edges_own_status(edge: Edge) -> None:
    pods = await get_json(edge, "/api/v1/pods")
    assert pods["kind"] == "PodList"
    assert [p["metadata"]["name"] for p in pods["items"]] == ["two", "web"]
    in_ns = await get_json(edge, "/api/v1/namespaces/site/pods")
    assert len(in_ns["items"]) == 2
    assert (await get_json(edge, "/api/v1/namespaces/other/pods"))["items"] == []

    pod = await get_json(edge, "/api/v1/namespaces/site/pods/web")
    assert pod["kind"] == "Pod"
    assert pod["metadata"]["uid"] == "uid-web"
    assert pod["metadata"]["labels"] == {"app": "web"}
    assert pod["status"]["phase"] == "Running"  # Edged's status, not the cached Pending
    assert pod["status"]["containerStatuses"][0]["state"]["running"]
    assert pod["metadata"]["annotations"]["fleetops.io/cloud-connected"] == "false"

    edge.link["connected"] = True
    async with edge.http.get(edge.url("/api/v1/namespaces/site/pods/web")) as r:
        assert r.headers["X-FleetOps-Cloud-Connected"] == "true"
        assert (await r.json())["metadata"]["annotations"]["fleetops.io/cloud-connected"] == "true"


async def test_node_and_discovery(edge: Edge) -> None:
    nodes = await get_json(edge, "/api/v1/nodes")
    assert nodes["kind"] == "NodeList"
    assert [n["metadata"]["name"] for n in nodes["items"]] == [NODE]
    node = await get_json(edge, f"/api/v1/nodes/{NODE}")
    assert node["kind"] == "Node"
    assert node["status"]["conditions"][0]["type"] == "Ready"
    assert node["metadata"]["annotations"]["fleetops.io/cloud-connected"] == "false"

    resources = await get_json(edge, "/api/v1")
    assert {r["name"]: r["verbs"] for r in resources["resources"]}["pods"] == ["get", "list"]
    assert (await get_json(edge, "/api"))["versions"] == ["v1"]
    assert (await get_json(edge, "/version"))["gitVersion"].startswith("v1.")
    assert await get_text(edge, "/healthz") == "ok"
    async with edge.http.head(edge.url(f"{LOG}?follow=true")) as r:  # a HEAD never streams
        assert r.status == 200
        assert r.headers["X-FleetOps-Source"] == "edge-cache"
    assert await get_text(edge, "/readyz") == "ok"


DEVICES = "/apis/devices.kubeedge.io/v1beta1"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/api/v1/namespaces/site/pods/nope", 'pods "nope" not found'),
        ("/api/v1/namespaces/other/pods/web", 'pods "web" not found'),
        ("/api/v1/namespaces/site/pods/nope/log", 'pods "nope" not found'),
        ("/api/v1/nodes/other-node", 'nodes "other-node" not found'),
        (
            f"{DEVICES}/namespaces/site/devices/nope",
            'devices.devices.kubeedge.io "nope" not found on this edge',
        ),
        (
            f"{DEVICES}/namespaces/site/devicemodels/nope",
            'devicemodels.devices.kubeedge.io "nope" not found in this edge\'s cache '
            "(it holds the models of this node's devices only)",
        ),
        ("/api/v1/secrets", "the server could not find the requested resource"),
        ("/nothing/here", "the server could not find the requested resource"),
    ],
)
async def test_unknown_objects_and_routes_are_404_statuses(edge: Edge, path: str, message: str) -> None:
    status = await get_json(edge, path, 404)
    assert status["kind"] == "Status"
    assert status["reason"] == "NotFound"
    assert status["code"] == 404
    assert status["message"] == message


async def test_logs_with_tail_and_timestamps(edge: Edge) -> None:
    text = await wait_log(edge, LOG, lambda t: "line 3" in t)
    assert text == "line 1\nline 2\nline 3\n"
    assert await get_text(edge, f"{LOG}?container=app&tailLines=2") == "line 2\nline 3\n"
    assert await get_text(edge, f"{LOG}?limitBytes=9") == "line 1\nli"
    assert await get_text(edge, f"{LOG}?sinceSeconds=3600") == "line 1\nline 2\nline 3\n"
    stamped = (await get_text(edge, f"{LOG}?timestamps=true&tailLines=1")).splitlines()
    assert len(stamped) == 1
    assert TIMESTAMPED.match(stamped[0]), stamped
    assert stamped[0].endswith(" line 3")


async def test_follow_streams_new_lines_and_ends_when_the_client_leaves(edge: Edge) -> None:
    await wait_log(edge, LOG, lambda t: "line 3" in t)
    async with asyncio.timeout(DEADLINE), edge.http.get(edge.url(f"{LOG}?follow=true&tailLines=1")) as r:
        assert r.status == 200
        assert r.headers["Transfer-Encoding"] == "chunked"
        assert await r.content.readline() == b"line 3\n"
        edge.trigger.touch()
        assert await r.content.readline() == b"line 4\n"
    await wait_no_connections(edge)  # the follower notices the closed connection within a poll interval


async def test_follow_ends_cleanly_when_the_server_stops(edge: Edge) -> None:
    await wait_log(edge, LOG, lambda t: "line 3" in t)
    async with asyncio.timeout(DEADLINE), edge.http.get(edge.url(f"{LOG}?follow=1")) as r:
        assert await r.content.readline() == b"line 1\n"
        await edge.api.stop()
        assert await r.content.read() == b"line 2\nline 3\n"  # the chunked body ends properly: no error


RESTART = {"X-FleetOps-Request": "restart"}


async def test_restart_is_the_one_allowed_write(edge: Edge) -> None:
    # Without the header (what a browser form on this box would send) the restart is refused.
    async with edge.http.post(edge.url("/api/v1/namespaces/site/pods/web/restart")) as r:
        assert r.status == 403 and "X-FleetOps-Request" in (await r.json())["message"]
    assert edge.restarted == []
    async with edge.http.post(edge.url("/api/v1/namespaces/site/pods/web/restart"), headers=RESTART) as r:
        assert r.status == 202
        body = await r.json()
    assert body["kind"] == "Status"
    assert body["status"] == "Success"
    assert edge.restarted == ["uid-web"]
    async with edge.http.post(edge.url("/api/v1/namespaces/site/pods/nope/restart"), headers=RESTART) as r:
        assert r.status == 404
    assert edge.restarted == ["uid-web"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/namespaces/site/pods"),
        ("PUT", "/api/v1/namespaces/site/pods/web"),
        ("PATCH", "/api/v1/namespaces/site/pods/web"),
        ("DELETE", "/api/v1/namespaces/site/pods/web"),
        ("POST", "/api/v1/namespaces/site/pods/web/eviction"),
        ("DELETE", "/api/v1/nodes/edge-1"),
    ],
)
async def test_other_writes_are_refused_with_405(edge: Edge, method: str, path: str) -> None:
    async with edge.http.request(method, edge.url(path), json={"kind": "Pod"}) as r:
        assert r.status == 405
        assert r.headers["X-FleetOps-Source"] == "edge-cache"
        status = await r.json()
    assert status["kind"] == "Status"
    assert status["reason"] == "MethodNotAllowed"
    assert "the edge's local API is read-only" in status["message"]
    assert "POST /api/v1/namespaces/{namespace}/pods/{name}/restart" in status["message"]
    assert edge.restarted == []


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("tailLines=abc", "tailLines"),
        ("tailLines=-1", "tailLines"),
        ("limitBytes=0", "limitBytes"),
        ("sinceSeconds=soon", "sinceSeconds"),
        ("sinceTime=yesterday", "sinceTime"),
        ("sinceSeconds=5&sinceTime=2024-01-01T00:00:00Z", "sinceSeconds"),
        ("follow=maybe", "follow"),
        ("timestamps=yes", "timestamps"),
        ("container=nope", "container nope is not valid"),
        ("previous=true", 'previous terminated container "app"'),
    ],
)
async def test_bad_log_queries_are_400_naming_the_parameter(edge: Edge, query: str, names: str) -> None:
    status = await get_json(edge, f"{LOG}?{query}", 400)
    assert status["reason"] == "BadRequest"
    assert names in status["message"]


async def test_a_container_must_be_named_when_the_pod_has_several(edge: Edge) -> None:
    status = await get_json(edge, "/api/v1/namespaces/site/pods/two/log", 400)
    assert status["message"] == "a container name must be specified for pod two, choose one of: [a b]"
    assert await get_text(edge, "/api/v1/namespaces/site/pods/two/log?container=b") == ""


async def raw(edge: Edge, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.api.port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(DEADLINE):
            return await reader.read()  # to EOF: the server closes the connection
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", b"400"),
        (b"GET /healthz HTTP/1.1\r\n\r\n", b"400"),  # HTTP/1.1 without Host
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", b"431"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000, b"400"),  # never ends
    ],
)
async def test_malformed_http_is_refused_and_the_connection_closed(
    edge: Edge, request_bytes: bytes, status: bytes
) -> None:
    answer = await raw(edge, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 " + status + b" "), head
    assert json.loads(body)["kind"] == "Status"
    assert edge.api.connections == 0 or await wait_no_connections(edge)


async def wait_no_connections(edge: Edge) -> bool:
    async with asyncio.timeout(DEADLINE):
        while edge.api.connections:
            await asyncio.sleep(0.02)
    return True


async def test_a_hung_client_does_not_block_others(edge: Edge) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", edge.api.port)
    try:
        writer.write(b"GET /api/v1/pods HTTP/1.1\r\nHost: x\r\n")  # and never finishes the request
        await writer.drain()
        # Meanwhile, on other connections, everything is served.
        for _ in range(3):
            assert len((await get_json(edge, "/api/v1/pods"))["items"]) == 2
    finally:
        writer.close()
        await writer.wait_closed()


async def test_devices_from_the_cache_with_the_edges_twin_state(edge: Edge) -> None:
    empty = await get_json(edge, "/apis/devices.kubeedge.io/v1beta1/devices")
    assert empty["kind"] == "DeviceList" and empty["items"] == []
    dev = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": "pump", "namespace": "site", "uid": "uid-pump"},
        "spec": {"nodeName": NODE, "deviceModelRef": {"name": "m"}, "protocol": {"protocolName": "modbus"}},
    }
    edge.meta.apply([Message("insert", "site/device/pump", dev, resourceversion="7")])
    twins = {"setpoint": {"actual": {"value": "38", "metadata": {"timestamp": 1}}}}
    edge.meta.set_local("twin/site/device/pump", {"twins": twins, "state": "online"})
    listed = await get_json(edge, "/apis/devices.kubeedge.io/v1beta1/devices")
    [item] = listed["items"]
    assert item["metadata"]["name"] == "pump"
    assert item["status"]["state"] == "online"
    assert item["status"]["twins"][0]["propertyName"] == "setpoint"
    assert item["status"]["twins"][0]["reported"]["value"] == "38"
    assert item["metadata"]["annotations"]["fleetops.io/cloud-connected"] == "false"
    assert (
        len((await get_json(edge, "/apis/devices.kubeedge.io/v1beta1/namespaces/site/devices"))["items"]) == 1
    )
    assert (await get_json(edge, "/apis/devices.kubeedge.io/v1beta1/namespaces/other/devices"))["items"] == []

    one = await get_json(edge, f"{DEVICES}/namespaces/site/devices/pump")
    assert one == item  # the single Device is the listed one, twin state and all
    await get_json(edge, f"{DEVICES}/namespaces/other/devices/pump", 404)


def pump_model(namespace: str, unit: str) -> JSONObject:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": "m", "namespace": namespace, "uid": f"uid-m-{namespace}"},
        "spec": {
            "protocol": "modbus",
            "properties": [{"name": "setpoint", "type": "INT", "accessMode": "ReadWrite", "unit": unit}],
        },
    }


async def test_device_models_from_the_cache(edge: Edge) -> None:
    empty = await get_json(edge, f"{DEVICES}/devicemodels")
    assert empty["kind"] == "DeviceModelList" and empty["items"] == []
    await get_json(edge, f"{DEVICES}/namespaces/site/devicemodels/m", 404)
    edge.meta.apply(
        Message("insert", f"{ns}/devicemodel/m", pump_model(ns, unit), resourceversion=rv)
        for ns, unit, rv in (("site", "rpm", "8"), ("lab", "Hz", "9"))
    )
    listed = await get_json(edge, f"{DEVICES}/devicemodels")
    assert sorted((m["metadata"]["namespace"], m["kind"]) for m in listed["items"]) == [
        ("lab", "DeviceModel"),
        ("site", "DeviceModel"),
    ]
    [site] = (await get_json(edge, f"{DEVICES}/namespaces/site/devicemodels"))["items"]
    assert site["metadata"]["uid"] == "uid-m-site"
    assert (await get_json(edge, f"{DEVICES}/namespaces/other/devicemodels"))["items"] == []

    one = await get_json(edge, f"{DEVICES}/namespaces/lab/devicemodels/m")
    assert one["kind"] == "DeviceModel"
    assert one["apiVersion"] == "devices.kubeedge.io/v1beta1"
    assert one["spec"]["properties"][0]["unit"] == "Hz"  # the lab's model, not the site's
    assert one["metadata"]["annotations"]["fleetops.io/cloud-connected"] == "false"

    # A model the cloud withdraws from this node is gone here too.
    edge.meta.apply([Message("delete", "lab/devicemodel/m", None, resourceversion="10")])
    await get_json(edge, f"{DEVICES}/namespaces/lab/devicemodels/m", 404)
    assert len((await get_json(edge, f"{DEVICES}/devicemodels"))["items"]) == 1


async def test_events_are_those_waiting_in_the_outbox(edge: Edge) -> None:
    content = {"uid": "uid-web", "type": "Warning", "reason": "BackOff", "message": "restarting"}
    edge.meta.enqueue(Message("insert", "site/event/web", content, source=NODE))
    edge.meta.enqueue(Message("update", "site/podstatus/web", {"uid": "uid-web", "status": {}}, source=NODE))
    events = await get_json(edge, "/api/v1/events")
    assert events["kind"] == "EventList"
    [ev] = events["items"]
    assert ev["involvedObject"] == {"kind": "Pod", "namespace": "site", "name": "web", "uid": "uid-web"}
    assert (ev["type"], ev["reason"], ev["message"]) == ("Warning", "BackOff", "restarting")
    assert ev["source"]["host"] == NODE
    assert len((await get_json(edge, "/api/v1/namespaces/site/events"))["items"]) == 1
    assert (await get_json(edge, "/api/v1/namespaces/other/events"))["items"] == []

"""The Kubernetes-compatible API in-process on a random port, over HTTP with aiohttp's client, against a real
SqlStore on disk: discovery, CRUD, patches, subresources, tables, selectors, watch and every refusal."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.resources import DEPLOYMENTS, NODES, PODS
from cloudservice.api import ApiServer, build_app
from cloudservice.api.selectors import SelectorError, parse_label_selector
from cloudservice.api.tables import human_duration
from cloudservice.store.sql import SqlStore, open_store

TOKEN = "test-token"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSONPATCH = "application/json-patch+json"


class Api:
    def __init__(self, base: str, session: aiohttp.ClientSession, store: SqlStore) -> None:
        self.base = base
        self.session = session
        self.store = store

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        ctype: str = "application/json",
        accept: str = "application/json",
        raw: bytes | None = None,
        auth: bool = True,
    ) -> tuple[int, Any]:
        headers = {"Accept": accept, "Content-Type": ctype}
        if auth:
            headers["Authorization"] = f"Bearer {TOKEN}"
        # A stream, not bytes: aiohttp warns (an error here) about sending megabytes of raw bytes at once.
        data = (
            io.BytesIO(raw) if raw is not None else (json.dumps(body).encode() if body is not None else None)
        )
        async with self.session.request(method, self.base + path, data=data, headers=headers) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    store = open_store(str(tmp_path / "cloud.db"), event_window=50)
    await store.start()
    server = ApiServer(build_app(store, tokens={TOKEN: "admin"}, bookmark_interval=0.2))
    await server.start()
    session = aiohttp.ClientSession()
    try:
        yield Api(server.url, session, store)
    finally:
        await session.close()
        await server.stop()
        await store.close()


def pod(
    name: str, *, node: str = "", labels: dict[str, str] | None = None, image: str = "busybox:1.36"
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": image}]}
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
    }


def deployment(name: str, *, replicas: int = 2, image: str = "web:1") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": "web", "image": image}, {"name": "side", "image": "side:1"}]
                },
            },
        },
    }


def node(name: str, *, ready: str = "True", unschedulable: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/agent": ""},
        },
        "spec": {"unschedulable": unschedulable},
        "status": {
            "conditions": [{"type": "Ready", "status": ready}],
            "addresses": [{"type": "InternalIP", "address": "10.1.2.3"}],
            "nodeInfo": {"kubeletVersion": "v1.32.0-fleetops", "osImage": "Debian 12"},
        },
    }


PODS_URL = "/api/v1/namespaces/default/pods"
DEPLOY_URL = "/apis/apps/v1/namespaces/default/deployments"


# -- discovery ---------------------------------------------------------------------------------------------


async def test_discovery_documents(api: Api) -> None:
    code, version = await api.call("GET", "/version", auth=False)
    assert code == 200 and version["gitVersion"] == "v1.32.0-fleetops" and version["minor"] == "32"
    for probe in ("/healthz", "/readyz", "/livez"):
        assert await api.call("GET", probe, auth=False) == (200, "ok")
    code, apis = await api.call("GET", "/api")
    assert code == 200 and apis["versions"] == ["v1"]
    code, core = await api.call("GET", "/api/v1")
    by_name = {r["name"]: r for r in core["resources"]}
    assert {"nodes", "nodes/status", "pods", "pods/status", "namespaces", "events"} <= by_name.keys()
    assert by_name["pods"]["shortNames"] == ["po"] and by_name["pods"]["categories"] == ["all"]
    assert by_name["pods"]["singularName"] == "pod" and "watch" in by_name["pods"]["verbs"]
    assert by_name["nodes"]["namespaced"] is False
    code, groups = await api.call("GET", "/apis")
    assert [g["name"] for g in groups["groups"]] == ["apps", "devices.kubeedge.io"]
    code, apps = await api.call("GET", "/apis/apps/v1")
    by_name = {r["name"]: r for r in apps["resources"]}
    assert (
        by_name["deployments/scale"]["kind"] == "Scale"
        and by_name["deployments/scale"]["group"] == "autoscaling"
    )
    assert "deployments/status" in by_name and by_name["deployments"]["shortNames"] == ["deploy"]
    code, oapi = await api.call("GET", "/openapi/v3")
    assert code == 200 and "apis/apps/v1" in oapi["paths"]
    assert (await api.call("GET", "/openapi/v2"))[0] == 404


async def test_system_namespaces_exist_on_startup(api: Api) -> None:
    code, body = await api.call("GET", "/api/v1/namespaces")
    assert code == 200
    assert sorted(n["metadata"]["name"] for n in body["items"]) == ["default", "kube-public", "kube-system"]
    code, status = await api.call("DELETE", "/api/v1/namespaces/default")
    assert code == 403 and status["reason"] == "Forbidden"


# -- CRUD --------------------------------------------------------------------------------------------------


async def test_create_get_list_update_delete(api: Api) -> None:
    code, created = await api.call("POST", PODS_URL, pod("a", labels={"app": "x"}))
    assert code == 201
    assert created["metadata"]["namespace"] == "default" and created["metadata"]["uid"]
    assert created["status"] == {"phase": "Pending"}
    spec = created["spec"]
    assert spec["restartPolicy"] == "Always" and spec["dnsPolicy"] == "ClusterFirst"
    assert spec["schedulerName"] == "default-scheduler" and spec["terminationGracePeriodSeconds"] == 30
    assert spec["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert spec["containers"][0]["terminationMessagePath"] == "/dev/termination-log"

    code, got = await api.call("GET", f"{PODS_URL}/a")
    assert code == 200 and got == created
    code, listed = await api.call("GET", "/api/v1/pods")
    assert (
        code == 200
        and listed["kind"] == "PodList"
        and [p["metadata"]["name"] for p in listed["items"]] == ["a"]
    )
    assert int(listed["metadata"]["resourceVersion"]) >= int(created["metadata"]["resourceVersion"])
    assert (await api.call("GET", f"{PODS_URL}?limit=10&continue="))[0] == 200

    got["metadata"]["labels"]["app"] = "y"
    got["spec"]["containers"][0]["image"] = "busybox:1.37"
    got["status"] = {"phase": "Running"}  # ignored by the main resource
    code, updated = await api.call("PUT", f"{PODS_URL}/a", got)
    assert code == 200 and updated["metadata"]["labels"] == {"app": "y"}
    assert updated["spec"]["containers"][0]["image"] == "busybox:1.37"
    assert updated["status"] == {"phase": "Pending"}

    code, stale = await api.call("PUT", f"{PODS_URL}/a", got)  # got still carries the old resourceVersion
    assert code == 409 and stale["reason"] == "Conflict"

    code, _ = await api.call("DELETE", f"{PODS_URL}/a")
    assert code == 200
    code, missing = await api.call("GET", f"{PODS_URL}/a")
    assert code == 404 and missing["reason"] == "NotFound" and missing["message"] == 'pods "a" not found'


async def test_cluster_scoped_and_yaml_bodies(api: Api) -> None:
    code, created = await api.call("POST", "/api/v1/nodes", node("edge-1"))
    assert code == 201 and "namespace" not in created["metadata"]
    yaml_ns = b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n"
    code, ns = await api.call("POST", "/api/v1/namespaces", raw=yaml_ns, ctype="application/yaml")
    assert code == 201 and ns["status"] == {"phase": "Active"}
    code, _ = await api.call("POST", "/api/v1/namespaces/team-a/pods", pod("p"))
    assert code == 201
    code, _ = await api.call("DELETE", "/api/v1/namespaces/team-a")
    assert code == 200
    assert (await api.call("GET", "/api/v1/namespaces/team-a/pods/p"))[0] == 404


async def test_generate_name_and_already_exists(api: Api) -> None:
    body = pod("")
    body["metadata"] = {"generateName": "job-"}
    code, created = await api.call("POST", PODS_URL, body)
    assert (
        code == 201
        and created["metadata"]["name"].startswith("job-")
        and len(created["metadata"]["name"]) == 9
    )
    assert (await api.call("POST", PODS_URL, pod("dup")))[0] == 201
    code, status = await api.call("POST", PODS_URL, pod("dup"))
    assert code == 409 and status["reason"] == "AlreadyExists" and status["details"]["name"] == "dup"


# -- patches and subresources ------------------------------------------------------------------------------


async def test_three_patch_types(api: Api) -> None:
    await api.call("POST", DEPLOY_URL, deployment("web"))
    code, merged = await api.call("PATCH", f"{DEPLOY_URL}/web", {"spec": {"replicas": 3}}, ctype=MERGE)
    assert code == 200 and merged["spec"]["replicas"] == 3 and merged["metadata"]["generation"] == 2
    # A strategic patch merges containers by name: "side" is kept, "web" gets the new image.
    smp = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}}}
    code, strategic = await api.call("PATCH", f"{DEPLOY_URL}/web", smp, ctype=STRATEGIC)
    assert code == 200
    images = {c["name"]: c["image"] for c in strategic["spec"]["template"]["spec"]["containers"]}
    assert images == {"web": "web:2", "side": "side:1"}
    ops = [
        {"op": "replace", "path": "/spec/replicas", "value": 1},
        {"op": "add", "path": "/metadata/labels", "value": {"t": "1"}},
    ]
    code, patched = await api.call("PATCH", f"{DEPLOY_URL}/web", ops, ctype=JSONPATCH)
    assert code == 200 and patched["spec"]["replicas"] == 1 and patched["metadata"]["labels"] == {"t": "1"}
    # A patch that changes nothing writes nothing.
    code, same = await api.call("PATCH", f"{DEPLOY_URL}/web", {"spec": {"replicas": 1}}, ctype=MERGE)
    assert code == 200 and same["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]
    # resourceVersion in a patch is a precondition.
    stale = {"metadata": {"resourceVersion": merged["metadata"]["resourceVersion"]}, "spec": {"replicas": 4}}
    code, status = await api.call("PATCH", f"{DEPLOY_URL}/web", stale, ctype=MERGE)
    assert code == 409 and status["reason"] == "Conflict"


async def test_status_subresource_only_changes_status(api: Api) -> None:
    await api.call("POST", PODS_URL, pod("s"))
    code, updated = await api.call(
        "PATCH",
        f"{PODS_URL}/s/status",
        {"status": {"phase": "Running"}, "metadata": {"labels": {"no": "pe"}}},
        ctype=MERGE,
    )
    assert code == 200 and updated["status"]["phase"] == "Running" and updated["metadata"]["labels"] == {}
    code, got = await api.call("GET", f"{PODS_URL}/s/status")
    assert code == 200 and got["status"]["phase"] == "Running"
    got["status"]["podIP"] = "10.0.0.9"
    got["spec"]["containers"][0]["image"] = "ignored:1"
    code, put = await api.call("PUT", f"{PODS_URL}/s/status", got)
    assert code == 200 and put["status"]["podIP"] == "10.0.0.9"
    assert put["spec"]["containers"][0]["image"] == "busybox:1.36"
    # The main resource's patch ignores status.
    code, main = await api.call("PATCH", f"{PODS_URL}/s", {"status": {"phase": "Failed"}}, ctype=MERGE)
    assert code == 200 and main["status"]["phase"] == "Running"


async def test_scale_subresource(api: Api) -> None:
    await api.call("POST", DEPLOY_URL, deployment("web"))
    code, scale = await api.call("GET", f"{DEPLOY_URL}/web/scale")
    assert code == 200 and scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2
    assert scale["status"]["selector"] == "app=web"
    code, scaled = await api.call("PATCH", f"{DEPLOY_URL}/web/scale", {"spec": {"replicas": 5}}, ctype=MERGE)
    assert code == 200 and scaled["spec"]["replicas"] == 5
    scaled["spec"]["replicas"] = 0
    code, put = await api.call("PUT", f"{DEPLOY_URL}/web/scale", scaled)
    assert code == 200 and put["spec"]["replicas"] == 0
    code, bad = await api.call("PATCH", f"{DEPLOY_URL}/web/scale", {"spec": {"replicas": -2}}, ctype=MERGE)
    assert code == 422 and bad["details"]["causes"][0]["field"] == "spec.replicas"
    code, dep = await api.call("GET", f"{DEPLOY_URL}/web")
    assert dep["spec"]["replicas"] == 0


async def test_deployment_defaults_and_generation(api: Api) -> None:
    code, d = await api.call("POST", DEPLOY_URL, deployment("web"))
    assert code == 201
    assert d["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
    }
    assert d["spec"]["revisionHistoryLimit"] == 10 and d["spec"]["progressDeadlineSeconds"] == 600
    assert d["metadata"]["generation"] == 1 and d["status"] == {}
    code, d2 = await api.call("PATCH", f"{DEPLOY_URL}/web", {"metadata": {"labels": {"a": "b"}}}, ctype=MERGE)
    assert d2["metadata"]["generation"] == 1  # metadata-only change: no new generation


# -- tables and selectors ----------------------------------------------------------------------------------


async def test_tables(api: Api) -> None:
    await api.store.create(NODES, node("edge-1"))
    await api.store.create(NODES, node("edge-2", ready="Unknown", unschedulable=True))
    code, table = await api.call("GET", "/api/v1/nodes", accept=TABLE)
    assert code == 200 and table["kind"] == "Table"
    cols = [(c["name"], c["priority"]) for c in table["columnDefinitions"]]
    assert cols[:5] == [("Name", 0), ("Status", 0), ("Roles", 0), ("Age", 0), ("Version", 0)]
    assert ("Internal-IP", 1) in cols
    rows = {r["cells"][0]: r for r in table["rows"]}
    assert rows["edge-1"]["cells"][1:3] == ["Ready", "agent,edge"]
    assert rows["edge-2"]["cells"][1] == "NotReady,SchedulingDisabled"
    assert rows["edge-1"]["cells"][5] == "10.1.2.3"
    assert rows["edge-1"]["object"]["kind"] == "PartialObjectMetadata"
    assert rows["edge-1"]["object"]["metadata"]["labels"]["node-role.kubernetes.io/edge"] == ""

    code, table = await api.call("GET", "/api/v1/nodes?includeObject=None", accept=TABLE)
    assert "object" not in table["rows"][0]
    code, table = await api.call("GET", "/api/v1/nodes/edge-1?includeObject=Object", accept=TABLE)
    assert table["rows"][0]["object"]["kind"] == "Node"

    p = pod("crash", node="edge-1")
    await api.call("POST", PODS_URL, p)
    status = {
        "phase": "Running",
        "podIP": "10.9.9.9",
        "containerStatuses": [
            {
                "name": "main",
                "ready": False,
                "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            }
        ],
    }
    await api.call("PATCH", f"{PODS_URL}/crash/status", {"status": status}, ctype=MERGE)
    code, table = await api.call("GET", "/api/v1/pods", accept=TABLE)
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == [
        "Name",
        "Ready",
        "Status",
        "Restarts",
        "Age",
        "IP",
        "Node",
        "Nominated Node",
        "Readiness Gates",
    ]
    cells = table["rows"][0]["cells"]
    assert cells[:4] == ["crash", "0/1", "CrashLoopBackOff", "4"] and cells[5:7] == ["10.9.9.9", "edge-1"]

    await api.call("POST", DEPLOY_URL, deployment("web"))
    code, table = await api.call("GET", DEPLOY_URL, accept=TABLE)
    assert [c["name"] for c in table["columnDefinitions"]][:5] == [
        "Name",
        "Ready",
        "Up-to-date",
        "Available",
        "Age",
    ]
    assert table["rows"][0]["cells"][:4] == ["web", "0/2", 0, 0]
    assert table["rows"][0]["cells"][5:] == ["web,side", "web:1,side:1", "app=web"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (119, "119s"),
        (125, "2m5s"),
        (600, "10m"),
        (3 * 3600 + 60, "3h1m"),
        (10 * 3600, "10h"),
        (3 * 86400 + 3600, "3d1h"),
        (30 * 86400, "30d"),
        (-5, "<invalid>"),
    ],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web,tier!=db", {"app": "web", "tier": "fe"}, True),
        ("app in (web, api),env notin (prod)", {"app": "api", "env": "dev"}, True),
        ("app in (web,api)", {"app": "db"}, False),
        ("app", {"app": ""}, True),
        ("!app", {"app": "x"}, False),
        ("tier!=db", {}, True),
        ("n>3", {"n": "4"}, True),
    ],
)
def test_label_selector(selector: str, labels: dict[str, str], matches: bool) -> None:
    assert parse_label_selector(selector).matches(labels) is matches


@pytest.mark.parametrize("bad", ["app in (a", "a=b=c", ",", "app notin ()", "Bad Key=x"])
def test_label_selector_rejects(bad: str) -> None:
    with pytest.raises(SelectorError):
        parse_label_selector(bad)


async def test_list_selectors(api: Api) -> None:
    await api.call("POST", PODS_URL, pod("a", node="n1", labels={"app": "web", "tier": "fe"}))
    await api.call("POST", PODS_URL, pod("b", node="n2", labels={"app": "db"}))
    await api.call("POST", PODS_URL, pod("c", labels={"app": "web"}))

    async def names(query: str) -> list[str]:
        code, body = await api.call("GET", f"/api/v1/pods?{query}")
        assert code == 200, body
        return [p["metadata"]["name"] for p in body["items"]]

    assert await names("labelSelector=app%3Dweb") == ["a", "c"]
    assert await names("labelSelector=app%20in%20(web,db),tier") == ["a"]
    assert await names("labelSelector=app!%3Dweb") == ["b"]
    assert await names("fieldSelector=spec.nodeName%3Dn2") == ["b"]
    assert await names("fieldSelector=spec.nodeName%3D") == ["c"]
    assert await names("fieldSelector=metadata.name%3Da,status.phase%3DPending") == ["a"]
    assert await names("fieldSelector=metadata.namespace!%3Ddefault") == []
    code, status = await api.call("GET", "/api/v1/pods?fieldSelector=spec.image%3Dx")
    assert code == 400 and "field label not supported" in status["message"]
    code, status = await api.call("GET", "/api/v1/pods?labelSelector=app%20in%20(x")
    assert code == 400


# -- watch -------------------------------------------------------------------------------------------------


class Watch:
    """Reads JSON lines from a streaming watch response."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        line = await asyncio.wait_for(self.resp.content.readline(), timeout)
        assert line, "watch ended"
        event: dict[str, Any] = json.loads(line)
        return event

    async def next_non_bookmark(self) -> dict[str, Any]:
        while True:
            ev = await self.next()
            if ev["type"] != "BOOKMARK":
                return ev


async def open_watch(
    api: Api, path: str, accept: str = "application/json"
) -> tuple[aiohttp.ClientResponse, Watch]:
    resp = await api.session.get(
        api.base + path, headers={"Authorization": f"Bearer {TOKEN}", "Accept": accept}
    )
    assert resp.status == 200
    return resp, Watch(resp)


async def test_watch_initial_state_and_changes(api: Api) -> None:
    await api.call("POST", PODS_URL, pod("a"))
    resp, w = await open_watch(api, f"{PODS_URL}?watch=true")
    try:
        ev = await w.next()
        assert ev["type"] == "ADDED" and ev["object"]["metadata"]["name"] == "a"
        await api.call("PATCH", f"{PODS_URL}/a", {"metadata": {"labels": {"x": "1"}}}, ctype=MERGE)
        ev = await w.next()
        assert ev["type"] == "MODIFIED" and ev["object"]["metadata"]["labels"] == {"x": "1"}
        await api.call("DELETE", f"{PODS_URL}/a")
        assert (await w.next())["type"] == "DELETED"
    finally:
        resp.close()


async def test_watch_replays_since_resource_version(api: Api) -> None:
    _, created = await api.call("POST", PODS_URL, pod("a"))
    rv = created["metadata"]["resourceVersion"]
    await api.call("POST", PODS_URL, pod("b"))
    await api.call("DELETE", f"{PODS_URL}/a")
    resp, w = await open_watch(api, f"/api/v1/pods?watch=1&resourceVersion={rv}")
    try:
        first, second = await w.next(), await w.next()
        assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "b")
        assert (second["type"], second["object"]["metadata"]["name"]) == ("DELETED", "a")
    finally:
        resp.close()


async def test_watch_too_old_resource_version_is_410(api: Api) -> None:
    for i in range(120):  # the fixture's event window is 50: the log no longer reaches revision 1
        await api.store.create(PODS, {"metadata": {"name": f"p{i}", "namespace": "default"}, "spec": {}})
    resp, w = await open_watch(api, f"{PODS_URL}?watch=1&resourceVersion=1")
    try:
        ev = await w.next()
        assert ev["type"] == "ERROR" and ev["object"]["code"] == 410 and ev["object"]["reason"] == "Expired"
        assert await resp.content.readline() == b""  # the stream ends after the error
    finally:
        resp.close()


async def test_watch_bookmarks_and_timeout(api: Api) -> None:
    _code, listed = await api.call("GET", PODS_URL)
    rv = listed["metadata"]["resourceVersion"]
    resp, w = await open_watch(
        api, f"{PODS_URL}?watch=1&allowWatchBookmarks=true&timeoutSeconds=1&resourceVersion={rv}"
    )
    try:
        ev = await w.next()
        assert ev["type"] == "BOOKMARK" and ev["object"]["metadata"]["resourceVersion"] == rv
        while await asyncio.wait_for(resp.content.readline(), 5):
            pass  # more bookmarks until the timeout ends the stream
    finally:
        resp.close()


async def test_watch_selector_sends_deleted_when_object_stops_matching(api: Api) -> None:
    await api.call("POST", PODS_URL, pod("a", labels={"app": "web"}))
    await api.call("POST", PODS_URL, pod("b", labels={"app": "db"}))
    resp, w = await open_watch(api, f"{PODS_URL}?watch=1&labelSelector=app%3Dweb")
    try:
        ev = await w.next()
        assert (ev["type"], ev["object"]["metadata"]["name"]) == ("ADDED", "a")
        await api.call("PATCH", f"{PODS_URL}/b", {"metadata": {"labels": {"app": "web"}}}, ctype=MERGE)
        ev = await w.next()
        assert (ev["type"], ev["object"]["metadata"]["name"]) == ("ADDED", "b")
        await api.call("PATCH", f"{PODS_URL}/a", {"metadata": {"labels": {"app": "gone"}}}, ctype=MERGE)
        ev = await w.next()
        assert (ev["type"], ev["object"]["metadata"]["name"]) == ("DELETED", "a")
        await api.call("PATCH", f"{PODS_URL}/a", {"metadata": {"labels": {"app": "still-gone"}}}, ctype=MERGE)
        await api.call(
            "PATCH", f"{PODS_URL}/b", {"metadata": {"labels": {"app": "web", "v": "2"}}}, ctype=MERGE
        )
        ev = await w.next()  # nothing for "a", which the client no longer holds
        assert (ev["type"], ev["object"]["metadata"]["name"]) == ("MODIFIED", "b")
    finally:
        resp.close()


async def test_watch_as_table(api: Api) -> None:
    _code, listed = await api.call("GET", PODS_URL)
    resp, w = await open_watch(
        api, f"{PODS_URL}?watch=1&resourceVersion={listed['metadata']['resourceVersion']}", TABLE
    )
    try:
        await api.call("POST", PODS_URL, pod("a"))
        ev = await w.next()
        assert ev["object"]["kind"] == "Table" and ev["object"]["rows"][0]["cells"][0] == "a"
        assert ev["object"]["columnDefinitions"]
        await api.call("PATCH", f"{PODS_URL}/a/status", {"status": {"phase": "Running"}}, ctype=MERGE)
        ev = await w.next()
        assert ev["object"]["rows"][0]["cells"][2] == "Running"
    finally:
        resp.close()


async def test_client_going_away_ends_the_watch(api: Api) -> None:
    resp, w = await open_watch(api, f"{PODS_URL}?watch=1")
    await api.call("POST", PODS_URL, pod("a"))
    await w.next()
    resp.close()
    # The server notices and ends the handler: another request still works and the fixture's leak check
    # (after the server stops) sees no leftover task.
    assert (await api.call("GET", PODS_URL))[0] == 200


# -- graceful delete and finalizers ------------------------------------------------------------------------


async def test_bound_pod_delete_is_graceful(api: Api) -> None:
    await api.call("POST", PODS_URL, pod("bound", node="edge-1"))
    code, marked = await api.call(
        "DELETE", f"{PODS_URL}/bound", {"kind": "DeleteOptions", "apiVersion": "v1"}
    )
    assert code == 200
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["deletionGracePeriodSeconds"] == 30
    code, table = await api.call("GET", PODS_URL, accept=TABLE)
    assert table["rows"][0]["cells"][2] == "Terminating"
    # The edge stops the processes, then deletes with grace 0.
    code, _ = await api.call("DELETE", f"{PODS_URL}/bound", {"gracePeriodSeconds": 0})
    assert code == 200
    assert (await api.call("GET", f"{PODS_URL}/bound"))[0] == 404
    # Unbound pods go at once.
    await api.call("POST", PODS_URL, pod("free"))
    assert (await api.call("DELETE", f"{PODS_URL}/free"))[0] == 200
    assert (await api.call("GET", f"{PODS_URL}/free"))[0] == 404


async def test_finalizers_hold_deletion(api: Api) -> None:
    body = deployment("held")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    await api.call("POST", DEPLOY_URL, body)
    code, marked = await api.call("DELETE", f"{DEPLOY_URL}/held")
    assert code == 200 and marked["metadata"]["deletionTimestamp"]
    assert (await api.call("GET", f"{DEPLOY_URL}/held"))[0] == 200
    code, _ = await api.call("PATCH", f"{DEPLOY_URL}/held", {"metadata": {"finalizers": None}}, ctype=MERGE)
    assert code == 200
    assert (await api.call("GET", f"{DEPLOY_URL}/held"))[0] == 404


async def test_delete_preconditions_and_collection(api: Api) -> None:
    _, _a = await api.call("POST", PODS_URL, pod("a", labels={"app": "web"}))
    await api.call("POST", PODS_URL, pod("b", labels={"app": "web"}))
    await api.call("POST", PODS_URL, pod("c", labels={"app": "db"}))
    code, status = await api.call("DELETE", f"{PODS_URL}/a", {"preconditions": {"uid": "not-it"}})
    assert code == 409 and "Precondition failed" in status["message"]
    code, done = await api.call("DELETE", f"{PODS_URL}?labelSelector=app%3Dweb")
    assert code == 200 and sorted(p["metadata"]["name"] for p in done["items"]) == ["a", "b"]
    _, left = await api.call("GET", PODS_URL)
    assert [p["metadata"]["name"] for p in left["items"]] == ["c"]


async def test_a_collection_delete_refused_by_its_preconditions_deletes_nothing(api: Api) -> None:
    """Found by the fuzzer: the namespaces were emptied before the precondition refused their deletion."""
    await api.call("POST", "/api/v1/namespaces", {"metadata": {"name": "team"}})
    team = "/api/v1/namespaces/team/pods"
    await api.call("POST", team, pod("kept"))
    await api.call("POST", PODS_URL, pod("kept"))
    code, status = await api.call("DELETE", "/api/v1/namespaces", {"preconditions": {"uid": "nope"}})
    assert code == 409 and "Precondition failed" in status["message"]
    assert (await api.call("GET", f"{team}/kept"))[0] == 200
    code, status = await api.call("DELETE", f"{PODS_URL}", {"preconditions": {"uid": "nope"}})
    assert code == 409 and (await api.call("GET", f"{PODS_URL}/kept"))[0] == 200


async def test_binding_sets_node_once(api: Api) -> None:
    await api.call("POST", PODS_URL, pod("p"))
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "p"},
        "target": {"kind": "Node", "name": "n1"},
    }
    assert (await api.call("POST", f"{PODS_URL}/p/binding", binding))[0] == 201
    assert (await api.call("GET", f"{PODS_URL}/p"))[1]["spec"]["nodeName"] == "n1"
    assert (await api.call("POST", f"{PODS_URL}/p/binding", binding))[0] == 409


# -- refusals: each leaves the store unchanged -------------------------------------------------------------


async def snapshot(api: Api) -> tuple[int, Any]:
    return await api.store.revision(), (await api.store.list(DEPLOYMENTS))[0]


BAD_DEPLOYMENTS: list[tuple[str, Any, str]] = [
    ("negative replicas", {"spec": {"replicas": -1}}, "spec.replicas"),
    ("no selector", {"spec": {"selector": None}}, "spec.selector"),
    (
        "selector mismatch",
        {"spec": {"selector": {"matchLabels": {"app": "other"}}}},
        "spec.template.metadata.labels",
    ),
    ("bad strategy", {"spec": {"strategy": {"type": "BlueGreen"}}}, "spec.strategy.type"),
    (
        "bad surge",
        {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "x%"}}}},
        "spec.strategy.rollingUpdate.maxSurge",
    ),
    ("bad name", {"metadata": {"name": "Bad_Name"}}, "metadata.name"),
    ("no containers", {"spec": {"template": {"spec": {"containers": []}}}}, "spec.template.spec.containers"),
    ("label not a string", {"metadata": {"labels": {"a": 1}}}, "metadata.labels.a"),
]


def merged(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(base))
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


@pytest.mark.parametrize(("case", "change", "field"), BAD_DEPLOYMENTS, ids=[c[0] for c in BAD_DEPLOYMENTS])
async def test_invalid_creates_are_422_naming_the_field(
    api: Api, case: str, change: dict[str, Any], field: str
) -> None:
    before = await snapshot(api)
    code, status = await api.call("POST", DEPLOY_URL, merged(deployment("web"), change))
    assert code == 422, status
    assert status["kind"] == "Status" and status["status"] == "Failure" and status["reason"] == "Invalid"
    assert status["details"]["kind"] == "Deployment"
    assert field in [c["field"] for c in status["details"]["causes"]]
    assert await snapshot(api) == before


async def test_invalid_message_reads_like_kubectl(api: Api) -> None:
    _code, status = await api.call("POST", DEPLOY_URL, merged(deployment("x"), {"spec": {"replicas": -1}}))
    assert (
        status["message"] == 'Deployment.apps "x" is invalid: spec.replicas: Invalid value: -1: must be >= 0'
    )
    assert status["details"]["causes"][0]["message"] == "Invalid value: -1: must be >= 0"


async def test_rejected_updates_change_nothing(api: Api) -> None:
    _, d = await api.call("POST", DEPLOY_URL, deployment("web"))
    await api.call("POST", PODS_URL, pod("p"))
    before = await snapshot(api)
    rejected: list[tuple[str, str, Any, str, int]] = [
        ("PATCH", f"{DEPLOY_URL}/web", {"spec": {"replicas": -3}}, MERGE, 422),
        (
            "PATCH",
            f"{DEPLOY_URL}/web",
            {"spec": {"selector": {"matchLabels": {"app": "web", "x": "y"}}}},
            MERGE,
            422,
        ),
        (
            "PATCH",
            f"{DEPLOY_URL}/web",
            [{"op": "test", "path": "/spec/replicas", "value": 9}],
            JSONPATCH,
            422,
        ),
        ("PATCH", f"{DEPLOY_URL}/web", [{"op": "remove", "path": "/nope"}], JSONPATCH, 422),
        ("PATCH", f"{DEPLOY_URL}/web", {"spec": {}}, "application/apply-patch+yaml", 415),
        ("PATCH", f"{DEPLOY_URL}/web", {"spec": {}}, "text/plain", 415),
        ("PUT", f"{DEPLOY_URL}/web", merged(d, {"metadata": {"name": "other"}}), "application/json", 400),
        ("PUT", f"{DEPLOY_URL}/web", merged(d, {"kind": "ReplicaSet"}), "application/json", 400),
        (
            "PUT",
            f"{DEPLOY_URL}/missing",
            merged(d, {"metadata": {"name": "missing", "resourceVersion": ""}}),
            "application/json",
            404,
        ),
        ("PATCH", f"{PODS_URL}/p", {"spec": {"restartPolicy": "Never"}}, STRATEGIC, 422),
        ("POST", "/api/v1/namespaces/nowhere/pods", pod("q"), "application/json", 404),
        (
            "POST",
            PODS_URL,
            merged(pod("q"), {"metadata": {"namespace": "kube-system"}}),
            "application/json",
            400,
        ),
        ("POST", PODS_URL, merged(pod("q"), {"apiVersion": "v2"}), "application/json", 400),
        ("POST", PODS_URL, ["not", "an", "object"], "application/json", 400),
        ("DELETE", f"{PODS_URL}/p", {"propagationPolicy": "Sideways"}, "application/json", 422),
        ("POST", f"{PODS_URL}/p", pod("p"), "application/json", 405),
        ("GET", "/api/v1/widgets", None, "application/json", 404),
    ]
    for method, path, body, ctype, want in rejected:
        code, status = await api.call(method, path, body, ctype=ctype)
        assert code == want, (method, path, status)
        assert status["kind"] == "Status" and status["code"] == want
        assert await snapshot(api) == before, (method, path)
    code, status = await api.call("POST", PODS_URL, raw=b"{not json", ctype="application/json")
    assert code == 400 and status["reason"] == "BadRequest"
    code, status = await api.call("POST", PODS_URL, raw=b"a: [b", ctype="application/yaml")
    assert code == 400
    code, status = await api.call("POST", PODS_URL, raw=b"x" * (3 * 1024 * 1024 + 1))
    assert code == 413 and status["kind"] == "Status"
    assert await snapshot(api) == before


async def test_unauthorized(api: Api) -> None:
    code, status = await api.call("GET", PODS_URL, auth=False)
    assert code == 401 and status["reason"] == "Unauthorized"
    async with api.session.get(api.base + PODS_URL, headers={"Authorization": "Bearer wrong"}) as resp:
        assert resp.status == 401


async def test_server_stop_ends_open_watches(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "stop.db"))
    await store.start()
    server = ApiServer(build_app(store, tokens={TOKEN: "admin"}))
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with session.get(f"{server.url}{PODS_URL}?watch=1", headers=headers) as resp:
                assert resp.status == 200
                # Shutdown must not wait for the watch's 30-minute default timeout.
                await asyncio.wait_for(server.stop(), ApiServer.SHUTDOWN_TIMEOUT - 1)
                assert await asyncio.wait_for(resp.content.read(), 5) == b""
    finally:
        await server.stop()
        await store.close()

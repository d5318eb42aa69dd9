"""Property-based fuzzing of the cloud API, driven by its own route table.

The paths come from ``app.router`` (every registered resource, its placeholders filled in) and from the
resource registry ``app.resources.ALL`` plus the discovery documents (which subresources each kind serves),
so a route or a kind added later is fuzzed without touching this file. Every method is tried on every path
with random query strings and random bodies: valid manifests built on the Kubernetes shapes, then mutated
(wrong types, missing fields, huge strings, deep nesting), patches of the three types, DeleteOptions,
Evictions, Bindings, Scales, arbitrary JSON, YAML, non-JSON bytes and empty bodies.

What must hold for each request (the API's contract with kubectl and our own client):

* no 5xx -- except the documented 503 of ``pods/{name}/log`` and ``/exec``: this server runs without a hub;
* every 4xx body is a meta/v1 ``Status`` whose ``code`` is the HTTP status, with a non-empty message;
* a read (GET/HEAD/OPTIONS), a rejected write (any 4xx) and a ``dryRun`` write leave the store as it was:
  same ``revision()`` and the same objects of every kind;
* the server stays up (``/healthz`` answers and the store is readable after every request).

The app runs in-process on a random port on a real SqlStore in the test's tmp_path. The store is put back
to the same seed objects before each example that follows a write, so an example does not depend on the
ones before it (and shrinks). ``derandomize=True`` makes every run try the same examples.

The server bugs this fuzzing found (deep nesting, huge numbers, lone surrogates, YAML-only values, a
Unicode digit as a port, defaulting of unvalidated fields, writes that ignored preconditions or dryRun) were
fixed; each is kept as a small deterministic regression test at the end of the file.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import io
import json
import os
import re
import string
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import yaml
from aiohttp import web
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from yarl import URL

from app.resources import ALL, DEPLOYMENTS, EVENTS, NAMESPACES, NODES, PODS, REPLICASETS, ResourceType
from cloudservice.api import ApiServer, build_app, discovery
from cloudservice.api.server import SYSTEM_NAMESPACES
from cloudservice.store.sql import SqlStore, open_store

pytestmark = pytest.mark.slow

TOKEN = "fuzz-token"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
READS = frozenset({"GET", "HEAD", "OPTIONS"})
PATCH_TYPES = (
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/json-patch+json",
    "application/apply-patch+yaml",
)
CONTENT_TYPES = (
    "application/json",
    "application/json; charset=utf-8",
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/plain",
    "application/octet-stream",
    "application/vnd.kubernetes.protobuf",
    "multipart/form-data; boundary=x",
    "",
    *PATCH_TYPES,
)
ACCEPTS = (
    "application/json",
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
    "application/vnd.kubernetes.protobuf",
    "*/*",
)
# How long a watch is read before the client hangs up: long enough for the initial ADDED events and an
# early ERROR event, short enough that a few hundred examples fit the time budget.
WATCH_READ_S = 0.05
# Any non-watch response must be complete well within this; longer means the server hangs.
RESPONSE_TIMEOUT_S = 10.0
# The server's body limit is 3 MiB (server.MAX_BODY_BYTES): one byte more must be a 413 Status.
OVER_LIMIT = 3 * 1024 * 1024 + 1
# Examples per property test: sized so the whole file runs in well under a minute on two cores.
# FUZZ_EXPLORE=N runs N times as many examples from a random seed: for hunting, not for CI.
_EXPLORE = int(os.environ.get("FUZZ_EXPLORE", "0") or 0)
EXAMPLES_ANY = 300 * max(_EXPLORE, 1)
EXAMPLES_WRITES = 150 * max(_EXPLORE, 1)
EXAMPLES_DELETES = 100 * max(_EXPLORE, 1)

FUZZ = settings(
    deadline=None,
    # No "explain" phase: it replays the failing example hundreds of times against a live server.
    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
    derandomize=not _EXPLORE,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

# -- the seed objects every example starts from ------------------------------------------------------------

NODE = "edge-1"


def _pod(name: str, *, node: str = "", finalizers: list[str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app": "web", "tier": "1"}}
    if finalizers:
        meta["finalizers"] = finalizers
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "busybox:1.36"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def _workload(kind: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "web:1"}]},
            },
        },
    }


# (collection path, manifest) in creation order; names per kind feed the name strategies.
SEEDS: list[tuple[str, dict[str, Any]]] = [
    ("/api/v1/namespaces", {"metadata": {"name": "fuzz", "labels": {"team": "a"}}}),
    (
        "/api/v1/nodes",
        {
            "metadata": {"name": NODE, "labels": {"node-role.kubernetes.io/edge": ""}},
            "spec": {"unschedulable": False},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        },
    ),
    ("/api/v1/namespaces/default/pods", _pod("web", node=NODE)),
    ("/api/v1/namespaces/default/pods", _pod("idle")),
    ("/api/v1/namespaces/default/pods", _pod("held", finalizers=["example.com/hold"])),
    ("/api/v1/namespaces/fuzz/pods", _pod("inner", node=NODE)),
    ("/apis/apps/v1/namespaces/default/deployments", _workload("Deployment", "app")),
    ("/apis/apps/v1/namespaces/default/replicasets", _workload("ReplicaSet", "app-rs")),
    (
        "/api/v1/namespaces/default/events",
        {
            "metadata": {"name": "ev-1"},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web"},
            "reason": "Started",
            "message": "started",
            "type": "Normal",
        },
    ),
]
SEED_NAMES: dict[str, tuple[str, ...]] = {
    NODES.plural: (NODE,),
    NAMESPACES.plural: ("fuzz", *SYSTEM_NAMESPACES),
    PODS.plural: ("web", "idle", "held", "inner"),
    DEPLOYMENTS.plural: ("app",),
    REPLICASETS.plural: ("app-rs",),
    EVENTS.plural: ("ev-1",),
}
NAMESPACE_NAMES = ("default", "fuzz", "kube-system", "missing-ns")
# Names no object has, valid and invalid; percent-encoded where they would not survive in a path.
BAD_NAMES = (
    "missing",
    "UPPER",
    "a..b",
    "-lead",
    "trail-",
    "a_b",
    "with%20space",
    "%E2%98%83",
    "%00",
    "a%2Fb",
    "x" * 254,
    "y" * 64,
    "..",
    ".",
)


# -- the harness -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    content_type: str
    body: bytes
    events: tuple[Any, ...] = ()


Snapshot = tuple[int, dict[str, list[dict[str, Any]]]]


class Harness:
    """The running API, its store, an HTTP session and the route templates taken from the router."""

    def __init__(
        self, app: web.Application, server: ApiServer, session: aiohttp.ClientSession, store: SqlStore
    ) -> None:
        self.app = app
        self.server = server
        self.session = session
        self.store = store
        self.clean_revision = -1

    @property
    def routes(self) -> list[str]:
        return route_templates(self.app)

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        auth: bool = True,
    ) -> Reply:
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        if auth:
            headers["Authorization"] = f"Bearer {TOKEN}"
        qs = urlencode(query or [])
        url = URL(self.server.url + path + (f"?{qs}" if qs else ""), encoded=True)
        # A stream, not bytes: aiohttp warns (an error here) about sending megabytes of raw bytes at once.
        data = io.BytesIO(body) if body is not None else None
        watching = method == "GET" and any(
            k == "watch" and v.lower() in ("1", "true") for k, v in query or []
        )
        async with asyncio.timeout(RESPONSE_TIMEOUT_S):
            resp = await self.session.request(method, url, data=data, headers=headers)
        try:
            ctype = resp.headers.get("Content-Type", "")
            if watching and resp.status == 200 and resp.headers.get("Transfer-Encoding") == "chunked":
                return Reply(resp.status, ctype, b"", await _read_watch(resp))
            async with asyncio.timeout(RESPONSE_TIMEOUT_S):
                return Reply(resp.status, ctype, await resp.read())
        finally:
            resp.close()

    async def snapshot(self) -> Snapshot:
        dump = {}
        for rt in ALL:
            items, _ = await self.store.list(rt)
            dump[rt.plural] = items
        return await self.store.revision(), dump

    async def alive(self) -> bool:
        health = await self.request("GET", "/healthz", auth=False)
        ns = await self.request("GET", "/api/v1/namespaces/default")
        return health.status == 200 and ns.status == 200

    async def reset(self) -> None:
        """Put the store back to the system namespaces and the seeds, unless nothing was written since."""
        if await self.store.revision() == self.clean_revision:
            return
        for rt in ALL:
            items, _ = await self.store.list(rt)
            for obj in items:
                m = obj["metadata"]
                await self.store.delete(rt, m.get("namespace", ""), m["name"])
        for name in SYSTEM_NAMESPACES:
            reply = await self.request("POST", "/api/v1/namespaces", body=_json({"metadata": {"name": name}}))
            assert reply.status == 201, reply
        for path, manifest in SEEDS:
            reply = await self.request("POST", path, body=_json(manifest))
            assert reply.status == 201, reply
        reply = await self.request(
            "PATCH",
            "/api/v1/namespaces/default/pods/web/status",
            body=_json({"status": {"phase": "Running"}}),
            content_type="application/merge-patch+json",
        )
        assert reply.status == 200, reply
        self.clean_revision = await self.store.revision()


async def _read_watch(resp: aiohttp.ClientResponse) -> tuple[Any, ...]:
    """The watch events that arrive within WATCH_READ_S; then the client hangs up (as kubectl's ^C)."""
    events: list[Any] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(WATCH_READ_S):
            while line := await resp.content.readline():
                events.append(json.loads(line))
    return tuple(events)


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def route_templates(app: web.Application) -> list[str]:
    """Every path the router serves, as a template with ``{placeholders}``."""
    out: list[str] = []
    for resource in app.router.resources():
        info = resource.get_info()
        template = info.get("formatter") or info.get("path")
        if isinstance(template, str) and template not in out:
            out.append(template)
    return out


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    store = open_store(str(tmp_path / "fuzz.db"), event_window=50)
    await store.start()
    app = build_app(store, tokens={TOKEN: "admin"}, bookmark_interval=0.02)
    server = ApiServer(app)
    await server.start()
    session = aiohttp.ClientSession()
    try:
        h = Harness(app, server, session, store)
        await h.reset()
        yield h
    finally:
        await session.close()
        await server.stop()
        await store.close()


# -- the checks --------------------------------------------------------------------------------------------

_STREAM_ROUTE = re.compile(r"^/api/v1/namespaces/[^/]+/pods/[^/]+/(log|exec)$")


def check_reply(method: str, path: str, reply: Reply) -> None:
    """No 5xx (bar the hub-less 503 of log/exec), every 4xx a meta/v1 Status, watch events well formed."""
    allowed_503 = reply.status == 503 and _STREAM_ROUTE.match(path) is not None
    assert reply.status < 500 or allowed_503, f"{method} {path} answered {reply.status}: {reply.body[:500]!r}"
    if reply.status >= 400 and method != "HEAD":
        assert reply.content_type == "application/json", reply
        status = json.loads(reply.body)
        assert status["kind"] == "Status" and status["apiVersion"] == "v1", status
        assert status["status"] == "Failure" and status["code"] == reply.status, status
        assert isinstance(status["message"], str) and status["message"].strip(), status
        assert isinstance(status["reason"], str) and status["reason"], status
    for ev in reply.events:
        assert ev["type"] in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"), ev
        if ev["type"] == "ERROR":
            assert ev["object"]["kind"] == "Status" and ev["object"]["code"] < 500, ev


async def exercise(
    h: Harness,
    method: str,
    path: str,
    query: list[tuple[str, str]],
    body: bytes | None,
    content_type: str,
    accept: str = "application/json",
) -> Reply:
    """One request under every invariant of the module docstring."""
    await h.reset()
    before = await h.snapshot()
    reply = await h.request(method, path, query=query, body=body, content_type=content_type, accept=accept)
    check_reply(method, path, reply)
    reason = json.loads(reply.body).get("reason", "") if reply.status >= 400 and reply.body else ""
    if currently_in_test_context():  # outside a @given test, event() raises
        event(f"{method} {reply.status} {reason}")  # shown by --hypothesis-show-statistics
    after = await h.snapshot()
    dry_run = any(k == "dryRun" and v for k, v in query)
    if method in READS or reply.status >= 400 or dry_run:
        assert after == before, f"{method} {path} ({reply.status}) changed the store"
    assert await h.alive(), f"the server is down after {method} {path}"
    return reply


# -- strategies: names, paths, queries ---------------------------------------------------------------------

valid_names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,12}[a-z0-9])?", fullmatch=True)


def names_for(plural: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(SEED_NAMES.get(plural, ("missing",))),
        st.sampled_from(BAD_NAMES),
        valid_names,
    )


namespaces = st.one_of(st.sampled_from(NAMESPACE_NAMES), st.sampled_from(BAD_NAMES))
# Groups and versions the registry serves, and some it does not.
SERVED_GV = sorted({(rt.group, rt.version) for rt in ALL})
group_versions = st.one_of(
    st.sampled_from(SERVED_GV),
    st.sampled_from([("policy", "v1"), ("autoscaling", "v1"), ("apps", "v2"), ("nope", "v1"), ("", "v2")]),
)
JUNK_SUBS = ("finalize", "proxy", "attach", "portforward", "ephemeralcontainers", "log", "exec", "status")


def subresources_of(rt: ResourceType) -> tuple[str, ...]:
    """The subresources discovery announces for ``rt``."""
    doc = discovery.resource_list(rt.group, rt.version) or {"resources": []}
    return tuple(
        r["name"].split("/", 1)[1] for r in doc["resources"] if r["name"].startswith(rt.plural + "/")
    )


# Kinds whose valid shape ``manifests`` builds; a kind added to the registry later is fuzzed with a
# ConfigMap-like guess, and then only the invariants (not "a valid manifest is accepted") are checked.
KNOWN_SHAPES = frozenset({*SEED_NAMES, "configmaps", "secrets"})
SEED_NAMESPACE = {"inner": "fuzz"}  # seeds not in "default"


@dataclass(frozen=True, slots=True)
class Aim:
    """What a drawn request addresses: the path, and the kind and name a body should be about."""

    path: str
    rt: ResourceType | None
    name: str

    def __repr__(self) -> str:
        return f"Aim({self.path!r}, {self.rt.kind if self.rt else None}, {self.name!r})"


def _root(rt: ResourceType) -> str:
    return f"/apis/{rt.group}/{rt.version}" if rt.group else "/api/v1"


@st.composite
def real_aims(draw: st.DrawFn) -> Aim:
    """A well-formed path of a kind in the registry: its collections, a seed object (or a missing one) in
    the right namespace, and each subresource discovery announces for it."""
    rt = draw(st.sampled_from(ALL))
    seeds = st.sampled_from(SEED_NAMES.get(rt.plural, ("missing",)))
    name = draw(st.one_of(seeds, seeds, seeds, valid_names))
    ns = SEED_NAMESPACE.get(name, "default")
    base = f"{_root(rt)}/namespaces/{ns}/{rt.plural}" if rt.namespaced else f"{_root(rt)}/{rt.plural}"
    sub = draw(st.sampled_from(subresources_of(rt) or ("",)))
    shapes = [base, f"{base}/{name}", f"{base}/{name}", f"{base}/{name}/{sub}".rstrip("/")]
    if rt.namespaced:
        shapes.append(f"{_root(rt)}/{rt.plural}")
    return Aim(draw(st.sampled_from(shapes)), rt, name)


@st.composite
def resource_paths(draw: st.DrawFn, group: str, version: str) -> str:
    """A path below ``/api/v1`` or ``/apis/{group}/{version}``: collections, objects and subresources of
    the kinds in the registry (any group, so mismatches are tried too) and shapes no route has."""
    own = [rt for rt in ALL if (rt.group, rt.version) == (group, version)]
    pick_own = bool(own) and draw(st.integers(0, 4)) > 0
    rt = draw(st.sampled_from(own if pick_own else ALL))
    plural = draw(st.one_of(st.just(rt.plural), st.sampled_from(["widgets", "Pods", "pod", "bindings"])))
    name = draw(names_for(rt.plural))
    sub = draw(st.one_of(st.sampled_from(subresources_of(rt) or ("status",)), st.sampled_from(JUNK_SUBS)))
    ns = draw(namespaces)
    shapes = [
        plural,
        f"namespaces/{ns}/{plural}",
        f"namespaces/{ns}/{plural}/{name}",
        f"namespaces/{ns}/{plural}/{name}/{sub}",
        f"{plural}/{name}",
        f"{plural}/{name}/{sub}",
        f"namespaces/{ns}",
        f"namespaces/{ns}/status",
        f"namespaces/{ns}/{plural}/{name}/{sub}/extra",
        f"namespaces//{plural}",
        f"{plural}//{name}",
        f"{plural}/{name}/",
    ]
    return draw(st.sampled_from(shapes))


@st.composite
def template_aims(draw: st.DrawFn, templates: list[str]) -> Aim:
    """A concrete path from one of the router's templates, its placeholders filled in with anything."""
    template = draw(st.sampled_from(templates))
    group, version = draw(group_versions)
    if template.startswith("/api/v1/"):
        group, version = "", "v1"
    values: dict[str, str] = {"group": group or "core", "version": version}
    name = draw(names_for(PODS.plural))
    for key in re.findall(r"\{(\w+)\}", template):
        if key == "path":
            values[key] = draw(resource_paths(group, version))
        elif key == "namespace":
            values[key] = draw(namespaces)
        elif key == "name":
            values[key] = name
    return Aim(re.sub(r"\{(\w+)\}", lambda m: values[m[1]], template), None, name)


# The methods each shape of path serves (by the handlers' dispatch table), to aim most requests at them.
_SHAPE_METHODS = {
    "collection": ("GET", "POST", "DELETE"),
    "object": ("GET", "PUT", "PATCH", "DELETE"),
    "status": ("GET", "PUT", "PATCH"),
    "scale": ("GET", "PUT", "PATCH"),
    "binding": ("POST",),
    "eviction": ("POST",),
    "log": ("GET",),
    "exec": ("GET", "POST"),
}


def methods_for(aim: Aim) -> st.SearchStrategy[str]:
    """Mostly a method the path serves, sometimes any."""
    if aim.rt is None:
        return st.sampled_from(METHODS)
    last = aim.path.rsplit("/", 1)[-1]
    shape = "collection" if last == aim.rt.plural else last if last in _SHAPE_METHODS else "object"
    return st.one_of(
        st.sampled_from(_SHAPE_METHODS[shape]),
        st.sampled_from(_SHAPE_METHODS[shape]),
        st.sampled_from(METHODS),
    )


def aims(templates: list[str]) -> st.SearchStrategy[Aim]:
    """Mostly real objects (so requests get past routing to the handlers), the rest anything the router's
    templates can be filled with."""
    return st.one_of(real_aims(), real_aims(), template_aims(templates))


def _int_texts() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(-5, 100).map(str),
        st.sampled_from(
            ["", "abc", "1.5", "0x10", " 1", "1e3", "99999999999999999999", "-99999999999999999999"]
        ),
    )


label_selectors = st.one_of(
    st.sampled_from(
        ["", "app=web", "app==web", "app!=web", "app in (web,x)", "app notin (web)", "app", "!app", "tier>0"]
    ),
    st.sampled_from(
        ["tier<5,app", "app in (", "=", "a b", "app=we b", ",,", "x/y/z=1", "!", "(", "k=" + "v" * 64]
    ),
    st.text(alphabet=string.printable, max_size=20),
)
field_selectors = st.one_of(
    st.sampled_from(
        [
            "",
            "metadata.name=web",
            "metadata.namespace==default",
            f"spec.nodeName={NODE}",
            "spec.nodeName=",
            "status.phase!=Running",
            "spec.unknown=1",
            "metadata.name",
            "metadata.name=a,status.phase=b",
        ]
    ),
    st.text(alphabet=string.printable, max_size=20),
)
QUERY_PARAMS: dict[str, st.SearchStrategy[str]] = {
    "labelSelector": label_selectors,
    "fieldSelector": field_selectors,
    "watch": st.sampled_from(["1", "true", "false", "0", ""]),
    "timeoutSeconds": _int_texts(),
    "resourceVersion": st.one_of(_int_texts(), st.sampled_from(["1", "2", "100000"])),
    "resourceVersionMatch": st.sampled_from(["NotOlderThan", "Exact", "junk"]),
    "allowWatchBookmarks": st.sampled_from(["true", "false"]),
    "limit": _int_texts(),
    "continue": st.text(max_size=10),
    "gracePeriodSeconds": _int_texts(),
    "propagationPolicy": st.sampled_from(["Orphan", "Background", "Foreground", "", "Sideways"]),
    "dryRun": st.sampled_from(["All", "", "junk"]),
    "includeObject": st.sampled_from(["None", "Metadata", "Object", "junk"]),
    "fieldManager": st.text(max_size=10),
    "pretty": st.sampled_from(["true", "1"]),
    "container": st.sampled_from(["main", "nope", ""]),
    "command": st.sampled_from(["sh", "ls", ""]),
    "follow": st.sampled_from(["true", "false"]),
    "tailLines": _int_texts(),
    "sinceSeconds": _int_texts(),
    "limitBytes": _int_texts(),
    "sinceTime": st.sampled_from(["2024-01-01T00:00:00Z", "yesterday"]),
    "stdin": st.sampled_from(["true", "1"]),
    "tty": st.sampled_from(["true", "1"]),
}


@st.composite
def queries(draw: st.DrawFn) -> list[tuple[str, str]]:
    keys = draw(st.lists(st.sampled_from(sorted(QUERY_PARAMS)), max_size=4))
    pairs = [(k, draw(QUERY_PARAMS[k])) for k in keys]
    if draw(st.integers(0, 9)) == 0:
        pairs += [("watch", "1"), ("timeoutSeconds", "1")]
    return pairs


# -- strategies: bodies ------------------------------------------------------------------------------------

label_maps = st.dictionaries(
    st.from_regex(r"([a-z]{1,5}\.[a-z]{2,3}/)?[a-z][a-z0-9]{0,6}", fullmatch=True),
    st.from_regex(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,6}[A-Za-z0-9])?)?", fullmatch=True),
    max_size=3,
)
images = st.sampled_from(["busybox:1.36", "web:1", "nginx", "registry.local:5000/app@sha256:abc"])


@st.composite
def containers(draw: st.DrawFn, name: str) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": draw(images)}
    if draw(st.booleans()):
        c["command"] = draw(st.lists(st.text(string.ascii_letters, max_size=5), max_size=3))
    if draw(st.booleans()):
        c["env"] = [{"name": "MODE", "value": draw(st.text(string.ascii_letters, max_size=5))}]
    if draw(st.booleans()):
        port = draw(st.integers(1, 65535))
        c["ports"] = [{"containerPort": port, "name": "http"}]
        if draw(st.booleans()):
            c["livenessProbe"] = {"httpGet": {"port": "http", "path": "/healthz"}, "periodSeconds": 5}
    return c


@st.composite
def pod_specs(draw: st.DrawFn, *, workload: bool = False) -> dict[str, Any]:
    names = draw(
        st.lists(st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True), min_size=1, max_size=2, unique=True)
    )
    spec: dict[str, Any] = {"containers": [draw(containers(n)) for n in names]}
    if not workload and draw(st.booleans()):
        spec["restartPolicy"] = draw(st.sampled_from(["Always", "OnFailure", "Never"]))
    if not workload and draw(st.booleans()):
        spec["nodeName"] = NODE
    if draw(st.booleans()):
        spec["terminationGracePeriodSeconds"] = draw(st.integers(0, 60))
    return spec


@st.composite
def manifests(draw: st.DrawFn, rt: ResourceType, name: str) -> dict[str, Any]:
    """A valid manifest of kind ``rt`` (what the API must accept on create)."""
    meta: dict[str, Any] = {"name": name, "labels": draw(label_maps)}
    if draw(st.booleans()):
        meta["annotations"] = {"note": draw(st.text(max_size=20))}
    obj: dict[str, Any] = {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": meta}
    if rt is PODS:
        obj["spec"] = draw(pod_specs())
    elif rt in (DEPLOYMENTS, REPLICASETS):
        selector = {"app": name[:63]}
        obj["spec"] = {
            "replicas": draw(st.integers(0, 5)),
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": selector}, "spec": draw(pod_specs(workload=True))},
        }
        if rt is DEPLOYMENTS and draw(st.booleans()):
            obj["spec"]["strategy"] = draw(
                st.sampled_from(
                    [
                        {"type": "Recreate"},
                        {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "50%"}},
                    ]
                )
            )
    elif rt is NODES:
        obj["spec"] = {"unschedulable": draw(st.booleans())}
        obj["status"] = {
            "conditions": [{"type": "Ready", "status": draw(st.sampled_from(["True", "False"]))}]
        }
    elif rt is EVENTS:
        obj.update(
            involvedObject={"kind": "Pod", "namespace": "default", "name": "web"},
            reason="Pulled",
            message=draw(st.text(max_size=30)),
            type=draw(st.sampled_from(["Normal", "Warning"])),
        )
    elif rt.plural not in SEED_NAMES:
        # A kind added to the registry after this file: the ConfigMap/Secret shape fits most (base64
        # values are valid Secret data and valid ConfigMap strings alike).
        keys = st.from_regex(r"[a-z][a-z0-9.]{0,5}", fullmatch=True)
        values = st.binary(max_size=8).map(lambda b: base64.b64encode(b).decode())
        obj["data"] = draw(st.dictionaries(keys, values, max_size=2))
    return obj


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Manifests are at most about ten levels deep; edits below that would only go into nesting we added.
_EDIT_DEPTH = 12
# Values of the wrong type or range for most fields, and strings that trip naive string handling: a lone
# surrogate (not encodable as UTF-8), NUL, digits that str.isdigit() accepts but int() does not ("²"),
# Arabic-Indic digits, a right-to-left override.
WRONG_TYPES: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    1.5,
    10**30,
    -(10**30),
    "",
    "s",
    [],
    {},
    [1, "a"],
    {"k": None},
    "\ud800",
    "\x00",
    "\u00b2",
    "\u0663",
    "\u202e",
    "99999999999999999999",
)
# What YAML can say and JSON cannot: dates, timestamps, binary and sets (yaml.safe_load builds them all).
YAML_ONLY = (dt.date(2001, 1, 1), dt.datetime(2001, 1, 1, 12, 0), b"\x00\x01", {"a", "b"})


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Where an edit may go: every key and index, down to a depth where manifests end anyway."""
    out = [prefix]
    if len(prefix) >= _EDIT_DEPTH:
        return out
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _nest(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = {"a": value} if i % 2 else [value]
    return value


@st.composite
def mutated(draw: st.DrawFn, obj: Any, *, wrong: tuple[Any, ...] = WRONG_TYPES) -> Any:
    """``obj`` with up to three random edits: a key removed, a value of the wrong type (from ``wrong``), a
    huge string, deep nesting, or an unknown field."""
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(obj)
        path = draw(st.sampled_from(paths))
        edit = draw(st.sampled_from(["delete", "wrong", "huge", "deep", "extra", "json"]))
        if not path:
            if edit in ("wrong", "json"):
                obj = draw(st.sampled_from(wrong)) if edit == "wrong" else draw(json_values)
            continue
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        if edit == "delete":
            del parent[last]
        elif edit == "wrong":
            parent[last] = draw(st.sampled_from(wrong))
        elif edit == "huge":
            parent[last] = "h" * draw(st.sampled_from([300, 70_000, 1_000_000]))
        elif edit == "deep":
            parent[last] = _nest(draw(st.sampled_from([20, 200, 600])))
        elif edit == "json":
            parent[last] = draw(json_values)
        elif isinstance(parent[last], dict):
            parent[last][draw(st.text(max_size=8))] = draw(json_values)
    return obj


def _raw(*chunks: str) -> st.SearchStrategy[bytes]:
    return st.sampled_from([c.encode() for c in chunks])


@st.composite
def documents(draw: st.DrawFn, name: str, aimed: ResourceType | None = None) -> Any:
    """A JSON document a client might send to any endpoint: a manifest (of the aimed kind, mostly), a
    patch, options or junk."""
    rt = aimed if aimed is not None and draw(st.integers(0, 3)) else draw(st.sampled_from(ALL))
    manifest = draw(manifests(rt, name))
    partial = {k: v for k, v in manifest.items() if draw(st.booleans())}
    ops = st.fixed_dictionaries(
        {
            "op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "nope"]),
            "path": st.sampled_from(
                [
                    "/spec/replicas",
                    "/metadata/labels/x",
                    "/metadata",
                    "",
                    "/",
                    "/spec/containers/-",
                    "/spec/containers/0/image",
                    "/kind",
                    "/metadata/name",
                    "/status/phase",
                    "~",
                    "/a~2",
                ]
            ),
        },
        optional={"value": json_values, "from": st.sampled_from(["/metadata/labels", "/spec", "/nope"])},
    )
    return draw(
        st.one_of(
            st.just(manifest),
            st.just(manifest),
            st.just(manifest),
            st.just(partial),
            st.just(partial),
            st.lists(ops, max_size=4),
            st.just({"spec": {"replicas": draw(st.one_of(st.integers(-2, 5), json_scalars))}}),
            st.just(
                {"metadata": {"finalizers": None, "labels": {"app": None}}, "status": {"phase": "Running"}}
            ),
            st.just({"spec": {"containers": [{"name": "main", "$patch": "delete"}]}}),
            st.just(
                {"spec": {"$setElementOrder/containers": [{"name": "x"}], "containers": [{"name": "x"}]}}
            ),
            st.just({"$patch": "replace", "metadata": {}}),
            st.just(
                {
                    "$retainKeys": ["a"],
                    "metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/hold"]},
                }
            ),
            st.just(
                {
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "gracePeriodSeconds": draw(st.one_of(st.integers(-5, 60), json_scalars)),
                    "propagationPolicy": draw(st.sampled_from(["Background", "Orphan", "x", None])),
                    "preconditions": draw(
                        st.sampled_from([{}, {"uid": "nope"}, {"resourceVersion": "1"}, None, "x", []])
                    ),
                    "dryRun": draw(st.sampled_from([["All"], [], None])),
                }
            ),
            st.just(
                {
                    "apiVersion": "policy/v1",
                    "kind": "Eviction",
                    "metadata": {"name": name},
                    "deleteOptions": draw(st.one_of(st.just({"gracePeriodSeconds": 0}), json_values)),
                }
            ),
            st.just(
                {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"name": NODE}}
            ),
            st.just(
                {
                    "apiVersion": "autoscaling/v1",
                    "kind": "Scale",
                    "metadata": {"name": name},
                    "spec": {"replicas": draw(st.one_of(st.integers(-1, 5), json_scalars))},
                }
            ),
            json_values,
        )
    )


@st.composite
def bodies(draw: st.DrawFn, name: str, aimed: ResourceType | None = None) -> bytes | None:
    """The bytes of a request body: JSON (maybe mutated), YAML, or not a document at all."""
    form = draw(
        st.sampled_from(
            ["none", "empty", "json", "json", "json", "mutated", "mutated", "yaml", "raw", "deep", "big"]
        )
    )
    if form == "none":
        return None
    if form == "empty":
        return draw(_raw("", "   \n"))
    if form == "json":
        return _json(draw(documents(name, aimed)))
    if form == "mutated":
        return _json(draw(mutated(draw(documents(name, aimed)))))
    if form == "yaml":
        return draw(
            st.one_of(
                st.just(yaml.safe_dump(draw(documents(name, aimed))).encode()),
                st.just(
                    yaml.safe_dump(
                        draw(mutated(draw(documents(name, aimed)), wrong=WRONG_TYPES + YAML_ONLY * 3))
                    ).encode()
                ),
                _raw(
                    "a: [1, 2\n",
                    "---\na: 1\n---\nb: 2\n",
                    "- just\n- a list\n",
                    "plain scalar\n",
                    "metadata: &m {name: y}\nspec: *m\n",
                    "? [a, b]\n: c\n",
                    "!!python/object:os.system {}\n",
                    "metadata: {name: tabs}\n\tspec: 1\n",
                ),
            )
        )
    if form == "raw":
        return draw(
            st.one_of(
                _raw("{", "nul", "[]", "null", "0", '"s"', "NaN", '{"a": Infinity}', '{"a": 1, "a": 2}'),
                st.just(b"\xff\xfe\x00garbage"),
                st.binary(max_size=40),
                st.text(max_size=40).map(str.encode),
            )
        )
    if form == "deep":
        depth = draw(st.sampled_from([50, 500, 5_000, 100_000]))
        return b"[" * depth + b"]" * depth
    return b"{" + b'"a":"' + b"x" * OVER_LIMIT + b'"}'


# -- the properties ----------------------------------------------------------------------------------------


async def test_route_table_covers_registry_and_discovery(harness: Harness) -> None:
    """Every kind of the registry and every subresource discovery announces is served: its verbs answer
    neither "could not find the requested resource" nor 405, and all invariants hold."""
    verb_methods = {
        "get": "GET",
        "list": "GET",
        "create": "POST",
        "update": "PUT",
        "patch": "PATCH",
        "delete": "DELETE",
        "deletecollection": "DELETE",
        "watch": "GET",
    }
    patch_body = _json({"metadata": {"annotations": {"fuzz": "1"}}})
    for group, version in SERVED_GV:
        doc = discovery.resource_list(group, version)
        assert doc is not None
        root = f"/apis/{group}/{version}" if group else "/api/v1"
        for entry in doc["resources"]:
            plural, _, sub = entry["name"].partition("/")
            rt = next(r for r in ALL if r.plural == plural and r.group == group)
            name = SEED_NAMES.get(plural, ("missing",))[0]
            prefix = f"{root}/namespaces/default/{plural}" if rt.namespaced else f"{root}/{plural}"
            for verb in entry["verbs"]:
                collection = verb in ("list", "deletecollection", "watch") or (verb == "create" and not sub)
                path = prefix if collection else f"{prefix}/{name}" + (f"/{sub}" if sub else "")
                method = verb_methods[verb]
                query = [("watch", "1")] if verb == "watch" else []
                query += [("dryRun", "All")] if method in ("POST", "DELETE") and not sub else []
                if sub == "exec":
                    query += [("command", "ls")]
                ctype = "application/merge-patch+json" if method == "PATCH" else "application/json"
                body = patch_body if method == "PATCH" else None
                reply = await exercise(harness, method, path, query, body, ctype)
                status = json.loads(reply.body) if reply.status >= 400 else {}
                assert reply.status != 405, (verb, path, status)
                assert not (reply.status == 404 and status.get("details") is None), (verb, path, status)


@settings(FUZZ, max_examples=EXAMPLES_ANY)
@given(data=st.data())
async def test_any_request_on_any_route(harness: Harness, data: st.DataObject) -> None:
    """Random method, path (from the route table), query, body and content type."""
    aim = data.draw(aims(harness.routes), label="aim")
    path = aim.path
    method = data.draw(methods_for(aim), label="method")
    query = data.draw(queries(), label="query")
    body = data.draw(bodies(aim.name, aim.rt), label="body")
    ctype = data.draw(
        st.sampled_from(PATCH_TYPES)
        if method == "PATCH" and data.draw(st.booleans())
        else st.sampled_from(CONTENT_TYPES),
        label="content type",
    )
    accept = data.draw(st.sampled_from(ACCEPTS), label="accept")
    await exercise(harness, method, path, query, body, ctype, accept)


@settings(FUZZ, max_examples=EXAMPLES_WRITES)
@given(data=st.data())
async def test_writes_of_manifests(harness: Harness, data: st.DataObject) -> None:
    """Writes aimed at real objects: valid manifests are accepted (and read back as written), mutated ones
    and patches are either accepted or refused with a Status that leaves the store alone."""
    rt = data.draw(st.sampled_from(ALL), label="kind")
    existing = rt.plural in SEED_NAMES and data.draw(st.booleans(), label="existing")
    name = data.draw(st.sampled_from(SEED_NAMES[rt.plural]) if existing else valid_names, label="name")
    ns = data.draw(st.sampled_from(["default", "fuzz"]), label="namespace")
    if existing and rt.namespaced:
        ns = "fuzz" if name == "inner" else "default"
    root = f"/apis/{rt.group}/{rt.version}" if rt.group else "/api/v1"
    collection = f"{root}/namespaces/{ns}/{rt.plural}" if rt.namespaced else f"{root}/{rt.plural}"
    manifest = data.draw(manifests(rt, name), label="manifest")
    method = data.draw(st.sampled_from(["POST", "PUT", "PATCH"]), label="method")
    sub = (
        data.draw(st.sampled_from(("", *subresources_of(rt))), label="subresource")
        if method != "POST"
        else ""
    )
    path = collection if method == "POST" else f"{collection}/{name}" + (f"/{sub}" if sub else "")
    ctype = (
        data.draw(st.sampled_from(PATCH_TYPES[:3]), label="patch type")
        if method == "PATCH"
        else data.draw(st.sampled_from(["application/json", "application/yaml"]), label="content type")
    )
    doc = data.draw(st.one_of(st.just(manifest), mutated(json.loads(json.dumps(manifest)))), label="document")
    if ctype == "application/json-patch+json":
        doc = (
            [{"op": "replace", "path": "/metadata/labels", "value": doc.get("metadata", {}).get("labels")}]
            if (isinstance(doc, dict) and isinstance(doc.get("metadata"), dict))
            else doc
        )
    body = yaml.safe_dump(doc).encode() if ctype == "application/yaml" else _json(doc)
    reply = await exercise(harness, method, path, [], body, ctype)
    if method == "POST" and not existing and doc == manifest and rt.plural in KNOWN_SHAPES:
        assert reply.status == 201, (path, manifest, reply)
        stored = json.loads(reply.body)
        got = await harness.request("GET", f"{collection}/{name}")
        assert got.status == 200 and json.loads(got.body) == stored
        assert stored["metadata"]["labels"] == manifest["metadata"]["labels"]


@settings(FUZZ, max_examples=EXAMPLES_DELETES)
@given(data=st.data())
async def test_deletes_with_options(harness: Harness, data: st.DataObject) -> None:
    """DELETE of seed objects and collections with random DeleteOptions in the query and the body; a delete
    that succeeds (and is not a dry run) leaves the object gone or marked with a deletionTimestamp."""
    rt = data.draw(st.sampled_from(ALL), label="kind")
    name = data.draw(st.sampled_from(SEED_NAMES.get(rt.plural, ("missing",))), label="name")
    ns = SEED_NAMESPACE.get(name, data.draw(st.sampled_from(["default", "fuzz"]), label="namespace"))
    base = f"{_root(rt)}/namespaces/{ns}/{rt.plural}" if rt.namespaced else f"{_root(rt)}/{rt.plural}"
    path = data.draw(st.sampled_from([base, f"{base}/{name}", f"{base}/{name}/eviction"]), label="path")
    method = "POST" if path.endswith("/eviction") else "DELETE"
    keys = ["gracePeriodSeconds", "propagationPolicy", "dryRun", "labelSelector", "fieldSelector"]
    query = [
        (k, data.draw(QUERY_PARAMS[k], label=k))
        for k in data.draw(st.lists(st.sampled_from(keys), unique=True))
    ]
    options = data.draw(documents(name, rt).filter(lambda d: isinstance(d, dict)), label="options")
    body = data.draw(
        st.sampled_from([None, _json(options), _json({"preconditions": {"uid": "nope"}})]), label="body"
    )
    reply = await exercise(harness, method, path, query, body, "application/json")
    if reply.status < 300 and path.endswith(name) and not dict(query).get("dryRun"):
        left = await harness.request("GET", path)
        assert left.status == 404 or json.loads(left.body)["metadata"].get("deletionTimestamp"), left


# -- regressions: the bugs the properties above found, each fixed and kept as a test ---------------------


@pytest.mark.parametrize("content_type", ["application/json", "application/yaml"])
async def test_regression_deeply_nested_body_is_a_500(harness: Harness, content_type: str) -> None:
    """A body nested 5000 levels deep must be refused with a 400 Status, not answered 500 InternalError:
    ``json.loads`` / ``yaml.safe_load`` raise RecursionError, which ``read_body`` does not catch."""
    body = b"[" * 5000 + b"]" * 5000
    reply = await exercise(harness, "POST", "/api/v1/nodes", [], body, content_type)
    assert reply.status == 400


async def test_regression_huge_watch_timeout_is_a_500(harness: Harness) -> None:
    """``timeoutSeconds=1e400`` (as an integer) overflows ``loop.time() + timeout``: OverflowError, 500."""
    query = [("watch", "1"), ("timeoutSeconds", "1" + "0" * 400)]
    reply = await exercise(harness, "GET", "/api/v1/namespaces/default/pods", query, None, "")
    assert reply.status == 400


async def test_regression_huge_grace_period_is_a_500(harness: Harness) -> None:
    """Deleting a bound, running pod with ``gracePeriodSeconds=99999999999999999999`` overflows
    ``_now_plus`` (``datetime + timedelta``): OverflowError, 500. The apiserver clamps nothing either, but
    answers 400/422 for values it cannot represent. (A pod created with such a
    ``terminationGracePeriodSeconds`` is accepted, and every later plain delete of it fails the same way.)"""
    query = [("gracePeriodSeconds", "99999999999999999999")]
    reply = await exercise(harness, "DELETE", "/api/v1/namespaces/default/pods/web", query, None, "")
    assert reply.status in (400, 422)


async def test_regression_lone_surrogate_is_a_500(harness: Harness) -> None:
    """``"\\ud800"`` is valid JSON; ``json.loads`` makes a str the store cannot encode as UTF-8 (500)."""
    pod = _pod("surrogate")
    pod["metadata"]["annotations"] = {"note": "\ud800"}
    reply = await exercise(
        harness, "POST", "/api/v1/namespaces/default/pods", [], _json(pod), "application/json"
    )
    assert reply.status in (400, 422)


@pytest.mark.parametrize("value", ["2001-01-01", "2001-01-01T12:00:00Z", "!!binary AAE=", "!!set {a: null}"])
async def test_regression_yaml_only_values_are_a_500(harness: Harness, value: str) -> None:
    """``yaml.safe_load`` turns these into date, datetime, bytes and set; an unknown field holding one is
    stored as is and ``json.dumps`` raises TypeError (500). The apiserver decodes YAML into JSON first."""
    body = f"metadata: {{name: yaml-only}}\nspec: {{since: {value}}}\n".encode()
    reply = await exercise(harness, "POST", "/api/v1/nodes", [], body, "application/yaml")
    assert reply.status in (201, 400, 422)


async def test_regression_probe_port_with_unicode_digit_is_a_500(harness: Harness) -> None:
    """A probe port ``"²"``: ``str.isdigit()`` is true, ``int()`` raises ValueError, which the validator
    does not turn into a Cause (500 instead of 422). ``str.isdecimal()`` or a regex would do."""
    pod = _pod("probe")
    pod["spec"]["containers"][0]["livenessProbe"] = {"httpGet": {"port": "\u00b2"}}
    reply = await exercise(
        harness, "POST", "/api/v1/namespaces/default/pods", [], _json(pod), "application/json"
    )
    assert reply.status == 422


async def test_regression_namespace_delete_empties_it_before_checking_preconditions(harness: Harness) -> None:
    """``DELETE /api/v1/namespaces/fuzz`` with a failing uid precondition answers 409, but
    ``empty_namespace`` has already deleted (or marked) what was in it: a rejected write changed the store."""
    body = _json({"preconditions": {"uid": "nope"}})
    await exercise(harness, "DELETE", "/api/v1/namespaces/fuzz", [], body, "application/json")


@pytest.mark.parametrize("sub", ["binding", "eviction"])
async def test_regression_binding_and_eviction_ignore_dry_run(harness: Harness, sub: str) -> None:
    """``?dryRun=All`` on POST pods/{name}/binding or /eviction writes anyway (the apiserver supports
    dryRun on both)."""
    body = _json({"target": {"name": NODE}} if sub == "binding" else {"kind": "Eviction"})
    path = f"/api/v1/namespaces/default/pods/idle/{sub}"
    await exercise(harness, "POST", path, [("dryRun", "All")], body, "application/json")


@pytest.mark.parametrize("field", ["containers", "ports", "env"])
async def test_regression_pod_spec_defaulting_iterates_unvalidated_fields(
    harness: Harness, field: str
) -> None:
    """``default_pod_spec`` runs before ``validate`` and loops over ``containers``/``initContainers`` and
    each container's ``ports``/``env``: a number there (``"ports": 1.5``) raises TypeError, a 500 instead
    of the 422 naming the field. Pods, Deployments and ReplicaSets (their templates) alike."""
    pod = _pod("defaulting")
    if field == "containers":
        pod["spec"]["containers"] = 1.5
    else:
        pod["spec"]["containers"][0][field] = 1.5
    reply = await exercise(
        harness, "POST", "/api/v1/namespaces/default/pods", [], _json(pod), "application/json"
    )
    assert reply.status == 422

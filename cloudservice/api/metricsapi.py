"""metrics.k8s.io/v1beta1 on the cloud API: what ``kubectl top nodes`` and ``kubectl top pods`` read.

In Kubernetes this group is served by metrics-server through API aggregation; here the API serves it
itself from the :class:`~cloudservice.usage.UsageStore` that the hub fills from the edges' heartbeats.
Only ``get`` and ``list`` exist, as in metrics-server: usage is not stored, so there is nothing to watch,
create or delete.

kubectl decides whether ``top`` can work from discovery (the group must be listed in ``/apis``), so the
group's entry (:func:`discovery_group`) is merged into ``/apis`` by the API server, and this module serves
``/apis/metrics.k8s.io`` and ``/apis/metrics.k8s.io/v1beta1`` itself. A list with no fresh samples is an
empty list, as metrics-server answers (kubectl then says "metrics not available yet"); a single object
without a fresh sample is a 404 Status.

Selectors: ``labelSelector`` and ``fieldSelector`` (``metadata.name``, ``metadata.namespace``) on pods,
from the labels the edge sends with each pod; on nodes, ``labelSelector`` is matched against the Node
objects' labels when a store is given (edges do not send node labels), and ``fieldSelector`` on the name.

Not done: Table output (``kubectl get podmetrics`` falls back to names and ages), protobuf, watch.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from app.resources import NODES, ResourceType
from cloudservice.api.selectors import (
    Selection,
    SelectorError,
    labels_of,
    parse_field_selector,
    parse_label_selector,
)
from cloudservice.api.status import failure_status
from cloudservice.store.base import Store
from cloudservice.usage import API_VERSION, UsageStore

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"
PREFIX = f"/apis/{GROUP}/{VERSION}"
_VERBS = ("get", "list")
NODE_METRICS = ResourceType(GROUP, VERSION, "NodeMetrics", "nodes", namespaced=False, verbs=_VERBS)
POD_METRICS = ResourceType(GROUP, VERSION, "PodMetrics", "pods", namespaced=True, verbs=_VERBS)


def discovery_group() -> dict[str, Any]:
    """This group's entry in the ``/apis`` APIGroupList ``groups``."""
    version = {"groupVersion": API_VERSION, "version": VERSION}
    return {"name": GROUP, "versions": [version], "preferredVersion": dict(version)}


def discovery_resources() -> dict[str, Any]:
    """The APIResourceList served at ``/apis/metrics.k8s.io/v1beta1``."""
    resources = [
        {
            "name": rt.plural,
            "singularName": "",
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(rt.verbs),
        }
        for rt in (NODE_METRICS, POD_METRICS)
    ]
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": API_VERSION,
        "resources": resources,
    }


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(), status=status, content_type="application/json"
    )


def _not_found(rt: ResourceType, name: str) -> web.Response:
    # The apiserver's wording for a missing object, plus why it is missing.
    message = f'{rt.plural}.{GROUP} "{name}" not found: metrics not available yet'
    return _json(failure_status(404, "NotFound", message, name=name, kind=rt.plural, group=GROUP), 404)


def _selection(request: web.Request, rt: ResourceType) -> Selection:
    return Selection(
        parse_label_selector(request.query.get("labelSelector", "")),
        parse_field_selector(request.query.get("fieldSelector", ""), rt),
    )


def _bad_selector(exc: SelectorError) -> web.Response:
    return _json(failure_status(400, "BadRequest", str(exc)), 400)


def add_metrics_api(app: web.Application, usage: UsageStore, *, store: Store | None = None) -> None:
    """Register the metrics.k8s.io routes (GET only) and their discovery documents on ``app``.

    ``store`` gives node label selectors the Node objects' labels; without it a node label selector
    matches as if nodes had no labels. Register before a catch-all ``/apis/{group}/{version}/{path:.+}``
    route (aiohttp prefers the longer fixed prefix either way, but order states the intent).
    """

    async def group(_request: web.Request) -> web.StreamResponse:
        return _json({"kind": "APIGroup", "apiVersion": "v1", **discovery_group()})

    async def resources(_request: web.Request) -> web.StreamResponse:
        return _json(discovery_resources())

    async def list_nodes(request: web.Request) -> web.StreamResponse:
        try:
            selection = _selection(request, NODE_METRICS)
        except SelectorError as exc:
            return _bad_selector(exc)
        body = usage.list_node_metrics()
        if not selection.empty:
            labels: dict[str, dict[str, str]] = {}
            if store is not None and not selection.labels.empty:
                nodes, _ = await store.list(NODES)
                labels = {str(n.get("metadata", {}).get("name", "")): labels_of(n) for n in nodes}
            body["items"] = [
                item
                for item in body["items"]
                if selection.labels.matches(labels.get(item["metadata"]["name"], {}))
                and selection.fields.matches(item)
            ]
        return _json(body)

    async def get_node(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        body = usage.node_metrics(name)
        return _not_found(NODE_METRICS, name) if body is None else _json(body)

    async def list_pods(request: web.Request) -> web.StreamResponse:
        try:
            selection = _selection(request, POD_METRICS)
        except SelectorError as exc:
            return _bad_selector(exc)
        body = usage.list_pod_metrics(request.match_info.get("namespace"))
        if not selection.empty:
            body["items"] = [item for item in body["items"] if selection.matches(item)]
        return _json(body)

    async def get_pod(request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        body = usage.pod_metrics(namespace, name)
        return _not_found(POD_METRICS, name) if body is None else _json(body)

    app.router.add_get(f"/apis/{GROUP}", group)
    app.router.add_get(PREFIX, resources)
    app.router.add_get(f"{PREFIX}/nodes", list_nodes)
    app.router.add_get(f"{PREFIX}/nodes/{{name}}", get_node)
    app.router.add_get(f"{PREFIX}/pods", list_pods)
    app.router.add_get(f"{PREFIX}/namespaces/{{namespace}}/pods", list_pods)
    app.router.add_get(f"{PREFIX}/namespaces/{{namespace}}/pods/{{name}}", get_pod)

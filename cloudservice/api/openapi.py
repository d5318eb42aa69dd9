"""The smallest OpenAPI v3 that lets ``kubectl apply`` validate on the server.

kubectl (1.27+) validates manifests with ``--validate=strict`` by default. It first asks ``/openapi/v3``
whether the server accepts the ``fieldValidation`` query parameter on PATCH for the manifest's
group/version/kind; when it does, kubectl leaves validation to the server. Otherwise it downloads
``/openapi/v2`` to validate client-side, and fails ("failed to download openapi") when there is none. So
we publish, per group/version, only the PATCH operations of the kinds we serve, each tagged with its
``x-kubernetes-group-version-kind`` and declaring ``fieldValidation``; our own strategy validation is the
schema. Deliberately not published: component schemas. kubectl's apply then computes strategic merge
patches from its compiled-in types, which know every kind we serve. ``/openapi/v2`` stays 404.
"""

from __future__ import annotations

import hashlib
import json

from app.resources import ALL, JSONObject

_FIELD_VALIDATION: JSONObject = {
    "name": "fieldValidation",
    "in": "query",
    "description": "Strict, Warn or Ignore: how the server treats unknown or duplicate fields.",
    "schema": {"type": "string", "uniqueItems": True},
}


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def group_version_document(group: str, version: str) -> JSONObject | None:
    """The OpenAPI v3 document of one group/version, or None when we serve nothing there."""
    paths: JSONObject = {}
    for rt in ALL:
        if rt.group != group or rt.version != version:
            continue
        prefix = f"/{_gv_path(group, version)}"
        path = (
            f"{prefix}/namespaces/{{namespace}}/{rt.plural}/{{name}}"
            if rt.namespaced
            else f"{prefix}/{rt.plural}/{{name}}"
        )
        paths[path] = {
            "patch": {
                "operationId": f"patch{rt.kind}",
                "description": f"partially update the specified {rt.kind}",
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": rt.kind},
                "parameters": [_FIELD_VALIDATION],
                "responses": {"200": {"description": "OK"}},
            }
        }
    if not paths:
        return None
    return {
        "openapi": "3.0.0",
        "info": {"title": "FleetOps", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }


def _hash(doc: JSONObject) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()


def root_document() -> JSONObject:
    """``/openapi/v3``: where each group/version's document lives (the hash lets clients cache it)."""
    paths: JSONObject = {}
    for gv in sorted({(rt.group, rt.version) for rt in ALL}):
        doc = group_version_document(*gv)
        assert doc is not None
        rel = _gv_path(*gv)
        paths[rel] = {"serverRelativeURL": f"/openapi/v3/{rel}?hash={_hash(doc)}"}
    return {"paths": paths}

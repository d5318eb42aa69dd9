"""Discovery documents: ``/version``, ``/api``, ``/api/v1``, ``/apis`` and ``/apis/{group}/{version}``.

kubectl learns from these which kinds exist, their plural and short names, scope and verbs, and which
subresources (``pods/status``, ``deployments/scale``) it may call. kubectl 1.32 first asks for aggregated
discovery (``as=APIGroupDiscoveryList``); we answer the legacy documents with ``Content-Type:
application/json`` and client-go falls back to the per-group requests (one extra round trip, cached in
``~/.kube/cache``). Aggregated discovery is deliberately not implemented: the legacy form is what every
client understands and there are only two groups.
"""

from __future__ import annotations

import platform

from app.resources import ALL, JSONObject, ResourceType

GIT_VERSION = "v1.32.0-fleetops"
_MAJOR, _MINOR = "1", "32"
# Go's names for the machine types, which is what kubectl users expect in ``platform``.
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}

# Subresources per kind: (subresource, kind it speaks, group, version, verbs).
_SUBRESOURCES: dict[str, list[tuple[str, str, str, str, tuple[str, ...]]]] = {
    "Node": [("status", "Node", "", "", ("get", "patch", "update"))],
    "Pod": [
        ("status", "Pod", "", "", ("get", "patch", "update")),
        ("binding", "Binding", "", "", ("create",)),
        ("eviction", "Eviction", "policy", "v1", ("create",)),
        ("log", "Pod", "", "", ("get",)),
        ("exec", "PodExecOptions", "", "", ("create", "get")),
    ],
    "Deployment": [
        ("status", "Deployment", "", "", ("get", "patch", "update")),
        ("scale", "Scale", "autoscaling", "v1", ("get", "patch", "update")),
    ],
    "ReplicaSet": [
        ("status", "ReplicaSet", "", "", ("get", "patch", "update")),
        ("scale", "Scale", "autoscaling", "v1", ("get", "patch", "update")),
    ],
}


def version_info() -> JSONObject:
    machine = platform.machine().lower()
    return {
        "major": _MAJOR,
        "minor": _MINOR,
        "gitVersion": GIT_VERSION,
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": f"python{platform.python_version()}",
        "compiler": "cpython",
        "platform": f"{platform.system().lower()}/{_GOARCH.get(machine, machine)}",
    }


def api_versions(server_address: str) -> JSONObject:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def groups() -> list[str]:
    return sorted({r.group for r in ALL if r.group})


def group_versions(group: str) -> list[str]:
    return sorted({r.version for r in ALL if r.group == group})


def api_group_list() -> JSONObject:
    out = []
    for g in groups():
        versions = [{"groupVersion": f"{g}/{v}", "version": v} for v in group_versions(g)]
        out.append({"name": g, "versions": versions, "preferredVersion": versions[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": out}


def api_group(group: str) -> JSONObject | None:
    versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in group_versions(group)]
    if not versions:
        return None
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": versions,
        "preferredVersion": versions[0],
    }


def _resource_entry(rt: ResourceType) -> JSONObject:
    entry: JSONObject = {
        "name": rt.plural,
        "singularName": rt.singular or rt.kind.lower(),
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": list(rt.verbs),
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    return entry


def resource_list(group: str, version: str) -> JSONObject | None:
    """The APIResourceList of one group/version, subresources included; None when we serve none."""
    resources: list[JSONObject] = []
    for rt in ALL:
        if rt.group != group or rt.version != version:
            continue
        resources.append(_resource_entry(rt))
        for sub, kind, sub_group, sub_version, verbs in _SUBRESOURCES.get(rt.kind, []):
            entry: JSONObject = {
                "name": f"{rt.plural}/{sub}",
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": kind,
                "verbs": list(verbs),
            }
            if sub_group:
                entry["group"], entry["version"] = sub_group, sub_version
            resources.append(entry)
    if not resources:
        return None
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}

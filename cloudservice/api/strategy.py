"""Kind-specific behaviour of the API ("strategies", as the apiserver calls them): defaults, validation and
what a create, an update or a status update may change.

Each write goes through three pure steps before the store sees it:

* ``prepare_create`` / ``prepare_update`` / ``prepare_status_update`` strip or keep server-managed fields
  (uid, creationTimestamp, deletionTimestamp, generation), reset or keep ``.status`` (pods, deployments and
  replica sets own a ``/status`` subresource, so their main resource ignores status changes) and bump
  ``metadata.generation`` when a workload's spec changes;
* ``apply_defaults`` fills what the apiserver fills (a pod's restartPolicy, dnsPolicy, schedulerName,
  terminationGracePeriodSeconds and each container's imagePullPolicy / terminationMessagePath; a
  deployment's replicas, RollingUpdate 25%/25%, revisionHistoryLimit 10, progressDeadlineSeconds 600), so
  that kubectl's three-way apply diffs against what it expects;
* ``validate`` collects :class:`Cause` entries naming each bad field and raises one 422 ``Invalid``.

Pod specs are validated by ``app.model.parse_pod_spec``, the same parser the edge runs, so a manifest the
cloud accepts is one the edge can execute.

ConfigMaps and Secrets follow the apiserver: data keys must be config keys (``[-._a-zA-Z0-9]+``), a
Secret's ``data`` holds base64 and its ``stringData`` is merged into ``data`` (base64-encoded, winning over
``data``) and dropped on every write, ``type`` defaults to ``Opaque`` and may not change, well-known types
need their keys (``kubernetes.io/tls`` needs ``tls.crt`` and ``tls.key``...), an object marked
``immutable: true`` may change neither its data nor that flag, and the data of one object is at most 1 MiB.
Secret values are never put in a message: a bad base64 value is reported by key only.

Devices and DeviceModels (``devices.kubeedge.io/v1beta1``) are validated by ``app.devices.parse_device`` and
``parse_device_model``, the parsers the edge's devicetwin runs; like KubeEdge's CRDs they have no /status
subresource and no server-side defaults (a null anywhere in them is dropped, as for every kind), but for
one stamp: a desired value that is new or changed gets the twin versions in its metadata
(``app.twin.stamp_desired``), which is how the edge tells a new desired value from one it has overridden on
site. Each desired value is checked against the Device's DeviceModel when that model exists (type,
minimum/maximum, not ReadOnly: ``app.devices.desired_value_problems``, the check the edge and the adapters
run), so a bad value is refused with a 422 naming ``spec.properties[i].desired.value``. On an update a
desired value equal to the stored Device's is not checked again (ratcheting, as Kubernetes does for CRD
validation): a DeviceModel made stricter leaves its Devices' other fields writable. The model may be
created later (Kubernetes does not order writes): then the Device is accepted and the edge's devicetwin
refuses a bad value with a Warning Event on it. Whether a Device's properties exist in its model is the
device controller's check, for the same reason.

Deliberately not done: admission plugins, quota, defaulting of fields the process runtime ignores
(security contexts), and pod spec immutability beyond the rule the apiserver enforces most visibly (only
images, activeDeadlineSeconds, tolerations and a first nodeName may change).
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
import time
from collections.abc import Mapping
from typing import Any

from app.devices import Device, desired_value_problems, parse_device, parse_device_model
from app.errors import ValidationError
from app.model import DEFAULT_VOLUME_MODE, config_key_problem, parse_pod_spec
from app.resources import (
    CONFIGMAPS,
    DEPLOYMENTS,
    DEVICEMODELS,
    DEVICES,
    NAMESPACES,
    PODS,
    REPLICASETS,
    SECRETS,
    JSONObject,
    ResourceType,
)
from app.twin import stamp_desired
from cloudservice.api.selectors import selector_from_object
from cloudservice.api.status import Cause, invalid

# A DNS-1123 subdomain (object names) is at most 253 characters; a DNS-1123 label (namespace names) 63.
_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SUBDOMAIN_MAX = 253
_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_MAX = 63
_LABEL_KEY_RE = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_PERCENT_RE = re.compile(r"^[0-9]+%$")
# The apiserver's limit on the data of one ConfigMap or Secret (MaxSecretSize / the ConfigMap check): 1 MiB.
MAX_CONFIG_BYTES = 1024 * 1024
SECRET_DEFAULT_TYPE = "Opaque"  # noqa: S105 - a Secret type name, not a password
# Keys a Secret of a well-known type must hold (any one of them for basic-auth, all of them otherwise).
_SECRET_TYPE_KEYS: dict[str, tuple[str, ...]] = {
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
}
_REDACTED = '"<secret contents redacted>"'

# Kinds whose status lives behind a /status subresource: the main resource's writes keep the old status.
STATUS_SUBRESOURCE_KINDS = frozenset({"Pod", "Deployment", "ReplicaSet"})
# Kinds whose metadata.generation counts spec changes (controllers compare it with observedGeneration).
GENERATION_KINDS = frozenset({"Deployment", "ReplicaSet"})
_SERVER_FIELDS = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
)


def _d(value: Any) -> JSONObject:
    return value if isinstance(value, dict) else {}


def _show(value: Any) -> str:
    """A value as the apiserver quotes it in ``Invalid value: ...`` messages."""
    return (
        f'"{value}"'
        if isinstance(value, str)
        else str(value).lower()
        if isinstance(value, bool)
        else str(value)
    )


# Defaults -------------------------------------------------------------------------------------------------


def default_pull_policy(image: str) -> str:
    """``Always`` for ``:latest`` or untagged images, ``IfNotPresent`` otherwise (digests count as tagged)."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last or last.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


_PROBE_DEFAULTS = {"timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}


def _items(value: Any) -> list[Any]:
    """A list field as defaulting may walk it: defaults run before validation, which reports wrong types."""
    return value if isinstance(value, list) else []


def default_pod_spec(spec: JSONObject) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for volume in _items(spec.get("volumes")):
        if not isinstance(volume, dict):
            continue
        for source in ("configMap", "secret"):
            if isinstance(volume.get(source), dict):
                volume[source].setdefault("defaultMode", DEFAULT_VOLUME_MODE)
        if isinstance(volume.get("hostPath"), dict):
            volume["hostPath"].setdefault("type", "")
    for key in ("initContainers", "containers"):
        for c in _items(spec.get(key)):
            if not isinstance(c, dict):
                continue
            if isinstance(c.get("image"), str):
                c.setdefault("imagePullPolicy", default_pull_policy(c["image"]))
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("resources", {})
            for p in _items(c.get("ports")):
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")
            for probe_key in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = c.get(probe_key)
                if isinstance(probe, dict):
                    # The apiserver's defaults, so `kubectl describe` shows what the edge will do.
                    for field, value in _PROBE_DEFAULTS.items():
                        probe.setdefault(field, value)
                    http = probe.get("httpGet")
                    if isinstance(http, dict):
                        http.setdefault("path", "/")
                        http.setdefault("scheme", "HTTP")
            for env in _items(c.get("env")):
                value_from = env.get("valueFrom") if isinstance(env, dict) else None
                ref = value_from.get("fieldRef") if isinstance(value_from, dict) else None
                if isinstance(ref, dict):
                    ref.setdefault("apiVersion", "v1")


def _default_workload(obj: JSONObject, *, deployment: bool) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    spec.setdefault("replicas", 1)
    if deployment:
        strategy = spec.setdefault("strategy", {})
        if isinstance(strategy, dict):
            strategy.setdefault("type", "RollingUpdate")
            if strategy.get("type") == "RollingUpdate":
                ru = strategy.setdefault("rollingUpdate", {})
                if isinstance(ru, dict):
                    ru.setdefault("maxSurge", "25%")
                    ru.setdefault("maxUnavailable", "25%")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
    template = spec.get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        default_pod_spec(template["spec"])
        # The apiserver labels nothing for us, but kubectl expects a template metadata object.
        template.setdefault("metadata", {})


def drop_nulls(value: Any) -> Any:
    """Remove null-valued keys at every depth, in place: the apiserver decodes into typed structs, so a
    ``null`` field (``creationTimestamp: null`` in what kubectl sends back on ``rollout undo``) is the
    same as an absent one, and must compare equal to it afterwards."""
    if isinstance(value, dict):
        for key in [k for k, v in value.items() if v is None]:
            del value[key]
        for v in value.values():
            drop_nulls(v)
    elif isinstance(value, list):
        for v in value:
            drop_nulls(v)
    return value


def merge_string_data(secret: JSONObject) -> None:
    """Fold a Secret's write-only ``stringData`` into ``data`` (base64), as the apiserver does on every
    write. A malformed ``stringData`` (not a map of strings) is left in place for ``validate`` to name."""
    string_data = secret.get("stringData")
    if string_data is None:
        secret.pop("stringData", None)
        return
    if not isinstance(string_data, dict) or not all(isinstance(v, str) for v in string_data.values()):
        return
    data = secret.get("data")
    if data is None:
        data = secret["data"] = {}
    if not isinstance(data, dict):
        return
    for key, value in string_data.items():
        data[key] = base64.b64encode(value.encode()).decode("ascii")
    del secret["stringData"]


def apply_defaults(rt: ResourceType, obj: JSONObject) -> None:
    drop_nulls(obj.get("metadata"))
    drop_nulls(obj.get("spec"))
    if rt is SECRETS:
        if obj.get("type") in (None, ""):
            obj["type"] = SECRET_DEFAULT_TYPE
        merge_string_data(obj)
    if rt is DEVICES:
        drop_nulls(obj.get("status"))
    if rt is PODS and isinstance(obj.get("spec"), dict):
        default_pod_spec(obj["spec"])
    elif rt is DEPLOYMENTS:
        _default_workload(obj, deployment=True)
    elif rt is REPLICASETS:
        _default_workload(obj, deployment=False)


# Preparation ----------------------------------------------------------------------------------------------


def prepare_create(rt: ResourceType, obj: JSONObject) -> None:
    """Clear what clients may not set on create, reset status where the server owns it, fill defaults."""
    meta = obj.setdefault("metadata", {})
    for key in _SERVER_FIELDS:
        meta.pop(key, None)
    meta.pop("managedFields", None)
    if rt is PODS:
        obj["status"] = {"phase": "Pending"}
    elif rt is DEPLOYMENTS:
        obj["status"] = {}
    elif rt is REPLICASETS:
        obj["status"] = {"replicas": 0}
    elif rt is NAMESPACES:
        obj["status"] = {"phase": "Active"}
    if rt.kind in GENERATION_KINDS:
        meta["generation"] = 1
    apply_defaults(rt, obj)
    if rt is DEVICES:
        stamp_desired(obj, None, timestamp=int(time.time() * 1000))


def prepare_update(rt: ResourceType, new: JSONObject, old: JSONObject) -> None:
    """Keep server-managed metadata and (for status-subresource kinds) the old status; bump generation."""
    meta, old_meta = new.setdefault("metadata", {}), _d(old.get("metadata"))
    for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
        if key in old_meta:
            meta[key] = old_meta[key]
        else:
            meta.pop(key, None)
    meta.pop("managedFields", None)
    if rt.kind in STATUS_SUBRESOURCE_KINDS:
        if "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        else:
            new.pop("status", None)
    apply_defaults(rt, new)
    if rt is DEVICES:
        stamp_desired(new, old, timestamp=int(time.time() * 1000))
    if rt.kind in GENERATION_KINDS and new.get("spec") != old.get("spec"):
        meta["generation"] = int(old_meta.get("generation") or 1) + 1


def prepare_status_update(new: JSONObject, old: JSONObject) -> JSONObject:
    """A /status write: the old object with only ``.status`` taken from the request."""
    result = copy.deepcopy(old)
    if "status" in new:
        result["status"] = copy.deepcopy(new["status"])
    else:
        result.pop("status", None)
    rv = _d(new.get("metadata")).get("resourceVersion")
    if rv:
        result["metadata"]["resourceVersion"] = rv
    return result


# Validation -----------------------------------------------------------------------------------------------


def _name_causes(rt: ResourceType, name: Any) -> list[Cause]:
    if not name:
        return [
            Cause("metadata.name", "Required value: name or generateName is required", "FieldValueRequired")
        ]
    if not isinstance(name, str):
        return [Cause("metadata.name", f"Invalid value: {_show(name)}: must be a string")]
    if rt is NAMESPACES:
        if len(name) > _LABEL_MAX or not _LABEL_RE.match(name):
            return [
                Cause(
                    "metadata.name",
                    f'Invalid value: "{name}": a lowercase RFC 1123 label must consist of lower case '
                    "alphanumeric characters or '-', and must start and end with an alphanumeric character "
                    f"(at most {_LABEL_MAX} characters)",
                )
            ]
        return []
    if len(name) > _SUBDOMAIN_MAX or not _SUBDOMAIN_RE.match(name):
        return [
            Cause(
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case '
                "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character "
                "(e.g. 'example.com')",
            )
        ]
    return []


def _string_map_causes(value: Any, field: str, *, labels: bool) -> list[Cause]:
    if value is None:
        return []
    if not isinstance(value, dict):
        return [Cause(field, "Invalid value: must be a map of string keys to string values")]
    causes: list[Cause] = []
    for k, v in value.items():
        if not isinstance(v, str):
            causes.append(Cause(f"{field}.{k}", f"Invalid value: {_show(v)}: must be a string"))
        elif labels and (len(v) > _LABEL_MAX or not _LABEL_VALUE_RE.match(v)):
            causes.append(
                Cause(
                    field,
                    f'Invalid value: "{v}": a valid label must be 63 characters or less, '
                    "consist of alphanumeric characters, '-', '_' or '.', and start and end with "
                    "an alphanumeric character",
                )
            )
        if not _LABEL_KEY_RE.match(str(k)):
            causes.append(Cause(field, f'Invalid value: "{k}": not a valid qualified name'))
    return causes


def _metadata_causes(rt: ResourceType, obj: JSONObject) -> list[Cause]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return [Cause("metadata", "Required value", "FieldValueRequired")]
    causes = _name_causes(rt, meta.get("name"))
    causes += _string_map_causes(meta.get("labels"), "metadata.labels", labels=True)
    causes += _string_map_causes(meta.get("annotations"), "metadata.annotations", labels=False)
    fin = meta.get("finalizers")
    if fin is not None and (not isinstance(fin, list) or not all(isinstance(f, str) and f for f in fin)):
        causes.append(Cause("metadata.finalizers", "Invalid value: must be a list of non-empty strings"))
    return causes


def _device_causes(
    rt: ResourceType,
    obj: JSONObject,
    old: JSONObject | None = None,
    models: Mapping[str, JSONObject] | None = None,
) -> list[Cause]:
    try:
        if rt is not DEVICES:
            parse_device_model(obj)
            return []
        device = parse_device(obj)
    except ValidationError as exc:
        return [Cause(exc.field, exc.message, _cause_reason(exc.message))]
    raw_model = (models or {}).get(device.model_ref)
    if raw_model is None:
        return []  # not created yet: the edge's devicetwin checks the values once the model arrives
    try:
        model = parse_device_model(raw_model)
    except ValidationError:
        return []  # a model stored before a stricter parser: the edge reports it as unusable
    # Ratcheting, as Kubernetes does for CRD validation: on an update a desired value that is the stored
    # Device's is not checked again, so a DeviceModel made stricter does not lock its Devices against
    # every other change (labels, finalizers); a new or changed value is checked in full.
    before = _desired_values(old)
    now = _desired_values(device)
    return [
        Cause(p.error.field, f"Invalid value: {p.error.message}", "FieldValueInvalid")
        for p in desired_value_problems(device, model)
        if p.name not in before or before[p.name] != now[p.name]
    ]


def _desired_values(device: Device | JSONObject | None) -> dict[str, str]:
    """A Device's desired values by property name; empty for no Device or one that does not parse."""
    if device is None:
        return {}
    if not isinstance(device, Device):
        try:
            device = parse_device(device)
        except ValidationError:
            return {}
    return {p.name: p.desired.value for p in device.properties if p.desired is not None}


def _cause_reason(message: str) -> str:
    if message.startswith("Required value"):
        return "FieldValueRequired"
    if message.startswith("Unsupported value"):
        return "FieldValueNotSupported"
    if message.startswith("Duplicate value"):
        return "FieldValueDuplicate"
    return "FieldValueInvalid"


def _pod_spec_causes(spec: Any, field: str) -> list[Cause]:
    try:
        parse_pod_spec(spec, field=field)
    except ValidationError as exc:
        return [Cause(exc.field, exc.message)]
    return []


def _int_causes(spec: JSONObject, key: str, field: str, minimum: int = 0) -> list[Cause]:
    value = spec.get(key)
    if value is None:
        return []
    if isinstance(value, bool) or not isinstance(value, int):
        return [Cause(field, f"Invalid value: {_show(value)}: must be an integer")]
    if value < minimum:
        return [Cause(field, f"Invalid value: {value}: must be >= {minimum}")]
    return []


def _int_or_percent(value: Any, field: str) -> tuple[list[Cause], bool]:
    """Causes for an IntOrString, and whether the value is zero."""
    if isinstance(value, bool):
        return [Cause(field, f"Invalid value: {_show(value)}: must be an integer or percentage")], False
    if isinstance(value, int):
        if value < 0:
            return [Cause(field, f"Invalid value: {value}: must be >= 0")], False
        return [], value == 0
    if isinstance(value, str) and _PERCENT_RE.match(value):
        if int(value[:-1]) > 100:
            return [Cause(field, f'Invalid value: "{value}": must not be greater than 100%')], False
        return [], int(value[:-1]) == 0
    return [
        Cause(
            field,
            f"Invalid value: {_show(value)}: a valid percent string must be a numeric string "
            "followed by an ending '%' (e.g. '1%', or '93%')",
        )
    ], False


def _workload_causes(rt: ResourceType, obj: JSONObject, old: JSONObject | None) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [Cause("spec", "Required value", "FieldValueRequired")]
    causes = _int_causes(spec, "replicas", "spec.replicas")
    causes += _int_causes(spec, "minReadySeconds", "spec.minReadySeconds")
    template = spec.get("template")
    if not isinstance(template, dict):
        causes.append(Cause("spec.template", "Required value", "FieldValueRequired"))
        template = {}
    try:
        selector = selector_from_object(spec.get("selector"), "spec.selector")
    except ValidationError as exc:
        msg = exc.message if exc.message != "Required value" else "Required value"
        causes.append(
            Cause(exc.field, msg, "FieldValueRequired" if msg == "Required value" else "FieldValueInvalid")
        )
    else:
        if selector.empty:
            causes.append(
                Cause(
                    "spec.selector",
                    f"Invalid value: {_show(spec.get('selector'))}: empty selector is invalid for deployment",
                )
            )
        else:
            tmpl_labels = _d(_d(template.get("metadata")).get("labels"))
            if not selector.matches({str(k): str(v) for k, v in tmpl_labels.items()}):
                shown = "map[" + " ".join(f"{k}:{v}" for k, v in sorted(tmpl_labels.items())) + "]"
                causes.append(
                    Cause(
                        "spec.template.metadata.labels",
                        f"Invalid value: {shown!r}: `selector` does not match template `labels`",
                    )
                )
    if template:
        causes += _string_map_causes(
            _d(template.get("metadata")).get("labels"), "spec.template.metadata.labels", labels=True
        )
        tspec = template.get("spec")
        causes += _pod_spec_causes(tspec, "spec.template.spec")
        policy = _d(tspec).get("restartPolicy", "Always")
        if not causes and policy != "Always":
            causes.append(
                Cause(
                    "spec.template.spec.restartPolicy",
                    f'Unsupported value: "{policy}": supported values: "Always"',
                    "FieldValueNotSupported",
                )
            )
    if rt is DEPLOYMENTS:
        causes += _int_causes(spec, "revisionHistoryLimit", "spec.revisionHistoryLimit")
        causes += _int_causes(spec, "progressDeadlineSeconds", "spec.progressDeadlineSeconds", minimum=1)
        pds, mrs = spec.get("progressDeadlineSeconds"), spec.get("minReadySeconds", 0)
        if isinstance(pds, int) and isinstance(mrs, int) and not causes and pds <= mrs:
            causes.append(
                Cause(
                    "spec.progressDeadlineSeconds",
                    f"Invalid value: {pds}: must be greater than minReadySeconds",
                )
            )
        causes += _strategy_causes(spec.get("strategy"))
    if (
        old is not None
        and isinstance(old.get("spec"), dict)
        and spec.get("selector") != old["spec"].get("selector")
    ):
        causes.append(
            Cause("spec.selector", f"Invalid value: {_show(spec.get('selector'))}: field is immutable")
        )
    return causes


def _strategy_causes(strategy: Any) -> list[Cause]:
    if strategy is None:
        return []
    if not isinstance(strategy, dict):
        return [Cause("spec.strategy", "Invalid value: must be an object")]
    typ = strategy.get("type")
    if typ not in ("RollingUpdate", "Recreate"):
        return [
            Cause(
                "spec.strategy.type",
                f'Unsupported value: {_show(typ)}: supported values: "Recreate", "RollingUpdate"',
                "FieldValueNotSupported",
            )
        ]
    ru = strategy.get("rollingUpdate")
    if typ == "Recreate":
        if ru is not None:
            return [
                Cause(
                    "spec.strategy.rollingUpdate",
                    "Forbidden: may not be specified when strategy `type` is 'Recreate'",
                    "FieldValueForbidden",
                )
            ]
        return []
    if not isinstance(ru, dict):
        return [Cause("spec.strategy.rollingUpdate", "Invalid value: must be an object")]
    surge_causes, surge_zero = _int_or_percent(
        ru.get("maxSurge", "25%"), "spec.strategy.rollingUpdate.maxSurge"
    )
    unavail_causes, unavail_zero = _int_or_percent(
        ru.get("maxUnavailable", "25%"), "spec.strategy.rollingUpdate.maxUnavailable"
    )
    causes = surge_causes + unavail_causes
    if not causes and surge_zero and unavail_zero:
        causes.append(
            Cause(
                "spec.strategy.rollingUpdate.maxUnavailable",
                "Invalid value: 0: may not be 0 when `maxSurge` is 0",
            )
        )
    return causes


_MUTABLE_POD_KEYS = ("activeDeadlineSeconds", "tolerations")


def _pod_update_causes(new: JSONObject, old: JSONObject) -> list[Cause]:
    """Pod specs are immutable except for images, activeDeadlineSeconds, tolerations and a first nodeName."""
    a, b = copy.deepcopy(_d(new.get("spec"))), copy.deepcopy(_d(old.get("spec")))
    for spec in (a, b):
        for key in _MUTABLE_POD_KEYS:
            spec.pop(key, None)
        for ckey in ("containers", "initContainers"):
            for c in spec.get(ckey) or []:
                if isinstance(c, dict):
                    c.pop("image", None)
    if not b.get("nodeName"):
        a.pop("nodeName", None)
        b.pop("nodeName", None)
    if a != b:
        return [
            Cause(
                "spec",
                "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, "
                "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` "
                "(only additions to existing tolerations) or the first `spec.nodeName`",
                "FieldValueForbidden",
            )
        ]
    return []


def _config_data_causes(
    value: Any, field: str, *, base64_values: bool, secret: bool
) -> tuple[list[Cause], int]:
    """Causes for a ``data``/``binaryData``/``stringData`` map, and the size of its (decoded) values."""
    if value is None:
        return [], 0
    if not isinstance(value, dict):
        return [Cause(field, "Invalid value: must be a map of string keys to string values")], 0
    causes: list[Cause] = []
    size = 0
    for key, v in value.items():
        problem = config_key_problem(str(key))
        if problem:
            causes.append(Cause(f"{field}[{key}]", f'Invalid value: "{key}": {problem}'))
        if not isinstance(v, str):
            shown = _REDACTED if secret else _show(v)
            causes.append(Cause(f"{field}[{key}]", f"Invalid value: {shown}: must be a string"))
            continue
        if base64_values:
            try:
                size += len(base64.b64decode(v, validate=True))
            except (binascii.Error, ValueError):
                shown = _REDACTED if secret else "<binary data>"
                causes.append(Cause(f"{field}[{key}]", f"Invalid value: {shown}: illegal base64 data"))
        else:
            size += len(v.encode())
    return causes, size


def _immutable_causes(rt: ResourceType, obj: JSONObject, old: JSONObject | None) -> list[Cause]:
    causes: list[Cause] = []
    flag = obj.get("immutable")
    if flag is not None and not isinstance(flag, bool):
        causes.append(Cause("immutable", f"Invalid value: {_show(flag)}: must be a boolean"))
    if old is None or old.get("immutable") is not True:
        return causes
    forbidden = "Forbidden: field is immutable when `immutable` is set"
    if flag is not True:
        causes.append(Cause("immutable", forbidden, "FieldValueForbidden"))
    keys = ("data", "binaryData") if rt is CONFIGMAPS else ("data",)
    causes.extend(
        Cause(key, forbidden, "FieldValueForbidden")
        for key in keys
        if (obj.get(key) or {}) != (old.get(key) or {})
    )
    return causes


def _configmap_causes(obj: JSONObject, old: JSONObject | None) -> list[Cause]:
    causes, size = _config_data_causes(obj.get("data"), "data", base64_values=False, secret=False)
    more, binary_size = _config_data_causes(
        obj.get("binaryData"), "binaryData", base64_values=True, secret=False
    )
    causes += more
    for key in set(_d(obj.get("data"))) & set(_d(obj.get("binaryData"))):
        causes.append(
            Cause(f"data[{key}]", f'Invalid value: "{key}": duplicate of key present in binaryData')
        )
    if size + binary_size > MAX_CONFIG_BYTES:
        causes.append(Cause("", f"Too long: must have at most {MAX_CONFIG_BYTES} bytes", "FieldValueTooLong"))
    return causes + _immutable_causes(CONFIGMAPS, obj, old)


def _secret_causes(obj: JSONObject, old: JSONObject | None) -> list[Cause]:
    causes, size = _config_data_causes(obj.get("data"), "data", base64_values=True, secret=True)
    if "stringData" in obj:  # merge_string_data left it: it is malformed
        more, _ = _config_data_causes(obj.get("stringData"), "stringData", base64_values=False, secret=True)
        causes += more or [
            Cause("stringData", "Invalid value: must be a map of string keys to string values")
        ]
    if size > MAX_CONFIG_BYTES:
        causes.append(
            Cause("data", f"Too long: must have at most {MAX_CONFIG_BYTES} bytes", "FieldValueTooLong")
        )
    typ = obj.get("type")
    if not isinstance(typ, str):
        causes.append(Cause("type", f"Invalid value: {_show(typ)}: must be a string"))
    else:
        data = _d(obj.get("data"))
        required = _SECRET_TYPE_KEYS.get(typ, ())
        for key in required:
            if key not in data:
                causes.append(Cause(f"data[{key}]", "Required value", "FieldValueRequired"))
        if typ == "kubernetes.io/basic-auth" and "username" not in data and "password" not in data:
            causes.append(
                Cause(
                    "data",
                    "Required value: must have at least one of username or password",
                    "FieldValueRequired",
                )
            )
        if typ == "kubernetes.io/service-account-token" and not _d(
            _d(obj.get("metadata")).get("annotations")
        ).get("kubernetes.io/service-account.name"):
            causes.append(
                Cause(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "Required value",
                    "FieldValueRequired",
                )
            )
    if old is not None and old.get("type", SECRET_DEFAULT_TYPE) != typ:
        causes.append(Cause("type", f"Invalid value: {_show(typ)}: field is immutable"))
    return causes + _immutable_causes(SECRETS, obj, old)


def validate(
    rt: ResourceType,
    obj: JSONObject,
    old: JSONObject | None = None,
    *,
    models: Mapping[str, JSONObject] | None = None,
) -> None:
    """Raise a 422 Invalid ApiError listing every bad field found; ``old`` is set on updates. ``models``
    (DeviceModels of the object's namespace by name; the server passes the one the Device names) lets a
    Device's new or changed desired values be checked against that model
    (:func:`app.devices.desired_value_problems`)."""
    causes = _metadata_causes(rt, obj)
    if rt is CONFIGMAPS:
        causes += _configmap_causes(obj, old)
    elif rt is SECRETS:
        causes += _secret_causes(obj, old)
    elif rt is PODS:
        causes += _pod_spec_causes(obj.get("spec"), "spec")
        if old is not None and not causes:
            causes += _pod_update_causes(obj, old)
    elif rt in (DEPLOYMENTS, REPLICASETS):
        causes += _workload_causes(rt, obj, old)
    elif rt in (DEVICES, DEVICEMODELS):
        causes += _device_causes(rt, obj, old, models)
    if causes:
        raise invalid(rt, str(_d(obj.get("metadata")).get("name") or ""), causes)

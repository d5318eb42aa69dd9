"""The deploy page's logic: validate a manifest as it is typed, target nodes by label, diff, apply.

Validation, the diff and the apply are the shared ``app.manifest`` and ``AsyncClient.apply`` the TUI uses:
:func:`check` runs :func:`app.manifest.parse` (every problem of every document, each with its line) on
each pause in typing; :func:`plan` reads what runs and diffs it the way the apply will change it
(a strategic merge of the manifest onto the live object); :func:`apply_plans` applies object after object
in manifest order and reports each one, with the API's reason and field causes when it refuses
(``spec.replicas: Invalid value: -1: must be >= 0``), while the others still go through, as
``kubectl apply`` does.

Targeting: a node selector typed beside the editor (``site=a,zone=north``) is merged into every
workload of the manifest (a Deployment's or ReplicaSet's pod template, a Pod's spec) as
``nodeSelector``, which the cloud's scheduler honours; the page shows which nodes match it now, from the
live nodes table, so a typo that matches nothing is seen before the apply. The editor's text is left as
typed: the selector is applied to what is sent, and the diff shows it.

Deliberately not done: set-based selectors (``nodeSelector`` is equality only; affinity is written in the
manifest), pruning objects absent from the manifest, and server-side dry run.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from PySide6.QtCore import QObject, Signal

from app.client import ApiError, AsyncClient, ClientError, NotFound
from app.manifest import DocumentError, ManifestError, ManifestObject, diff_against_live, parse
from app.query import FilterError, parse_selector
from app.resources import DEPLOYMENTS, PODS, REPLICASETS, JSONObject
from gui.bridge import AsyncBridge
from gui.errors import GuiError, describe_error
from gui.rows import Row

logger = logging.getLogger(__name__)


class SelectorError(GuiError):
    """A node selector that cannot be a ``nodeSelector`` (only ``key=value`` pairs can)."""


@dataclass(frozen=True, slots=True)
class Check:
    """A manifest's objects, or what is wrong with it (never both)."""

    objects: tuple[ManifestObject, ...] = ()
    errors: tuple[DocumentError, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors


def check(text: str, default_namespace: str = "default") -> Check:
    try:
        return Check(objects=tuple(parse(text, default_namespace=default_namespace or "default")))
    except ManifestError as exc:
        return Check(errors=exc.errors)


def parse_node_selector(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` as a ``nodeSelector``; :class:`SelectorError` for anything else."""
    try:
        requirements = parse_selector(text)
    except FilterError as exc:
        raise SelectorError(str(exc)) from exc
    out: dict[str, str] = {}
    for r in requirements:
        if r.op != "=":
            raise SelectorError(f"node selectors are key=value pairs; {r.key!r} ({r.op}) cannot be one")
        out[r.key] = r.value
    return out


def with_node_selector(obj: ManifestObject, selector: Mapping[str, str]) -> ManifestObject:
    """``obj`` with ``selector`` merged into its pods' ``nodeSelector`` (workloads only; others as-is)."""
    if not selector:
        return obj
    path: tuple[str, ...]
    if obj.rt in (DEPLOYMENTS, REPLICASETS):
        path = ("spec", "template", "spec")
    elif obj.rt is PODS:
        path = ("spec",)
    else:
        return obj
    body = copy.deepcopy(obj.obj)
    target = body
    for part in path:
        child = target.get(part)
        if not isinstance(child, dict):
            child = {}
            target[part] = child
        target = child
    current = target.get("nodeSelector")
    target["nodeSelector"] = {**(current if isinstance(current, dict) else {}), **selector}
    return ManifestObject(obj.document, obj.line, body, obj.rt)


def workloads(objects: Iterable[ManifestObject]) -> list[ManifestObject]:
    """The objects a node selector applies to."""
    return [o for o in objects if o.rt in (DEPLOYMENTS, REPLICASETS, PODS)]


def matching_nodes(selector: Mapping[str, str], nodes: Iterable[Row]) -> list[str]:
    """Names of the nodes whose labels carry every ``selector`` pair, sorted."""
    return sorted(r.name for r in nodes if all(r.labels.get(k) == v for k, v in selector.items()))


def kind_ref(obj: ManifestObject) -> str:
    """kubectl's ``deployment.apps/web`` spelling."""
    group = f".{obj.rt.group}" if obj.rt.group else ""
    return f"{obj.rt.singular or obj.rt.kind.lower()}{group}/{obj.name or '(generated)'}"


@dataclass(frozen=True, slots=True)
class Planned:
    """One object with the live object it would change (None: it would be created) and the diff."""

    manifest: ManifestObject
    live: JSONObject | None
    diff: str

    @property
    def verb(self) -> str:
        if self.live is None:
            return "created"
        return "configured" if self.diff else "unchanged"


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one object did: ``ok`` with kubectl's verb, or the refusal and its field causes."""

    ref: str
    ok: bool
    verb: str = ""
    reason: str = ""  # the Status reason ("Invalid", "Forbidden"...) or what broke
    message: str = ""  # the server's whole message
    causes: tuple[str, ...] = ()  # "field: what is wrong", one per field
    manifest: ManifestObject | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"{self.ref} {self.verb}"
        if self.causes:  # the message repeats the causes: the reason and one line per field say it all
            return f"{self.ref}: {self.reason}" + "".join(f"\n    {c}" for c in self.causes)
        return f"{self.ref}: {self.message or self.reason}"


async def plan(client: AsyncClient, objects: Iterable[ManifestObject]) -> list[Planned]:
    """Read the live object of each manifest object and diff it (raises the client's errors)."""
    out: list[Planned] = []
    for obj in objects:
        live: JSONObject | None = None
        if obj.name:
            try:
                live = await client.get(obj.rt, obj.name, obj.namespace)
            except NotFound:
                live = None
        out.append(Planned(obj, live, diff_against_live(live, obj)))
    return out


async def apply_plans(client: AsyncClient, plans: Iterable[Planned]) -> list[Applied]:
    """Apply each planned object in order; a refusal is reported and the next object still goes."""
    results: list[Applied] = []
    for p in plans:
        ref = kind_ref(p.manifest)
        if p.verb == "unchanged":
            results.append(Applied(ref, True, "unchanged", manifest=p.manifest))
            continue
        try:
            await client.apply(p.manifest.obj)
        except ApiError as exc:
            reason = exc.reason or f"HTTP {exc.code}"
            results.append(
                Applied(
                    ref,
                    False,
                    reason=reason,
                    message=exc.message,
                    causes=tuple(exc.field_errors),
                    manifest=p.manifest,
                )
            )
            continue
        except ClientError as exc:
            results.append(Applied(ref, False, reason="failed", message=str(exc), manifest=p.manifest))
            continue
        results.append(Applied(ref, True, p.verb, manifest=p.manifest))
    logger.info("applied: %s", "; ".join(str(r).replace("\n", " ") for r in results))
    return results


class DeployController(QObject):
    """Runs :func:`plan` and :func:`apply_plans` on the bridge. ``planned(list[Planned])``,
    ``applied(list[Applied])``, ``failed(str)`` (the cloud could not be read), ``busy(bool)``."""

    planned = Signal(list)
    applied = Signal(list)
    failed = Signal(str)
    busy = Signal(bool)

    def __init__(
        self, bridge: AsyncBridge, client: AsyncClient | None, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self._bridge = bridge
        self._client = client
        self.working = False

    @property
    def namespace(self) -> str:
        return self._client.namespace if self._client is not None else "default"

    def prepare(self, text: str, selector_text: str) -> tuple[list[ManifestObject], str]:
        """The objects to send (selector merged in), or ``([], why not)``."""
        result = check(text, self.namespace)
        if not result.ok:
            return [], "the manifest has errors: fix them first"
        try:
            selector = parse_node_selector(selector_text)
        except SelectorError as exc:
            return [], f"node selector: {exc}"
        return [with_node_selector(o, selector) for o in result.objects], ""

    def diff(self, objects: list[ManifestObject]) -> None:
        self._run(objects, apply=False)

    def apply(self, objects: list[ManifestObject]) -> None:
        self._run(objects, apply=True)

    def _run(self, objects: list[ManifestObject], *, apply: bool) -> None:
        if self._client is None:
            self.failed.emit("deploying needs a connection to the cloud")
            return
        if self.working:
            return
        client = self._client

        async def work() -> tuple[list[Planned], list[Applied] | None]:
            plans = await plan(client, objects)
            return plans, (await apply_plans(client, plans) if apply else None)

        def done(result: tuple[list[Planned], list[Applied] | None]) -> None:
            self._set_busy(False)
            plans, results = result
            self.planned.emit(plans)
            if results is not None:
                self.applied.emit(results)

        def failed(exc: BaseException) -> None:
            self._set_busy(False)
            self.failed.emit(f"cannot read what runs at {client.server}: {describe_error(exc)}")

        self._set_busy(True)
        self._bridge.submit(work(), on_result=done, on_error=failed, owner=self, name="gui.deploy")

    def _set_busy(self, busy: bool) -> None:
        self.working = busy
        self.busy.emit(busy)

"""Edged: the pod manager that runs each pod's containers through a ``ContainerRuntime``.

The edge service hands Edged the desired pods (``sync``/``upsert``/``remove``); Edged keeps one record
per container, turns them into ``ContainerView``s, asks the pure ``reconcile.decide`` what to do and
performs the actions as tasks, then reports ``reconcile.pod_status`` to the ``PodStatusSink`` whenever it
changed. Everything runs in one ``asyncio.TaskGroup`` with named tasks: the reconcile loop
(``edged[node].reconcile``), one exit watcher per running container (the runtime waits on a pidfd, no
polling), one probe task per running container, and short-lived start/stop operations. The loop sleeps
until something changes or the nearest back-off expires. All public methods must be called from the
event loop's thread.

Restart safety: everything needed to adopt lives under ``root/pods/<uid>/``: ``pod.json`` (the desired
pod) and, per container, ``meta.json`` (restart count, definition hash, last exits, back-off) next to
the runtime's own files. ``start()`` reads them back before the loop runs, so a container that is still
alive is adopted (same pid, nothing new started) and one that exited while the edge was down reports the
exit code its shim recorded. ``stop()`` leaves every workload running; ``stop_all_pods()`` ends them.

ConfigMaps, Secrets and volumes: Edged reads them through an injected ``ConfigSource`` (see
``volumes.py``). A container whose env/envFrom names a missing (non-optional) ConfigMap/Secret or key, or
that mounts a volume that could not be prepared (its ConfigMap/Secret missing, a failed hostPath type
check), waits with reason ``CreateContainerConfigError`` and a message naming it, as the kubelet reports
it; ``config_changed`` (or, for volumes, a retry every ``_VOLUME_RETRY_SECONDS``) starts it once the
object arrives. Volumes are prepared in the reconcile loop (small files, written synchronously) before
any container starts, and rewritten in place (an atomic ``..data`` swap) when their object changes, so
running containers see the new files. Values read into the environment are resolved at each start and
never restart a running container when they change, exactly as in Kubernetes. How each container sees
its volumes (a private mount namespace when the edge is root, else the ``FLEETOPS_VOLUME_*`` variables
and a ``VolumesHonoured=False`` pod condition) is the runtime's business: see ``runtime.py``.

Node environment: what the node advertises to its pods (the URL of its MQTT broker, ``FLEETOPS_MQTT_URL``)
comes from the injected ``node_env`` at each start and is set before ``envFrom`` and ``env``, so a pod's own
variable of that name wins, as Kubernetes' service variables do.

Not done: pod sandbox/networking (processes share the host network, so podIP is the host IP), resource
limits, events, ephemeral containers, per-probe termination grace periods; exec probes run in the host's
mount namespace, so they do not see a container's volumes at their mountPaths.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from app.errors import ValidationError
from app.model import (
    ConfigKind,
    ConfigVolumeSource,
    Container,
    PodSpec,
    Probe,
    container_hash,
    parse_pod_spec,
)
from edgeservice.edged import reconcile
from edgeservice.edged.logs import LogOptions, read_log
from edgeservice.edged.probes import ProbeState, probe_step, run_probe
from edgeservice.edged.reconcile import ContainerPhase, ContainerView, ExitInfo, JSONObject
from edgeservice.edged.runtime import (
    ContainerConfig,
    ContainerProcess,
    ContainerRuntime,
    ExitStatus,
    Mount,
    PodContext,
    ProcessRuntime,
    container_env,
)
from edgeservice.edged.volumes import (
    ConfigMissing,
    ConfigSource,
    VolumeError,
    materialize,
    resolve_env,
    subpath_source,
)
from edgeservice.errors import ContainerStartError

log = logging.getLogger(__name__)

# Exit code and reason the kubelet reports when a container's process could not be started.
_START_ERROR_CODE = 128
_SAFE_UID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# How often a volume that could not be prepared (a hostPath not there yet...) is tried again; objects
# that arrive through config_changed are picked up at once.
_VOLUME_RETRY_SECONDS = 5.0
# What FallbackToLogsOnError keeps of a failed run's log for its status message (Kubernetes' figures).
TERMINATION_LOG_LINES = 80
TERMINATION_LOG_BYTES = 2048


# (pod, type, reason, message): what a kubelet records as Events (Started, Killing, BackOff, Unhealthy...).
EventSink = Callable[[JSONObject, str, str, str], None]


class PodStatusSink(Protocol):
    def pod_status_changed(self, pod: JSONObject, status: JSONObject) -> None:
        """A pod's full Kubernetes PodStatus changed."""

    def pod_terminated(self, pod: JSONObject) -> None:
        """A pod with a deletionTimestamp has all its containers stopped."""


# A log line's own time stamp (``2024-05-01 12:00:00,123 ``, ISO 8601 too): left out of an event's
# reason, so that the same failure at each restart is the same event message.
_LOG_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?\s+")
# The most of a failure's reason an event message carries (Kubernetes events hold about 1 KiB of text).
EVENT_REASON_CHARS = 512


def event_reason(text: str) -> str:
    """What an event says of why a container failed: the last non-empty line of its termination message
    or log (a workload's "bad model: ..." line, a traceback's exception), without the line's time stamp."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    line = _LOG_TIMESTAMP.sub("", lines[-1])
    return line if len(line) <= EVENT_REASON_CHARS else line[: EVENT_REASON_CHARS - 3] + "..."


def _parse_time(value: str) -> float:
    """RFC 3339 (with up to nanoseconds, as the shim writes) to epoch seconds; now if unparsable."""
    if not value:
        return time.time()
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", value)
    if not m:
        return time.time()
    base = dt.datetime.fromisoformat(m.group(1) + (m.group(3).replace("Z", "+00:00")))
    return base.timestamp() + float("0." + (m.group(2) or "0"))


def _exit_to_json(e: ExitInfo | None) -> JSONObject | None:
    if e is None:
        return None
    return {
        "exitCode": e.exit_code,
        "reason": e.reason,
        "startedAt": e.started_at,
        "finishedAt": e.finished_at,
        "message": e.message,
        "signal": e.signal,
        "containerID": e.container_id,
    }


def _exit_from_json(d: Any) -> ExitInfo | None:
    if not isinstance(d, dict):
        return None
    return ExitInfo(
        exit_code=int(d.get("exitCode", 0)),
        reason=str(d.get("reason", "")),
        started_at=float(d.get("startedAt", 0.0)),
        finished_at=float(d.get("finishedAt", 0.0)),
        message=str(d.get("message", "")),
        signal=int(d["signal"]) if d.get("signal") is not None else None,
        container_id=str(d.get("containerID", "")),
    )


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj), encoding="utf-8")
    tmp.replace(path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("unreadable edged file %s: %s", path, exc)
        return None


@dataclass(eq=False)
class _Container:
    """Mutable record of one container of one pod."""

    name: str
    directory: Path
    phase: ContainerPhase = "new"
    proc: ContainerProcess | None = None
    hash: str = ""
    container_id: str = ""
    started_at: float | None = None
    started: bool = False
    ready: bool = False
    probe_failed: str = ""
    restart_count: int = 0
    last_exit: ExitInfo | None = None
    prev_exit: ExitInfo | None = None
    backoff_until: float = 0.0
    backoff_delay: float = 0.0
    restart_now: bool = False
    launch: ContainerConfig | None = None  # what the current run was started with (exec probes reuse it)
    mount_error: str = ""  # the runtime could not honour its mounts: why
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    probe_task: asyncio.Task[None] | None = None
    op: asyncio.Task[None] | None = None

    def save(self) -> None:
        _write_json(
            self.directory / "meta.json",
            {
                "hash": self.hash,
                "restartCount": self.restart_count,
                "lastExit": _exit_to_json(self.last_exit),
                "prevExit": _exit_to_json(self.prev_exit),
                "backoffDelay": self.backoff_delay,
                "backoffUntil": self.backoff_until,
                "restartNow": self.restart_now,
            },
        )

    def load(self) -> None:
        meta = _read_json(self.directory / "meta.json")
        if not isinstance(meta, dict):
            return
        self.hash = str(meta.get("hash", ""))
        self.restart_count = int(meta.get("restartCount", 0))
        self.last_exit = _exit_from_json(meta.get("lastExit"))
        self.prev_exit = _exit_from_json(meta.get("prevExit"))
        self.backoff_delay = float(meta.get("backoffDelay", 0.0))
        self.backoff_until = float(meta.get("backoffUntil", 0.0))
        self.restart_now = bool(meta.get("restartNow", False))


@dataclass(eq=False)
class _Pod:
    uid: str
    pod: JSONObject
    spec: PodSpec | None
    directory: Path
    invalid: str = ""
    containers: dict[str, _Container] = field(default_factory=dict)
    start_time: float = field(default_factory=time.time)
    status: JSONObject | None = None
    forget: bool = False  # remove(): stop, then drop everything
    halted: bool = False  # stop_all_pods(): stop, no restarts
    terminated_reported: bool = False
    volume_paths: dict[str, Path] = field(default_factory=dict)
    volume_errors: dict[str, str] = field(default_factory=dict)
    volumes_dirty: bool = True  # prepare (or refresh) the volumes before the next decisions
    volumes_retry_at: float = 0.0

    @property
    def name(self) -> str:
        return str(self.pod.get("metadata", {}).get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.pod.get("metadata", {}).get("namespace", "default"))

    @property
    def ref(self) -> str:
        return f"{self.name}_{self.namespace}({self.uid})"

    @property
    def deleting(self) -> bool:
        return self.forget or bool(self.pod.get("metadata", {}).get("deletionTimestamp"))

    def grace(self) -> float:
        meta = self.pod.get("metadata", {})
        if meta.get("deletionTimestamp") and isinstance(meta.get("deletionGracePeriodSeconds"), int):
            return float(meta["deletionGracePeriodSeconds"])
        return float(self.spec.termination_grace_period_seconds if self.spec else 30)


class Edged:
    """Runs the pods bound to this node as processes; see the module docstring."""

    name = "edged"

    def __init__(
        self,
        root: Path,
        node_name: str,
        sink: PodStatusSink,
        *,
        host_ip: str = "127.0.0.1",
        runtime: ContainerRuntime | None = None,
        backoff_base: float = 10.0,
        backoff_max: float = 300.0,
        config: ConfigSource | None = None,
        events: EventSink | None = None,
        node_env: Callable[[], Awaitable[Mapping[str, str]]] | None = None,
    ) -> None:
        self.root = Path(root)
        self.node_env = node_env
        self.config = config
        self.events = events
        self.node_name = node_name
        self.sink = sink
        self.host_ip = host_ip
        self.runtime: ContainerRuntime = runtime or ProcessRuntime()
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._pods: dict[str, _Pod] = {}
        self._wake = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None

    # -- public API ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt what is still alive under root (no duplicates) and start supervising."""
        if self._runner is not None:
            return
        self._recover()
        ready = asyncio.Event()
        self._runner = asyncio.create_task(self._run(ready), name=f"edged[{self.node_name}]")
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({waiter, self._runner}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()
            await self._runner  # it failed: raise its error

    async def stop(self) -> None:
        """Stop supervising; the workloads keep running and a later start() adopts them."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        self._tg = None
        for pod in self._pods.values():
            for rec in pod.containers.values():
                rec.tasks.clear()
                rec.op = rec.probe_task = None
        log.info("edged stopped node=%s (workloads left running)", self.node_name)

    async def stop_all_pods(self) -> None:
        """Stop every container gracefully, then forget all pods and their state (tests, uninstall)."""
        pods = list(self._pods.values())
        for pod in pods:
            pod.halted = True
        await asyncio.gather(*(self._halt(pod) for pod in pods))
        for pod in pods:
            self._forget(pod)
        self._wake.set()

    def sync(self, pods: list[JSONObject]) -> None:
        """The full desired set for this node: pods not in it are removed."""
        wanted = {str(p.get("metadata", {}).get("uid", "")) for p in pods}
        for uid in list(self._pods):
            if uid not in wanted:
                self.remove(uid)
        for p in pods:
            self.upsert(p)

    def upsert(self, pod: JSONObject) -> None:
        """Add or update one pod; containers whose definition changed are restarted."""
        uid = str(pod.get("metadata", {}).get("uid", ""))
        if not _SAFE_UID.match(uid):
            log.error("edged rejects pod without a usable metadata.uid: %r", uid)
            return
        spec: PodSpec | None = None
        invalid = ""
        try:
            spec = parse_pod_spec(pod.get("spec"))
        except ValidationError as exc:
            invalid = str(exc)
        current = self._pods.get(uid)
        if current is not None and current.halted:
            return
        if current is None:
            current = _Pod(uid, pod, spec, self.root / "pods" / uid, invalid=invalid)
            self._pods[uid] = current
            log.info("edged pod added pod=%s/%s uid=%s", current.namespace, current.name, uid)
        else:
            if spec is None and current.spec is not None:
                log.error("pod=%s/%s: ignoring invalid update: %s", current.namespace, current.name, invalid)
                return
            current.pod, current.spec, current.invalid = pod, spec, invalid
            current.forget = False
            current.volumes_dirty = True
        if spec is not None:
            for c in (*spec.init_containers, *spec.containers):
                if c.name not in current.containers:
                    current.containers[c.name] = _Container(c.name, current.directory / c.name)
        _write_json(current.directory / "pod.json", pod)
        self._wake.set()

    def remove(self, uid: str) -> None:
        """Stop (with the pod's grace period) and forget a pod."""
        pod = self._pods.get(uid)
        if pod is None:
            return
        pod.forget = True
        self._wake.set()

    def config_changed(self, namespace: str, kind: ConfigKind, name: str) -> None:
        """A ConfigMap or Secret of ``namespace`` was added, changed or removed in the ConfigSource.

        Volumes projecting it are rewritten in place (running containers see the new files); containers
        waiting for it start. Running containers that read it into their environment are not restarted."""
        touched = 0
        for pod in self._pods.values():
            if pod.namespace != namespace or pod.spec is None:
                continue
            if (kind, name) in pod.spec.config_refs():
                touched += 1
                if any(
                    isinstance(v.source, ConfigVolumeSource)
                    and (v.source.kind, v.source.name) == (kind, name)
                    for v in pod.spec.volumes
                ):
                    pod.volumes_dirty = True
        if touched:
            log.info("edged %s %s/%s changed: %d pod(s) affected", kind, namespace, name, touched)
            self._wake.set()

    def restart_pod(self, uid: str) -> bool:
        """Restart every running container of a pod now, without back-off: the field engineer's fix that
        works while the cloud is unreachable. False when the pod is unknown on this node."""
        pod = self._pods.get(uid)
        if pod is None or pod.deleting:
            return False
        for rec in pod.containers.values():
            rec.backoff_delay = rec.backoff_until = 0.0
            if rec.proc is not None and rec.phase != "stopping":
                self._kill(pod, rec, reconcile.Kill(rec.name, "Restarting", "restart requested on the node"))
            rec.restart_now = True
            rec.save()
        self._wake.set()
        return True

    def status_of(self, uid: str) -> JSONObject | None:
        pod = self._pods.get(uid)
        return pod.status if pod is not None else None

    def log_path(self, uid: str, container: str) -> Path | None:
        """The current CRI log file of a container (for the local API's logs endpoint)."""
        pod = self._pods.get(uid)
        rec = pod.containers.get(container) if pod else None
        return self.runtime.log_path(rec.directory, container) if rec else None

    # -- supervision -----------------------------------------------------------------------------------

    async def _run(self, ready: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for pod in self._pods.values():
                for rec in pod.containers.values():
                    if rec.phase == "running" and rec.proc is not None:
                        self._watch(pod, rec, rec.proc)
            tg.create_task(self._loop(), name=f"edged[{self.node_name}].reconcile")
            ready.set()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            deadline = self._reconcile_all()
            timeout = None if deadline is None else max(0.0, deadline - time.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def _spawn(self, rec: _Container, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        assert self._tg is not None
        task = self._tg.create_task(coro, name=name)
        rec.tasks.add(task)
        task.add_done_callback(rec.tasks.discard)
        return task

    def _task_name(self, pod: _Pod, rec: _Container, what: str) -> str:
        return f"edged[{self.node_name}].pod[{pod.namespace}/{pod.name}].{rec.name}.{what}"

    def _reconcile_all(self) -> float | None:
        deadline: float | None = None
        now = time.time()
        for pod in list(self._pods.values()):
            try:
                until = self._reconcile_pod(pod, now)
            except Exception:
                log.exception("reconcile failed pod=%s/%s", pod.namespace, pod.name)
                continue
            if until is not None:
                deadline = until if deadline is None else min(deadline, until)
        return deadline

    def _desired(self, pod: _Pod, name: str) -> Container | None:
        return pod.spec.container(name) if pod.spec else None

    def _views(self, pod: _Pod) -> dict[str, ContainerView]:
        views = {}
        for rec in pod.containers.values():
            desired = self._desired(pod, rec.name)
            phase = rec.phase
            views[rec.name] = ContainerView(
                name=rec.name,
                phase=phase,
                hash_matches=desired is None or rec.hash == container_hash(desired),
                container_id=rec.container_id,
                started_at=rec.started_at,
                started=rec.started,
                ready=rec.ready,
                probe_failed=rec.probe_failed,
                restart_count=rec.restart_count,
                last_exit=rec.last_exit,
                prev_exit=rec.prev_exit,
                backoff_until=rec.backoff_until,
                backoff_delay=rec.backoff_delay,
                restart_now=rec.restart_now,
                config_error=(
                    self._config_error(pod, desired) if desired and phase in ("new", "exited") else ""
                ),
            )
        return views

    def _config_error(self, pod: _Pod, c: Container) -> str:
        """Why ``c`` cannot be created now (CreateContainerConfigError), or ""."""
        problem = self.runtime.config_error(c)
        if problem:
            return problem
        for m in c.volume_mounts:
            if m.name in pod.volume_errors:
                return f"volume {m.name!r}: {pod.volume_errors[m.name]}"
        try:
            resolve_env(c, pod.namespace, self.config)
        except ConfigMissing as exc:
            return exc.message
        return ""

    def _prepare_volumes(self, pod: _Pod, now: float) -> None:
        """Materialize every volume of the pod (synchronously: a few small files); see volumes.py."""
        assert pod.spec is not None
        pod.volumes_dirty = False
        pod.volume_errors.clear()
        for volume in pod.spec.volumes:
            try:
                pod.volume_paths[volume.name] = materialize(pod.directory, pod.namespace, volume, self.config)
            except VolumeError as exc:
                pod.volume_errors[volume.name] = exc.message
                log.warning(
                    "volume not ready pod=%s/%s volume=%s: %s",
                    pod.namespace,
                    pod.name,
                    volume.name,
                    exc.message,
                )
        if pod.volume_errors:
            pod.volumes_retry_at = now + _VOLUME_RETRY_SECONDS

    def _launch_config(self, pod: _Pod, c: Container) -> ContainerConfig:
        """Resolve env and mounts for one start; raises ConfigMissing or VolumeError."""
        assert pod.spec is not None
        env = resolve_env(c, pod.namespace, self.config)
        mounts: list[Mount] = []
        for m in c.volume_mounts:
            volume = pod.spec.volume(m.name)
            base = pod.volume_paths.get(m.name)
            if volume is None or base is None:
                raise VolumeError(pod.volume_errors.get(m.name, "volume is not prepared"), volume=m.name)
            source = base
            if m.sub_path:
                create = not isinstance(volume.source, ConfigVolumeSource)
                source = subpath_source(base, m.sub_path, create=create)
            mounts.append(Mount(m.name, str(source), m.mount_path, m.read_only))
        return ContainerConfig(env.env_from, env.values, tuple(mounts))

    def _volume_problems(self, pod: _Pod) -> list[str] | None:
        assert pod.spec is not None
        if not any(c.volume_mounts for c in (*pod.spec.init_containers, *pod.spec.containers)):
            return None
        return [
            f"container {rec.name}: {rec.mount_error}" for rec in pod.containers.values() if rec.mount_error
        ]

    def _reconcile_pod(self, pod: _Pod, now: float) -> float | None:
        if pod.halted or self._tg is None:
            return None
        if pod.spec is None:
            self._report(pod, {"phase": "Failed", "reason": "InvalidSpec", "message": pod.invalid})
            return None
        deadline: float | None = None
        if not pod.deleting and (pod.volumes_dirty or (pod.volume_errors and now >= pod.volumes_retry_at)):
            self._prepare_volumes(pod, now)
        if pod.volume_errors and not pod.deleting:
            deadline = pod.volumes_retry_at
        views = self._views(pod)
        actions = reconcile.decide(pod.spec, views, now, deleting=pod.deleting)
        terminated = False
        for action in actions:
            if isinstance(action, reconcile.Terminated):
                terminated = True
                continue
            rec = pod.containers[action.container]
            if rec.op is not None and not rec.op.done():
                continue
            if isinstance(action, reconcile.Start):
                self._start(pod, rec)
            elif isinstance(action, reconcile.Kill):
                self._kill(pod, rec, action)
            else:
                deadline = action.until if deadline is None else min(deadline, action.until)
        # Containers dropped from the spec are forgotten once stopped.
        for name in [
            n for n, r in pod.containers.items() if self._desired(pod, n) is None and r.phase == "exited"
        ]:
            del pod.containers[name]
        status = reconcile.pod_status(
            pod.spec,
            self._views(pod),
            now=now,
            host_ip=self.host_ip,
            start_time=pod.start_time,
            pod_ref=pod.ref,
            previous_conditions=(pod.status or {}).get("conditions", []),
            deleting=pod.deleting,
            volume_problems=self._volume_problems(pod),
        )
        if not pod.forget:
            self._report(pod, status)
        if terminated:
            self._terminated(pod)
        return deadline

    def _report(self, pod: _Pod, status: JSONObject) -> None:
        if status == pod.status:
            return
        pod.status = status
        try:
            self.sink.pod_status_changed(pod.pod, status)
        except Exception:
            log.exception("status sink failed pod=%s/%s", pod.namespace, pod.name)

    def _terminated(self, pod: _Pod) -> None:
        if pod.forget:
            log.info("edged pod removed pod=%s/%s uid=%s", pod.namespace, pod.name, pod.uid)
            self._forget(pod)
            return
        if pod.terminated_reported:
            return
        pod.terminated_reported = True
        log.info("edged pod terminated pod=%s/%s uid=%s", pod.namespace, pod.name, pod.uid)
        try:
            self.sink.pod_terminated(pod.pod)
        except Exception:
            log.exception("status sink failed pod=%s/%s", pod.namespace, pod.name)

    def _forget(self, pod: _Pod) -> None:
        if self._pods.get(pod.uid) is pod:
            del self._pods[pod.uid]
        shutil.rmtree(pod.directory, ignore_errors=True)

    def _context(self, pod: _Pod) -> PodContext:
        return PodContext(pod.uid, pod.name, pod.namespace, self.node_name, self.host_ip, self.host_ip)

    def _start(self, pod: _Pod, rec: _Container) -> None:
        container = self._desired(pod, rec.name)
        assert container is not None
        if rec.last_exit is not None:
            rec.restart_count += 1
        rec.phase = "starting"
        rec.hash = container_hash(container)
        rec.restart_now = False
        rec.probe_failed = ""
        rec.save()
        try:
            launch = self._launch_config(pod, container)
        except (ConfigMissing, VolumeError) as exc:
            # The views checked this a moment ago; a subPath that is missing ends up here.
            log.warning(
                "container cannot start pod=%s/%s container=%s: %s",
                pod.namespace,
                pod.name,
                rec.name,
                exc.message,
            )
            now = time.time()
            self._on_exit(pod, rec, ExitInfo(_START_ERROR_CODE, "StartError", now, now, message=exc.message))
            return
        rec.launch = launch
        rec.op = self._spawn(
            rec, self._do_start(pod, rec, container, launch), self._task_name(pod, rec, "start")
        )

    async def _do_start(
        self, pod: _Pod, rec: _Container, container: Container, launch: ContainerConfig
    ) -> None:
        if self.node_env is not None:
            node_env = await self.node_env()
            if node_env:
                launch = dataclasses.replace(launch, env_from={**node_env, **launch.env_from})
                rec.launch = launch
        try:
            proc = await self.runtime.start(self._context(pod), container, rec.directory, launch)
        except ContainerStartError as exc:
            log.warning(
                "container failed to start pod=%s/%s container=%s: %s",
                pod.namespace,
                pod.name,
                rec.name,
                exc.message,
            )
            now = time.time()
            self._on_exit(pod, rec, ExitInfo(_START_ERROR_CODE, "StartError", now, now, message=exc.message))
            return
        except Exception as exc:
            log.exception("container start crashed pod=%s/%s container=%s", pod.namespace, pod.name, rec.name)
            now = time.time()
            self._on_exit(pod, rec, ExitInfo(_START_ERROR_CODE, "StartError", now, now, message=str(exc)))
            return
        self._running(pod, rec, proc, container)
        self._wake.set()

    def _running(
        self, pod: _Pod, rec: _Container, proc: ContainerProcess, container: Container | None
    ) -> None:
        rec.proc = proc
        rec.phase = "running"
        rec.mount_error = proc.mount_error
        if proc.mount_error:
            log.warning(
                "volumes not mounted pod=%s/%s container=%s: %s",
                pod.namespace,
                pod.name,
                rec.name,
                proc.mount_error,
            )
        rec.container_id = proc.container_id
        if container is not None:
            self._event(pod, "Normal", "Started", f"Started container {rec.name}")
        rec.started_at = _parse_time(proc.started_at)
        rec.started = container is None or container.startup_probe is None
        rec.ready = container is None or container.readiness_probe is None
        if self._tg is not None:
            self._watch(pod, rec, proc)

    def _watch(self, pod: _Pod, rec: _Container, proc: ContainerProcess) -> None:
        self._spawn(rec, self._wait_exit(pod, rec, proc), self._task_name(pod, rec, "wait"))
        container = self._desired(pod, rec.name)
        if container is not None and (
            container.startup_probe or container.liveness_probe or container.readiness_probe
        ):
            rec.probe_task = self._spawn(
                rec, self._probe(pod, rec, proc, container), self._task_name(pod, rec, "probe")
            )

    async def _wait_exit(self, pod: _Pod, rec: _Container, proc: ContainerProcess) -> None:
        status = await self.runtime.wait(proc)
        if rec.proc is proc:
            info = self._exit_info(status, proc)
            desired = self._desired(pod, rec.name)
            tail = ""
            if info.exit_code != 0 and not info.message:
                # The log's end says why a run failed: the status message under FallbackToLogsOnError,
                # and, whatever the policy, the BackOff event's reason (what `kubectl describe` shows).
                tail = await asyncio.to_thread(self._log_tail, rec, info.started_at)
                if desired is not None and desired.termination_message_policy == "FallbackToLogsOnError":
                    info = dataclasses.replace(info, message=tail)
            self._on_exit(pod, rec, info, log_tail=tail)
            self._wake.set()

    def _log_tail(self, rec: _Container, since: float) -> str:
        """The end of a failed run's log, as Kubernetes' FallbackToLogsOnError takes it: the last 80 lines,
        at most 2 KiB, of this run only (``since`` its start: the runs of a container share one file)."""
        path = self.runtime.log_path(rec.directory, rec.name)
        try:
            options = LogOptions(
                tail_lines=TERMINATION_LOG_LINES,
                since_time=since or None,
                limit_bytes=TERMINATION_LOG_BYTES * 4,
            )
            text = b"".join(read_log(path, options)).decode("utf-8", "replace")
        except OSError:
            return ""
        return text[-TERMINATION_LOG_BYTES:].rstrip("\n")

    @staticmethod
    def _exit_info(status: ExitStatus, proc: ContainerProcess | None) -> ExitInfo:
        return ExitInfo(
            exit_code=status.exit_code,
            reason=status.reason or ("Completed" if status.exit_code == 0 else "Error"),
            started_at=_parse_time(status.started_at),
            finished_at=_parse_time(status.finished_at),
            message=status.message,
            signal=status.signal,
            container_id=proc.container_id if proc else "",
        )

    def _event(self, pod: _Pod, type_: str, reason: str, message: str) -> None:
        if self.events is not None:
            try:
                self.events(pod.pod, type_, reason, message)
            except Exception:  # an event is a report: it must never break supervision
                log.exception("recording event %s for pod %s/%s failed", reason, pod.namespace, pod.name)

    def _on_exit(self, pod: _Pod, rec: _Container, info: ExitInfo, log_tail: str = "") -> None:
        """Record an exit and schedule the restart; ``log_tail`` (the end of a failed run's log) gives the
        BackOff event its reason when the exit itself has no message."""
        log.info(
            "container exited pod=%s/%s container=%s code=%d reason=%s",
            pod.namespace,
            pod.name,
            rec.name,
            info.exit_code,
            info.reason,
        )
        if rec.probe_task is not None:
            rec.probe_task.cancel()
            rec.probe_task = None
        rec.proc = None
        rec.phase = "exited"
        rec.started = rec.ready = False
        rec.probe_failed = ""
        rec.prev_exit, rec.last_exit = rec.last_exit, info
        spec = pod.spec
        is_init = spec is not None and any(ic.name == rec.name for ic in spec.init_containers)
        if spec is not None and not rec.restart_now:
            restart = (
                (info.exit_code != 0 and spec.restart_policy != "Never")
                if is_init
                else reconcile.should_restart(spec.restart_policy, info.exit_code)
            )
            if restart:
                ran_for = max(0.0, info.finished_at - info.started_at)
                rec.backoff_delay = reconcile.next_backoff(
                    rec.backoff_delay, ran_for, self.backoff_base, self.backoff_max
                )
                rec.backoff_until = info.finished_at + rec.backoff_delay
                if info.exit_code != 0:
                    text = f"Back-off restarting failed container {rec.name} in pod {pod.name}"
                    why = event_reason(info.message or log_tail)
                    self._event(pod, "Warning", "BackOff", f"{text}: {why}" if why else text)
        if info.reason == "StartError":
            self._event(pod, "Warning", "Failed", f"Error: {info.message or 'the container could not start'}")
        rec.save()
        self._wake.set()

    def _kill(self, pod: _Pod, rec: _Container, action: reconcile.Kill) -> None:
        proc = rec.proc
        if proc is None:
            return
        log.info(
            "killing container pod=%s/%s container=%s: %s", pod.namespace, pod.name, rec.name, action.message
        )
        rec.phase = "stopping"
        self._event(pod, "Normal", "Killing", f"Stopping container {rec.name}: {action.message}")
        rec.restart_now = "definition changed" in action.message
        rec.save()
        rec.op = self._spawn(rec, self._do_stop(pod, rec, proc), self._task_name(pod, rec, "stop"))

    async def _do_stop(self, pod: _Pod, rec: _Container, proc: ContainerProcess) -> None:
        try:
            await self.runtime.stop(proc, pod.grace())
        except Exception:
            log.exception("container stop failed pod=%s/%s container=%s", pod.namespace, pod.name, rec.name)

    async def _halt(self, pod: _Pod) -> None:
        for rec in pod.containers.values():
            if rec.op is not None and not rec.op.done():
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await rec.op
        procs = [(rec, rec.proc) for rec in pod.containers.values() if rec.proc is not None]
        results = await asyncio.gather(
            *(self.runtime.stop(proc, pod.grace()) for _, proc in procs), return_exceptions=True
        )
        for (rec, proc), result in zip(procs, results, strict=True):
            if isinstance(result, BaseException):
                log.error(
                    "stopping pod=%s/%s container=%s failed: %s", pod.namespace, pod.name, rec.name, result
                )
            elif rec.proc is proc:
                self._on_exit(pod, rec, self._exit_info(result, proc))
        for rec in pod.containers.values():
            for task in list(rec.tasks):
                task.cancel()

    # -- probes ----------------------------------------------------------------------------------------

    async def _probe(self, pod: _Pod, rec: _Container, proc: ContainerProcess, c: Container) -> None:
        launch = rec.launch
        if launch is None:  # adopted after an edge restart: resolve what it was most likely started with
            with contextlib.suppress(ConfigMissing, VolumeError):
                launch = self._launch_config(pod, c)
        env = container_env(self._context(pod), c, launch)

        def current() -> bool:
            return rec.proc is proc and rec.phase == "running"

        async def attempts(probe: Probe) -> Any:
            await asyncio.sleep(probe.initial_delay_seconds)
            state = ProbeState()
            while current():
                ok, message = await run_probe(probe, default_host=self.host_ip, env=env, cwd=c.working_dir)
                state = probe_step(state, probe, ok)
                yield state, message
                await asyncio.sleep(probe.period_seconds)

        if c.startup_probe is not None:
            async for state, message in attempts(c.startup_probe):
                if state.result is True:
                    rec.started = True
                    self._wake.set()
                    break
                if state.result is False:
                    rec.probe_failed = f"Startup probe failed: {message}"
                    self._event(pod, "Warning", "Unhealthy", rec.probe_failed)
                    self._wake.set()
                    return
        rec.started = True
        self._wake.set()

        async def liveness(probe: Probe) -> None:
            async for state, message in attempts(probe):
                if state.result is False and current():
                    rec.probe_failed = f"Liveness probe failed: {message}"
                    self._event(pod, "Warning", "Unhealthy", rec.probe_failed)
                    self._wake.set()
                    return

        async def readiness(probe: Probe) -> None:
            async for state, message in attempts(probe):
                ready = state.result is True
                if ready != rec.ready and current():
                    if not ready:
                        self._event(pod, "Warning", "Unhealthy", f"Readiness probe failed: {message}")
                    rec.ready = ready
                    self._wake.set()

        async with asyncio.TaskGroup() as tg:
            if c.liveness_probe is not None:
                tg.create_task(liveness(c.liveness_probe), name=self._task_name(pod, rec, "liveness"))
            if c.readiness_probe is not None:
                tg.create_task(readiness(c.readiness_probe), name=self._task_name(pod, rec, "readiness"))

    # -- recovery --------------------------------------------------------------------------------------

    def _recover(self) -> None:
        pods_dir = self.root / "pods"
        if pods_dir.is_dir():
            for d in sorted(pods_dir.iterdir()):
                if d.name in self._pods or not d.is_dir():
                    continue
                pod = _read_json(d / "pod.json")
                if isinstance(pod, dict):
                    self.upsert(pod)
        for pod in self._pods.values():
            for rec in pod.containers.values():
                self._recover_container(pod, rec)

    def _recover_container(self, pod: _Pod, rec: _Container) -> None:
        rec.load()
        found = self.runtime.recover(rec.directory)
        if isinstance(found, ContainerProcess):
            log.info(
                "adopted container pod=%s/%s container=%s pid=%d",
                pod.namespace,
                pod.name,
                rec.name,
                found.pid,
            )
            self._running(pod, rec, found, self._desired(pod, rec.name))
        elif isinstance(found, ExitStatus):
            info = self._exit_info(found, None)
            state = _read_json(rec.directory / "state.json")
            if isinstance(state, dict) and "pid" in state:
                info = ExitInfo(
                    info.exit_code,
                    info.reason,
                    info.started_at,
                    info.finished_at,
                    info.message,
                    info.signal,
                    f"process://{state['pid']}",
                )
            rec.container_id = info.container_id
            if rec.last_exit is not None and abs(rec.last_exit.finished_at - info.finished_at) < 1e-3:
                rec.phase = "exited"  # this exit was already recorded before the restart
            else:
                rec.phase = "running"  # so that _on_exit sees a run that ended
                self._on_exit(pod, rec, info)

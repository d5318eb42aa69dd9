"""The container runtime seam and the process runtime behind it.

``ContainerRuntime`` is what the pod manager needs from a runtime: start a container, stop it with a
grace period, wait for it to exit, and recover (adopt) what a previous edge process left behind. A real
CRI runtime can be added later behind the same Protocol.

``ProcessRuntime`` runs ``command + args`` as a plain process under a shim (``shim.py``, stdlib only)
that outlives the edge service: the shim owns the log files and writes the exit status to disk, so the
edge can be SIGKILLed and restarted without killing or duplicating workloads. Everything about one
container instance lives in its directory: ``spec.json`` (what the shim runs), ``state.json`` (shim pid,
child pid, child start time), ``exit.json`` (exit code once it exited), ``<name>.log`` (CRI format).

Exits are watched without polling: a pidfd on the shim (``os.pidfd_open``) registered with
``loop.add_reader``. The shim is not an ``asyncio`` subprocess on purpose, even when this process started
it: an asyncio transport cannot outlive its loop, and the shim must (``Edged.stop`` leaves workloads
running). The shim is started with ``os.posix_spawn`` in a new session and reaped with a non-blocking
``waitpid`` when it is our child. The container's image is recorded but not pulled or used.

Volumes. ``start`` takes a ``ContainerConfig``: the variables resolved from ConfigMaps/Secrets (``envFrom``
first, then ``env``, as the kubelet orders them) and the ``Mount``s of the container, each a host path (a
volume directory under the pod's directory, or a hostPath) to appear at a ``mountPath``. When the edge runs
as root, the shim gives the container its own mount namespace and bind-mounts each volume at its
mountPath there (see ``shim.py``), so nothing changes on the host. Where that is impossible (the edge is
not root, ``mount_namespaces=False``, or ``unshare`` fails), the container is still started, but never
silently: ``ContainerProcess.mount_error`` says which mounts were not honoured and why (Edged reports it
as the pod condition ``VolumesHonoured=False``, reason ``MountNamespaceUnavailable``), and each mounted
volume's host directory is exported as ``FLEETOPS_VOLUME_<NAME>`` (upper case, ``-`` as ``_``) so the
workload can still find its files. ``spec.json`` may hold Secret values, so it is written 0600.

Not done: cgroups, pid/network/user namespaces, users, resource limits, image handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from app.model import Container
from edgeservice.errors import ContainerRuntimeError, ContainerStartError

log = logging.getLogger(__name__)

SHIM_PATH = Path(__file__).with_name("shim.py")
# Kubelet's container log defaults (containerLogMaxSize 10Mi, containerLogMaxFiles 5).
DEFAULT_LOG_MAX_SIZE = 10 * 1024 * 1024
DEFAULT_LOG_MAX_FILES = 5
# How long the shim may take to report the child started (a cold Python start is ~20 ms; disks can be slow).
_SHIM_READY_TIMEOUT = 10.0
# Polling interval used only where pidfds are unavailable (kernels before 5.3).
_POLL_INTERVAL = 0.2
# 128 + SIGKILL: what a container killed with SIGKILL reports, also when its shim died with it.
EXIT_KILLED = 128 + int(signal.SIGKILL)
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")
# spec.json may carry Secret values in the environment: readable by the edge's user only.
_SPEC_MODE = 0o600
_VOLUME_ENV_PREFIX = "FLEETOPS_VOLUME_"


@dataclass(frozen=True, slots=True)
class Mount:
    """One volume of a container: host ``source`` shown at ``target`` (the mountPath) in the container."""

    volume: str
    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class ContainerConfig:
    """What Edged resolved for one start: ``env_from`` (already prefixed, in order), ``values`` (the
    configMapKeyRef/secretKeyRef variables by name) and the container's ``mounts``."""

    env_from: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()


def volume_env_name(volume: str) -> str:
    """``FLEETOPS_VOLUME_<NAME>``: where a volume's directory is when it could not be mounted."""
    return _VOLUME_ENV_PREFIX + volume.upper().replace("-", "_")


@dataclass(frozen=True, slots=True)
class PodContext:
    """What a container may learn about its pod (``valueFrom.fieldRef``) and how to name it in logs."""

    uid: str
    name: str
    namespace: str
    node_name: str
    host_ip: str
    pod_ip: str


@dataclass(frozen=True, slots=True)
class ContainerProcess:
    """One running container instance, as recorded by its shim."""

    directory: Path
    shim_pid: int
    shim_start_time: int
    pid: int
    pgid: int
    start_time: int
    started_at: str
    mount_error: str = ""  # why some volume mounts are not honoured ("" when all are, or there are none)

    @property
    def container_id(self) -> str:
        return f"process://{self.pid}"


@dataclass(frozen=True, slots=True)
class ExitStatus:
    exit_code: int
    signal: int | None
    reason: str
    message: str
    started_at: str
    finished_at: str


class ContainerRuntime(Protocol):
    def config_error(self, container: Container) -> str | None:
        """Why this runtime cannot run the container as specified (reported as CreateContainerConfigError)."""
        ...

    async def start(
        self, pod: PodContext, container: Container, directory: Path, config: ContainerConfig | None = None
    ) -> ContainerProcess:
        """Start the container; its state and logs live in ``directory``. Raises ContainerStartError."""
        ...

    async def stop(self, proc: ContainerProcess, grace: float) -> ExitStatus:
        """SIGTERM the container's process group, wait ``grace`` seconds, then SIGKILL; return the exit."""
        ...

    async def wait(self, proc: ContainerProcess) -> ExitStatus:
        """Wait for the container to exit (cancellable; the container keeps running)."""
        ...

    def recover(self, directory: Path) -> ContainerProcess | ExitStatus | None:
        """What a previous edge process left in ``directory``: still running, exited, or nothing."""
        ...

    def log_path(self, directory: Path, container: str) -> Path: ...


def _rfc3339_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def proc_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/<pid>/stat), None if gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[19])


def expand_refs(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known variables are replaced, ``$$`` escapes, others stay."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))

    return _VAR_REF.sub(sub, value)


def container_env(
    pod: PodContext, container: Container, config: ContainerConfig | None = None
) -> dict[str, str]:
    """The environment a container sees: a minimal base (PATH, HOSTNAME), then ``envFrom`` variables, then
    its ``env`` (a later variable wins; ``$(VAR)`` sees the ones before it), as the kubelet builds it."""
    fields = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": pod.uid,
        "spec.nodeName": pod.node_name,
        "status.podIP": pod.pod_ip,
        "status.hostIP": pod.host_ip,
    }
    env = {"PATH": os.environ.get("PATH", _DEFAULT_PATH), "HOSTNAME": pod.name}
    values: Mapping[str, str] = {}
    if config is not None:
        env.update(config.env_from)
        values = config.values
    for var in container.env:
        if var.config_ref is not None:
            if var.name in values:  # an optional reference to a missing key sets nothing
                env[var.name] = values[var.name]
        elif var.field_ref:
            env[var.name] = fields.get(var.field_ref, "")
        else:
            env[var.name] = expand_refs(var.value, env)
    return env


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("unreadable runtime file %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, obj: Any, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), mode)  # an older tmp file keeps its mode otherwise
        f.write(json.dumps(obj))
    tmp.replace(path)


def _prepare_directory(directory: Path, spec: dict[str, Any]) -> None:
    """Clear the previous run's state/exit files and write the shim's spec (run in a thread)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in ("state.json", "exit.json"):
        (directory / stale).unlink(missing_ok=True)
    if spec.get("mounts"):
        (directory / "mnt-scratch").mkdir(exist_ok=True)
    _write_json(directory / "spec.json", spec, _SPEC_MODE)


def mount_namespaces_usable() -> bool:
    """Whether the shim may try mount namespaces: only root (CAP_SYS_ADMIN) can, without a user namespace."""
    return os.geteuid() == 0


class ProcessRuntime:
    """Runs containers as processes under ``shim.py``; see the module docstring."""

    def __init__(
        self,
        *,
        log_max_size: int = DEFAULT_LOG_MAX_SIZE,
        log_max_files: int = DEFAULT_LOG_MAX_FILES,
        mount_namespaces: bool | None = None,
    ) -> None:
        """``mount_namespaces``: None tries them when the edge runs as root; False never does (volumes are
        then exported as ``FLEETOPS_VOLUME_*`` variables and reported as not honoured)."""
        self.log_max_size = log_max_size
        self.log_max_files = log_max_files
        self.mount_namespaces = mount_namespaces

    def config_error(self, container: Container) -> str | None:
        if not container.command:
            return (
                f"container {container.name!r}: the process runtime needs a command "
                f"(it runs command + args; image {container.image!r} is not used)"
            )
        return None

    def log_path(self, directory: Path, container: str) -> Path:
        return directory / f"{container}.log"

    def _namespace_decision(self) -> tuple[bool, str]:
        if self.mount_namespaces is False:
            return False, "mount namespaces are disabled in the edge's configuration"
        if not mount_namespaces_usable():
            return False, "the edge service does not run as root"
        return True, ""

    async def start(
        self, pod: PodContext, container: Container, directory: Path, config: ContainerConfig | None = None
    ) -> ContainerProcess:
        problem = self.config_error(container)
        if problem:
            raise ContainerStartError(problem, pod_uid=pod.uid, container=container.name)
        env = container_env(pod, container, config)
        argv = [expand_refs(a, env) for a in (*container.command, *container.args)]
        mounts = config.mounts if config is not None else ()
        use_namespace, why_not = self._namespace_decision()
        spec = {
            "argv": argv,
            "env": env,
            "mounts": [
                {"volume": m.volume, "source": m.source, "target": m.target, "readOnly": m.read_only}
                for m in mounts
            ],
            "namespace": use_namespace,
            "namespaceUnavailable": why_not,
            "volumeEnv": {volume_env_name(m.volume): m.source for m in mounts},
            "scratch": str(directory / "mnt-scratch"),
            "cwd": container.working_dir,
            "image": container.image,
            "log": str(self.log_path(directory, container.name)),
            "maxSize": self.log_max_size,
            "maxFiles": self.log_max_files,
            "state": str(directory / "state.json"),
            "exit": str(directory / "exit.json"),
        }
        await asyncio.to_thread(_prepare_directory, directory, spec)
        shim_pid, report = await self._spawn_shim(directory)
        if not report.get("ok"):
            # The shim exits right after reporting; wait for it so no process outlives a failed start.
            await self._wait_pid(shim_pid, None)
            self._reap(shim_pid)
            raise ContainerStartError(
                str(report.get("message", "")), pod_uid=pod.uid, container=container.name
            )
        recovered = self.recover(directory)
        if isinstance(recovered, ContainerProcess):
            log.info(
                "started container pod=%s/%s container=%s pid=%d",
                pod.namespace,
                pod.name,
                container.name,
                recovered.pid,
            )
            return recovered
        if isinstance(recovered, ExitStatus):
            # It exited before we looked; hand back a process record whose wait() returns at once.
            state = _read_json(directory / "state.json") or {}
            return ContainerProcess(
                directory,
                int(state.get("shimPid", 0)),
                -1,
                int(state.get("pid", 0)),
                0,
                0,
                str(state.get("startedAt", "")),
                str(state.get("mountError", "")),
            )
        raise ContainerRuntimeError(
            "shim reported success but wrote no state", pod_uid=pod.uid, container=container.name
        )

    async def _spawn_shim(self, directory: Path) -> tuple[int, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        shim_log = directory / "shim.log"
        try:
            try:
                # posix_spawn uses vfork/clone(CLONE_VFORK): it returns as soon as the shim has exec'd.
                pid = os.posix_spawn(  # noqa: ASYNC221
                    sys.executable,
                    [sys.executable, "-I", "-S", str(SHIM_PATH), str(directory / "spec.json"), "3"],
                    {"PATH": _DEFAULT_PATH},
                    file_actions=[
                        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                        (
                            os.POSIX_SPAWN_OPEN,
                            1,
                            str(shim_log),
                            os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                            0o644,
                        ),
                        (os.POSIX_SPAWN_DUP2, 1, 2),
                        (os.POSIX_SPAWN_DUP2, write_fd, 3),
                    ],
                    setsid=True,
                )
            finally:
                os.close(write_fd)
            os.set_blocking(read_fd, False)
            done: asyncio.Future[None] = loop.create_future()
            chunks: list[bytes] = []

            def readable() -> None:
                try:
                    data = os.read(read_fd, 4096)
                except BlockingIOError:
                    return
                if data:
                    chunks.append(data)
                elif not done.done():
                    done.set_result(None)

            loop.add_reader(read_fd, readable)
            try:
                async with asyncio.timeout(_SHIM_READY_TIMEOUT):
                    await done
            except TimeoutError as exc:
                raise ContainerStartError(f"shim did not report within {_SHIM_READY_TIMEOUT}s") from exc
            finally:
                loop.remove_reader(read_fd)
        finally:
            os.close(read_fd)
        raw = b"".join(chunks).strip()
        if not raw:
            raise ContainerStartError(f"shim exited without reporting; see {shim_log}")
        try:
            report = json.loads(raw)
        except ValueError as exc:
            raise ContainerStartError(f"shim sent garbage: {raw[:200]!r}") from exc
        return pid, report if isinstance(report, dict) else {"ok": False, "message": "bad shim report"}

    def recover(self, directory: Path) -> ContainerProcess | ExitStatus | None:
        exited = _read_json(directory / "exit.json")
        if exited is not None:
            return self._exit_from(exited)
        state = _read_json(directory / "state.json")
        if state is None:
            return None
        proc = ContainerProcess(
            directory=directory,
            shim_pid=int(state["shimPid"]),
            shim_start_time=int(state["shimStartTime"]),
            pid=int(state["pid"]),
            pgid=int(state["pgid"]),
            start_time=int(state["startTime"]),
            started_at=str(state["startedAt"]),
            mount_error=str(state.get("mountError", "")),
        )
        if self._shim_alive(proc):
            return proc
        # The shim died without writing an exit file (it was SIGKILLed): the container may be orphaned.
        self._kill_orphan(proc)
        exited = _read_json(directory / "exit.json")  # it may have finished after all
        if exited is not None:
            return self._exit_from(exited)
        return ExitStatus(
            EXIT_KILLED,
            int(signal.SIGKILL),
            "Error",
            "container shim was killed",
            proc.started_at,
            _rfc3339_now(),
        )

    @staticmethod
    def _exit_from(data: dict[str, Any]) -> ExitStatus:
        sig = data.get("signal")
        return ExitStatus(
            exit_code=int(data.get("exitCode", 0)),
            signal=int(sig) if sig is not None else None,
            reason=str(data.get("reason", "")),
            message=str(data.get("message", "")),
            started_at=str(data.get("startedAt", "")),
            finished_at=str(data.get("finishedAt", "")),
        )

    @staticmethod
    def _shim_alive(proc: ContainerProcess) -> bool:
        if proc.shim_start_time < 0:
            return False
        return proc_start_time(proc.shim_pid) == proc.shim_start_time and not _is_zombie(proc.shim_pid)

    @staticmethod
    def _kill_orphan(proc: ContainerProcess) -> None:
        if proc.start_time and proc_start_time(proc.pid) == proc.start_time:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pgid, signal.SIGKILL)

    def _signal(self, proc: ContainerProcess, sig: signal.Signals) -> None:
        # Signal the group only while it is ours: the shim is alive (it holds the group) or the child is
        # the very process we started (same start time), so a recycled pid is never hit.
        if self._shim_alive(proc) or (proc.start_time and proc_start_time(proc.pid) == proc.start_time):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pgid, sig)

    async def stop(self, proc: ContainerProcess, grace: float) -> ExitStatus:
        self._signal(proc, signal.SIGTERM)
        try:
            async with asyncio.timeout(max(grace, 0.0)):
                return await self.wait(proc)
        except TimeoutError:
            log.info("container pid=%d ignored SIGTERM for %.1fs; sending SIGKILL", proc.pid, grace)
        self._signal(proc, signal.SIGKILL)
        return await self.wait(proc)

    async def wait(self, proc: ContainerProcess) -> ExitStatus:
        if self._shim_alive(proc):
            await self._wait_shim(proc)
        self._reap(proc.shim_pid)
        exited = _read_json(proc.directory / "exit.json")
        if exited is not None:
            return self._exit_from(exited)
        self._kill_orphan(proc)
        return ExitStatus(
            EXIT_KILLED,
            int(signal.SIGKILL),
            "Error",
            "container shim was killed",
            proc.started_at,
            _rfc3339_now(),
        )

    async def _wait_shim(self, proc: ContainerProcess) -> None:
        await self._wait_pid(proc.shim_pid, proc.shim_start_time)

    @staticmethod
    async def _wait_pid(pid: int, start_time: int | None) -> None:
        """Wait until ``pid`` exits; ``start_time`` guards against pid reuse (None: our unreaped child)."""
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        except OSError:  # no pidfd support: poll
            while not _is_zombie(pid) and (start_time is None or proc_start_time(pid) == start_time):  # noqa: ASYNC110
                await asyncio.sleep(_POLL_INTERVAL)
            return
        try:
            # The pidfd pins the pid: if the start time still matches now, it is the process we mean.
            if start_time is not None and proc_start_time(pid) != start_time:
                return
            exited: asyncio.Future[None] = loop.create_future()

            def on_exit() -> None:
                if not exited.done():
                    exited.set_result(None)

            loop.add_reader(pidfd, on_exit)
            try:
                await exited
            finally:
                loop.remove_reader(pidfd)
        finally:
            os.close(pidfd)

    @staticmethod
    def _reap(pid: int) -> None:
        if pid <= 0:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _is_zombie(pid: int) -> bool:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return data[data.rindex(b")") + 2 : data.rindex(b")") + 3] in (b"Z", b"X")

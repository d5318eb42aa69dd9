"""The container shim: one small supervisor process per container, like containerd-shim or conmon.

Run as ``python -I -S shim.py SPEC_JSON READY_FD``; it imports the standard library only, so it starts
fast and small, and it outlives the edge service that started it (the runtime starts it in its own
session). It:

1. starts the container's command in its own process group (``argv``, ``env``, ``cwd`` from the spec);
2. writes a state file atomically: its own pid, the child's pid and process group, and the child's start
   time from ``/proc/<pid>/stat`` (field 22, in clock ticks since boot) so a recycled pid is never mistaken
   for the container, then reports ``{"ok": true, ...}`` (or the start error) on READY_FD and closes it;
3. pumps the child's stdout and stderr into a log file in the CRI format
   (``<RFC3339Nano> stdout|stderr F|P <line>``), rotated by size (``maxSize`` bytes, ``maxFiles`` files);
4. when the child exits, kills what is left of its process group (a container's processes die with its
   main process, as in a pid namespace), drains the pipes, writes the exit file atomically
   (``exitCode``, ``signal``, ``reason``, ``startedAt``, ``finishedAt``) and exits.

The shim ignores SIGTERM, SIGINT and SIGHUP: the runtime signals the container's process group, and the
shim keeps pumping logs until the child is gone. The handlers are Python functions rather than SIG_IGN so
that the child (which execs) starts with default dispositions. The shim also makes itself a child
subreaper, so processes the container orphans are re-parented to it and reaped. If the shim itself is
killed, no exit file is written and the runtime records 137.

Volumes (``mounts`` in the spec). When the spec allows a mount namespace (the edge runs as root), the
child, between fork and exec (``preexec_fn``; the shim is single-threaded, so that is safe), opens every
volume source (``O_PATH``, before the mount table changes), calls ``unshare(CLONE_NEWNS)`` through ctypes
(Python 3.11 has no ``os.unshare``), makes ``/`` recursively slave (host mounts still propagate in, ours
never out; private where slave is refused), then bind-mounts each source at its mountPath, parents
first, and remounts read-only where ``readOnly`` asks. A mountPath that does not exist is created inside
the namespace only: the nearest existing ancestor directory gets a private overlay (its upper layer on a
tmpfs in the container's ``mnt-scratch``), so the new directory exists for the container and never on
the host. Two cases fall back to creating the mountPath on the host: when that ancestor is ``/`` itself
(an overlay cannot replace the root without a pivot_root) and when the overlay mount fails (an exotic
filesystem, or ``,``/``:`` in the path). A container that writes into such an overlaid directory writes to
its private tmpfs, not to the host. Setup runs in the child only, so the shim itself stays in the host's
namespace and its log/state files are where the runtime looks. The working directory is entered after
the mounts, so ``workingDir`` may be inside a volume.

If ``unshare`` fails, or the spec says namespaces are unavailable, the container starts without them:
the state file's ``mountError`` names the mounts not honoured and why, and the ``volumeEnv`` variables
(``FLEETOPS_VOLUME_<NAME>`` = the volume's host directory) are added to its environment. Any other setup
failure (a missing hostPath, a failed bind) is a start error, as a kubelet's failed mount is.

Not done: log compression, log line size limits beyond splitting at ``_MAX_LINE`` (as partial ``P``
records), cgroups and pid/network/user namespaces (this is a process runtime), mount propagation modes
and recursive read-only mounts.
"""

# The shim uses os/open rather than pathlib on purpose: it imports as little as possible to start fast.
# ruff: noqa: PTH102, PTH103, PTH105, PTH108, PTH118, PTH120, PTH123

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import json
import os
import selectors
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

# A line longer than this is written as several partial (P) records, as containerd does with 16 KiB.
_MAX_LINE = 16 * 1024
_READ_CHUNK = 64 * 1024
# After the child exits, how long to keep draining pipes that something else still holds open.
_DRAIN_SECONDS = 2.0
_PR_SET_CHILD_SUBREAPER = 36
# <sched.h> and <sys/mount.h> (Linux): the flags unshare(2) and mount(2) take.
_CLONE_NEWNS = 0x00020000
_MS_RDONLY = 0x1
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_REMOUNT = 0x20
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_PRIVATE = 0x40000
_MS_SLAVE = 0x80000
# Characters that would break overlayfs' comma/colon separated mount options.
_OVERLAY_UNSAFE = (",", ":", "\\")


def rfc3339_nano(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    base = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{rest:09d}Z"


def proc_start_ticks(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat; the command name (field 2) may hold spaces, so split after ')'."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[19])  # fields[0] is field 3 (state), so field 22 is fields[19]


def write_atomic(path: str, obj: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RotatingLog:
    """A CRI log file that rotates to ``path.1`` .. ``path.{max_files-1}`` when it would pass max_size."""

    def __init__(self, path: str, max_size: int, max_files: int) -> None:
        self.path = path
        self.max_size = max_size
        self.max_files = max(1, max_files)
        self.f = open(path, "ab")  # noqa: SIM115 - held for the shim's lifetime
        self.size = self.f.tell()

    def _rotate(self) -> None:
        self.f.close()
        oldest = f"{self.path}.{self.max_files - 1}"
        if self.max_files == 1:
            os.unlink(self.path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(oldest)
            for i in range(self.max_files - 2, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{self.path}.{i}", f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        self.f = open(self.path, "ab")  # noqa: SIM115
        self.size = 0

    def write(self, stream: str, tag: str, content: bytes) -> None:
        record = b"%s %s %s %s\n" % (
            rfc3339_nano(time.time_ns()).encode(),
            stream.encode(),
            tag.encode(),
            content,
        )
        if self.size and self.size + len(record) > self.max_size:
            self._rotate()
        self.f.write(record)
        self.f.flush()
        self.size += len(record)

    def close(self) -> None:
        self.f.close()


class Pump:
    """Splits one pipe's bytes into CRI records."""

    def __init__(self, stream: str, log: RotatingLog) -> None:
        self.stream = stream
        self.log = log
        self.buf = b""

    def feed(self, data: bytes) -> None:
        self.buf += data
        while True:
            nl = self.buf.find(b"\n")
            if nl < 0:
                break
            line, self.buf = self.buf[:nl], self.buf[nl + 1 :]
            self._emit_line(line)
        while len(self.buf) >= _MAX_LINE:
            self.log.write(self.stream, "P", self.buf[:_MAX_LINE])
            self.buf = self.buf[_MAX_LINE:]

    def _emit_line(self, line: bytes) -> None:
        while len(line) > _MAX_LINE:
            self.log.write(self.stream, "P", line[:_MAX_LINE])
            line = line[_MAX_LINE:]
        self.log.write(self.stream, "F", line)

    def finish(self) -> None:
        if self.buf:
            self.log.write(self.stream, "F", self.buf)
            self.buf = b""


def _ignore(signum: int, frame: object) -> None:
    """Handler (not SIG_IGN) so the exec'd child gets the default disposition back."""


class SetupError(Exception):
    """Setting up the container's mounts failed at ``stage`` (``unshare`` means: no namespace here)."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message


def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
    libc.unshare.argtypes = (ctypes.c_int,)
    return libc


def _enc(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def _mount(
    libc: Any,
    source: str | None,
    target: str,
    *,
    flags: int,
    fstype: str | None = None,
    data: str | None = None,
) -> None:
    if libc.mount(_enc(source), _enc(target), _enc(fstype), flags, _enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _under(path: str, parent: str) -> bool:
    return parent in ("/", path) or path.startswith(parent.rstrip("/") + "/")


def _nearest_existing(path: str) -> str:
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def _overlay_ancestors(mounts: list[dict[str, Any]]) -> list[str]:
    """The top-most existing host directories to overlay so that every missing mountPath can be made.

    A missing mountPath inside another mount's target is made inside that volume later (as the kubelet
    does), and ``/`` is never overlaid."""
    targets = [m["target"] for m in mounts]
    wanted: set[str] = set()
    for t in targets:
        if os.path.lexists(t) or any(o != t and _under(t, o) for o in targets):
            continue
        ancestor = _nearest_existing(os.path.dirname(t))
        if ancestor != "/" and not any(c in ancestor for c in _OVERLAY_UNSAFE):
            wanted.add(ancestor)
    return sorted(a for a in wanted if not any(b != a and _under(a, b) for b in wanted))


def setup_mounts(mounts: list[dict[str, Any]], scratch: str, cwd: str) -> None:
    """Run in the child before exec: a private mount namespace with every volume at its mountPath."""
    libc = _libc()
    ordered = sorted(mounts, key=lambda m: (m["target"].count("/"), m["target"]))
    if libc.unshare(_CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise SetupError("unshare", f"unshare(CLONE_NEWNS): {os.strerror(err)}")
    try:
        _mount(libc, None, "/", flags=_MS_REC | _MS_SLAVE)
    except OSError:
        try:
            _mount(libc, None, "/", flags=_MS_REC | _MS_PRIVATE)
        except OSError as exc:
            raise SetupError("unshare", f"making / private: {exc.strerror}") from exc
    # Open every source now: after unshare (a bind source must be a mount of this namespace) and before
    # any overlay, which would otherwise shadow a source below its directory.
    sources: list[tuple[int, bool]] = []
    for m in ordered:
        try:
            fd = os.open(m["source"], os.O_PATH | os.O_CLOEXEC)
        except OSError as exc:
            raise SetupError("source", f"volume {m['volume']!r}: {m['source']}: {exc.strerror}") from exc
        sources.append((fd, stat.S_ISDIR(os.fstat(fd).st_mode)))
    overlays = _overlay_ancestors(ordered)
    if overlays:
        try:
            _mount(libc, "tmpfs", scratch, fstype="tmpfs", flags=_MS_NOSUID | _MS_NODEV, data="mode=0700")
        except OSError:
            overlays = []  # fall back to making the mountPaths on the host
    for i, ancestor in enumerate(overlays):
        upper, work = os.path.join(scratch, f"upper{i}"), os.path.join(scratch, f"work{i}")
        os.mkdir(upper)
        os.mkdir(work)
        with contextlib.suppress(OSError):  # on failure the mountPath is made on the host
            _mount(
                libc,
                "overlay",
                ancestor,
                fstype="overlay",
                flags=0,
                data=f"lowerdir={ancestor},upperdir={upper},workdir={work}",
            )
    for m, (fd, is_dir) in zip(ordered, sources, strict=True):
        target = m["target"]
        step = "creating the mount point of"
        try:
            if not os.path.lexists(target):
                if is_dir:
                    os.makedirs(target, 0o755, exist_ok=True)
                else:
                    os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
                    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
            step = "bind-mounting"
            _mount(libc, f"/proc/self/fd/{fd}", target, flags=_MS_BIND | _MS_REC)
            if m.get("readOnly"):
                step = "remounting read-only"
                _mount(libc, None, target, flags=_MS_BIND | _MS_REMOUNT | _MS_RDONLY)
        except OSError as exc:
            raise SetupError(
                "mount", f"{step} volume {m['volume']!r} at {target}: {exc.strerror or exc}"
            ) from exc
        finally:
            os.close(fd)
    if cwd:
        try:
            os.chdir(cwd)
        except OSError as exc:
            raise SetupError("cwd", f"working directory {cwd}: {exc.strerror}") from exc


def not_honoured(reason: str, mounts: list[dict[str, Any]]) -> str:
    shown = ", ".join(f"{m['target']} ({m['volume']})" for m in mounts)
    return f"{reason}; not mounted: {shown}; volume directories are in FLEETOPS_VOLUME_* variables"


def _popen(spec: dict[str, Any], env: dict[str, str], preexec: Callable[[], None] | None, cwd: str) -> Any:
    return subprocess.Popen(
        spec["argv"],
        env=env,
        cwd=cwd or None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        process_group=0,
        close_fds=True,
        preexec_fn=preexec,  # noqa: PLW1509 - the shim is single-threaded; see the module docstring
    )


def start_child(spec: dict[str, Any]) -> tuple[Any, str]:
    """Start the container's process; returns it and the mount error ("" when every mount is honoured).

    Raises OSError when the command cannot be executed and SetupError when a volume cannot be mounted."""
    env = dict(spec["env"])
    mounts: list[dict[str, Any]] = spec.get("mounts") or []
    cwd = str(spec.get("cwd") or "")
    if not mounts:
        return _popen(spec, env, None, cwd), ""
    fallback_env = {**env, **spec.get("volumeEnv", {})}
    if not spec.get("namespace"):
        reason = str(spec.get("namespaceUnavailable") or "mount namespaces are unavailable")
        return _popen(spec, fallback_env, None, cwd), not_honoured(reason, mounts)
    read_fd, write_fd = os.pipe()
    scratch = str(spec.get("scratch") or "")

    def preexec() -> None:
        try:
            setup_mounts(mounts, scratch, cwd)
        except SetupError as exc:
            os.write(write_fd, json.dumps({"stage": exc.stage, "message": exc.message}).encode())
            raise
        except Exception as exc:
            os.write(write_fd, json.dumps({"stage": "mount", "message": repr(exc)}).encode())
            raise

    try:
        try:
            child = _popen(spec, env, preexec, "")
        except subprocess.SubprocessError as exc:
            os.close(write_fd)
            write_fd = -1
            raw = os.read(read_fd, 65536)
            failure = json.loads(raw) if raw else {"stage": "mount", "message": str(exc)}
            if failure["stage"] != "unshare":
                raise SetupError(failure["stage"], failure["message"]) from exc
            reason = f"mount namespace unavailable ({failure['message']})"
            return _popen(spec, fallback_env, None, cwd), not_honoured(reason, mounts)
        return child, ""
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


def _report(fd: int, obj: Any) -> None:
    try:
        os.write(fd, json.dumps(obj).encode() + b"\n")
    except OSError:
        pass  # the runtime went away while we started; the state file is what adoption reads
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def main(argv: list[str]) -> int:
    spec_path, ready_fd = argv[1], int(argv[2])
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _ignore)
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    started_ns = time.time_ns()
    try:
        child, mount_error = start_child(spec)
    except (OSError, SetupError) as exc:
        now = rfc3339_nano(time.time_ns())
        if isinstance(exc, SetupError):
            message = f"failed to set up volumes: {exc.message}"
        else:
            message = f"failed to start {spec['argv'][0]!r}: {exc.strerror or exc}"
        write_atomic(
            spec["exit"],
            {
                "exitCode": 128,
                "signal": None,
                "reason": "StartError",
                "message": message,
                "startedAt": now,
                "finishedAt": now,
            },
        )
        _report(ready_fd, {"ok": False, "message": message})
        return 0
    pid = child.pid
    try:
        ticks = proc_start_ticks(pid)
    except OSError:
        ticks = 0
    write_atomic(
        spec["state"],
        {
            "shimPid": os.getpid(),
            "shimStartTime": proc_start_ticks(os.getpid()),
            "pid": pid,
            "pgid": pid,
            "startTime": ticks,
            "startedAt": rfc3339_nano(started_ns),
            "mountError": mount_error,
        },
    )
    _report(ready_fd, {"ok": True, "pid": pid})

    log = RotatingLog(spec["log"], int(spec["maxSize"]), int(spec["maxFiles"]))
    assert child.stdout is not None and child.stderr is not None
    sel = selectors.DefaultSelector()
    pumps = {
        child.stdout.fileno(): Pump("stdout", log),
        child.stderr.fileno(): Pump("stderr", log),
    }
    for fd in pumps:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    pidfd = -1
    with contextlib.suppress(OSError, AttributeError):
        pidfd = os.pidfd_open(pid)
        sel.register(pidfd, selectors.EVENT_READ)

    status: int | None = None
    drain_deadline: float | None = None
    while pumps:
        timeout = 0.5 if pidfd < 0 else None
        if drain_deadline is not None:
            timeout = max(0.0, drain_deadline - time.monotonic())
        events = sel.select(timeout)
        for key, _ in events:
            fd = int(key.fd)
            if fd == pidfd:
                sel.unregister(pidfd)
                os.close(pidfd)
                pidfd = -2  # exited; no more polling needed
                continue
            try:
                data = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                continue
            if data:
                pumps[fd].feed(data)
            else:
                sel.unregister(fd)
                pumps.pop(fd).finish()
        if status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                # The main process is gone: its process group goes with it, as in a container.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                drain_deadline = time.monotonic() + _DRAIN_SECONDS
        elif drain_deadline is not None and time.monotonic() >= drain_deadline:
            break
    for p in pumps.values():
        p.finish()
    log.close()
    if status is None:
        _, status = os.waitpid(pid, 0)
    child.returncode = 0  # we reaped it ourselves; keep Popen from trying again
    # Reap whatever the subreaper inherited.
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    code = os.waitstatus_to_exitcode(status)
    sig = -code if code < 0 else None
    exit_code = 128 + sig if sig is not None else code
    write_atomic(
        spec["exit"],
        {
            "exitCode": exit_code,
            "signal": sig,
            "reason": "Completed" if exit_code == 0 else "Error",
            "message": "",
            "startedAt": rfc3339_nano(started_ns),
            "finishedAt": rfc3339_nano(time.time_ns()),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

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

Not done: log compression, log line size limits beyond splitting at ``_MAX_LINE`` (as partial ``P``
records), and cgroups/namespaces (this is a process runtime).
"""

# The shim uses os/open rather than pathlib on purpose: it imports as little as possible to start fast.
# ruff: noqa: PTH105, PTH108, PTH123

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from typing import Any

# A line longer than this is written as several partial (P) records, as containerd does with 16 KiB.
_MAX_LINE = 16 * 1024
_READ_CHUNK = 64 * 1024
# After the child exits, how long to keep draining pipes that something else still holds open.
_DRAIN_SECONDS = 2.0
_PR_SET_CHILD_SUBREAPER = 36


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
        child = subprocess.Popen(
            spec["argv"],
            env=spec["env"],
            cwd=spec["cwd"] or None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            process_group=0,
            close_fds=True,
        )
    except OSError as exc:
        now = rfc3339_nano(time.time_ns())
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

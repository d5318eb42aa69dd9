"""The ``podexec`` stream producer: ``kubectl exec [-it] POD -- CMD`` run on this node.

The command runs beside the container's main process, with that process's environment and working
directory (read from ``/proc``, so it sees exactly what the container sees, fieldRef values included),
inside its mount namespace when it has one (so its volumes are at their mountPaths), in a new session so
that stopping it stops everything it started. With ``tty`` it gets a pseudo-terminal
as its controlling terminal and follows the client's window size; without, plain pipes.

Bytes travel base64-encoded in ``{"ch": n, "b64": ...}`` chunks, ``n`` being Kubernetes' channel numbers
(0 stdin, 1 stdout, 2 stderr, 4 resize, 255 close-stdin), so the cloud only relays them. The exit code
goes back in the stream's close message. When the client goes away the command's session gets SIGHUP,
then SIGKILL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import pty
import signal
import struct
import termios
from pathlib import Path
from typing import Any

from app.envelope import Message
from app.resources import PODS, JSONObject, tunnel_resource
from edgeservice.edged import Edged
from edgeservice.metamanager import MetaManager
from edgeservice.streams import StreamRejected, StreamSink

log = logging.getLogger(__name__)

READ_SIZE = 16 * 1024
STDIN, STDOUT, STDERR, RESIZE, CLOSE = 0, 1, 2, 4, 255


def _container_pid(status: JSONObject | None, container: str) -> int | None:
    for cs in (status or {}).get("containerStatuses", []):
        if cs.get("name") == container and "running" in cs.get("state", {}):
            cid = str(cs.get("containerID", ""))
            if cid.startswith("process://"):
                return int(cid.removeprefix("process://"))
    return None


def _process_context(pid: int) -> tuple[dict[str, str], str]:
    """The environment and working directory of a running process."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    env = {}
    for entry in raw.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env, str(Path(f"/proc/{pid}/cwd").readlink())


_CLONE_NEWNS = 0x00020000  # <sched.h>


def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
    return libc


def _foreign_mount_namespace(pid: int) -> int | None:
    """An fd on the container's mount namespace when it has its own (the edge runs as root), else None."""
    try:
        if Path(f"/proc/{pid}/ns/mnt").stat().st_ino == Path("/proc/self/ns/mnt").stat().st_ino:
            return None
        return os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
    except OSError:
        return None


def _set_winsize(fd: int, size: Any) -> None:
    if isinstance(size, dict):
        cols, rows = int(size.get("Width", 0)), int(size.get("Height", 0))
        if cols > 0 and rows > 0:
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class PodExecProducer:
    def __init__(self, meta: MetaManager, edged: Edged, node: str) -> None:
        self.meta = meta
        self.edged = edged
        self.node = node

    async def __call__(
        self, namespace: str, name: str, params: JSONObject, sink: StreamSink, msg: Message
    ) -> JSONObject | None:
        pod = self.meta.get(tunnel_resource(PODS, namespace, name))
        if pod is None:
            raise StreamRejected(404, "NotFound", f'pods "{name}" not found on node {self.node}')
        container = str(params.get("container") or "")
        command = params.get("command")
        if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
            raise StreamRejected(400, "BadRequest", "you must specify at least one command for the container")
        pid = _container_pid(self.edged.status_of(str(pod["metadata"]["uid"])), container)
        if pid is None:
            raise StreamRejected(400, "BadRequest", f'container "{container}" in pod "{name}" is not running')
        try:
            env, cwd = _process_context(pid)
        except OSError as exc:
            raise StreamRejected(500, "InternalError", f"cannot read the container's context: {exc}") from exc
        tty = bool(params.get("tty"))
        try:
            proc, master = await self._spawn(command, env, cwd, tty=tty, pid=pid)
        except OSError as exc:
            # Kubernetes reports a missing executable as exit code 126/127-style failures inside the stream;
            # refusing up front gives kubectl a readable error instead.
            raise StreamRejected(500, "InternalError", f"cannot run {command[0]!r}: {exc.strerror}") from exc
        sink.accept(msg)
        log.info("exec in pod %s/%s container=%s pid=%d tty=%s", namespace, name, container, proc.pid, tty)
        try:
            return await self._relay(proc, master, sink)
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGHUP)
                try:
                    async with asyncio.timeout(2):
                        await proc.wait()
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()
            if master is not None:
                os.close(master)

    async def _spawn(
        self, command: list[str], env: dict[str, str], cwd: str, *, tty: bool, pid: int
    ) -> tuple[asyncio.subprocess.Process, int | None]:
        mnt_ns = _foreign_mount_namespace(pid)

        def enter() -> None:
            # In the child, before exec: the container's mount namespace (its volumes at their
            # mountPaths), then its working directory as seen from inside it, then the terminal.
            if mnt_ns is not None and _libc().setns(mnt_ns, _CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "setns into the container's mount namespace failed")
            os.chdir(cwd)
            if tty:
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # job control and ^C work

        master = slave = None
        if tty:
            master, slave = pty.openpty()
        stdio = slave if slave is not None else asyncio.subprocess.PIPE
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=stdio,
                stdout=stdio,
                stderr=stdio,
                env={"TERM": "xterm", **env} if tty else env,
                start_new_session=True,
                pass_fds=(mnt_ns,) if mnt_ns is not None else (),
                preexec_fn=enter,
            )
        except BaseException:
            if master is not None:
                os.close(master)
            raise
        finally:
            if slave is not None:
                os.close(slave)
            if mnt_ns is not None:
                os.close(mnt_ns)
        if master is not None:
            os.set_blocking(master, False)
        return proc, master

    async def _relay(
        self, proc: asyncio.subprocess.Process, master: int | None, sink: StreamSink
    ) -> JSONObject:
        loop = asyncio.get_running_loop()
        outputs: list[asyncio.Task[None]] = []

        async def pump(reader: asyncio.StreamReader, channel: int) -> None:
            while chunk := await reader.read(READ_SIZE):
                await sink.send_item({"ch": channel, "b64": base64.b64encode(chunk).decode()})

        if master is None:
            assert proc.stdout is not None and proc.stderr is not None
            outputs = [
                asyncio.create_task(pump(proc.stdout, STDOUT), name="exec.stdout"),
                asyncio.create_task(pump(proc.stderr, STDERR), name="exec.stderr"),
            ]
        else:
            reader = asyncio.StreamReader()
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(os.dup(master), "rb", buffering=0)
            )
            outputs = [asyncio.create_task(pump(reader, STDOUT), name="exec.pty")]
        inbound = asyncio.create_task(self._feed(proc, master, sink), name="exec.stdin")
        try:
            code = await proc.wait()
            if master is None:
                await asyncio.gather(*outputs)
            else:
                # The pty reports EIO once the last writer is gone; give the reader a moment to drain.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await asyncio.gather(*outputs, return_exceptions=True)
                transport.close()
        finally:
            inbound.cancel()
            for task in outputs:
                task.cancel()
            await asyncio.gather(inbound, *outputs, return_exceptions=True)
        return {"exitCode": code}

    async def _feed(self, proc: asyncio.subprocess.Process, master: int | None, sink: StreamSink) -> None:
        while True:
            item = await sink.inbox.get()
            channel = item.get("ch")
            if channel == STDIN:
                data = base64.b64decode(str(item.get("b64", "")))
                if master is not None:
                    await asyncio.to_thread(os.write, master, data)
                elif proc.stdin is not None:
                    proc.stdin.write(data)
                    with contextlib.suppress(ConnectionError):
                        await proc.stdin.drain()
            elif channel == RESIZE and master is not None:
                with contextlib.suppress(ValueError, OSError):
                    _set_winsize(master, json.loads(str(item.get("data", "{}"))))
            elif channel == CLOSE:
                if master is not None:
                    await asyncio.to_thread(os.write, master, b"\x04")  # EOF at the terminal
                elif proc.stdin is not None:
                    proc.stdin.close()

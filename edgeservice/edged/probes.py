"""Container probes: running one probe (exec, httpGet, tcpSocket) and the pure threshold bookkeeping.

``run_probe`` performs one attempt within the probe's ``timeoutSeconds`` and returns success or failure
with a message; it never raises for a failing target. ``ProbeState``/``probe_step`` turn attempts into a
result with Kubernetes' thresholds (``successThreshold`` consecutive successes flip to success,
``failureThreshold`` consecutive failures flip to failure).

As in the kubelet: httpGet succeeds on a status from 200 to 399 and does not verify TLS certificates;
exec probes run the command with the container's environment and working directory (there is no
namespace to enter) and kill its process group on timeout. Not done: grpc probes, redirects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
from dataclasses import dataclass, replace

from app.model import ExecAction, HTTPGetAction, Probe, TCPSocketAction

# HTTP status range the kubelet counts as success.
_HTTP_OK_MIN, _HTTP_OK_MAX = 200, 399
_USER_AGENT = "kube-probe/fleetops"


@dataclass(frozen=True, slots=True)
class ProbeState:
    """The probe's current result (None until the thresholds decide) and its consecutive counters."""

    result: bool | None = None
    successes: int = 0
    failures: int = 0


def probe_step(state: ProbeState, probe: Probe, ok: bool) -> ProbeState:
    """Fold one attempt into the state; pure."""
    if ok:
        successes = state.successes + 1
        result = True if successes >= probe.success_threshold else state.result
        return replace(state, result=result, successes=successes, failures=0)
    failures = state.failures + 1
    result = False if failures >= probe.failure_threshold else state.result
    return replace(state, result=result, successes=0, failures=failures)


async def run_probe(
    probe: Probe, *, default_host: str, env: dict[str, str] | None = None, cwd: str = ""
) -> tuple[bool, str]:
    """One attempt of ``probe``; returns (success, message)."""
    handler = probe.handler
    timeout = float(probe.timeout_seconds)
    try:
        if isinstance(handler, ExecAction):
            return await _exec(handler, timeout, env, cwd)
        async with asyncio.timeout(timeout):
            if isinstance(handler, HTTPGetAction):
                return await _http_get(handler, handler.host or default_host)
            return await _tcp(handler, handler.host or default_host)
    except TimeoutError:
        return False, f"probe timed out after {timeout:g}s"
    except OSError as exc:
        return False, f"probe failed: {exc}"


async def _exec(action: ExecAction, limit: float, env: dict[str, str] | None, cwd: str) -> tuple[bool, str]:
    proc = await asyncio.create_subprocess_exec(
        *action.command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=cwd or None,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(limit):
            out, _ = await proc.communicate()
    except TimeoutError:
        return False, f"command timed out after {limit:g}s"
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    text = out.decode(errors="replace").strip()[-512:]
    if proc.returncode == 0:
        return True, text
    return False, f"command exited with {proc.returncode}: {text}"


async def _http_get(action: HTTPGetAction, host: str) -> tuple[bool, str]:
    ctx: ssl.SSLContext | None = None
    if action.scheme == "HTTPS":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the kubelet does not verify probe certificates either
    reader, writer = await asyncio.open_connection(host, action.port, ssl=ctx)
    try:
        headers = {"Host": f"{host}:{action.port}", "User-Agent": _USER_AGENT, "Accept": "*/*"}
        headers.update(dict(action.http_headers))
        headers["Connection"] = "close"
        request = f"GET {action.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(request.encode("latin-1") + b"\r\n")
        await writer.drain()
        status_line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    parts = status_line.decode("latin-1").split()
    if len(parts) < 2 or not parts[1].isdigit():
        return False, f"bad HTTP response {status_line[:100]!r}"
    code = int(parts[1])
    if _HTTP_OK_MIN <= code <= _HTTP_OK_MAX:
        return True, f"HTTP {code}"
    return False, f"HTTP probe failed with statuscode: {code}"


async def _tcp(action: TCPSocketAction, host: str) -> tuple[bool, str]:
    _, writer = await asyncio.open_connection(host, action.port)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, ""

"""Edged with real processes: shims, logs, restarts, probes, graceful stop, process groups and adoption."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from edgeservice.edged import Edged, ProcessRuntime

JSONObject = dict[str, Any]
DEADLINE = 15.0
CRI_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) (F|P) (.*)$")


class Sink:
    """Records what Edged reports and wakes waiters on every report."""

    def __init__(self) -> None:
        self.statuses: dict[str, list[JSONObject]] = {}
        self.terminated: list[str] = []
        self._changed = asyncio.Event()

    def pod_status_changed(self, pod: JSONObject, status: JSONObject) -> None:
        self.statuses.setdefault(pod["metadata"]["uid"], []).append(status)
        self._changed.set()

    def pod_terminated(self, pod: JSONObject) -> None:
        self.terminated.append(pod["metadata"]["uid"])
        self._changed.set()

    def latest(self, uid: str) -> JSONObject:
        return self.statuses.get(uid, [{}])[-1]

    async def wait_for(self, predicate: Callable[[], bool], what: str = "condition") -> None:
        async with asyncio.timeout(DEADLINE):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()
        assert predicate(), what

    async def wait_status(self, uid: str, predicate: Callable[[JSONObject], bool]) -> JSONObject:
        await self.wait_for(lambda: bool(self.statuses.get(uid)) and predicate(self.latest(uid)))
        return self.latest(uid)


async def poll(predicate: Callable[[], bool]) -> None:
    """For what Edged does not report (files, foreign processes): a short interval and a deadline."""
    async with asyncio.timeout(DEADLINE):
        while not predicate():
            await asyncio.sleep(0.02)


def pod(uid: str, *containers: JSONObject, **spec: Any) -> JSONObject:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"pod-{uid}", "namespace": "default", "uid": uid},
        "spec": {"containers": list(containers), "terminationGracePeriodSeconds": 5, **spec},
    }


def container(name: str, *command: str, **extra: Any) -> JSONObject:
    return {"name": name, "image": "busybox:1.36", "command": list(command), **extra}


def cstatus(status: JSONObject, name: str = "c") -> JSONObject:
    for s in status.get("containerStatuses", []):
        if s["name"] == name:
            return dict(s)
    return {}


def pid_of(status: JSONObject, name: str = "c") -> int:
    return int(cstatus(status, name)["containerID"].removeprefix("process://"))


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def running(status: JSONObject, name: str = "c") -> bool:
    return "running" in cstatus(status, name).get("state", {})


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
async def edged(tmp_path: Path, sink: Sink) -> AsyncIterator[Edged]:
    e = Edged(tmp_path / "edged", "edge-1", sink, backoff_base=0.05, backoff_max=0.4)
    await e.start()
    try:
        yield e
    finally:
        await e.stop_all_pods()
        await e.stop()


async def test_env_working_dir_and_args_reach_the_process(edged: Edged, sink: Sink, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    script = 'echo "$GREETING $POD $NS $NODE $UID_ $(pwd) $0 $1"; exec sleep 300'
    c = container(
        "c",
        "sh",
        "-c",
        script,
        args=["first", "second"],
        workingDir=str(work),
        env=[
            {"name": "GREETING", "value": "hello"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "UID_", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
        ],
    )
    edged.upsert(pod("u1", c))
    status = await sink.wait_status("u1", lambda s: s.get("phase") == "Running" and running(s))
    assert cstatus(status)["ready"] is True
    assert cstatus(status)["image"] == "busybox:1.36"
    assert status["hostIP"] == status["podIP"] == "127.0.0.1"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    pid = pid_of(status)
    assert alive(pid)
    log_path = edged.log_path("u1", "c")
    assert log_path is not None
    await poll(lambda: log_path.exists() and "hello" in log_path.read_text())
    line = log_path.read_text().splitlines()[0]
    match = CRI_LINE.match(line)
    assert match is not None, line
    assert match.group(3) == f"hello pod-u1 default edge-1 u1 {work} first second"

    edged.remove("u1")
    await poll(lambda: not alive(pid) and edged.status_of("u1") is None)
    assert not (tmp_path / "edged" / "pods" / "u1").exists()


async def test_stdout_stderr_in_cri_format_and_rotation(tmp_path: Path, sink: Sink) -> None:
    runtime = ProcessRuntime(log_max_size=2000, log_max_files=3)
    e = Edged(tmp_path / "edged", "edge-1", sink, runtime=runtime)
    await e.start()
    try:
        script = 'i=0; while [ $i -lt 200 ]; do echo "out line $i"; echo "err line $i" >&2; i=$((i+1)); done'
        e.upsert(pod("u2", container("c", "sh", "-c", script), restartPolicy="Never"))
        await sink.wait_status("u2", lambda s: s.get("phase") == "Succeeded")
        log_path = e.log_path("u2", "c")
        assert log_path is not None
        files = sorted(log_path.parent.glob("c.log*"))
        assert [f.name for f in files] == ["c.log", "c.log.1", "c.log.2"]
        for f in files:
            assert f.stat().st_size <= 2000
            for line in f.read_text().splitlines():
                assert CRI_LINE.match(line), line
        # Each stream keeps its order across the kept files (oldest first); the two pipes interleave freely,
        # and the oldest records were rotated away.
        records = [
            m for f in reversed(files) for line in f.read_text().splitlines() if (m := CRI_LINE.match(line))
        ]
        assert records[-1].group(3).endswith("line 199")
        for stream, word in (("stdout", "out"), ("stderr", "err")):
            numbers = [int(m.group(3).split()[-1]) for m in records if m.group(1) == stream]
            assert all(m.group(3).startswith(word) for m in records if m.group(1) == stream)
            if numbers:  # a stream may have been rotated away entirely
                assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        assert len(records) < 400
        status = cstatus(sink.latest("u2"))
        assert status["state"]["terminated"]["exitCode"] == 0
        assert status["state"]["terminated"]["reason"] == "Completed"
    finally:
        await e.stop_all_pods()
        await e.stop()


async def test_crashing_container_goes_to_crash_loop_back_off(edged: Edged, sink: Sink) -> None:
    edged.upsert(pod("u3", container("c", "sh", "-c", "echo boom; exit 3")))
    status = await sink.wait_status("u3", lambda s: cstatus(s).get("restartCount", 0) >= 3)
    assert status["phase"] == "Running"
    waiting = [
        cstatus(s)["state"]["waiting"]
        for s in sink.statuses["u3"]
        if cstatus(s).get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff"
    ]
    assert waiting
    assert re.match(
        r"back-off \d+ms restarting failed container=c pod=pod-u3_default\(u3\)", waiting[-1]["message"]
    )
    assert cstatus(status)["lastState"]["terminated"]["exitCode"] == 3
    counts = [cstatus(s).get("restartCount", 0) for s in sink.statuses["u3"]]
    assert counts == sorted(counts)


@pytest.mark.parametrize("policy", ["FallbackToLogsOnError", "File"])
async def test_a_failed_run_says_why_in_its_status_with_fallback_to_logs(
    edged: Edged, sink: Sink, policy: str
) -> None:
    script = (
        "for i in $(seq 1 100); do echo line $i; done; echo 'bad config: model.onnx is not ONNX' >&2; exit 2"
    )
    edged.upsert(
        pod("u9", container("c", "sh", "-c", script, terminationMessagePolicy=policy), restartPolicy="Never")
    )
    status = await sink.wait_status("u9", lambda s: s.get("phase") == "Failed")
    terminated = cstatus(status)["state"]["terminated"]
    assert terminated["exitCode"] == 2
    if policy == "File":  # the default: no file to read for a process on the host, so no message
        assert "message" not in terminated
        return
    message = terminated["message"]
    assert message.endswith("bad config: model.onnx is not ONNX")
    assert "line 100" in message and "line 20\n" not in message  # the last 80 lines only


@pytest.mark.parametrize(
    ("policy", "script", "phase", "restarts", "code"),
    [
        ("Never", "exit 3", "Failed", 0, 3),
        ("Never", "exit 0", "Succeeded", 0, 0),
        ("OnFailure", "exit 0", "Succeeded", 0, 0),
        ("OnFailure", "if [ -f marker ]; then exit 0; fi; touch marker; exit 1", "Succeeded", 1, 0),
    ],
)
async def test_restart_policies(
    edged: Edged, sink: Sink, tmp_path: Path, policy: str, script: str, phase: str, restarts: int, code: int
) -> None:
    edged.upsert(
        pod("u4", container("c", "sh", "-c", script, workingDir=str(tmp_path)), restartPolicy=policy)
    )
    status = await sink.wait_status("u4", lambda s: s.get("phase") == phase)
    c = cstatus(status)
    assert c["restartCount"] == restarts
    assert c["state"]["terminated"]["exitCode"] == code
    assert {c["type"]: c for c in status["conditions"]}["Ready"]["reason"] == "PodCompleted"


async def test_missing_command_and_start_error(edged: Edged, sink: Sink) -> None:
    edged.upsert(pod("u5", {"name": "c", "image": "nginx"}))
    status = await sink.wait_status("u5", lambda s: "waiting" in cstatus(s).get("state", {}))
    waiting = cstatus(status)["state"]["waiting"]
    assert waiting["reason"] == "CreateContainerConfigError"
    assert "needs a command" in waiting["message"]
    assert status["phase"] == "Pending"

    edged.upsert(pod("u6", container("c", "/nonexistent/binary"), restartPolicy="Never"))
    status = await sink.wait_status("u6", lambda s: s.get("phase") == "Failed")
    terminated = cstatus(status)["state"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("StartError", 128)


async def test_liveness_failure_restarts(edged: Edged, sink: Sink) -> None:
    dead_port = free_port()  # nothing listens there: every tcpSocket attempt fails
    c = container(
        "c",
        "sleep",
        "300",
        livenessProbe={"tcpSocket": {"port": dead_port}, "periodSeconds": 1, "failureThreshold": 1},
    )
    edged.upsert(pod("u7", c))
    status = await sink.wait_status("u7", lambda s: cstatus(s).get("restartCount", 0) >= 1 and running(s))
    last = cstatus(status)["lastState"]["terminated"]
    assert last["exitCode"] == 128 + signal.SIGTERM  # killed gracefully


async def test_readiness_toggles_ready(edged: Edged, sink: Sink, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    port = free_port()
    c = container(
        "c",
        sys.executable,
        "-m",
        "http.server",
        str(port),
        "--bind",
        "127.0.0.1",
        "--directory",
        str(site),
        ports=[{"name": "http", "containerPort": port}],
        readinessProbe={
            "httpGet": {"port": "http", "path": "/ready"},
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    )
    edged.upsert(pod("u8", c))
    status = await sink.wait_status("u8", running)
    assert cstatus(status)["ready"] is False
    (site / "ready").write_text("ok")
    status = await sink.wait_status("u8", lambda s: cstatus(s).get("ready") is True)
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    (site / "ready").unlink()
    status = await sink.wait_status("u8", lambda s: cstatus(s).get("ready") is False)
    assert {c["type"]: c["status"] for c in status["conditions"]}["ContainersReady"] == "False"
    assert cstatus(status)["restartCount"] == 0


async def test_graceful_stop_escalates_to_sigkill(edged: Edged, sink: Sink) -> None:
    script = "trap '' TERM; echo trapped; while true; do sleep 0.1; done"
    p = pod("u9", container("c", "sh", "-c", script))
    edged.upsert(p)
    status = await sink.wait_status("u9", running)
    pid = pid_of(status)
    p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    p["metadata"]["deletionGracePeriodSeconds"] = 1
    started = time.monotonic()
    edged.upsert(p)
    await sink.wait_for(lambda: "u9" in sink.terminated, "pod_terminated")
    assert time.monotonic() - started >= 1.0
    assert not alive(pid)
    terminated = cstatus(sink.latest("u9"))["state"]["terminated"]
    assert terminated["exitCode"] == 137


async def test_process_group_is_killed(edged: Edged, sink: Sink, tmp_path: Path) -> None:
    script = "sleep 300 & echo $! > grandchild.pid; wait"
    p = pod("u10", container("c", "sh", "-c", script, workingDir=str(tmp_path)))
    edged.upsert(p)
    await sink.wait_status("u10", running)
    pid_file = tmp_path / "grandchild.pid"
    await poll(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    grandchild = int(pid_file.read_text())
    assert alive(grandchild)
    p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    edged.upsert(p)
    await sink.wait_for(lambda: "u10" in sink.terminated)
    assert not alive(grandchild)


async def test_orphans_die_with_the_main_process(edged: Edged, sink: Sink, tmp_path: Path) -> None:
    script = "sleep 300 & echo $! > orphan.pid; exit 0"
    edged.upsert(
        pod("u11", container("c", "sh", "-c", script, workingDir=str(tmp_path)), restartPolicy="Never")
    )
    await sink.wait_status("u11", lambda s: s.get("phase") == "Succeeded")
    assert not alive(int((tmp_path / "orphan.pid").read_text()))


async def test_spec_change_restarts_the_container(edged: Edged, sink: Sink) -> None:
    p = pod("u12", container("c", "sleep", "300"))
    edged.upsert(p)
    first = pid_of(await sink.wait_status("u12", running))
    p["spec"]["containers"][0]["command"] = ["sleep", "301"]
    edged.upsert(p)
    status = await sink.wait_status("u12", lambda s: running(s) and pid_of(s) != first)
    assert cstatus(status)["restartCount"] == 1
    assert not alive(first)


def _workload_pids() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}


async def test_adoption_after_restart_starts_nothing_new(tmp_path: Path) -> None:
    root = tmp_path / "edged"
    first_sink, second_sink = Sink(), Sink()
    first = Edged(root, "edge-1", first_sink, backoff_base=0.05)
    await first.start()
    first.upsert(pod("u13", container("c", "sleep", "300")))
    status = await first_sink.wait_status("u13", running)
    pid = pid_of(status)
    await first.stop()
    assert alive(pid)
    before = _workload_pids()

    second = Edged(root, "edge-1", second_sink, backoff_base=0.05)
    await second.start()
    try:
        adopted = await second_sink.wait_status("u13", running)
        assert pid_of(adopted) == pid
        assert cstatus(adopted)["restartCount"] == 0
        assert _workload_pids() == before
        second.sync([pod("u13", container("c", "sleep", "300"))])  # same desired set: nothing changes
        await asyncio.sleep(0)
        assert _workload_pids() == before
    finally:
        await second.stop_all_pods()
        await second.stop()
    assert not alive(pid)


@pytest.mark.parametrize("exit_while_down", [False, True], ids=["exit-after-adoption", "exit-while-down"])
async def test_adopted_container_reports_its_real_exit_code(tmp_path: Path, exit_while_down: bool) -> None:
    root = tmp_path / "edged"
    work = tmp_path / "work"
    work.mkdir()
    script = "while [ ! -f stop ]; do sleep 0.05; done; exit 7"
    spec = pod("u14", container("c", "sh", "-c", script, workingDir=str(work)), restartPolicy="Never")
    first_sink, second_sink = Sink(), Sink()
    first = Edged(root, "edge-1", first_sink)
    await first.start()
    first.upsert(spec)
    pid = pid_of(await first_sink.wait_status("u14", running))
    await first.stop()

    exit_file = root / "pods" / "u14" / "c" / "exit.json"
    if exit_while_down:
        (work / "stop").touch()
        await poll(exit_file.exists)
    second = Edged(root, "edge-1", second_sink)
    await second.start()
    try:
        if not exit_while_down:
            await second_sink.wait_status("u14", running)
            (work / "stop").touch()
        status = await second_sink.wait_status("u14", lambda s: s.get("phase") == "Failed")
        terminated = cstatus(status)["state"]["terminated"]
        assert terminated["exitCode"] == 7
        assert terminated["containerID"] == f"process://{pid}"
        assert cstatus(status)["restartCount"] == 0
    finally:
        await second.stop_all_pods()
        await second.stop()


async def test_stop_leaves_workloads_running_and_stop_all_pods_ends_them(tmp_path: Path, sink: Sink) -> None:
    e = Edged(tmp_path / "edged", "edge-1", sink)
    await e.start()
    e.upsert(pod("u15", container("c", "sleep", "300"), container("d", "sleep", "300")))
    status = await sink.wait_status("u15", lambda s: running(s, "c") and running(s, "d"))
    pids = [pid_of(status, "c"), pid_of(status, "d")]
    await e.stop()
    assert all(alive(p) for p in pids)
    await e.stop_all_pods()
    assert not any(alive(p) for p in pids)
    assert e.status_of("u15") is None
    assert os.listdir(tmp_path / "edged" / "pods") == []


_EDGE_SCRIPT = """
import asyncio, sys
from pathlib import Path
from edgeservice.edged import Edged

class Sink:
    def __init__(self, done): self.done = done
    def pod_status_changed(self, pod, status):
        for c in status.get("containerStatuses", []):
            if "running" in c["state"]:
                print(c["containerID"], flush=True)
                self.done.set()
    def pod_terminated(self, pod): pass

async def main():
    done = asyncio.Event()
    e = Edged(Path(sys.argv[1]), "edge-1", Sink(done))
    await e.start()
    e.upsert({"metadata": {"name": "p", "namespace": "default", "uid": "u16"},
              "spec": {"containers": [{"name": "c", "image": "x", "command": ["sleep", "300"]}]}})
    await done.wait()
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_adoption_after_the_edge_is_sigkilled(tmp_path: Path, sink: Sink) -> None:
    root = tmp_path / "edged"
    edge = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _EDGE_SCRIPT, str(root), stdout=asyncio.subprocess.PIPE, cwd=Path.cwd()
    )
    try:
        assert edge.stdout is not None
        async with asyncio.timeout(DEADLINE):
            line = await edge.stdout.readline()
        pid = int(line.decode().strip().removeprefix("process://"))
    finally:
        edge.kill()
        await edge.wait()
    assert alive(pid)
    e = Edged(root, "edge-1", sink)
    await e.start()
    try:
        status = await sink.wait_status("u16", running)
        assert pid_of(status) == pid
        assert cstatus(status)["restartCount"] == 0
    finally:
        await e.stop_all_pods()
        await e.stop()
    assert not alive(pid)

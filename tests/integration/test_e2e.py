"""End to end: real `fleetops cloud` and `fleetops edge` processes on loopback, real workloads.

These are the product's promises: deploy through the API and see processes run on the right nodes;
roll and delete; keep running when the cloud dies; survive a SIGKILL of the edge service while offline
without duplicating a workload; report everything that happened offline once the cloud is back.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from app.launcher import LocalCluster, Proc, tail
from app.resources import JSONObject
from tests.proxy import FaultProxy

pytestmark = pytest.mark.slow

DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
PODS = "/api/v1/namespaces/default/pods"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    c = LocalCluster(
        tmp_path, node_grace_period=3.0, status_interval=0.5, ping_interval=1.0, restart_backoff=0.2
    )
    await c.start_cloud()
    try:
        yield c
    except BaseException:
        for proc in [c.cloud, *c.edges.values()]:
            if proc is not None:
                print(f"--- {proc.name} log ---\n{tail(proc.log_path, 60)}")
        raise
    finally:
        await c.stop()


def deployment(
    name: str, command: list[str], *, replicas: int = 1, selector: dict[str, str] | None = None
) -> JSONObject:
    spec: JSONObject = {
        "terminationGracePeriodSeconds": 2,
        "containers": [{"name": "main", "image": f"example/{name}:1", "command": command}],
    }
    if selector:
        spec["nodeSelector"] = selector
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


def ready(node: JSONObject) -> str:
    for c in node.get("status", {}).get("conditions", []):
        if c.get("type") == "Ready":
            return str(c.get("status"))
    return "Missing"


def pid_of(pod: JSONObject) -> int:
    [status] = pod["status"]["containerStatuses"]
    return int(status["containerID"].removeprefix("process://"))


def running(pod: JSONObject) -> bool:
    statuses = pod.get("status", {}).get("containerStatuses", [])
    return (
        pod.get("status", {}).get("phase") == "Running"
        and bool(statuses)
        and "running" in statuses[0]["state"]
    )


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def wait_nodes(c: LocalCluster, expected: dict[str, str]) -> list[JSONObject]:
    """Wait until each named node's Ready condition has the given status."""
    result = await c.wait_until(
        "/api/v1/nodes",
        lambda lst: (
            {n["metadata"]["name"]: ready(n) for n in lst["items"] if n["metadata"]["name"] in expected}
            == expected
        ),
        timeout=30,
        what=f"nodes {expected}",
    )
    return list(result["items"])


async def wait_pods(
    c: LocalCluster, app: str, predicate: Any, what: str, timeout: float = 30
) -> list[JSONObject]:
    result = await c.wait_until(
        f"{PODS}?labelSelector=app%3D{app}", lambda lst: predicate(lst["items"]), timeout=timeout, what=what
    )
    return list(result["items"])


async def test_deploy_roll_and_delete_across_edges(cluster: LocalCluster) -> None:
    for name, site in (("edge-a1", "a"), ("edge-a2", "a"), ("edge-b1", "b")):
        await cluster.start_edge(name, {"site": site})
    nodes = await wait_nodes(cluster, {"edge-a1": "True", "edge-a2": "True", "edge-b1": "True"})
    node = next(n for n in nodes if n["metadata"]["name"] == "edge-a1")
    assert node["metadata"]["labels"]["site"] == "a"
    assert int(node["status"]["capacity"]["cpu"]) == psutil.cpu_count()
    assert node["status"]["capacity"]["memory"] == f"{psutil.virtual_memory().total // 1024}Ki"

    await cluster.request(
        "POST", DEPLOYMENTS, deployment("web", ["sleep", "3600"], replicas=2, selector={"site": "a"})
    )
    pods = await wait_pods(
        cluster, "web", lambda ps: len(ps) == 2 and all(running(p) for p in ps), "2 web pods running"
    )
    assert {p["spec"]["nodeName"] for p in pods} == {"edge-a1", "edge-a2"}  # spread over the matching nodes
    first_pids = {pid_of(p) for p in pods}
    for pid in first_pids:
        assert alive(pid) and psutil.Process(pid).cmdline() == ["sleep", "3600"]

    # A new command rolls the pods: surge one at a time, never below 2 ready.
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "main", "command": ["sleep", "3601"]}]}}}}
    await cluster.request(
        "PATCH", f"{DEPLOYMENTS}/web", patch, content_type="application/strategic-merge-patch+json"
    )
    pods = await wait_pods(
        cluster,
        "web",
        lambda ps: (
            len(ps) == 2
            and all(running(p) and p["spec"]["containers"][0]["command"][1] == "3601" for p in ps)
        ),
        "the rolled pods",
    )
    await cluster.wait_until(
        f"{DEPLOYMENTS}/web", lambda d: d.get("status", {}).get("updatedReplicas") == 2, what="rollout status"
    )
    for pid in first_pids:
        await _wait_dead(pid)

    second_pids = {pid_of(p) for p in pods}
    await cluster.request("DELETE", f"{DEPLOYMENTS}/web", {"propagationPolicy": "Background"})
    await wait_pods(cluster, "web", lambda ps: ps == [], "the pods to be deleted")
    for pid in second_pids:
        await _wait_dead(pid)


async def _wait_dead(pid: int, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while alive(pid):
            await asyncio.sleep(0.05)


async def wait_log(proc: Proc, text: str, count: int = 1, timeout: float = 20.0) -> None:
    """Wait for a line in a service's log: the one event another process offers us."""
    async with asyncio.timeout(timeout):
        while proc.log_path.read_text(errors="replace").count(text) < count:
            await asyncio.sleep(0.05)


def edge_cache(c: LocalCluster, node: str) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{c.root / node / 'edge.db'}?mode=ro", uri=True)


def offline_restart_count(c: LocalCluster, node: str, pod_name: str) -> int:
    with edge_cache(c, node) as db:
        row = db.execute("SELECT status FROM objects WHERE key = ?", (f"default/pod/{pod_name}",)).fetchone()
    if row is None or row[0] is None:
        return 0
    return int(json.loads(row[0])["containerStatuses"][0]["restartCount"])


async def test_cloud_down_then_edge_killed_workloads_survive_and_history_arrives(
    cluster: LocalCluster,
) -> None:
    await cluster.start_edge("edge-1")
    await wait_nodes(cluster, {"edge-1": "True"})
    # A duration no other test uses, so the duplicate check below can look for exactly this workload.
    marker = ["sleep", f"3600.{os.getpid()}"]
    await cluster.request("POST", DEPLOYMENTS, deployment("steady", marker))
    await cluster.request("POST", DEPLOYMENTS, deployment("flaky", ["sh", "-c", "sleep 0.3; exit 3"]))
    [steady] = await wait_pods(
        cluster, "steady", lambda ps: len(ps) == 1 and running(ps[0]), "steady running"
    )
    [flaky] = await wait_pods(
        cluster,
        "flaky",
        lambda ps: len(ps) == 1 and bool(ps[0].get("status", {}).get("containerStatuses")),
        "flaky started",
    )
    pid = pid_of(steady)

    # The cloud dies. The workload keeps running and the crash loop keeps being handled, on the edge alone.
    assert cluster.cloud is not None
    await cluster.cloud.kill()
    seen_offline = offline_restart_count(cluster, "edge-1", flaky["metadata"]["name"])
    async with asyncio.timeout(20):
        while offline_restart_count(cluster, "edge-1", flaky["metadata"]["name"]) < seen_offline + 2:
            await asyncio.sleep(0.1)
    assert alive(pid)

    # Now the edge service itself is killed and restarted, still without a cloud: it adopts, not duplicates.
    edge = cluster.edges["edge-1"]
    await edge.signal(signal.SIGKILL)
    await edge.kill()
    assert alive(pid)
    await cluster.start_edge("edge-1")
    await wait_log(cluster.edges["edge-1"], "adopted container")
    assert alive(pid)
    sleepers = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == marker]
    assert [p.pid for p in sleepers] == [pid], "the restarted edge started a duplicate workload"
    restarts_offline = offline_restart_count(cluster, "edge-1", flaky["metadata"]["name"])

    # The cloud comes back on the same addresses: the node is Ready, and what happened offline arrives.
    await cluster.start_cloud()
    await wait_nodes(cluster, {"edge-1": "True"})
    [steady] = await wait_pods(
        cluster, "steady", lambda ps: len(ps) == 1 and running(ps[0]), "steady running"
    )
    assert pid_of(steady) == pid
    await wait_pods(
        cluster,
        "flaky",
        lambda ps: ps[0]["status"]["containerStatuses"][0]["restartCount"] >= restarts_offline,
        "the offline restarts to reach the cloud",
    )
    async with asyncio.timeout(20):
        while True:
            with edge_cache(cluster, "edge-1") as db:
                if db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0:
                    break
            await asyncio.sleep(0.1)
    # The kubelet-style events recorded on the edge, offline included, are at the cloud too.
    flaky_name = flaky["metadata"]["name"]
    await cluster.wait_until(
        f"/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D{flaky_name}",
        lambda lst: (
            {"Started", "BackOff"} <= {e["reason"] for e in lst["items"]}
            and any(e["reason"] == "BackOff" and e.get("count", 1) > 1 for e in lst["items"])
        ),
        what="Started and repeated BackOff events",
    )


async def test_blackholed_link_node_goes_not_ready_and_recovers(cluster: LocalCluster) -> None:
    hub_port = int(cluster.hub.rsplit(":", 1)[1])
    proxy = FaultProxy("127.0.0.1", hub_port)
    await proxy.start()
    real_hub = cluster.hub
    try:
        cluster.hub = f"ws://127.0.0.1:{proxy.port}"
        await cluster.start_edge("edge-1")
        cluster.hub = real_hub
        await wait_nodes(cluster, {"edge-1": "True"})
        await cluster.request("POST", DEPLOYMENTS, deployment("steady", ["sleep", "3600"]))
        [pod] = await wait_pods(
            cluster, "steady", lambda ps: len(ps) == 1 and running(ps[0]), "steady running"
        )

        proxy.blackhole()
        # Past the grace period the cloud calls the node's state Unknown (kubectl shows NotReady) ...
        await wait_nodes(cluster, {"edge-1": "Unknown"})
        [pod] = await wait_pods(
            cluster,
            "steady",
            lambda ps: any(
                c["type"] == "Ready" and c["status"] == "False" for c in ps[0]["status"]["conditions"]
            ),
            "the pod marked not ready",
        )
        assert alive(pid_of(pod))  # ... and the workload, on the edge, does not care.

        proxy.heal()
        proxy.cut()
        await wait_nodes(cluster, {"edge-1": "True"})
        await wait_pods(
            cluster, "steady", lambda ps: running(ps[0]) and _pod_ready(ps[0]), "the pod ready again"
        )
        # Both transitions are on record as Events, for `kubectl describe node` and `get events`.
        await cluster.wait_until(
            "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dedge-1",
            lambda lst: {"NodeNotReady", "NodeReady"} <= {e["reason"] for e in lst["items"]},
            what="NodeNotReady and NodeReady events",
        )
    finally:
        await proxy.stop()


def _pod_ready(pod: JSONObject) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


async def test_corrupt_edge_cache_is_rebuilt_from_the_cloud_without_restarting_workloads(
    cluster: LocalCluster,
) -> None:
    await cluster.start_edge("edge-1")
    await wait_nodes(cluster, {"edge-1": "True"})
    await cluster.request("POST", DEPLOYMENTS, deployment("steady", ["sleep", "3600"]))
    [pod] = await wait_pods(cluster, "steady", lambda ps: len(ps) == 1 and running(ps[0]), "steady running")
    pid = pid_of(pod)
    await cluster.edges["edge-1"].kill()
    cache = cluster.root / "edge-1" / "edge.db"
    cache.write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        Path(f"{cache}{suffix}").unlink(missing_ok=True)

    edge = await cluster.start_edge("edge-1")
    await wait_log(edge, "edge edge-1 connected", count=2)
    log = tail(edge.log_path, 200)
    assert "is unusable" in log and "rebuilding from the cloud" in log
    await wait_log(edge, "adopted container", count=1)
    [pod] = await wait_pods(cluster, "steady", lambda ps: len(ps) == 1 and running(ps[0]), "steady running")
    assert pid_of(pod) == pid and alive(pid)
    assert "started container" not in tail(edge.log_path, 200).split("is unusable")[1]
    assert list((cluster.root / "edge-1").glob("edge.db.corrupt-*")), "the bad file is kept for a post-mortem"


async def test_edge_with_a_wrong_token_is_refused_and_others_carry_on(cluster: LocalCluster) -> None:
    await cluster.start_edge("edge-good")
    good_token = cluster.join_token
    cluster.join_token = "abcdef.0000000000000000"
    try:
        intruder = await cluster.start_edge("edge-bad")
    finally:
        cluster.join_token = good_token
    await wait_log(intruder, "HTTP 401")
    nodes = await wait_nodes(cluster, {"edge-good": "True"})
    assert "edge-bad" not in {n["metadata"]["name"] for n in nodes}


def kubectl(c: LocalCluster, *args: str, stdin: str | None = None) -> str:
    if shutil.which("kubectl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubectl is required in CI but is not on PATH")
        pytest.skip("kubectl is not on PATH")
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(c.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, f"kubectl {' '.join(args)} failed: {out.stderr}"
    return out.stdout


MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: sensor
spec:
  replicas: 2
  selector:
    matchLabels: {app: sensor}
  strategy:
    rollingUpdate: {maxSurge: 0, maxUnavailable: 1}
  template:
    metadata:
      labels: {app: sensor}
    spec:
      nodeSelector: {site: a}
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: example/sensor:IMAGE
        command: ["sleep", "SECONDS"]
"""


@pytest.mark.kubectl
async def test_kubectl_drives_real_edges(cluster: LocalCluster) -> None:
    await cluster.start_edge("edge-a1", {"site": "a"})
    await cluster.start_edge("edge-b1", {"site": "b"})
    await wait_nodes(cluster, {"edge-a1": "True", "edge-b1": "True"})
    nodes = await asyncio.to_thread(kubectl, cluster, "get", "nodes", "--show-labels")
    assert "edge-a1   Ready" in nodes and "site=a" in nodes and "edge-b1   Ready" in nodes

    manifest = MANIFEST.replace("IMAGE", "1").replace("SECONDS", "3600")
    out = await asyncio.to_thread(kubectl, cluster, "apply", "-f", "-", stdin=manifest)
    assert "deployment.apps/sensor created" in out
    await wait_pods(
        cluster, "sensor", lambda ps: len(ps) == 2 and all(running(p) for p in ps), "sensor running"
    )
    wide = await asyncio.to_thread(kubectl, cluster, "get", "pods", "-o", "wide")
    rows = [line.split() for line in wide.splitlines()[1:]]
    assert len(rows) == 2 and all(r[2] == "Running" and r[6] == "edge-a1" for r in rows), wide

    # Re-applying a changed image and command rolls the pods, one at a time (maxUnavailable 1, no surge).
    changed = MANIFEST.replace("IMAGE", "2").replace("SECONDS", "3602")
    out = await asyncio.to_thread(kubectl, cluster, "apply", "-f", "-", stdin=changed)
    assert "configured" in out
    status = await asyncio.to_thread(
        kubectl, cluster, "rollout", "status", "deployment/sensor", "--timeout=60s"
    )
    assert "successfully rolled out" in status
    pods = await wait_pods(
        cluster,
        "sensor",
        lambda ps: (
            len(ps) == 2
            and all(running(p) and p["spec"]["containers"][0]["image"].endswith(":2") for p in ps)
        ),
        "rolled pods",
    )
    assert all(psutil.Process(pid_of(p)).cmdline() == ["sleep", "3602"] for p in pods)

    # Undo goes back to the first ReplicaSet (reused, not recreated) under a new revision.
    await asyncio.to_thread(kubectl, cluster, "rollout", "undo", "deployment/sensor")
    await asyncio.to_thread(kubectl, cluster, "rollout", "status", "deployment/sensor", "--timeout=60s")
    rs = (await cluster.request("GET", "/apis/apps/v1/namespaces/default/replicasets"))["items"]
    assert len(rs) == 2, [r["metadata"]["name"] for r in rs]
    history = await asyncio.to_thread(kubectl, cluster, "rollout", "history", "deployment/sensor")
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["2", "3"], history

    # Drain evicts the node's pods (they wait, unschedulable, for a matching node); uncordon brings them back.
    drained = await asyncio.to_thread(kubectl, cluster, "drain", "edge-a1", "--timeout=60s")
    assert "node/edge-a1 drained" in drained
    pending = await wait_pods(cluster, "sensor", lambda ps: len(ps) == 2, "replacement pods")
    assert all(not p["spec"].get("nodeName") for p in pending)
    await asyncio.to_thread(kubectl, cluster, "uncordon", "edge-a1")
    pods = await wait_pods(cluster, "sensor", lambda ps: len(ps) == 2 and all(running(p) for p in ps), "back")

    out = await asyncio.to_thread(kubectl, cluster, "delete", "-f", "-", stdin=changed)
    assert 'deployment.apps "sensor" deleted' in out
    await wait_pods(cluster, "sensor", lambda ps: ps == [], "the pods to be gone")
    for p in pods:
        await _wait_dead(pid_of(p))


@pytest.mark.kubectl
async def test_kubectl_logs_through_the_tunnel(cluster: LocalCluster) -> None:
    await cluster.start_edge("edge-1")
    await wait_nodes(cluster, {"edge-1": "True"})
    script = (
        'for i in 1 2 3 4 5; do echo "line $i"; done; echo "oops" >&2; '
        "while true; do sleep 0.2; echo tick; done"
    )
    await cluster.request("POST", DEPLOYMENTS, deployment("talker", ["sh", "-c", script]))
    [pod] = await wait_pods(cluster, "talker", lambda ps: len(ps) == 1 and running(ps[0]), "talker running")
    name = pod["metadata"]["name"]

    async with asyncio.timeout(20):  # until the loop has ticked twice, so the tail below is all ticks
        while (out := await asyncio.to_thread(kubectl, cluster, "logs", name)).count("tick") < 2:
            await asyncio.sleep(0.2)
    lines = out.splitlines()
    assert lines[:6] == ["line 1", "line 2", "line 3", "line 4", "line 5", "oops"], out

    tail = await asyncio.to_thread(kubectl, cluster, "logs", name, "--tail", "2", "--timestamps")
    stamped = [line.split(" ", 1) for line in tail.splitlines()]
    assert [text for _, text in stamped] == ["tick", "tick"], tail
    assert all(ts.endswith("Z") and ts[4] == "-" and "T" in ts for ts, _ in stamped), tail

    # -f follows: a line written after kubectl started reaches it through the tunnel.
    proc = await asyncio.create_subprocess_exec(
        "kubectl",
        "--kubeconfig",
        str(cluster.kubeconfig),
        "logs",
        "-f",
        "--tail",
        "0",
        name,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(15):
            assert (await proc.stdout.readline()).decode().strip() == "tick"
    finally:
        proc.terminate()
        await proc.wait()

    # A node without a tunnel answers at once (a hang would end in kubectl's own timeout), and says why.
    await cluster.edges["edge-1"].kill()
    await wait_nodes(cluster, {"edge-1": "Unknown"})
    result = await asyncio.to_thread(
        subprocess.run,
        ["kubectl", "--kubeconfig", str(cluster.kubeconfig), "--request-timeout=5s", "logs", name],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0 and "edge-1 is offline" in result.stderr, result.stderr
    # Bring the edge back so that it adopts the workload it left behind, and stops it at teardown.
    await wait_log(await cluster.start_edge("edge-1"), "adopted container")


@pytest.mark.kubectl
async def test_kubectl_exec_through_the_tunnel(cluster: LocalCluster) -> None:
    await cluster.start_edge("edge-1")
    await wait_nodes(cluster, {"edge-1": "True"})
    spec = deployment("shell", ["sleep", "3600"])
    spec["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "GREETING", "value": "hello from the edge"}
    ]
    await cluster.request("POST", DEPLOYMENTS, spec)
    [pod] = await wait_pods(cluster, "shell", lambda ps: len(ps) == 1 and running(ps[0]), "shell running")
    name = pod["metadata"]["name"]
    base = ["kubectl", "--kubeconfig", str(cluster.kubeconfig), "--request-timeout=20s", "exec"]

    # The command sees the container's environment; stdout, stderr and the exit code come back.
    run = await asyncio.to_thread(
        subprocess.run,
        [*base, name, "--", "sh", "-c", 'echo "$GREETING"; echo problem >&2; exit 3'],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.stdout == "hello from the edge\n" and run.stderr.startswith("problem\n"), run
    assert run.returncode == 3

    # stdin is relayed, and closing it ends the command.
    run = await asyncio.to_thread(
        subprocess.run,
        [*base, "-i", name, "--", "tr", "a-z", "A-Z"],
        input="shout\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (run.returncode, run.stdout) == (0, "SHOUT\n"), run

    # An interactive shell on a pseudo-terminal, driven the way a person would.
    proc = await asyncio.create_subprocess_exec(
        "script",
        "-qec",
        " ".join([*base, "-it", name, "--", "sh"]),
        "/dev/null",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"echo tty:$(tty | cut -c1-8)\nexit 7\n")
    await proc.stdin.drain()
    async with asyncio.timeout(30):
        out = await proc.stdout.read()
        code = await proc.wait()
    assert b"tty:/dev/pts" in out, out
    assert code == 7

    # A node without a tunnel: kubectl exec fails at once, saying so.
    await cluster.edges["edge-1"].kill()
    await wait_nodes(cluster, {"edge-1": "Unknown"})
    run = await asyncio.to_thread(
        subprocess.run, [*base, name, "--", "true"], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode != 0 and "edge-1 is offline" in run.stderr, run.stderr
    await wait_log(await cluster.start_edge("edge-1"), "adopted container")


async def test_metrics_and_health_on_cloud_and_edge(cluster: LocalCluster) -> None:
    edge = await cluster.start_edge("edge-1")
    await wait_nodes(cluster, {"edge-1": "True"})
    await cluster.request("POST", DEPLOYMENTS, deployment("steady", ["sleep", "3600"]))
    await wait_pods(cluster, "steady", lambda ps: len(ps) == 1 and running(ps[0]), "steady running")
    headers = {"Authorization": f"Bearer {cluster.token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for path in ("/healthz", "/readyz", "/livez"):
            async with session.get(cluster.api + path, ssl=cluster._ssl or True) as resp:
                assert (resp.status, await resp.text()) == (200, "ok")
        async with session.get(cluster.api + "/metrics", ssl=cluster._ssl or True) as resp:
            cloud = await resp.text()
        local = json.loads((cluster.root / "edge-1" / "endpoints.json").read_text())["localApi"]
        async with session.get(local + "/metrics") as resp:
            edge_metrics = await resp.text()
        async with session.get(local + "/readyz") as resp:
            assert resp.status == 200
    assert "fleetops_hub_connected_edges 1.0" in cloud
    assert 'fleetops_pods{phase="Running"} 1.0' in cloud
    assert "fleetops_edge_cloud_connected 1.0" in edge_metrics
    assert 'fleetops_edge_pods{phase="Running"} 1.0' in edge_metrics
    assert edge.running


@pytest.mark.kubectl
async def test_kubectl_top_shows_usage_measured_on_the_edge(cluster: LocalCluster) -> None:
    await cluster.start_edge("edge-1")
    await wait_nodes(cluster, {"edge-1": "True"})
    await cluster.request("POST", DEPLOYMENTS, deployment("busy", ["python3", "-c", "while True: pass"]))
    [pod] = await wait_pods(cluster, "busy", lambda ps: len(ps) == 1 and running(ps[0]), "busy running")

    def cpu_millicores() -> int:
        out = kubectl(cluster, "top", "pod", pod["metadata"]["name"], "--no-headers")
        return int(out.split()[1].removesuffix("m"))

    async with asyncio.timeout(30):  # the first heartbeats after the pod started carry its rate
        while True:
            try:
                if await asyncio.to_thread(cpu_millicores) > 300:
                    break
            except AssertionError:  # "metrics not available yet"
                pass
            await asyncio.sleep(0.5)
    nodes = await asyncio.to_thread(kubectl, cluster, "top", "nodes", "--no-headers")
    assert nodes.split()[0] == "edge-1" and nodes.split()[1].endswith("m"), nodes


@pytest.mark.kubectl
async def test_configmaps_and_secrets_reach_the_pods_that_use_them_and_only_those(
    cluster: LocalCluster,
) -> None:
    await cluster.start_edge("edge-1")
    await wait_nodes(cluster, {"edge-1": "True"})
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "plc"},
        "data": {"address": "10.0.0.7"},
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds"},
        "stringData": {"password": "s3cret"},
    }
    unused = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unused"}, "stringData": {"k": "v"}}
    for obj, plural in ((cm, "configmaps"), (secret, "secrets"), (unused, "secrets")):
        await cluster.request("POST", f"/api/v1/namespaces/default/{plural}", obj)
    spec = deployment("reader", ["sleep", "3600"])
    pod_spec = spec["spec"]["template"]["spec"]
    pod_spec["containers"][0]["env"] = [
        {"name": "PLC", "valueFrom": {"configMapKeyRef": {"name": "plc", "key": "address"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
    ]
    pod_spec["containers"][0]["volumeMounts"] = [{"name": "config", "mountPath": "/etc/fleetops-test/plc"}]
    pod_spec["volumes"] = [{"name": "config", "configMap": {"name": "plc"}}]
    await cluster.request("POST", DEPLOYMENTS, spec)
    [pod] = await wait_pods(cluster, "reader", lambda ps: len(ps) == 1 and running(ps[0]), "reader running")
    name = pod["metadata"]["name"]

    env = await asyncio.to_thread(kubectl, cluster, "exec", name, "--", "sh", "-c", 'echo "$PLC $PASSWORD"')
    assert env == "10.0.0.7 s3cret\n"
    read = ["exec", name, "--", "cat", "/etc/fleetops-test/plc/address"]
    assert await asyncio.to_thread(kubectl, cluster, *read) == "10.0.0.7"

    # A change reaches the mounted file in place; the process is not restarted.
    patch = {"data": {"address": "10.0.0.8"}}
    await cluster.request(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/plc",
        patch,
        content_type="application/merge-patch+json",
    )
    async with asyncio.timeout(20):
        while await asyncio.to_thread(kubectl, cluster, *read) != "10.0.0.8":
            await asyncio.sleep(0.2)
    [pod] = await wait_pods(cluster, "reader", lambda ps: len(ps) == 1, "reader")
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0

    # The node holds what its pods reference, and nothing else.
    with edge_cache(cluster, "edge-1") as db:
        keys = {k for (k,) in db.execute("SELECT key FROM objects")}
    assert {"default/configmap/plc", "default/secret/creds"} <= keys
    assert "default/secret/unused" not in keys

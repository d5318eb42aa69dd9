"""Usage for ``kubectl top``: quantity formats, the sampler's rates over a scripted process table, and the
cloud's UsageStore shapes, validation and staleness."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any

import pytest

from cloudservice.usage import UsageSampleError, UsageStore, parse_sample
from edgeservice.usage import (
    NodeStat,
    ProcHost,
    ProcStat,
    UsageSampler,
    format_cpu,
    format_memory,
    format_window,
)

JSONObject = dict[str, Any]
MiB = 1024 * 1024

# -- quantities -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cores", "text"),
    [
        (0.0, "0"),
        (-0.5, "0"),
        (0.25, "250m"),
        (1.5, "1500m"),
        (2.0, "2"),
        (0.000123456, "123456n"),
        (0.1234567891, "123456789n"),
        (1e-10, "0"),
    ],
)
def test_format_cpu(cores: float, text: str) -> None:
    assert format_cpu(cores) == text


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [(0, "0Ki"), (1023, "0Ki"), (1024, "1Ki"), (1536, "1Ki"), (10 * MiB, "10240Ki"), (-5, "0Ki")],
)
def test_format_memory(num_bytes: int, text: str) -> None:
    assert format_memory(num_bytes) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(10.0, "10s"), (10.25, "10.25s"), (9.9996, "10s"), (0.0004, "0s"), (65.5, "65.5s"), (-1.0, "0s")],
)
def test_format_window(seconds: float, text: str) -> None:
    assert format_window(seconds) == text


# -- the sampler over a scripted /proc ------------------------------------------------------------------


class FakeHost:
    """The sampler's HostReader seam: a process table and node counters the test edits."""

    def __init__(self) -> None:
        self.procs: dict[int, ProcStat] = {}
        self.node_cpu = 0.0
        self.node_memory = 512 * MiB

    def processes(self) -> list[ProcStat]:
        return list(self.procs.values())

    def node(self) -> NodeStat:
        return NodeStat(self.node_cpu, self.node_memory)

    def add(
        self, pid: int, ppid: int, session: int, *, start: float = 0.0, cpu: float = 0.0, rss: int = 0
    ) -> None:
        self.procs[pid] = ProcStat(pid, ppid, session, start, cpu, 0.0, rss)

    def bump(self, pid: int, cpu: float = 0.0, children_cpu: float = 0.0) -> None:
        p = self.procs[pid]
        self.procs[pid] = replace(p, cpu=p.cpu + cpu, children_cpu=p.children_cpu + children_cpu)

    def reap(self, pid: int) -> None:
        """``pid`` exits and its parent waits for it: its whole time moves to the parent's children time."""
        p = self.procs.pop(pid)
        self.bump(p.ppid, children_cpu=p.cpu + p.children_cpu)

    def start_container(self, shim: int, main: int, *, start: float, rss: int = 10 * MiB) -> None:
        self.add(shim, 1, shim, start=start, rss=3 * MiB)  # the shim leads its own session
        self.add(main, shim, shim, start=start, rss=rss)


class FakeEdged:
    """The PodStatusSource seam: statuses by pod uid."""

    def __init__(self) -> None:
        self.statuses: dict[str, JSONObject] = {}

    def status_of(self, uid: str) -> JSONObject | None:
        return self.statuses.get(uid)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_pod(uid: str, name: str, labels: dict[str, str] | None = None) -> JSONObject:
    return {"metadata": {"uid": uid, "name": name, "namespace": "prod", "labels": labels or {}}}


def running(**pids: int) -> JSONObject:
    return {
        "phase": "Running",
        "containerStatuses": [
            {"name": n, "containerID": f"process://{pid}", "state": {"running": {"startedAt": "x"}}}
            for n, pid in pids.items()
        ],
    }


@pytest.fixture
def world() -> tuple[FakeHost, FakeEdged, Clock, list[JSONObject], UsageSampler]:
    host, edged, clock = FakeHost(), FakeEdged(), Clock()
    pods: list[JSONObject] = []
    sampler = UsageSampler(edged, lambda: pods, host=host, clock=clock)
    return host, edged, clock, pods, sampler


def usage_of(sample: JSONObject, pod: str, container: str) -> JSONObject | None:
    for p in sample["pods"]:
        for c in p["containers"]:
            if p["name"] == pod and c["name"] == container:
                return dict(c["usage"])
    return None


def test_first_sample_is_a_baseline_then_rates_follow(world: Any) -> None:
    host, edged, clock, pods, sampler = world
    host.start_container(100, 101, start=10.0, rss=20 * MiB)
    host.add(102, 101, 100, start=20.0, cpu=5.0, rss=4 * MiB)  # a worker the main process forked
    host.node_cpu = 400.0
    pods.append(make_pod("u1", "web", {"app": "web"}))
    edged.statuses["u1"] = running(app=101)

    first = sampler.sample()
    assert "node" not in first and first["pods"] == []  # nothing to divide yet
    assert first["timestamp"].endswith("Z")

    clock.now += 10.0
    host.node_cpu += 15.0  # 1.5 cores busy
    host.bump(101, cpu=2.0)
    host.bump(102, cpu=3.0)
    host.bump(100, cpu=7.0)  # the shim's own work (log pumping) is not the container's
    second = sampler.sample()
    assert second["node"] == {"cpu": "1500m", "memory": "524288Ki", "window": "10s"}
    assert second["window"] == "10s"
    assert second["pods"] == [
        {
            "namespace": "prod",
            "name": "web",
            "labels": {"app": "web"},
            "window": "10s",
            "containers": [{"name": "app", "usage": {"cpu": "500m", "memory": "24576Ki"}}],
        }
    ]


def test_exits_inside_the_container_neither_drop_nor_double_count(world: Any) -> None:
    host, edged, clock, pods, sampler = world
    host.start_container(100, 101, start=10.0)
    host.add(102, 101, 100, start=20.0)
    host.add(103, 102, 100, start=20.0)
    pods.append(make_pod("u1", "web"))
    edged.statuses["u1"] = running(app=101)
    sampler.sample()

    clock.now += 10.0
    host.bump(102, cpu=1.0)
    host.bump(103, cpu=1.0)
    host.reap(103)  # a grandchild ran 1 s, exited and was reaped by its parent
    assert usage_of(sampler.sample(), "web", "app") == {"cpu": "200m", "memory": "10240Ki"}

    clock.now += 10.0
    host.bump(102, cpu=0.5)
    # 102 dies; its orphans would go to the shim (a subreaper), here the main process reaps it.
    host.reap(102)  # 102 carries 1.5 s own + 1 s of its reaped child into 101's children time
    assert usage_of(sampler.sample(), "web", "app") == {"cpu": "50m", "memory": "10240Ki"}

    clock.now += 10.0
    host.add(104, 100, 100, start=clock.now - 5)  # an orphan re-parented to the shim
    host.bump(104, cpu=2.0)
    host.reap(104)  # ...reaped by the shim: counted through the shim's children time
    assert usage_of(sampler.sample(), "web", "app") == {"cpu": "200m", "memory": "10240Ki"}


def test_a_container_started_since_the_last_sample_is_reported_at_once(world: Any) -> None:
    host, edged, clock, pods, sampler = world
    sampler.sample()
    clock.now += 10.0
    host.start_container(200, 201, start=clock.now - 4.0)
    host.bump(201, cpu=2.0)
    pods.append(make_pod("u2", "batch"))
    edged.statuses["u2"] = running(job=201)
    sample = sampler.sample()
    assert usage_of(sample, "batch", "job") == {"cpu": "500m", "memory": "10240Ki"}
    assert sample["pods"][0]["window"] == "4s"  # the container's own lifetime


def test_a_restarted_container_starts_over(world: Any) -> None:
    host, edged, clock, pods, sampler = world
    host.start_container(100, 101, start=10.0)
    pods.append(make_pod("u1", "web"))
    edged.statuses["u1"] = running(app=101)
    sampler.sample()
    clock.now += 10.0
    host.bump(101, cpu=50.0)
    sampler.sample()
    # It crashed and was restarted under a new shim; its counters start from zero again.
    del host.procs[100], host.procs[101]
    clock.now += 10.0
    host.start_container(300, 301, start=clock.now - 2.0)
    host.bump(301, cpu=0.2)
    edged.statuses["u1"] = running(app=301)
    assert usage_of(sampler.sample(), "web", "app") == {"cpu": "100m", "memory": "10240Ki"}


def test_readings_closer_than_min_window_repeat_the_last_rate(world: Any) -> None:
    host, edged, clock, pods, sampler = world
    host.start_container(100, 101, start=10.0)
    pods.append(make_pod("u1", "web"))
    edged.statuses["u1"] = running(app=101)
    sampler.sample()
    clock.now += 10.0
    host.bump(101, cpu=1.0)
    host.node_cpu += 10.0
    assert usage_of(sampler.sample(), "web", "app") == {"cpu": "100m", "memory": "10240Ki"}

    clock.now += 0.2
    host.bump(101, cpu=0.2)  # 1000m for 0.2 s: too short a window to say
    host.procs[101] = replace(host.procs[101], rss=12 * MiB)
    quick = sampler.sample()
    assert usage_of(quick, "web", "app") == {"cpu": "100m", "memory": "12288Ki"}  # memory is always now
    assert quick["node"]["cpu"] == "1" and quick["node"]["window"] == "10s"

    clock.now += 9.8  # the baseline was kept, so this window is the full 10 s
    assert usage_of(sampler.sample(), "web", "app") == {"cpu": "20m", "memory": "12288Ki"}


def test_what_is_not_measured(world: Any) -> None:
    host, edged, clock, pods, sampler = world
    host.start_container(100, 101, start=10.0)
    host.add(401, 1, 1, start=10.0, cpu=1.0, rss=MiB)  # a recycled pid: not under a shim
    host.add(402, 401, 1, start=10.0, rss=MiB)
    pods.extend(
        [make_pod("u1", "web"), make_pod("u3", "gone"), make_pod("u4", "waiting"), make_pod("u5", "odd")]
    )
    edged.statuses["u1"] = running(app=101, sidecar=999)  # 999 exited since its status was read
    edged.statuses["u3"] = running(app=998)
    edged.statuses["u4"] = {
        "containerStatuses": [
            {"name": "app", "containerID": "", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
        ]
    }
    edged.statuses["u5"] = running(app=401)
    pods.append({"metadata": {"name": "no-uid"}})
    sampler.sample()
    clock.now += 10.0
    host.bump(401, cpu=1.0)
    sample = sampler.sample()
    assert [(p["name"], [c["name"] for c in p["containers"]]) for p in sample["pods"]] == [
        ("odd", ["app"]),
        ("web", ["app"]),
    ]
    # The process that is not under a shim is measured with its descendants only.
    assert usage_of(sample, "odd", "app") == {"cpu": "100m", "memory": "2048Ki"}


def test_init_containers_that_run_are_measured(world: Any) -> None:
    host, edged, clock, pods, sampler = world
    host.start_container(100, 101, start=10.0)
    pods.append(make_pod("u1", "web"))
    status = running()
    status["initContainerStatuses"] = running(migrate=101)["containerStatuses"]
    edged.statuses["u1"] = status
    sampler.sample()
    clock.now += 10.0
    host.bump(101, cpu=10.0)
    assert usage_of(sampler.sample(), "web", "migrate") == {"cpu": "1", "memory": "10240Ki"}


def test_proc_host_reads_this_process() -> None:
    host = ProcHost()
    me = host.read(os.getpid())
    assert me is not None
    assert (me.ppid, me.session) == (os.getppid(), os.getsid(0))
    assert me.rss > MiB and me.cpu > 0
    assert 0 < me.start <= time.clock_gettime(time.CLOCK_BOOTTIME)
    assert os.getpid() in {p.pid for p in host.processes()}
    assert host.read(2**22 + 1) is None  # above pid_max: no such process
    node = host.node()
    assert node.cpu > 0 and node.memory > 0


# -- the cloud's store -------------------------------------------------------------------------------------

SAMPLE: JSONObject = {
    "timestamp": "2026-01-02T03:04:05Z",
    "window": "10s",
    "node": {"cpu": "1500m", "memory": "524288Ki", "window": "10s"},
    "pods": [
        {
            "namespace": "prod",
            "name": "web",
            "labels": {"app": "web"},
            "window": "9.5s",
            "containers": [{"name": "app", "usage": {"cpu": "123456n", "memory": "24576Ki"}}],
        },
        {
            "namespace": "dev",
            "name": "job",
            "containers": [{"name": "main", "usage": {"cpu": "0", "memory": "0Ki"}}],
        },
    ],
}


def test_store_shapes() -> None:
    store = UsageStore(clock=Clock())
    assert store.update("edge-1", SAMPLE)
    node = store.node_metrics("edge-1")
    assert node is not None
    created = node["metadata"].pop("creationTimestamp")
    assert created.endswith("Z")
    assert node == {
        "kind": "NodeMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": "edge-1"},
        "timestamp": "2026-01-02T03:04:05Z",
        "window": "10s",
        "usage": {"cpu": "1500m", "memory": "524288Ki"},
    }
    pod = store.pod_metrics("prod", "web")
    assert pod is not None
    pod["metadata"].pop("creationTimestamp")
    assert pod == {
        "kind": "PodMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": "web", "namespace": "prod", "labels": {"app": "web"}},
        "timestamp": "2026-01-02T03:04:05Z",
        "window": "9.5s",
        "containers": [{"name": "app", "usage": {"cpu": "123456n", "memory": "24576Ki"}}],
    }
    everything = store.list_pod_metrics()
    assert (everything["kind"], everything["apiVersion"]) == ("PodMetricsList", "metrics.k8s.io/v1beta1")
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in everything["items"]] == [
        ("dev", "job"),
        ("prod", "web"),
    ]
    assert [p["metadata"]["name"] for p in store.list_pod_metrics("dev")["items"]] == ["job"]
    assert store.list_pod_metrics("nope")["items"] == []
    nodes = store.list_node_metrics()
    assert nodes["kind"] == "NodeMetricsList" and [n["metadata"]["name"] for n in nodes["items"]] == [
        "edge-1"
    ]
    assert store.pod_metrics("prod", "nope") is None and store.node_metrics("edge-2") is None


def test_store_reports_stale_samples_as_missing() -> None:
    clock = Clock()
    store = UsageStore(max_age=30.0, clock=clock)
    store.update("edge-1", SAMPLE)
    clock.now += 30.0
    assert store.node_metrics("edge-1") is not None
    clock.now += 0.1
    assert store.node_metrics("edge-1") is None
    assert store.pod_metrics("prod", "web") is None
    assert store.list_node_metrics()["items"] == [] and store.list_pod_metrics()["items"] == []
    store.update("edge-1", SAMPLE)  # the node is back
    assert store.node_metrics("edge-1") is not None
    store.forget("edge-1")
    assert store.node_metrics("edge-1") is None


def test_store_node_without_usage_yet_still_serves_its_pods() -> None:
    store = UsageStore(clock=Clock())
    store.update("edge-1", {**SAMPLE, "node": None})
    assert store.node_metrics("edge-1") is None and store.list_node_metrics()["items"] == []
    assert store.pod_metrics("prod", "web") is not None


def test_a_pod_seen_on_two_nodes_is_taken_from_the_latest_sample() -> None:
    clock = Clock()
    store = UsageStore(clock=clock)
    store.update("edge-b", SAMPLE)
    clock.now += 1
    moved = {**SAMPLE, "pods": [{**SAMPLE["pods"][0], "window": "3s"}]}
    store.update("edge-a", moved)
    pod = store.pod_metrics("prod", "web")
    assert pod is not None and pod["window"] == "3s"
    assert len(store.list_pod_metrics("prod")["items"]) == 1


@pytest.mark.parametrize(
    ("sample", "field"),
    [
        ([], ""),
        ({**SAMPLE, "timestamp": "yesterday"}, "timestamp"),
        ({**SAMPLE, "timestamp": None}, "timestamp"),
        ({**SAMPLE, "node": {"cpu": "-1", "memory": "1Ki"}}, "node.cpu"),
        ({**SAMPLE, "node": {"cpu": "1m"}}, "node.memory"),
        ({**SAMPLE, "node": "busy"}, "node"),
        ({**SAMPLE, "window": 10}, "window"),
        ({**SAMPLE, "pods": {}}, "pods"),
        ({**SAMPLE, "pods": ["web"]}, "pods[0]"),
        ({**SAMPLE, "pods": [{"namespace": "a", "name": "b", "containers": None}]}, "pods[0].containers"),
        ({**SAMPLE, "pods": [{"namespace": "", "name": "b", "containers": []}]}, "pods[0].namespace"),
        (
            {**SAMPLE, "pods": [{"namespace": "a", "name": "b", "labels": [], "containers": []}]},
            "pods[0].labels",
        ),
        (
            {**SAMPLE, "pods": [{"namespace": "a", "name": "b", "containers": [{"name": "c", "usage": {}}]}]},
            "pods[0].containers[0].usage.cpu",
        ),
        (
            {
                **SAMPLE,
                "pods": [
                    {"namespace": "a", "name": "b", "containers": [{"usage": {"cpu": "1", "memory": "1"}}]}
                ],
            },
            "pods[0].containers[0].name",
        ),
    ],
)
def test_malformed_samples_are_refused_with_the_field(sample: Any, field: str) -> None:
    with pytest.raises(UsageSampleError) as info:
        parse_sample("edge-1", sample)
    assert (info.value.node, info.value.field) == ("edge-1", field)
    store = UsageStore(clock=Clock())
    store.update("edge-1", SAMPLE)
    assert not store.update("edge-1", sample)
    assert store.node_metrics("edge-1") is not None  # the last good sample stays

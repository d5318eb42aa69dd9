"""Resource usage of the node and of each running container, for ``kubectl top`` (metrics.k8s.io).

The edge measures; the cloud only keeps the latest sample per node and serves it (``cloudservice.usage``).
A sample is taken with every heartbeat and rides on it, so usage costs no extra message and is as fresh as
the node's status.

What a container is, without cgroups: the runtime starts each container's main process under a shim that
is a session leader and a child subreaper (``edged/shim.py``). Every process the container ever starts is
therefore a descendant of the shim, even after it double-forks or calls ``setsid`` itself: orphans are
re-parented to the shim, not to init. The container's processes are the shim's descendants (the shim
itself excluded); its main process is ``process://<pid>`` in the container status, the shim is its parent.

CPU is a rate, so it needs two readings. The reading of a container is a counter that never goes back:
the shim's *reaped children* time plus, for every descendant, its own and its reaped children's user and
system time. When a descendant exits, its parent (a descendant or the shim) reaps it and the kernel adds
its whole time to the parent's children time, so the sum carries over exactly instead of dropping (which
would read as negative usage) or counting twice. The rate is the counter's increase over the wall time
between readings (``CLOCK_BOOTTIME``, the clock ``/proc/<pid>/stat`` start times are counted on).
A container seen for the first time is reported at once if its shim started since the previous sample
(its whole counter was spent since then); otherwise the reading is only a baseline and the container is
left out until the next sample. Readings closer together than ``min_window`` keep the baseline and repeat
the last rate: with 10 ms clock ticks a short window is mostly noise.

Memory is the resident set size summed over the container's processes: the closest thing to the kubelet's
"working set" without a cgroup (pages shared between the processes count once per process; page cache is
not counted). The node's memory is ``total - available``, its CPU the non-idle time in ``/proc/stat``.

Cost: one pass over ``/proc/<pid>/stat`` of every process on the box (one read each, which carries the
parent, session, start time, CPU times and RSS together; about 15 us a process with the parsing, a sixth of
what psutil's per-process calls take) plus ``/proc/stat`` and ``/proc/meminfo``. Measured: 50 containers
(about 250 processes) in 8 ms on a 2-core VM with one core kept busy. :meth:`UsageSampler.collect` reads
Edged and must run on the event loop's thread; :meth:`UsageSampler.measure` does the ``/proc`` I/O, holds
a lock around the sampler's state and may run in a worker thread.

Not done: cgroup accounting (so no limits, no page cache, no network or disk I/O usage), per-container
timestamps (a pod has one window), and pid-reuse detection: between a container's exit and Edged reporting
it (milliseconds: exits are watched on a pidfd), a recycled pid would be measured as the container. A main
process whose parent does not lead its session is measured with its own descendants only.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from app.resources import JSONObject, now_rfc3339
from edgeservice import procfs

log = logging.getLogger(__name__)

# Readings closer together than this keep their baseline: CPU times move in clock ticks (10 ms at the
# usual USER_HZ of 100), so below a second the tick rounding alone is worth 10m of CPU.
DEFAULT_MIN_WINDOW = 1.0
_PROC = Path("/proc")
_CONTAINER_ID_PREFIX = "process://"
# /proc/<pid>/stat is 52 numbers and a command name of at most 64 bytes: well under this.
_STAT_MAX = 4096


def _boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


# -- quantities -------------------------------------------------------------------------------------------


def format_cpu(cores: float) -> str:
    """A CPU rate in cores as metrics-server writes it: whole nanocores (``"250000000n"``), canonical
    Kubernetes units when they are exact (``"250m"``, ``"2"``), never negative."""
    nanos = max(0, round(cores * 1e9))
    if nanos == 0:
        return "0"
    if nanos % 1_000_000_000 == 0:
        return str(nanos // 1_000_000_000)
    if nanos % 1_000_000 == 0:
        return f"{nanos // 1_000_000}m"
    return f"{nanos}n"


def format_memory(num_bytes: int) -> str:
    """Memory in kibibytes (``"10240Ki"``), rounded down, as metrics-server reports the working set."""
    return f"{max(0, num_bytes) // 1024}Ki"


def format_window(seconds: float) -> str:
    """A Go duration string (``"10.25s"``), which is how metrics.k8s.io serializes ``window``.
    Millisecond precision; Go would write ``1m5s`` past a minute, but ``65s`` parses the same."""
    text = f"{max(0.0, seconds):.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


# -- what the sampler reads (the seam tests replace) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcStat:
    """One process: CPU times in seconds, RSS in bytes, start in seconds since boot."""

    pid: int
    ppid: int
    session: int
    start: float
    cpu: float  # own user + system time
    children_cpu: float  # user + system time of the children it has reaped
    rss: int


@dataclass(frozen=True, slots=True)
class NodeStat:
    cpu: float  # non-idle CPU seconds over all cores since boot
    memory: int  # working set bytes


class HostReader(Protocol):
    def processes(self) -> Iterable[ProcStat]:
        """Every process on the box; one that vanishes while being read is simply left out."""
        ...

    def node(self) -> NodeStat: ...


class ProcHost:
    """Reads ``/proc`` (Linux). Stateless, so safe from any thread."""

    def __init__(self, proc: Path = _PROC) -> None:
        self.proc = proc
        self._tick = float(os.sysconf("SC_CLK_TCK"))
        self._page = int(os.sysconf("SC_PAGE_SIZE"))

    def processes(self) -> Iterator[ProcStat]:
        for entry in os.scandir(self.proc):
            if entry.name.isdigit():
                stat = self.read(int(entry.name))
                if stat is not None:
                    yield stat

    def read(self, pid: int) -> ProcStat | None:
        # os.open/os.read rather than Path.read_bytes: a quarter of the cost, and this runs per process.
        try:
            fd = os.open(f"{self.proc}/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
            try:
                data = os.read(fd, _STAT_MAX)
            finally:
                os.close(fd)
        except OSError:  # gone, or hidden from us (hidepid)
            return None
        if b")" not in data:
            return None
        # The command name (field 2) may hold spaces and parentheses: split after its last ")".
        fields = data[data.rindex(b")") + 2 :].split()
        tick = self._tick
        # proc(5) numbering minus 3: 4 ppid, 6 session, 14-17 utime stime cutime cstime (ticks),
        # 22 starttime (ticks since boot), 24 rss (pages).
        return ProcStat(
            pid=pid,
            ppid=int(fields[1]),
            session=int(fields[3]),
            start=int(fields[19]) / tick,
            cpu=(int(fields[11]) + int(fields[12])) / tick,
            children_cpu=(int(fields[13]) + int(fields[14])) / tick,
            rss=int(fields[21]) * self._page,
        )

    def node(self) -> NodeStat:
        return NodeStat(cpu=procfs.cpu_busy_seconds(), memory=procfs.memory_in_use())


# -- what the sampler is asked to measure ------------------------------------------------------------------


class PodStatusSource(Protocol):
    """What the sampler needs from Edged."""

    def status_of(self, uid: str) -> JSONObject | None: ...


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """A running container to measure, collected from Edged on the event loop."""

    namespace: str
    pod: str
    uid: str
    labels: tuple[tuple[str, str], ...]
    container: str
    container_id: str
    pid: int


@dataclass(slots=True)
class _Counter:
    """The last reading kept per counter: value, when, and the last rate it gave (None: none yet)."""

    value: float
    at: float
    rate: float | None = None
    window: float = 0.0


def _container_refs(pod: JSONObject, status: JSONObject) -> Iterator[ContainerRef]:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    label_items = (
        tuple(sorted((str(k), str(v)) for k, v in labels.items())) if isinstance(labels, dict) else ()
    )
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(key) or []:
            if not isinstance(cs, dict) or "running" not in (cs.get("state") or {}):
                continue
            cid = str(cs.get("containerID", ""))
            pid = cid.removeprefix(_CONTAINER_ID_PREFIX)
            if not cid.startswith(_CONTAINER_ID_PREFIX) or not pid.isdigit():
                continue
            yield ContainerRef(
                namespace=str(meta.get("namespace") or "default"),
                pod=str(meta.get("name", "")),
                uid=str(meta.get("uid", "")),
                labels=label_items,
                container=str(cs.get("name", "")),
                container_id=cid,
                pid=int(pid),
            )


class UsageSampler:
    """Samples node and container usage; see the module docstring.

    ``pods`` lists the pods bound to this node (the edge's cache); their live statuses come from
    ``edged.status_of``. ``host`` and ``clock`` (seconds, ``CLOCK_BOOTTIME``) are the seams tests replace.
    """

    def __init__(
        self,
        edged: PodStatusSource,
        pods: Callable[[], Iterable[JSONObject]],
        *,
        host: HostReader | None = None,
        clock: Callable[[], float] = _boottime,
        min_window: float = DEFAULT_MIN_WINDOW,
    ) -> None:
        self.edged = edged
        self.pods = pods
        self.host: HostReader = host or ProcHost()
        self.clock = clock
        self.min_window = min_window
        self._lock = threading.Lock()
        self._node: _Counter | None = None
        self._containers: dict[tuple[str, str, str, int, float], _Counter] = {}
        self._last_at: float | None = None

    def sample(self) -> JSONObject:
        """Collect and measure at once (on the event loop's thread)."""
        return self.measure(self.collect())

    def collect(self) -> list[ContainerRef]:
        """The running containers, from Edged. Event loop thread only (Edged is not thread-safe)."""
        refs: list[ContainerRef] = []
        for pod in self.pods():
            uid = str((pod.get("metadata") or {}).get("uid", ""))
            status = self.edged.status_of(uid) if uid else None
            if status is not None:
                refs.extend(_container_refs(pod, status))
        return refs

    def measure(self, refs: Iterable[ContainerRef]) -> JSONObject:
        """Read ``/proc`` and turn the readings into rates. Thread-safe; blocking (a few ms)."""
        procs = {p.pid: p for p in self.host.processes()}
        node = self.host.node()
        with self._lock:
            now = self.clock()
            since = self._last_at
            self._last_at = now
            out: JSONObject = {"timestamp": now_rfc3339()}
            self._node = node_counter = self._advance(self._node, node.cpu, now, None)
            if node_counter.rate is not None:
                out["window"] = format_window(node_counter.window)
                out["node"] = {
                    "cpu": format_cpu(node_counter.rate),
                    "memory": format_memory(node.memory),
                    "window": format_window(node_counter.window),
                }
            out["pods"] = self._measure_pods(refs, procs, now, since)
        return out

    def _measure_pods(
        self, refs: Iterable[ContainerRef], procs: dict[int, ProcStat], now: float, since: float | None
    ) -> list[JSONObject]:
        children: dict[int, list[ProcStat]] = defaultdict(list)
        for p in procs.values():
            children[p.ppid].append(p)
        pods: dict[tuple[str, str], JSONObject] = {}
        seen: dict[tuple[str, str, str, int, float], _Counter] = {}
        for ref in refs:
            main = procs.get(ref.pid)
            if main is None:
                continue  # exited since its status was read
            shim = procs.get(main.ppid)
            if shim is not None and shim.session == shim.pid and main.session == shim.pid:
                root, cpu, rss = shim, shim.children_cpu, 0
            else:  # no shim above it (or a recycled pid): measure the process and its descendants alone
                root, cpu, rss = main, main.cpu + main.children_cpu, main.rss
            for p in _descendants(root.pid, children):
                cpu += p.cpu + p.children_cpu
                rss += p.rss
            key = (ref.uid, ref.container, ref.container_id, root.pid, root.start)
            previous = self._containers.get(key)
            if previous is None and since is not None and root.start >= since:
                previous = _Counter(0.0, root.start)  # started since the last sample: all of it is new
            counter = self._advance(previous, cpu, now, key)
            seen[key] = counter
            if counter.rate is None:
                continue
            entry = pods.setdefault(
                (ref.namespace, ref.pod),
                {
                    "namespace": ref.namespace,
                    "name": ref.pod,
                    "labels": dict(ref.labels),
                    "window": format_window(counter.window),
                    "containers": [],
                },
            )
            entry["containers"].append(
                {
                    "name": ref.container,
                    "usage": {"cpu": format_cpu(counter.rate), "memory": format_memory(rss)},
                }
            )
        self._containers = seen  # containers not seen this time are forgotten
        return [pods[k] for k in sorted(pods)]

    def _advance(self, previous: _Counter | None, value: float, now: float, key: object) -> _Counter:
        if previous is None:
            return _Counter(value, now)
        window = now - previous.at
        if window < self.min_window:
            return previous  # too close to the baseline: keep it, repeat the last rate
        delta = value - previous.value
        if delta < 0:
            # Cannot happen for a tree that reaps its own; a process that escaped it could cause it.
            log.debug("usage counter went back by %.3fs for %s; new baseline", -delta, key)
            return _Counter(value, now)
        return _Counter(value, now, delta / window, window)


def _descendants(root: int, children: dict[int, list[ProcStat]]) -> Iterator[ProcStat]:
    stack = list(children.get(root, ()))
    while stack:
        p = stack.pop()
        yield p
        stack.extend(children.get(p.pid, ()))

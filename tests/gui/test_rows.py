"""The GUI's pure parts, without Qt widgets or a server: rows, the filter, the sorted index, the change
buffer, the overview summary, describe, deploy targeting, twin validation and connection targets."""

from __future__ import annotations

import argparse
import random
from typing import Any

import pytest

from app.describe import describe, to_yaml
from app.devices import parse_device, parse_device_model
from app.manifest import parse
from app.query import FilterError, parse_filter
from app.twinview import twin_rows, twin_summary, validate_desired
from gui import rows as rows_module
from gui.cli import GuiCommand, target_from_args
from gui.deploy import (
    SelectorError,
    check,
    matching_nodes,
    parse_node_selector,
    with_node_selector,
)
from gui.describe import events_for
from gui.errors import TargetError
from gui.fleet import ChangeBuffer, LinkChange, prepare_resync
from gui.overview import summarize
from gui.rows import (
    SPECS,
    Key,
    Row,
    RowIndex,
    project_deployment,
    project_device,
    project_event,
    project_node,
    project_pod,
    sort_key,
    with_pods,
)
from gui.target import Target
from gui.twin import Series

from .conftest import deployment, device, event, fixed_objects, node, pod


def rows_of(kind: str, objects: list[Any]) -> list[Row]:
    return [SPECS[kind].project(o) for o in objects]  # type: ignore[index]


# -- rows -------------------------------------------------------------------------------------------------


def test_pod_row_follows_kubectls_columns() -> None:
    row = project_pod(pod("crash-1", "edge-b", restarts=7, ready=False, reason="CrashLoopBackOff"))
    assert row.cells[:6] == ("default", "crash-1", "0/1", "CrashLoopBackOff", "7", "edge-b")
    assert row.tone == "bad" and row.group == "Running" and row.node == "edge-b"
    assert row.values[4] == 7  # RESTARTS sorts as a number
    terminating = pod("x", "n")
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert project_pod(terminating).cells[3] == "Terminating"
    assert project_pod({"metadata": {"name": "bare"}}).cells[:4] == ("", "bare", "0/0", "Pending")


def test_node_row_readiness_link_and_pod_count() -> None:
    lost = project_node(node("edge-c", ready="Unknown", since=420, reason="NodeStatusUnknown"))
    assert lost.group == "Unknown" and lost.cells[1] == "NotReady" and lost.tone == "bad"
    assert lost.since > 0
    ok = project_node(node("edge-a", labels={"site": "a"}))
    assert ok.group == "Ready" and ok.labels["site"] == "a" and ok.cells[2] == "edge"
    counted = with_pods(ok, 12)
    assert counted.cells[3] == "12" and counted.values[3] == 12 and with_pods(counted, 12) is counted


def test_deployment_device_and_event_rows() -> None:
    d = project_deployment(deployment("web", 3, 1))
    assert d.cells[2] == "1/3" and d.group == "progressing" and d.cells[5] == "example/web:1"
    assert project_deployment(deployment("web", 2, 2)).group == "done"
    dev = project_device(device("pump-2", "edge-b", state="offline", desired="55", reported="38"))
    assert dev.group == "offline" and dev.cells[6] == "0/1 synced; setpoint 38->55"
    ev = project_event(event("e1", "crash-1", "BackOff", "Back-off\nrestarting", warning=True))
    assert ev.cells[1:5] == ("Warning", "BackOff", "pod/crash-1", "Back-off restarting")
    assert ev.tone == "warn" and ev.since > 0


def test_twin_summary_ignores_empty_desired_values() -> None:
    obj = device("p", "n", state="online", desired="", reported="1")
    assert twin_summary(obj) == "2 reported"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["crash-1", "db-0", "web-7d4f-abcde", "web-7d4f-fghij", "sensor-reader"]),
        ("web", ["web-7d4f-abcde", "web-7d4f-fghij"]),
        ("WEB-7D4F-A", ["web-7d4f-abcde"]),
        ("^factory", ["sensor-reader"]),
        ("crash|db", ["crash-1", "db-0"]),
        ("edge-a", ["db-0", "web-7d4f-abcde"]),
        ("-l app=web", ["web-7d4f-abcde", "web-7d4f-fghij"]),
        ("-l app!=web", ["crash-1", "db-0", "sensor-reader"]),
        ("fghij -l app=web", ["web-7d4f-fghij"]),
        ("-l !app", []),
    ],
)
def test_filter_text_regex_and_labels(query: str, expected: list[str]) -> None:
    index = RowIndex(SPECS["pods"])
    index.reset(rows_of("pods", fixed_objects()["pods"]))
    index.set_filter(parse_filter(query))
    assert [r.name for r in index.visible()] == expected


@pytest.mark.parametrize("query", ["web(", "[a-", "-l =x", "-l"])
def test_a_bad_filter_says_why(query: str) -> None:
    with pytest.raises(FilterError):
        parse_filter(query)


def test_age_columns_sort_newest_first() -> None:
    spec = SPECS["pods"]
    rows = rows_of("pods", [pod("old", "n", age=9000), pod("new", "n", age=5), pod("mid", "n", age=600)])
    age = next(i for i, c in enumerate(spec.columns) if c.title == "AGE")
    assert [r.name for r in sorted(rows, key=sort_key(spec, age))] == ["new", "mid", "old"]


# -- the sorted, filtered index ---------------------------------------------------------------------------


class Recorder:
    """IndexHooks that check every announcement against the index's state."""

    def __init__(self, index: RowIndex) -> None:
        self.index = index
        self.events: list[tuple[str, int, int]] = []
        self._before = 0

    def begin_insert(self, position: int) -> None:
        self._before = len(self.index)
        assert 0 <= position <= self._before
        self.events.append(("insert", position, position))

    def end_insert(self) -> None:
        assert len(self.index) == self._before + 1

    def begin_remove(self, position: int) -> None:
        self._before = len(self.index)
        assert 0 <= position < self._before
        self.events.append(("remove", position, position))

    def end_remove(self) -> None:
        assert len(self.index) == self._before - 1

    def changed(self, first: int, last: int) -> None:
        assert 0 <= first <= last < len(self.index)
        self.events.append(("changed", first, last))


def _pod(i: int, status: str, node_name: str) -> dict[str, Any]:
    return pod(f"p{i:03d}", node_name, ns=f"ns{i % 3}", phase=status, age=i * 7 % 500)


@pytest.mark.parametrize("chunk", [1000, 3])
def test_index_matches_a_full_sort_under_random_changes(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rows_module, "CHUNK_LOAD", chunk)  # 3: chunks split and empty all the time
    rnd = random.Random(7)
    spec = SPECS["pods"]
    for _trial in range(120):
        objs = {i: _pod(i, rnd.choice(["Running", "Pending", "Failed"]), "n1") for i in range(40)}
        index = RowIndex(spec)
        index.reset([project_pod(o) for o in objs.values()])
        column, descending = rnd.randrange(len(spec.columns)), rnd.random() < 0.5
        index.set_sort(column, descending)
        if rnd.random() < 0.6:
            index.set_filter(parse_filter(rnd.choice(["p00", "running", "ns1", "-l app=web", "p0.*5", "n2"])))
        for _step in range(4):
            changes: dict[Key, Row | None] = {}
            for _ in range(rnd.randrange(1, 15)):
                i = rnd.randrange(55)
                key = (f"ns{i % 3}", f"p{i:03d}")
                if rnd.random() < 0.25:
                    changes[key] = None
                    objs.pop(i, None)
                else:
                    objs[i] = _pod(i, rnd.choice(["Running", "Pending", "Failed"]), rnd.choice(["n1", "n2"]))
                    changes[key] = project_pod(objs[i])
            recorder = Recorder(index)
            index.apply(list(changes.items()), recorder)
            expected = sorted((project_pod(o) for o in objs.values()), key=sort_key(spec, column))
            expected = [r for r in expected if index.filter.matches(r)]
            if descending:
                expected.reverse()
            assert [r.key for r in index.visible()] == [r.key for r in expected]
            assert len(index.rows) == len(objs)
            for position, row in enumerate(index.visible()):
                assert index.position(row.key) == position


def test_changes_that_keep_their_place_are_one_range() -> None:
    index = RowIndex(SPECS["pods"])
    index.reset(project_pod(_pod(i, "Running", "n1")) for i in range(100))
    recorder = Recorder(index)
    changes: list[tuple[Key, Row | None]] = []
    for i in range(0, 100, 3):
        r = project_pod(_pod(i, "Pending", "n2"))
        changes.append((r.key, r))
    index.apply(changes, recorder)
    assert [e[0] for e in recorder.events] == ["changed"]
    assert sum(r.group == "Pending" for r in index.visible()) == len(changes)


# -- the change buffer ------------------------------------------------------------------------------------


def test_buffer_coalesces_by_key_and_a_resync_wins() -> None:
    buf = ChangeBuffer()
    a1, a2 = project_pod(pod("a", "n")), project_pod(pod("a", "m"))
    buf.push(a1.key, a1)
    buf.push(a1.key, a2)
    buf.push(("default", "b"), None)
    batch = buf.take(10)
    assert batch is not None and batch.changes == [(a1.key, a2), (("default", "b"), None)]
    assert buf.take(10) is None
    buf.push(a1.key, a1)
    buf.push_resync(prepare_resync([a2], 0))
    batch = buf.take(10)
    assert batch is not None and batch.resync is not None and batch.resync.rows == [a2] and not batch.changes
    assert batch.resync.by_key == {a2.key: a2} and batch.resync.per_node == {"m": 1}
    assert buf.take(10) is None
    for i in range(5):
        buf.push(("x", str(i)), None)
    first = buf.take(3)
    assert first is not None and [k for k, _ in first.changes] == [("x", "0"), ("x", "1"), ("x", "2")]
    assert len(buf) == 2


# -- overview, describe -----------------------------------------------------------------------------------


def test_overview_counts_link_lost_and_recent_events() -> None:
    objs = fixed_objects()
    nodes = rows_of("nodes", objs["nodes"])
    groups: dict[str, dict[str, int]] = {
        "nodes": {"Ready": 2, "NotReady": 1, "Unknown": 1},
        "pods": {"Running": 4, "Pending": 1},
        "devices": {"online": 3, "offline": 1},
    }
    change = LinkChange(1.0, "edge-c", True, "Unknown", "Kubelet stopped posting node status.")
    s = summarize(
        groups=groups,  # type: ignore[arg-type]
        nodes=nodes,
        devices=rows_of("devices", objs["devices"]),
        events=rows_of("events", objs["events"]),
        link_changes=[change],
    )
    assert s.node_total == 4 and s.pods["Failed"] == 0 and s.cameras == 2
    assert [(o.name, o.state) for o in s.offline] == [("edge-d", "NotReady"), ("edge-c", "Unknown")]
    assert "NodeStatusUnknown" in s.offline[1].reason
    assert [r.cells[2] for r in s.events] == ["BackOff", "NodeNotReady", "Started"]
    assert s.link_changes == (change,)


def test_describe_names_the_state_and_the_events() -> None:
    objs = fixed_objects()
    crash = next(p for p in objs["pods"] if p["metadata"]["name"] == "crash-1")
    events = events_for("pods", crash, rows_of("events", objs["events"]))
    assert [e["reason"] for e in events] == ["BackOff"]
    text = describe("pods", crash, events, now=0)
    assert "CrashLoopBackOff" in text and "Restart Count:  7" in text and "BackOff" in text
    node_text = describe("nodes", objs["nodes"][2], [], now=0, pods=3)
    assert "NodeStatusUnknown" in node_text and "Pods:           3" in node_text
    assert "setpoint" in describe("devices", objs["devices"][1], [], now=0)
    assert "managedFields" not in to_yaml({"metadata": {"name": "x", "managedFields": [{}]}})


# -- deploy -----------------------------------------------------------------------------------------------


def test_node_selector_targets_workloads_only() -> None:
    assert parse_node_selector(" site=a, zone=north ") == {"site": "a", "zone": "north"}
    assert parse_node_selector("") == {}
    for bad in ("site!=a", "site", "!site", "=a"):
        with pytest.raises(SelectorError):
            parse_node_selector(bad)
    manifest = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"
        "spec:\n  template:\n    spec:\n      nodeSelector: {disk: ssd}\n"
        "      containers: [{name: a, image: b}]\n"
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n"
    )
    dep, cm = parse(manifest)
    targeted = with_node_selector(dep, {"site": "a"})
    assert targeted.obj["spec"]["template"]["spec"]["nodeSelector"] == {"disk": "ssd", "site": "a"}
    assert dep.obj["spec"]["template"]["spec"]["nodeSelector"] == {"disk": "ssd"}  # the original is kept
    assert with_node_selector(cm, {"site": "a"}) is cm
    nodes = rows_of("nodes", fixed_objects()["nodes"])
    assert matching_nodes({"site": "a"}, nodes) == ["edge-a", "edge-c"]
    assert matching_nodes({"site": "zz"}, nodes) == []


def test_check_lists_every_problem_with_its_line() -> None:
    result = check("apiVersion: v1\nkind: Gadget\nmetadata: {name: g}\n---\nkind: [\n")
    assert not result.ok
    assert [(e.document, e.line) for e in result.errors] == [(1, 1), (2, 5)]
    assert "unknown kind" in str(result.errors[0]) and "YAML syntax error" in str(result.errors[1])


# -- twin -------------------------------------------------------------------------------------------------

MODEL = {
    "apiVersion": "devices.kubeedge.io/v1beta1",
    "kind": "DeviceModel",
    "metadata": {"name": "pump-model", "namespace": "default"},
    "spec": {
        "protocol": "modbus",
        "properties": [
            {"name": "setpoint", "type": "INT", "accessMode": "ReadWrite", "minimum": "0", "maximum": "100"},
            {"name": "pressure", "type": "FLOAT", "accessMode": "ReadOnly", "unit": "bar"},
        ],
    },
}


def _pump() -> Any:
    obj = device("pump-2", "edge-b", state="online", desired="55", reported="38")
    for p in obj["spec"]["properties"]:
        p["visitors"] = {
            "protocolName": "modbus",
            "configData": {"register": "HoldingRegister", "offset": 1},
        }
    return parse_device(obj)


def test_twin_rows_and_validation_use_the_models_rules() -> None:
    dev, model = _pump(), parse_device_model(MODEL)
    rows = {r.name: r for r in twin_rows(dev, model)}
    assert (rows["setpoint"].desired, rows["setpoint"].reported, rows["setpoint"].range) == (
        "55",
        "38",
        "0 .. 100",
    )
    assert rows["setpoint"].writable and not rows["setpoint"].synced
    assert not rows["pressure"].writable and rows["pressure"].unit == "bar"
    assert validate_desired(model, dev, "setpoint", "60") is None
    assert "above the maximum 100" in str(validate_desired(model, dev, "setpoint", "500"))
    assert "not a valid INT" in str(validate_desired(model, dev, "setpoint", "fast"))
    assert "ReadOnly" in str(validate_desired(model, dev, "pressure", "1"))
    assert "not in the device's model" in str(validate_desired(None, dev, "setpoint", "1"))
    assert "not in the device's spec" in str(validate_desired(model, dev, "speed", "1"))


def test_history_series_keeps_order_and_skips_bad_points() -> None:
    s = Series()
    added = s.extend(
        [{"end": 2000, "mean": 2.0, "min": 1, "max": 3}, {"end": 1000, "mean": 9}, "junk", {"end": 3000}]
    )
    assert added == 1 and s.ends == [2.0] and s.mins == [1.0] and s.maxs == [3.0]
    assert s.extend([{"end": 4000 + i, "mean": i} for i in range(10)], keep=5) == 10
    assert len(s.ends) == 5 and s.means[-1] == 9.0 and s.last_end_ms == 4009


# -- targets ----------------------------------------------------------------------------------------------


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    GuiCommand().add_arguments(parser)
    return parser.parse_args(list(argv))


def test_targets_from_arguments_and_settings() -> None:
    t = target_from_args(
        _args("--server", "https://c:6443", "--token", "s3cret", "--insecure-skip-tls-verify"), None
    )
    assert (t.server, t.token, t.insecure) == ("https://c:6443", "s3cret", True)
    assert "s3cret" not in repr(t) and "token" not in t.to_settings()
    assert Target.from_settings(t.to_settings()) == Target(server="https://c:6443", insecure=True)
    k = target_from_args(_args("--kubeconfig", "/k.yaml", "--context", "prod"), None)
    assert k.to_settings() == {"kubeconfig": "/k.yaml", "context": "prod"} and k.label == "/k.yaml (prod)"
    last = Target(kubeconfig="/last.yaml")
    assert target_from_args(_args(), last) is last
    assert Target.from_settings({}) is None


def test_the_connect_timeout_is_an_argument_and_bad_values_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    t = target_from_args(
        _args("--server", "https://c:6443", "--token", "t", "--connect-timeout", "2.5"), None
    )
    assert t.connect_timeout == 2.5 and t.with_token("u").connect_timeout == 2.5
    assert t == Target(server="https://c:6443")  # not part of what is remembered or compared
    last = target_from_args(_args("--connect-timeout", "3"), Target(kubeconfig="/last.yaml"))
    assert (last.kubeconfig, last.connect_timeout) == ("/last.yaml", 3.0)
    for bad in ("0", "-1", "nan", "inf", "soon"):
        with pytest.raises(SystemExit):
            _args("--connect-timeout", bad)
        assert "--connect-timeout" in capsys.readouterr().err
    with pytest.raises(TargetError, match="positive number of seconds"):
        Target(server="https://c:6443", connect_timeout=0)

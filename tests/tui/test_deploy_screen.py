"""The deploy and rollout screens against a real cloud (and, to run pods, an edge): a bad manifest is
reported and kept, a diff shows the changed field, a valid apply creates the Deployment, read-only mode
diffs but never applies; rollout progress reaches the desired count and ``u`` rolls back to the previous
image."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.app import App
from textual.screen import Screen
from textual.widgets import DataTable, ProgressBar, Static

from app.client import AsyncClient, NotFound
from app.launcher import LocalCluster, tail
from app.manifest import STARTER_MANIFEST
from app.resources import DEPLOYMENTS, JSONObject
from app.rollout import history
from tui.deploy import DeployScreen, DiffScreen
from tui.rollout import ConfirmRollback, RolloutScreen

NS = "default"
WEB = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: example/web:1
        command: ["sleep", "3600"]
"""


class Host(App[None]):
    """The smallest app that shows one screen, as the TUI's shell pushes it."""

    def __init__(self, screen: Screen[None]) -> None:
        super().__init__()
        self._first = screen

    def on_mount(self) -> None:
        self.push_screen(self._first)


async def until(pilot: Any, predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Let the app run until ``predicate`` holds (the answers come over the network)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    c = LocalCluster(tmp_path, status_interval=0.5, ping_interval=1.0, restart_backoff=0.2)
    await c.start_cloud()
    try:
        yield c
    finally:
        await c.stop()
        for proc in [c.cloud, *c.edges.values()]:
            if proc is not None:
                print(f"--- {proc.name} ---\n{tail(proc.log_path, 40)}")


@pytest.fixture
async def client(cluster: LocalCluster) -> AsyncIterator[AsyncClient]:
    async with AsyncClient.from_kubeconfig(cluster.kubeconfig) as c:
        yield c


def problems(screen: DeployScreen) -> str:
    return str(screen.query_one("#problems", Static).render())


def diff_text(app: App[None]) -> str:
    assert isinstance(app.screen, DiffScreen)
    return app.screen.text


async def test_bad_manifest_is_reported_and_kept(client: AsyncClient) -> None:
    screen = DeployScreen(client, readonly=False)
    app = Host(screen)
    bad = WEB + "---\napiVersion: v1\nkind: Gadget\nmetadata: {name: g}\n---\nkind: [\n"
    async with app.run_test(size=(120, 40)) as pilot:
        assert screen.editor.text == STARTER_MANIFEST  # no file: the starting template
        screen.editor.load_text(bad)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "Gadget" in problems(screen), "the errors")
        text = problems(screen)
        assert "document 2 (line 18): kind: unknown kind 'Gadget'" in text
        assert "document 3 (line 22): YAML syntax error" in text
        assert screen.editor.text == bad  # the text is kept for fixing
        assert screen.editor.cursor_location == (17, 0)  # on the first bad document
        assert app.screen is screen  # no diff, nothing applied
    with pytest.raises(NotFound):
        await client.get(DEPLOYMENTS, "web", NS)


async def test_apply_creates_then_diff_shows_the_changed_field(client: AsyncClient, tmp_path: Path) -> None:
    manifest = tmp_path / "web.yaml"
    manifest.write_text(WEB)
    screen = DeployScreen(client, readonly=False, path=str(manifest))
    app = Host(screen)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: screen.editor.text == WEB, "the file to load")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, DiffScreen), "the diff")
        assert diff_text(app).startswith("--- /dev/null\n+++ manifest/default/Deployment/web\n")
        await pilot.press("y")
        await until(pilot, lambda: "deployment.apps/web created" in problems(screen), "the apply")
        live = await client.get(DEPLOYMENTS, "web", NS)
        assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "example/web:1"
        assert screen.applied == ["default/web"]

        # A changed image: the diff names exactly that line; closing it applies nothing.
        screen.editor.load_text(WEB.replace("example/web:1", "example/web:2"))
        await pilot.press("ctrl+r")
        await until(pilot, lambda: isinstance(app.screen, DiffScreen), "the diff")
        changed = [line for line in diff_text(app).splitlines()[2:] if line[:1] in "+-"]
        assert changed == ["-        image: example/web:1", "+        image: example/web:2"]
        assert not list(app.screen.query("#apply"))  # a review, not an apply
        await pilot.press("n")
        await until(pilot, lambda: app.screen is screen, "the diff to close")
        live = await client.get(DEPLOYMENTS, "web", NS)
        assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "example/web:1"

        # Apply it for real; a manifest the server refuses is reported with its reason, the text kept.
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, DiffScreen), "the diff")
        await pilot.press("y")
        await until(pilot, lambda: "deployment.apps/web configured" in problems(screen), "the apply")
        live = await client.get(DEPLOYMENTS, "web", NS)
        assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "example/web:2"

        # ctrl+o follows the rollout of the manifest's Deployment (no edge here: it waits for pods).
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, RolloutScreen), "the rollout screen")
        rollout = app.screen
        assert isinstance(rollout, RolloutScreen)
        await until(pilot, lambda: "Waiting for deployment" in status(rollout), "the rollout status")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, "back to the editor")

        refused = WEB.replace("replicas: 2", "replicas: -1").replace("name: web", "name: web2", 1)
        screen.editor.load_text(refused)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, DiffScreen), "the diff")
        await pilot.press("y")
        await until(pilot, lambda: "web2: Invalid" in problems(screen), "the refusal")
        assert "spec.replicas" in problems(screen)
        assert screen.editor.text == refused
    with pytest.raises(NotFound):
        await client.get(DEPLOYMENTS, "web2", NS)


async def test_readonly_diffs_but_never_applies(client: AsyncClient) -> None:
    screen = DeployScreen(client, readonly=True)
    app = Host(screen)
    async with app.run_test(size=(120, 40)) as pilot:
        screen.editor.load_text(WEB)
        assert screen.check_action("apply", ()) is False
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen
        await pilot.press("escape", "d")  # the first Esc leaves the editor, so plain keys are commands
        await until(pilot, lambda: isinstance(app.screen, DiffScreen), "the diff")
        assert screen.editor.text == WEB
        assert not list(app.screen.query("#apply"))
        await pilot.press("y")  # disabled in the diff too
        await pilot.pause()
        assert isinstance(app.screen, DiffScreen)
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, "the diff to close")
    with pytest.raises(NotFound):
        await client.get(DEPLOYMENTS, "web", NS)


# -- rollout ----------------------------------------------------------------------------------------------


def deployment(image: str, seconds: int) -> JSONObject:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "sensor", "namespace": NS},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "sensor"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "sensor"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": image, "command": ["sleep", str(seconds)]}],
                },
            },
        },
    }


def bar(screen: RolloutScreen, wid: str) -> tuple[float, float | None]:
    b = screen.query_one(f"#{wid}", ProgressBar)
    return b.progress, b.total


def status(screen: RolloutScreen) -> str:
    return str(screen.query_one("#status", Static).render())


def rolled_out(screen: RolloutScreen, revision: int) -> bool:
    return (
        "successfully rolled out" in status(screen)
        and bar(screen, "updated") == (2, 2)
        and bar(screen, "available") == (2, 2)
        and screen.deployment is not None
        and screen.deployment["metadata"]["annotations"].get("deployment.kubernetes.io/revision")
        == str(revision)
        and len(screen.pods) == 2
    )


@pytest.mark.slow
async def test_progress_rollout_and_rollback(cluster: LocalCluster, client: AsyncClient) -> None:
    await cluster.start_edge("edge-1")
    await cluster.wait_ready_nodes(["edge-1"])
    await client.apply(deployment("example/sensor:1", 3600))
    screen = RolloutScreen(client, NS, "sensor", readonly=False)
    app = Host(screen)
    async with app.run_test(size=(140, 50)) as pilot:
        await until(pilot, lambda: rolled_out(screen, 1), "revision 1 rolled out", 60)
        conditions = screen.query_one("#conditions", DataTable)
        types = {str(conditions.get_row_at(i)[0]) for i in range(conditions.row_count)}
        assert {"Available", "Progressing"} <= types
        pods = screen.query_one("#pods", DataTable)
        assert [str(pods.get_row_at(i)[5]) for i in range(pods.row_count)] == ["1", "1"]

        await client.apply(deployment("example/sensor:2", 3601))
        await until(pilot, lambda: rolled_out(screen, 2), "revision 2 rolled out", 60)
        assert "example/sensor:2" in str(screen.query_one("#title", Static).render())
        hist = screen.query_one("#history", DataTable)
        assert [str(hist.get_row_at(i)[0]) for i in range(hist.row_count)] == ["*2", " 1"]

        # u asks first; n leaves everything as it is.
        await pilot.press("u")
        await until(pilot, lambda: isinstance(app.screen, ConfirmRollback), "the confirmation")
        assert "back to revision 1" in str(app.screen.query_one("#question").render())
        await pilot.press("n")
        await until(pilot, lambda: app.screen is screen, "the confirmation to close")
        await pilot.press("u")
        await until(pilot, lambda: isinstance(app.screen, ConfirmRollback), "the confirmation")
        await pilot.press("y")
        # The old ReplicaSet comes back under a new revision (3), running the previous image again.
        await until(pilot, lambda: rolled_out(screen, 3), "the rollback rolled out", 60)
        live = await client.get(DEPLOYMENTS, "sensor", NS)
        assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "example/sensor:1"
        assert [(r.number, r.images) for r in await history(client, NS, "sensor")] == [
            (2, ("example/sensor:2",)),
            (3, ("example/sensor:1",)),
        ]
    kubectl = shutil.which("kubectl")
    if kubectl is not None:  # kubectl reads the same history: revisions 2 and 3 (1 was reused as 3)
        proc = await asyncio.create_subprocess_exec(
            kubectl,
            "--kubeconfig",
            str(cluster.kubeconfig),
            "rollout",
            "history",
            "deployment/sensor",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(cluster.root)},
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        rows = [line.split()[0] for line in out.decode().splitlines()[2:] if line.strip()]
        assert rows == ["2", "3"], out.decode()


async def test_readonly_hides_rollback_and_missing_deployment(client: AsyncClient) -> None:
    await client.apply(deployment("example/sensor:1", 3600))  # no edge: pods stay Pending
    screen = RolloutScreen(client, NS, "sensor", readonly=True)
    app = Host(screen)
    async with app.run_test(size=(140, 50)) as pilot:
        await until(pilot, lambda: "Waiting for deployment" in status(screen), "the status", 20)
        assert bar(screen, "updated")[1] == 2
        assert screen.check_action("undo", ()) is False
        await pilot.press("u")
        await pilot.pause()
        assert app.screen is screen

    missing = RolloutScreen(client, NS, "nope", readonly=False)
    app = Host(missing)
    async with app.run_test(size=(140, 50)) as pilot:
        await until(pilot, lambda: "not found" in status(missing), "not found", 20)

"""The device screen: one Device's twin (desired vs reported), its desired values edited in place, and a
sparkline per numeric property from the cloud's telemetry history.

The screen holds no device logic: the twin table, the check of a desired value and its write are
``app.twinview``'s (shared with the GUI's twin panel; the check is the one the cloud's API and the edge's
devicetwin run, so a value the screen accepts is one they accept). Everything that waits on the network
runs in workers: one watches the Device (a reflector with a ``metadata.name`` field selector, so a
reconnect relists by itself), one polls the history (the history API has no watch; each poll asks only
for points newer than the last one seen).

Attached to an edge (``fleetops tui --edge``; ``edge=`` an :class:`~tui.edge.EdgeSource`) the screen shows
the device as this node's own DeviceTwin last saw it: the local API serves the node's Devices with the
edge's twin state as their status, and the DeviceModels the cloud sent the node; the screen polls the
Device and its model every ``poll_interval`` (the local API has no watch), so the reported values stay
live while the cloud is unreachable and the unit, type and access columns are filled as against the cloud.
It is read-only there: desired values are the cloud's (the local API refuses every write but a pod
restart), and the history is the cloud's too, so a note stands in for the sparklines. When the edge has no
model by the device's reference (not sent yet, or an older edge that serves none) those columns stay
empty or ``?`` and the note says why.

Deliberately not done: editing ``BYTES`` values (shown, not edited: KubeEdge defines no encoding), a chart
with axes (a sparkline shows the shape; the last value is printed next to it), and history for properties
that are not numeric.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, Sparkline, Static

from app.client import ApiError, AsyncClient, ClientError, NotFound
from app.devices import Device, DeviceModel, parse_device
from app.devices import parse_device_model as parse_model
from app.errors import ValidationError
from app.resources import DEVICEMODELS, DEVICES, JSONObject
from app.twinview import TwinEditError, TwinRow, set_desired, twin_rows, validate_desired

if TYPE_CHECKING:
    from tui.edge import EdgeSource

logger = logging.getLogger(__name__)

# The history API has no watch; the aggregator sends a window summary every few seconds, so polling every
# 5 s shows each new window soon after it arrives without loading the cloud.
HISTORY_POLL_SECONDS = 5.0
# Points kept per sparkline: one per terminal column is the most a sparkline can show.
HISTORY_POINTS = 120

# Why the screen shows less at the edge (see the module docstring); the note line says these.
EDGE_READONLY = (
    "Read-only: desired values are set at the cloud; this node's local API accepts no writes (pod restart "
    "is its one offline operation)"
)
EDGE_NO_MODEL = "Units, types and access unknown: this node's local API has no DeviceModel {ref!r}"
EDGE_NO_HISTORY = "History: not available at the edge (the telemetry history is kept by the cloud)"


def series_means(series: Sequence[Any]) -> list[float]:
    """The window means of one history series, oldest first (malformed points skipped)."""
    return [
        float(p["mean"]) for p in series if isinstance(p, dict) and isinstance(p.get("mean"), int | float)
    ]


# -- I/O --------------------------------------------------------------------------------------------------


# -- widgets ----------------------------------------------------------------------------------------------


class DesiredValueScreen(ModalScreen[str | None]):
    """Asks for a desired value; refuses (inline, without closing) one that does not fit the model."""

    DEFAULT_CSS = """
    DesiredValueScreen { align: center middle; }
    DesiredValueScreen > Vertical {
        width: 64; height: auto; border: thick $accent; background: $surface; padding: 1 2;
    }
    DesiredValueScreen #error { color: $error; height: auto; }
    DesiredValueScreen #hint { color: $text-muted; }
    DesiredValueScreen Horizontal { height: auto; margin-top: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self, device: Device | None, model: DeviceModel | None, label: str, name: str, current: str
    ) -> None:
        super().__init__()
        self._device = device
        self._model = model
        self._device_label = label
        self._prop_name = name
        self._prop = model.property(name) if model is not None else None
        self._current = current

    def compose(self) -> ComposeResult:
        hint = "no model: cannot be checked"
        if self._prop is not None:
            hint = self._prop.type
            if self._prop.minimum or self._prop.maximum:
                hint += f", {self._prop.minimum or '-inf'} .. {self._prop.maximum or '+inf'}"
            if self._prop.unit:
                hint += f" {self._prop.unit}"
        with Vertical():
            yield Label(f"Desired {self._prop_name} of {self._device_label}")
            yield Label(hint, id="hint")
            yield Input(self._current, id="value")
            yield Label("", id="error")
            with Horizontal():
                yield Button("Set", id="set", variant="primary")
                yield Button("Cancel", id="cancel")

    def _submit(self) -> None:
        value = self.query_one("#value", Input).value.strip()
        problem = validate_desired(self._model, self._device, self._prop_name, value)
        if problem is not None:
            self.query_one("#error", Label).update(problem)
            return
        self.dismiss(value)

    @on(Input.Submitted, "#value")
    def _on_submitted(self) -> None:
        self._submit()

    @on(Button.Pressed, "#set")
    def _on_set(self) -> None:
        self._submit()

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class DeviceScreen(Screen[None]):
    """One device: twin table, live from a watch; ``e`` edits a desired value; sparklines of history.

    Give ``client`` (the cloud) or ``edge`` (this node's local API, read-only), not both."""

    DEFAULT_CSS = """
    DeviceScreen #title { height: 1; background: $boost; padding: 0 1; }
    DeviceScreen #edge-note { height: auto; padding: 0 1; color: $warning; }
    DeviceScreen #twins { height: auto; max-height: 60%; }
    DeviceScreen #history-title { height: 1; margin-top: 1; padding: 0 1; color: $text-muted; }
    DeviceScreen .spark-row { height: 2; }
    DeviceScreen .spark-name { width: 20; padding: 0 1; }
    DeviceScreen .spark-last { width: 14; padding: 0 1; }
    DeviceScreen Sparkline { width: 1fr; height: 2; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "edit", "Edit desired"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(
        self,
        client: AsyncClient | None,
        namespace: str,
        name: str,
        *,
        readonly: bool,
        edge: EdgeSource | None = None,
        history_interval: float = HISTORY_POLL_SECONDS,
    ) -> None:
        if (client is None) == (edge is None):
            raise ValueError("a device screen reads either the cloud (client) or an edge (edge)")
        super().__init__()
        self.client = client
        self.edge = edge
        self.history_interval = history_interval
        self.namespace = namespace
        self.device_name = name
        self.readonly = readonly
        self.device: Device | None = None
        self.model: DeviceModel | None = None
        self.rows: list[TwinRow] = []
        self.history: dict[str, list[float]] = {}
        self._history_since: int | None = None
        self._state = "loading"
        self._model_problem = ""  # at the edge: why the model is missing ("" when it is there)

    # -- layout ---------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(self._title(), id="title")
        table: DataTable[str] = DataTable(id="twins", cursor_type="row", zebra_stripes=True)
        table.add_columns("PROPERTY", "DESIRED", "REPORTED", "UNIT", "TYPE", "ACCESS", "LAST UPDATE")
        yield table
        if self.edge is None:
            yield Static("History (window means)", id="history-title")
            yield VerticalScroll(id="history")
        else:
            yield Static(self._edge_note(), id="edge-note")
            yield Static(EDGE_NO_HISTORY, id="history-title")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#twins", DataTable).focus()
        if self.edge is None:
            self._watch_device()
            self._poll_history()
        else:
            self._poll_edge()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "edit":
            return not self.readonly and self.edge is None
        return True

    def _cloud(self) -> AsyncClient:
        if self.client is None:
            raise RuntimeError("the device screen at the edge has no cloud client")  # never: see on_mount
        return self.client

    def _edge_note(self) -> str:
        assert self.edge is not None
        every = f"{self.edge.poll_interval:g} s"
        note = f"Edge-local: this node's own twin state from {self.edge.url}, polled every {every}.\n"
        note += f"{EDGE_READONLY}."
        if self.device is not None and self.model is None:
            note += f"\n{self._model_problem or EDGE_NO_MODEL.format(ref=self.device.model_ref)}."
        return note

    def _title(self) -> str:
        parts = [f"Device {self.namespace}/{self.device_name}"]
        if self.device is not None:
            parts.append(f"model {self.device.model_ref}")
            parts.append(f"node {self.device.node_name or '-'}")
            parts.append(f"state {self.device.status.state or 'unknown'}")
        else:
            parts.append(self._state)
        if self.edge is not None:
            conn = self.edge.connection()
            if conn.state in ("reconnecting", "unreachable"):
                parts.append("local API unreachable (retrying)")
            elif conn.cloud_connected is False:
                parts.append("EDGE-LOCAL: cloud unreachable")
            else:
                parts.append("edge-local")
        if self.readonly or self.edge is not None:
            parts.append("read-only")
        return "  ·  ".join(parts)

    # -- live data ------------------------------------------------------------------------------------

    @work(exclusive=True, group="device-watch")
    async def _watch_device(self) -> None:
        selector = f"metadata.name={self.device_name}"
        client = self._cloud()
        try:
            async with client.list_watch(DEVICES, self.namespace, field_selector=selector) as reflector:
                async for event in reflector:
                    if event.type == "RESYNC":
                        obj = event.items[0] if event.items else None
                        await self._show(obj, reload_model=True)
                    elif event.type == "DELETED":
                        self._state = "deleted"
                        await self._show(None)
                    else:
                        await self._show(event.object)
        except ClientError as exc:
            self._state = "unavailable"
            self.notify(f"device {self.device_name}: {exc}", severity="error", timeout=10)

    @work(exclusive=True, group="device-watch")
    async def _poll_edge(self) -> None:
        """The device and its model from this node's local API every ``poll_interval`` (the model too:
        the cloud may send it, or a new version, while the screen is open); a failed poll keeps the values
        shown and the title says the local API is unreachable until a poll succeeds."""
        edge = self.edge
        assert edge is not None
        last: tuple[JSONObject | None, JSONObject | None] | None = None
        while True:
            try:
                obj = await edge.device(self.namespace, self.device_name)
                spec = (obj or {}).get("spec")
                ref = spec.get("deviceModelRef") if isinstance(spec, dict) else None
                name = ref.get("name") if isinstance(ref, dict) else None  # a bad one: _show says so
                model = await edge.device_model(self.namespace, name) if isinstance(name, str) else None
            except ClientError as exc:
                logger.info("edge poll of device %s/%s failed: %s", self.namespace, self.device_name, exc)
                self.query_one("#title", Static).update(self._title())
            else:
                if (obj, model) != last:
                    if obj is None:
                        self._state = "not found at this edge" if last is None else "gone from this edge"
                    self._set_edge_model(model)
                    await self._show(obj)
                else:
                    self.query_one("#title", Static).update(self._title())  # the cloud link may change
                last = (obj, model)
            await asyncio.sleep(edge.poll_interval)

    def _set_edge_model(self, obj: JSONObject | None) -> None:
        """The model the edge served (None: it has none), or why it is unusable for the note."""
        self.model, self._model_problem = None, ""
        if obj is None:
            return
        try:
            self.model = parse_model(obj)
        except ValidationError as exc:
            name = (obj.get("metadata") or {}).get("name")
            self._model_problem = f"Units, types and access unknown: DeviceModel {name!r} is malformed: {exc}"

    async def _show(self, obj: JSONObject | None, *, reload_model: bool = False) -> None:
        if obj is None:
            if self._state == "loading":
                self._state = "not found"
            self.device = None
        else:
            try:
                device = parse_device(obj)
            except ValidationError as exc:
                self.notify(f"device {self.device_name} is malformed: {exc}", severity="error")
                return
            model_stale = reload_model or self.model is None or self.model.name != device.model_ref
            if self.edge is None and model_stale:
                self.model = await self._load_model(device.model_ref)
            self.device = device
        self._render_table()

    def show(self, device: JSONObject, model: JSONObject | None, history: dict[str, list[float]]) -> None:
        """Show the given objects and history as if they had just arrived (fixed-data snapshots; the
        watch and the history poll call the same rendering)."""
        self.device = parse_device(device)
        self.model = parse_model(model) if model is not None else None
        self.history = {k: list(v) for k, v in history.items()}
        self._render_table()

    async def _load_model(self, ref: str) -> DeviceModel | None:
        try:
            return parse_model(await self._cloud().get(DEVICEMODELS, ref, self.namespace))
        except NotFound:
            self.notify(f"DeviceModel {ref!r} not found: values cannot be checked", severity="warning")
        except (ClientError, ValidationError) as exc:
            self.notify(f"DeviceModel {ref!r}: {exc}", severity="error")
        return None

    def _render_table(self) -> None:
        self.query_one("#title", Static).update(self._title())
        if self.edge is not None:
            self.query_one("#edge-note", Static).update(self._edge_note())
        table = self.query_one("#twins", DataTable)
        keep = table.cursor_row
        table.clear()
        self.rows = twin_rows(self.device, self.model) if self.device is not None else []
        for row in self.rows:
            table.add_row(
                row.name,
                row.desired,
                row.reported,
                row.unit,
                row.type,
                row.access,
                row.last_update,
                key=row.name,
            )
        if self.rows:
            table.move_cursor(row=min(keep, len(self.rows) - 1))
        self._render_history()

    @work(exclusive=True, group="device-history")
    async def _poll_history(self) -> None:
        while True:
            try:
                series = await self._cloud().device_history(
                    self.device_name, self.namespace, since_ms=self._history_since
                )
            except ApiError as exc:
                logger.info("history of %s/%s: %s", self.namespace, self.device_name, exc)
                series = {}
            except ClientError as exc:
                logger.info("history of %s/%s unavailable: %s", self.namespace, self.device_name, exc)
                series = {}
            for prop, points in series.items():
                values = self.history.setdefault(prop, [])
                values.extend(series_means(points))
                del values[:-HISTORY_POINTS]
                ends = [p.get("end") for p in points if isinstance(p, dict)]
                ends_ms = [e for e in ends if isinstance(e, int)]
                if ends_ms:
                    self._history_since = max(self._history_since or 0, *ends_ms)
            if series:
                self._render_history()
            await asyncio.sleep(self.history_interval)

    def _render_history(self) -> None:
        if self.edge is not None:
            return  # the history is the cloud's: EDGE_NO_HISTORY stands in
        box = self.query_one("#history", VerticalScroll)
        numeric = [r for r in self.rows if r.numeric]
        ids = [f"spark-{i}" for i in range(len(numeric))]
        existing = [w.id for w in box.children]
        if existing != ids:
            box.remove_children()
            for wid, row in zip(ids, numeric, strict=True):
                box.mount(
                    Horizontal(
                        Label(row.name, classes="spark-name"),
                        Sparkline(self.history.get(row.name, []), id=f"{wid}-line"),
                        Label("", classes="spark-last", id=f"{wid}-last"),
                        id=wid,
                        classes="spark-row",
                    )
                )
            self.call_after_refresh(self._fill_history)
        else:
            self._fill_history()

    def _fill_history(self) -> None:
        numeric = [r for r in self.rows if r.numeric]
        for i, row in enumerate(numeric):
            values = self.history.get(row.name, [])
            lines = self.query(f"#spark-{i}-line").results(Sparkline)
            for line in lines:
                line.data = list(values)
            for last in self.query(f"#spark-{i}-last").results(Label):
                last.update(f"{values[-1]:g} {row.unit}".strip() if values else "no data")

    # -- actions --------------------------------------------------------------------------------------

    def action_back(self) -> None:
        if self.app.screen is self and len(self.app.screen_stack) > 1:
            self.app.pop_screen()

    def action_edit(self) -> None:
        if self.edge is not None:
            self.notify(EDGE_READONLY, severity="warning")
            return
        if self.readonly:
            return
        table = self.query_one("#twins", DataTable)
        if not self.rows or table.cursor_row < 0 or table.cursor_row >= len(self.rows):
            return
        row = self.rows[table.cursor_row]
        mprop = self.model.property(row.name) if self.model is not None else None
        if mprop is not None and not mprop.writable:
            self.notify(f"{row.name} is ReadOnly: it has no desired value", severity="error")
            return
        if self.device is not None and self.device.property(row.name) is None:
            self.notify(f"{row.name} is not in the device's spec", severity="error")
            return

        def done(value: str | None) -> None:
            if value is not None:
                self._write(row.name, value)

        current = row.desired or row.reported
        self.app.push_screen(
            DesiredValueScreen(self.device, self.model, self.device_name, row.name, current), done
        )

    @work(group="device-edit")
    async def _write(self, prop: str, value: str) -> None:
        try:
            await set_desired(self._cloud(), self.namespace, self.device_name, prop, value)
        except (ClientError, TwinEditError) as exc:
            detail = "; ".join(exc.field_errors) if isinstance(exc, ApiError) and exc.causes else str(exc)
            self.notify(f"setting {prop} failed: {detail}", severity="error", timeout=10)
            return
        self.notify(f"{prop} desired = {value}")

"""The device twin panel's logic: desired vs reported, validated edits, and the telemetry history.

Pure parts first: :func:`twin_rows` is the table (every property of the Device with its desired and
reported value, and type, unit, range and access from its DeviceModel); :func:`validate_desired` is
``app.devices.check_value``, the very check the cloud's device controller and the edge's devicetwin run,
so a value the panel accepts is one they accept, and a refused one is refused here with their reason
(``"5000 is above the maximum 3000"``, ``"property 'speed' is ReadOnly"``) before anything is sent.

:class:`TwinController` does the I/O on the bridge's loop: a Reflector on the one Device (a
``metadata.name`` field selector: it reconnects and relists by itself), the DeviceModel read when the
Device names a new one, and a poll of the cloud's history subresource
(``GET .../devices/NAME/history?sinceMs=...``; the API has no watch for it) that asks only for windows
newer than the last one seen. A desired value is written as the TUI writes it: the Device's
``spec.properties`` list with the one ``desired.value`` changed, as a JSON merge patch carrying the
``resourceVersion`` it was built from (a merge patch replaces a list whole); on a Conflict it is rebuilt
from a fresh read.

Deliberately not done: editing ``BYTES`` values (KubeEdge defines no encoding) and history of properties
that are not numeric.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QBrush, QColor

from app.client import AsyncClient, ClientError, NotFound
from app.devices import (
    Device,
    DeviceModel,
    parse_device,
    parse_device_model,
)
from app.errors import ValidationError
from app.resources import DEVICEMODELS, DEVICES, JSONObject
from app.twinview import TwinRow, set_desired, twin_rows, validate_desired
from gui.bridge import AsyncBridge, Job, Mailbox
from gui.errors import describe_error

logger = logging.getLogger(__name__)

# The aggregator sends a window summary every few seconds; a 5 s poll shows each soon after it lands.
HISTORY_POLL_S = 5.0
# Windows kept per property for the chart (at 5 s windows: about 50 minutes).
HISTORY_POINTS = 600


@dataclass(slots=True)
class Series:
    """One property's history: per window its end (epoch seconds), mean, min and max."""

    ends: list[float] = field(default_factory=list)
    means: list[float] = field(default_factory=list)
    mins: list[float] = field(default_factory=list)
    maxs: list[float] = field(default_factory=list)

    def extend(self, points: Sequence[Any], keep: int = HISTORY_POINTS) -> int:
        """Add history points (the API's ``{start, end, min, max, mean, ...}``), oldest first, skipping
        malformed ones and any not newer than the last; answers how many were added."""
        added = 0
        for p in points:
            if not isinstance(p, dict):
                continue
            end, mean = p.get("end"), p.get("mean")
            if not isinstance(end, int | float) or not isinstance(mean, int | float):
                continue
            t = float(end) / 1000.0
            if self.ends and t <= self.ends[-1]:
                continue
            low, high = p.get("min", mean), p.get("max", mean)
            self.ends.append(t)
            self.means.append(float(mean))
            self.mins.append(float(low) if isinstance(low, int | float) else float(mean))
            self.maxs.append(float(high) if isinstance(high, int | float) else float(mean))
            added += 1
        if len(self.ends) > keep:
            for values in (self.ends, self.means, self.mins, self.maxs):
                del values[:-keep]
        return added

    @property
    def last_end_ms(self) -> int | None:
        return int(self.ends[-1] * 1000) if self.ends else None


# -- I/O --------------------------------------------------------------------------------------------------


# -- controller -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Snapshot:
    device: Device | None
    model: DeviceModel | None
    state: str  # "loading", "not found", "deleted", "online"...
    problem: str = ""


class TwinController(QObject):
    """One Device's twin, live. ``changed``: device, model or rows; ``history_changed``: new windows;
    ``message(severity, text)``: an inline note (``error``, ``warning``, ``info``)."""

    changed = Signal()
    history_changed = Signal()
    message = Signal(str, str)

    def __init__(
        self,
        bridge: AsyncBridge,
        client: AsyncClient | None,
        parent: QObject | None = None,
        *,
        history_interval: float = HISTORY_POLL_S,
    ) -> None:
        super().__init__(parent)
        self._bridge = bridge
        self._client = client
        self.history_interval = history_interval
        self.namespace = ""
        self.name = ""
        self.device: Device | None = None
        self.model: DeviceModel | None = None
        self.rows: list[TwinRow] = []
        self.state = "idle"
        self.history: dict[str, Series] = {}
        self._jobs: list[Job[None]] = []
        self._snapshots: Mailbox[_Snapshot] | None = None
        self._points: Mailbox[dict[str, list[Any]]] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    def open(self, namespace: str, name: str) -> None:
        """Show Device ``namespace/name`` (closing the previous one)."""
        if (namespace, name) == self.key and self._jobs:
            return
        self.close()
        self.namespace, self.name = namespace, name
        self.state = "loading"
        self.changed.emit()
        if self._client is None:
            self.state = "no cloud"
            self.message.emit("error", "the twin needs a connection to the cloud")
            self.changed.emit()
            return
        snapshots: Mailbox[_Snapshot] = Mailbox(
            self._bridge, lambda: self._take(snapshots), owner=self, maxlen=1
        )
        points: Mailbox[dict[str, list[Any]]] = Mailbox(
            self._bridge, lambda: self._take_points(points), owner=self
        )
        self._snapshots, self._points = snapshots, points
        self._jobs = [
            self._bridge.submit(
                self._watch(self._client, namespace, name, snapshots), name=f"gui.twin[{name}]", owner=self
            ),
            self._bridge.submit(
                self._poll(self._client, namespace, name, points),
                name=f"gui.twin-history[{name}]",
                owner=self,
            ),
        ]

    def close(self) -> None:
        for job in self._jobs:
            job.cancel()
        self._jobs = []
        self._snapshots = self._points = None
        self.device, self.model, self.rows, self.history = None, None, [], {}
        self.state = "idle"

    def row(self, name: str) -> TwinRow | None:
        return next((r for r in self.rows if r.name == name), None)

    def validate(self, name: str, value: str) -> str | None:
        return validate_desired(self.model, self.device, name, value)

    def set_desired(self, name: str, value: str) -> bool:
        """Validate and write; False (and an inline error with the reason) when the value is refused."""
        value = value.strip()
        problem = self.validate(name, value)
        if problem is not None:
            self.message.emit("error", f"{name}: {problem}")
            return False
        if self._client is None:
            self.message.emit("error", "the twin needs a connection to the cloud")
            return False
        self.message.emit("info", f"setting {name} to {value}...")
        ns, dev = self.namespace, self.name
        self._bridge.submit(
            set_desired(self._client, ns, dev, name, value),
            on_result=lambda _obj: self.message.emit("info", f"{name} desired = {value}: sent to {dev}"),
            on_error=lambda exc: self.message.emit("error", f"setting {name} failed: {describe_error(exc)}"),
            owner=self,
            name=f"gui.twin-set[{dev}.{name}]",
        )
        return True

    # -- UI side of the mailboxes ---------------------------------------------------------------------

    def _take(self, box: Mailbox[_Snapshot]) -> None:
        if box is not self._snapshots:
            return
        for snap in box.drain():
            self.device, self.model, self.state = snap.device, snap.model, snap.state
            self.rows = twin_rows(snap.device, snap.model) if snap.device is not None else []
            if snap.problem:
                self.message.emit("warning", snap.problem)
        self.changed.emit()

    def _take_points(self, box: Mailbox[dict[str, list[Any]]]) -> None:
        if box is not self._points:
            return
        added = 0
        for series in box.drain():
            for prop, points in series.items():
                added += self.history.setdefault(prop, Series()).extend(points)
        if added:
            self.history_changed.emit()

    # -- I/O thread -----------------------------------------------------------------------------------

    async def _watch(self, client: AsyncClient, namespace: str, name: str, box: Mailbox[_Snapshot]) -> None:
        try:
            await self._follow(client, namespace, name, box)
        except ClientError as exc:  # refused for good (401, 403): the Reflector retries everything else
            box.put(_Snapshot(None, None, "unavailable", f"device {name}: {describe_error(exc)}"))

    async def _follow(self, client: AsyncClient, namespace: str, name: str, box: Mailbox[_Snapshot]) -> None:
        model: DeviceModel | None = None
        async with client.list_watch(DEVICES, namespace, field_selector=f"metadata.name={name}") as reflector:
            async for event in reflector:
                obj: JSONObject | None
                if event.type == "RESYNC":
                    obj = event.items[0] if event.items else None
                elif event.type == "DELETED":
                    box.put(_Snapshot(None, model, "deleted"))
                    continue
                else:
                    obj = event.object
                if obj is None:
                    box.put(_Snapshot(None, model, "not found"))
                    continue
                try:
                    device = parse_device(obj)
                except ValidationError as exc:
                    box.put(_Snapshot(None, model, "malformed", f"device {name} is malformed: {exc}"))
                    continue
                problem = ""
                if model is None or model.name != device.model_ref or event.type == "RESYNC":
                    model, problem = await self._load_model(client, namespace, device.model_ref)
                box.put(_Snapshot(device, model, device.status.state or "unknown", problem))

    async def _load_model(
        self, client: AsyncClient, namespace: str, ref: str
    ) -> tuple[DeviceModel | None, str]:
        try:
            return parse_device_model(await client.get(DEVICEMODELS, ref, namespace)), ""
        except NotFound:
            return None, f"DeviceModel {ref!r} not found: values cannot be checked"
        except (ClientError, ValidationError) as exc:
            return None, f"DeviceModel {ref!r}: {exc}"

    async def _poll(
        self, client: AsyncClient, namespace: str, name: str, box: Mailbox[dict[str, list[Any]]]
    ) -> None:
        since: int | None = None
        while True:
            try:
                series = await client.device_history(name, namespace, since_ms=since)
            except ClientError as exc:
                logger.info("history of %s/%s: %s", namespace, name, exc)
                series = {}
            for points in series.values():
                for p in points:
                    end = p.get("end") if isinstance(p, dict) else None
                    if isinstance(end, int):
                        since = max(since or 0, end)
            if series:
                box.put(series)
            await asyncio.sleep(self.history_interval)


# -- the table model --------------------------------------------------------------------------------------

TWIN_COLUMNS = ("PROPERTY", "DESIRED", "REPORTED", "UNIT", "TYPE", "RANGE", "ACCESS", "LAST REPORT")
DESIRED_COLUMN = 1
_DISPLAY = int(Qt.ItemDataRole.DisplayRole)
_EDIT = int(Qt.ItemDataRole.EditRole)
_TOOLTIP = int(Qt.ItemDataRole.ToolTipRole)
_FOREGROUND = int(Qt.ItemDataRole.ForegroundRole)
_ROOT = QModelIndex()
_PENDING = QColor("#b26a00")
_SYNCED = QColor("#2e7d32")
_MUTED = QColor("#777777")


class TwinTableModel(QAbstractTableModel):
    """The twin table over a :class:`TwinController`. DESIRED is editable where the property is
    writable; ``setData`` validates through the controller, which refuses a bad value with its reason
    (``TwinController.message``) and writes a good one."""

    def __init__(self, controller: TwinController, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self._rows: list[TwinRow] = []
        controller.changed.connect(self.refresh)

    def refresh(self) -> None:
        self.beginResetModel()
        self._rows = list(self.controller.rows)
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:
        return 0 if parent.isValid() else len(TWIN_COLUMNS)

    def row(self, position: int) -> TwinRow | None:
        return self._rows[position] if 0 <= position < len(self._rows) else None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = _DISPLAY) -> Any:
        row = self.row(index.row())
        if row is None:
            return None
        c = index.column()
        if role in (_DISPLAY, _EDIT):
            cells = (
                row.name,
                row.desired,
                row.reported,
                row.unit,
                row.type,
                row.range,
                row.access,
                row.last_update,
            )
            if role == _DISPLAY and c == DESIRED_COLUMN and not row.desired:
                return "—" if row.writable else ""
            return cells[c]
        if role == _FOREGROUND:
            if c == DESIRED_COLUMN and row.desired:
                return QBrush(_SYNCED if row.synced else _PENDING)
            if c == DESIRED_COLUMN:
                return QBrush(_MUTED)
            return None
        if role == _TOOLTIP and c == DESIRED_COLUMN:
            if not row.writable:
                return f"{row.name} is {row.access}: it has no desired value"
            hint = f"{row.type} {row.range}".strip()
            state = "reported matches desired" if row.synced else "waiting for the device to report it"
            return f"double-click to set ({hint}); {state}"
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = _DISPLAY) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == _DISPLAY and 0 <= section < len(TWIN_COLUMNS):
            return TWIN_COLUMNS[section]
        return None

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        base = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        row = self.row(index.row())
        if row is not None and index.column() == DESIRED_COLUMN and row.writable:
            return base | Qt.ItemFlag.ItemIsEditable
        return base

    def setData(self, index: QModelIndex | QPersistentModelIndex, value: Any, role: int = _EDIT) -> bool:
        row = self.row(index.row())
        if role != _EDIT or row is None or index.column() != DESIRED_COLUMN:
            return False
        text = str(value).strip()
        if text == row.desired:
            return False
        return self.controller.set_desired(row.name, text)

"""The deploy page: a YAML editor validated as it is typed, node targeting by label, diff, apply, and
the rollout of what was applied.

The logic is :mod:`gui.deploy` (validation, selector, plan, apply) and :mod:`gui.rollout`; this module
lays it out. Problems are listed under the editor with their line, the lines are marked in the editor,
and a click on a problem moves the cursor there. An apply's outcome is listed per object, with the API's
reason and field causes for a refusal; the editor's text is never touched by a failure.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor, QTextCursor
from PySide6.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.manifest import STARTER_MANIFEST, ManifestObject
from app.resources import DEPLOYMENTS
from gui.deploy import (
    Applied,
    Check,
    DeployController,
    Planned,
    SelectorError,
    check,
    kind_ref,
    matching_nodes,
    parse_node_selector,
    workloads,
)
from gui.rollout import RolloutController
from gui.session import Session
from gui.settings import Settings
from gui.views.common import CodeEditor, CodeView, DiffHighlighter, InlineMessage, YamlHighlighter
from gui.views.rollout import RolloutPanel

logger = logging.getLogger(__name__)

VALIDATE_DELAY_MS = 300


class DeployPage(QWidget):
    """See the module docstring."""

    def __init__(self, session: Session, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.settings = settings
        self.controller = DeployController(session.bridge, session.client, self)
        self.rollout_controller = RolloutController(session.bridge, session.client, self)
        self.last_check = Check()
        self.plans: list[Planned] = []
        self.results: list[Applied] = []

        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 4)
        title = QLabel("Deploy")
        title.setStyleSheet("font-size:15px; font-weight:bold;")
        layout.addWidget(title)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setChildrenCollapsible(False)
        layout.addWidget(self.splitter, 1)

        left = QWidget()
        left_box = QVBoxLayout(left)
        left_box.setContentsMargins(0, 0, 0, 0)
        self.editor = CodeEditor()
        self.highlighter = YamlHighlighter(self.editor.document())
        self.editor.setPlainText(settings.text("deploy/manifest", STARTER_MANIFEST) or STARTER_MANIFEST)
        left_box.addWidget(self.editor, 1)
        self.problems = QListWidget()
        self.problems.setMaximumHeight(120)
        self.problems.setVisible(False)
        left_box.addWidget(self.problems)
        self.valid = QLabel()
        left_box.addWidget(self.valid)
        self.splitter.addWidget(left)

        right = QWidget()
        right_box = QVBoxLayout(right)
        right_box.setContentsMargins(0, 0, 0, 0)
        target = QGroupBox("Target nodes")
        form = QFormLayout(target)
        self.selector = QLineEdit(settings.text("deploy/selector"))
        self.selector.setPlaceholderText("node labels, e.g. site=a,zone=north (empty: any node)")
        form.addRow("Node selector", self.selector)
        self.matches = QLabel()
        self.matches.setWordWrap(True)
        form.addRow("", self.matches)
        right_box.addWidget(target)
        buttons = QHBoxLayout()
        self.load_button = QPushButton("Load file...")
        self.diff_button = QPushButton("Diff")
        self.apply_button = QPushButton("Apply")
        self.apply_button.setDefault(True)
        buttons.addWidget(self.load_button)
        buttons.addStretch(1)
        buttons.addWidget(self.diff_button)
        buttons.addWidget(self.apply_button)
        right_box.addLayout(buttons)
        self.message = InlineMessage()
        right_box.addWidget(self.message)
        self.outcome = QListWidget()
        self.outcome.setWordWrap(True)
        self.outcome.setMaximumHeight(130)
        self.outcome.setVisible(False)
        right_box.addWidget(self.outcome)
        self.tabs = QTabWidget()
        self.diff_view = CodeView()
        self.diff_view.setPlaceholderText("Diff shows what an apply would change in what runs.")
        self.diff_highlighter = DiffHighlighter(self.diff_view.document())
        self.tabs.addTab(self.diff_view, "Diff")
        self.rollout = RolloutPanel(self.rollout_controller)
        self.tabs.addTab(self.rollout, "Rollout")
        right_box.addWidget(self.tabs, 1)
        self.splitter.addWidget(right)
        self.splitter.setSizes([560, 560])

        self._validate_timer = QTimer(self)
        self._validate_timer.setSingleShot(True)
        self._validate_timer.setInterval(VALIDATE_DELAY_MS)
        self._validate_timer.timeout.connect(self.validate)
        self.editor.textChanged.connect(self._validate_timer.start)
        self.selector.textChanged.connect(lambda _t: self._update_targets())
        self.problems.itemActivated.connect(self._jump)
        self.problems.itemClicked.connect(self._jump)
        self.load_button.clicked.connect(self._load)
        self.diff_button.clicked.connect(lambda: self.run(apply=False))
        self.apply_button.clicked.connect(lambda: self.run(apply=True))
        self.controller.planned.connect(self._planned)
        self.controller.applied.connect(self._applied)
        self.controller.failed.connect(lambda text: self.message.show_message("error", text))
        self.controller.busy.connect(self._busy)
        session.fleet.updated.connect(self._fleet_updated)
        if session.client is None:
            self.message.show_message(
                "warning", "Not connected to a cloud: the manifest can be checked, not applied."
            )
        self.validate()

    # -- validation and targeting ---------------------------------------------------------------------

    def validate(self) -> Check:
        self._validate_timer.stop()
        result = check(self.editor.toPlainText(), self.controller.namespace)
        self.last_check = result
        self.problems.clear()
        self.problems.setVisible(not result.ok)
        marks: dict[int, str] = {}
        for e in result.errors:
            item = QListWidgetItem(str(e))
            item.setForeground(QColor("#b71c1c"))
            item.setData(Qt.ItemDataRole.UserRole, e.line)
            self.problems.addItem(item)
            marks.setdefault(e.line, e.message)
        self.editor.mark_lines(marks)
        if result.ok:
            names = ", ".join(kind_ref(o) for o in result.objects)
            self.valid.setText(f"✓ {len(result.objects)} object(s): {names}")
            self.valid.setStyleSheet("color:#2e7d32;")
        else:
            self.valid.setText(f"{len(result.errors)} problem(s): fix them to diff or apply")
            self.valid.setStyleSheet("color:#b71c1c;")
        self._update_targets()
        self._update_buttons()
        return result

    def _update_targets(self) -> None:
        try:
            selector = parse_node_selector(self.selector.text())
        except SelectorError as exc:
            self.matches.setText(str(exc))
            self.matches.setStyleSheet("color:#b71c1c;")
            self._update_buttons()
            return
        count = len(workloads(self.last_check.objects))
        if not selector:
            self.matches.setText("Any node the scheduler picks.")
            self.matches.setStyleSheet("color:#555555;")
        else:
            names = matching_nodes(selector, self.session.fleet.models["nodes"].all_rows())
            shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
            if names:
                self.matches.setText(
                    f"{len(names)} node(s) match: {shown}  ·  applied to {count} workload(s)"
                )
                self.matches.setStyleSheet("color:#2e7d32;")
            else:
                self.matches.setText("No node matches: the pods would stay Pending.")
                self.matches.setStyleSheet("color:#b26a00;")
        self._update_buttons()

    def _update_buttons(self) -> None:
        ok = self.last_check.ok and not self.controller.working
        try:
            parse_node_selector(self.selector.text())
        except SelectorError:
            ok = False
        connected = self.session.client is not None
        self.diff_button.setEnabled(ok and connected)
        self.apply_button.setEnabled(ok and connected)

    def _fleet_updated(self, kinds: frozenset[str]) -> None:
        if "nodes" in kinds and self.selector.text().strip():
            self._update_targets()

    def _jump(self, item: QListWidgetItem) -> None:
        line = int(item.data(Qt.ItemDataRole.UserRole) or 1)
        block = self.editor.document().findBlockByNumber(max(0, line - 1))
        cursor = QTextCursor(block)
        self.editor.setTextCursor(cursor)
        self.editor.setFocus()

    def _load(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Load a manifest", "", "YAML (*.yaml *.yml);;All files (*)"
        )
        if path:
            self.load_file(path)

    def load_file(self, path: str) -> None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.message.show_message("error", f"cannot read {path}: {exc}")
            return
        self.editor.setPlainText(text)
        self.validate()

    # -- diff and apply -------------------------------------------------------------------------------

    def run(self, *, apply: bool) -> None:
        self.validate()
        objects, problem = self.controller.prepare(self.editor.toPlainText(), self.selector.text())
        if problem:
            self.message.show_message("error", problem)
            return
        self.message.show_message("info", "applying..." if apply else "reading what runs...")
        self.outcome.setVisible(False)
        if apply:
            self.controller.apply(objects)
        else:
            self.controller.diff(objects)

    def _busy(self, busy: bool) -> None:
        self._update_buttons()
        self.editor.setReadOnly(busy)

    def _planned(self, plans: list[Planned]) -> None:
        self.plans = plans
        text = "".join(p.diff for p in plans)
        summary = ", ".join(f"{kind_ref(p.manifest)} {'would be ' + p.verb}" for p in plans)
        self.diff_view.set_text(text or f"No changes: {summary}")
        self.tabs.setCurrentWidget(self.diff_view)
        self.message.show_message("info", summary)

    def _applied(self, results: list[Applied]) -> None:
        self.results = results
        self.outcome.clear()
        for r in results:
            item = QListWidgetItem(("✓ " if r.ok else "✗ ") + str(r))
            item.setForeground(QColor("#1b5e20" if r.ok else "#b71c1c"))
            item.setToolTip(r.message or str(r))
            self.outcome.addItem(item)
        self.outcome.setVisible(True)
        failed = [r for r in results if not r.ok]
        if failed:
            self.message.show_message(
                "error", f"{len(failed)} of {len(results)} object(s) refused: see below"
            )
        else:
            self.message.show_message("ok", f"applied {len(results)} object(s)")
        deployment = next(
            (r.manifest for r in results if r.ok and r.manifest and r.manifest.rt is DEPLOYMENTS), None
        )
        if deployment is not None:
            self.follow(deployment)

    def follow(self, obj: ManifestObject) -> None:
        """Show the rollout of Deployment ``obj``."""
        self.rollout_controller.follow(obj.namespace, obj.name)
        self.tabs.setCurrentWidget(self.rollout)

    def save(self) -> None:
        self.settings.set_text("deploy/manifest", self.editor.toPlainText())
        self.settings.set_text("deploy/selector", self.selector.text())

    def close_streams(self) -> None:
        self.rollout_controller.close()

"""The Qt binding itself: the pinned PySide6 must count references to None correctly on this Python.

PySide6 6.12 does not on Python 3.11 (it treats None as immortal, as 3.12 does): every void call such as
``QLabel.setText`` drops a reference, and the interpreter aborts after a few thousand calls. The calls run
in a child process, so a binding with that bug fails this test plainly instead of aborting the test run
(or, later, the GUI in front of an operator).
"""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import QApplication, QLabel
app = QApplication([])
label, model = QLabel(), QStandardItemModel()
before = sys.getrefcount(None)
for i in range(20000):
    label.setText(str(i))
    label.setToolTip("")
    model.beginResetModel()
    model.endResetModel()
print(sys.getrefcount(None) - before)
"""


def test_void_calls_keep_nones_reference_count() -> None:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert probe.returncode == 0, f"the binding aborted the interpreter: {probe.stderr[-500:]}"
    assert abs(int(probe.stdout.strip().splitlines()[-1])) < 50

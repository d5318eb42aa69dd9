"""Small widgets the pages share: inline messages, code views with highlighting, count cards."""

from __future__ import annotations

import re

from PySide6.QtCore import QRect, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontDatabase,
    QPainter,
    QPaintEvent,
    QResizeEvent,
    QSyntaxHighlighter,
    QTextCharFormat,
    QTextDocument,
    QTextFormat,
)
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTableView,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from gui.bridge import UI_FIRST

SEVERITY_STYLES = {
    "error": "background:#fdecea; color:#b71c1c; border:1px solid #f5c2c0;",
    "warning": "background:#fff4e5; color:#8a4b00; border:1px solid #ffd8a8;",
    "info": "background:#e8f1fb; color:#0d47a1; border:1px solid #bcd6f5;",
    "ok": "background:#e9f5ec; color:#1b5e20; border:1px solid #b9dfc1;",
}


def monospace() -> QFont:
    font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
    font.setPointSize(max(9, font.pointSize()))
    return font


class InlineMessage(QLabel):
    """A one-paragraph message next to what it is about (hidden when empty); ``severity`` picks the
    colours: error, warning, info, ok."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.severity = ""
        self.hide()

    def show_message(self, severity: str, text: str) -> None:
        self.severity = severity
        self.setText(text)
        self.setStyleSheet(
            f"QLabel {{ {SEVERITY_STYLES.get(severity, '')} padding:4px 8px; border-radius:3px; }}"
        )
        self.setVisible(bool(text))

    def clear_message(self) -> None:
        self.severity = ""
        self.setText("")
        self.hide()


class CodeView(QPlainTextEdit):
    """Read-only monospace text that keeps its scroll position when its text is replaced."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setFont(monospace())
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)

    def set_text(self, text: str) -> None:
        if text == self.toPlainText():
            return
        bar = self.verticalScrollBar()
        at = bar.value()
        self.setPlainText(text)
        bar.setValue(min(at, bar.maximum()))


class YamlHighlighter(QSyntaxHighlighter):
    """Keys, comments, strings, numbers and document markers of YAML, by regex (good enough for
    manifests; not a YAML parser)."""

    _RULES: tuple[tuple[re.Pattern[str], str], ...] = (
        (re.compile(r"^\s*(?:- )?([\w./-]+)(?=\s*:)"), "#1565c0"),
        (re.compile(r"(?<=: )(\"[^\"]*\"|'[^']*')"), "#2e7d32"),
        (re.compile(r"(?<=: )(-?\d+(?:\.\d+)?|true|false|null)\s*$"), "#6a1b9a"),
        (re.compile(r"^(---|\.\.\.)\s*$"), "#888888"),
        (re.compile(r"(?:^|\s)(#.*)$"), "#888888"),
    )

    def __init__(self, document: QTextDocument) -> None:
        super().__init__(document)
        self._formats: dict[str, QTextCharFormat] = {}
        for _, colour in self._RULES:
            fmt = QTextCharFormat()
            fmt.setForeground(QColor(colour))
            self._formats[colour] = fmt

    def highlightBlock(self, text: str) -> None:
        for pattern, colour in self._RULES:
            for m in pattern.finditer(text):
                start, end = m.span(1)
                self.setFormat(start, end - start, self._formats[colour])


class DiffHighlighter(QSyntaxHighlighter):
    """A unified diff coloured as ``git diff`` does."""

    def __init__(self, document: QTextDocument) -> None:
        super().__init__(document)
        self._formats: dict[str, QTextCharFormat] = {}
        for name, colour, background in (
            ("add", "#1b5e20", "#e6f4ea"),
            ("del", "#b71c1c", "#fdecea"),
            ("hunk", "#0277bd", ""),
            ("head", "#444444", ""),
        ):
            fmt = QTextCharFormat()
            fmt.setForeground(QColor(colour))
            if background:
                fmt.setBackground(QColor(background))
            if name == "head":
                fmt.setFontWeight(QFont.Weight.Bold)
            self._formats[name] = fmt

    def highlightBlock(self, text: str) -> None:
        if text.startswith(("+++", "---")):
            name = "head"
        elif text.startswith("+"):
            name = "add"
        elif text.startswith("-"):
            name = "del"
        elif text.startswith("@@"):
            name = "hunk"
        else:
            return
        self.setFormat(0, len(text), self._formats[name])


class _LineNumbers(QWidget):
    def __init__(self, editor: CodeEditor) -> None:
        super().__init__(editor)
        self._editor = editor

    def sizeHint(self) -> QSize:
        return QSize(self._editor.gutter_width(), 0)

    def paintEvent(self, event: QPaintEvent) -> None:
        self._editor.paint_gutter(event)


class CodeEditor(QPlainTextEdit):
    """A monospace editor with line numbers and marked lines (the lines a validation error names)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFont(monospace())
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.setTabChangesFocus(False)
        self._gutter = _LineNumbers(self)
        self._marked: dict[int, str] = {}
        self.blockCountChanged.connect(lambda _n: self._update_margins())
        self.updateRequest.connect(self._scroll_gutter)
        self._update_margins()

    def gutter_width(self) -> int:
        digits = len(str(max(1, self.blockCount())))
        return 12 + self.fontMetrics().horizontalAdvance("9") * max(3, digits)

    def _update_margins(self) -> None:
        self.setViewportMargins(self.gutter_width(), 0, 0, 0)

    def _scroll_gutter(self, rect: QRect, dy: int) -> None:
        if dy:
            self._gutter.scroll(0, dy)
        else:
            self._gutter.update(0, rect.y(), self._gutter.width(), rect.height())

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        cr = self.contentsRect()
        self._gutter.setGeometry(QRect(cr.left(), cr.top(), self.gutter_width(), cr.height()))

    def paint_gutter(self, event: QPaintEvent) -> None:
        painter = QPainter(self._gutter)
        painter.fillRect(event.rect(), QColor("#f3f3f3"))
        block = self.firstVisibleBlock()
        number = block.blockNumber()
        top = round(self.blockBoundingGeometry(block).translated(self.contentOffset()).top())
        height = self.fontMetrics().height()
        while block.isValid() and top <= event.rect().bottom():
            bottom = top + round(self.blockBoundingRect(block).height())
            if block.isVisible() and bottom >= event.rect().top():
                marked = (number + 1) in self._marked
                painter.setPen(QColor("#c62828") if marked else QColor("#999999"))
                painter.drawText(
                    0, top, self._gutter.width() - 6, height, Qt.AlignmentFlag.AlignRight, str(number + 1)
                )
            block = block.next()
            top = bottom
            number += 1
        painter.end()

    def mark_lines(self, lines: dict[int, str]) -> None:
        """Underlay the given 1-based lines (line -> why) in red; ``{}`` clears them."""
        self._marked = dict(lines)
        selections = []
        for line in lines:
            block = self.document().findBlockByNumber(line - 1)
            if not block.isValid():
                continue
            sel = QTextEdit.ExtraSelection()
            sel.format.setBackground(QColor("#fdecea"))
            sel.format.setProperty(QTextFormat.Property.FullWidthSelection, True)
            sel.cursor = self.textCursor()
            sel.cursor.setPosition(block.position())
            selections.append(sel)
        self.setExtraSelections(selections)
        self._gutter.update()

    def marked_lines(self) -> dict[int, str]:
        return dict(self._marked)


class TableView(QTableView):
    """A ``QTableView`` that asks the I/O thread to step aside while it paints.

    Qt calls the model's ``data()`` ~2,000 times per repaint of a full table and PySide6 takes the GIL
    for each call: with the I/O thread computing (a relist of 100,000 pods), each take would wait for
    it, stretching a repaint from ~8 ms to ~200 ms. See ``gui.bridge.UiFirst``."""

    def paintEvent(self, event: QPaintEvent) -> None:
        with UI_FIRST:
            super().paintEvent(event)


class CountCard(QFrame):
    """A titled card of counts, each clickable (``picked(label)``), coloured by tone."""

    picked = Signal(str)

    def __init__(self, title: str, labels: list[tuple[str, str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("card")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setStyleSheet("#card { background: white; border: 1px solid #dddddd; border-radius: 6px; }")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 10)
        self.title = QLabel(title)
        self.title.setStyleSheet("color:#555555; font-weight:bold;")
        layout.addWidget(self.title)
        row = QHBoxLayout()
        row.setSpacing(14)
        layout.addLayout(row)
        self.counts: dict[str, QPushButton] = {}
        for label, tone in labels:
            button = QPushButton()
            button.setFlat(True)
            button.setCursor(Qt.CursorShape.PointingHandCursor)
            colour = {"ok": "#2e7d32", "warn": "#b26a00", "bad": "#c62828"}.get(tone, "#333333")
            button.setStyleSheet(
                f"QPushButton {{ color:{colour}; text-align:left; border:none; padding:0; font-size:13px; }}"
                "QPushButton:hover { text-decoration: underline; }"
            )
            button.clicked.connect(lambda _checked=False, name=label: self.picked.emit(name))
            row.addWidget(button)
            self.counts[label] = button
        row.addStretch(1)
        self.set_counts(dict.fromkeys(self.counts, 0))

    def set_counts(self, counts: dict[str, int], total: int | None = None) -> None:
        for label, button in self.counts.items():
            n = counts.get(label, 0)
            button.setText(f"{n:,}  {label}")
            button.setEnabled(n > 0)
        if total is not None:
            base = self.title.text().split("  ·  ")[0]
            self.title.setText(f"{base}  ·  {total:,}")

"""Widgets of the list views: a virtual table and the small screens around it (help, confirm).

:class:`ResourceTable` is a Line API widget (``ScrollView.render_line``): it holds the filtered rows as a
plain list and renders only the lines on screen, so 100,000 rows cost nothing until they are shown and
replacing the whole list (a new filter, a watch tick) is one assignment plus a refresh. Textual's
DataTable builds per-row structures on ``add_rows`` (seconds for 100k rows) and is not used for lists.

Column widths grow to fit what has been on screen (header included, capped per column) and never shrink
while a view is shown, so scrolling does not make columns jump back and forth. The header line is sticky.
Ages are formatted at render time from the app's clock (see ``tui.data``).
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Callable, Sequence
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, VerticalScroll
from textual.geometry import Region, Size
from textual.message import Message
from textual.screen import ModalScreen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Button, Label, Static

from tui.data import Column, PerNode, Row, cell_text, utcnow

GAP = 2  # spaces between columns, as kubectl
_AGE_WIDTH = 9  # "<unknown>"


def _row_key(row: Row) -> tuple[str, str]:
    return row.key


class ResourceTable(ScrollView, can_focus=True):
    """The rows of one view, virtual: see the module docstring."""

    COMPONENT_CLASSES = {
        "resource-table--header",
        "resource-table--cursor",
        "resource-table--ok",
        "resource-table--warn",
        "resource-table--bad",
    }
    DEFAULT_CSS = """
    ResourceTable { height: 1fr; }
    ResourceTable > .resource-table--header { text-style: bold; color: $accent; }
    ResourceTable > .resource-table--cursor {
        background: $block-cursor-background; color: $block-cursor-foreground;
    }
    ResourceTable > .resource-table--ok { color: $success; }
    ResourceTable > .resource-table--warn { color: $warning; }
    ResourceTable > .resource-table--bad { color: $error; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home,g", "edge(0)", "Top", show=False),
        Binding("end,G", "edge(1)", "Bottom", show=False),
        Binding("enter", "select", "Open", show=True),
    ]

    class Selected(Message):
        """Enter on a row."""

        def __init__(self, row: Row) -> None:
            super().__init__()
            self.row = row

    def __init__(
        self,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        name: str | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id)
        self.clock = clock
        self.columns: tuple[Column, ...] = ()
        self.hidden: frozenset[int] = frozenset()
        self.rows: Sequence[Row] = ()
        self.cursor = 0
        self.per_node = PerNode()
        self.placeholder = ""
        self._widths: list[int] = []
        self._frame_now = clock()
        self._styles: dict[str, Style] = {}

    # -- data ---------------------------------------------------------------------------------------

    def set_columns(self, columns: tuple[Column, ...], hidden: frozenset[int] = frozenset()) -> None:
        if columns != self.columns or hidden != self.hidden:
            self.columns, self.hidden = columns, hidden
            self._widths = [
                _AGE_WIDTH if c.kind == "age" else min(len(c.title), c.max_width) for c in columns
            ]
            self.cursor = 0
            self.scroll_to(0, 0, animate=False)

    def set_rows(self, rows: Sequence[Row], *, keep: tuple[str, str] | None = None) -> None:
        """Show ``rows``; the cursor stays on the row with key ``keep`` when it is still there."""
        self.rows = rows
        if keep is not None and (not rows or self.cursor >= len(rows) or rows[self.cursor].key != keep):
            # Rows are sorted by key (namespace, name), so the kept row, or where it was, is a bisection.
            self.cursor = bisect.bisect_left(rows, keep, key=_row_key)
        self.cursor = max(0, min(self.cursor, len(rows) - 1))
        self._update_virtual_size()
        self.refresh()

    @property
    def current(self) -> Row | None:
        return self.rows[self.cursor] if 0 <= self.cursor < len(self.rows) else None

    def _update_virtual_size(self) -> None:
        width = sum(w + GAP for i, w in enumerate(self._widths) if i not in self.hidden)
        self.virtual_size = Size(max(width, 1), len(self.rows) + 1)

    # -- movement -----------------------------------------------------------------------------------

    def action_cursor(self, delta: int) -> None:
        self.move_to(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self.move_to(self.cursor + direction * max(1, self.size.height - 2))

    def action_edge(self, end: int) -> None:
        self.move_to(len(self.rows) - 1 if end else 0)

    def action_select(self) -> None:
        row = self.current
        if row is not None:
            self.post_message(self.Selected(row))

    def move_to(self, index: int) -> None:
        if not self.rows:
            return
        self.cursor = max(0, min(index, len(self.rows) - 1))
        visible = max(1, self.size.height - 1)
        top = round(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + visible:
            self.scroll_to(y=self.cursor - visible + 1, animate=False)
        self.refresh()

    # -- rendering ----------------------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        self._fit_widths()
        # Styles and the clock once per frame, not per line (resolving a component style is not free).
        self._frame_now = self.clock()
        self._styles = {
            name: self.get_component_rich_style(f"resource-table--{name}")
            for name in ("header", "cursor", "ok", "warn", "bad")
        }
        self._styles[""] = self.rich_style
        return super().render_lines(crop)

    def _fit_widths(self) -> None:
        """Grow column widths to what the rows on screen need (capped), once per frame."""
        top = round(self.scroll_y)
        shown = self.rows[top : top + max(1, self.size.height)]
        if not shown:
            return
        now = self.clock()
        changed = False
        for i, col in enumerate(self.columns):
            if col.kind == "age":
                continue
            need = max(len(cell_text(col, r, i, now, self.per_node)) for r in shown)
            need = min(need, col.max_width)
            if need > self._widths[i]:
                self._widths[i] = need
                changed = True
        if changed:
            self._update_virtual_size()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        scroll_x = round(self.scroll_x)
        styles = self._styles
        if y == 0:
            text = self._line([c.title for c in self.columns])
            style = styles["header"]
            return Strip([Segment(text, style)]).crop(scroll_x, scroll_x + width).extend_cell_length(width)
        index = round(self.scroll_y) + y - 1
        if index >= len(self.rows):
            if index == 0 and self.placeholder:
                return Strip([Segment(self.placeholder, Style(dim=True))]).extend_cell_length(width)
            return Strip.blank(width, self.rich_style)
        row = self.rows[index]
        now = self._frame_now
        text = self._line([cell_text(c, row, i, now, self.per_node) for i, c in enumerate(self.columns)])
        style = styles["cursor"] if index == self.cursor else styles.get(row.tone, styles[""])
        return Strip([Segment(text, style)]).crop(scroll_x, scroll_x + width).extend_cell_length(width, style)

    def _line(self, cells: Sequence[str]) -> str:
        parts: list[str] = []
        last = max((i for i in range(len(cells)) if i not in self.hidden), default=-1)
        for i, cell in enumerate(cells):
            if i in self.hidden:
                continue
            w = self._widths[i]
            text = cell if len(cell) <= w else cell[: max(0, w - 1)] + "…"
            parts.append(text if i == last else text.ljust(w + GAP))
        return "".join(parts)


class HelpScreen(ModalScreen[None]):
    """`?`: every key, grouped; any key closes it."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90; height: auto; max-height: 90%; border: round $accent;
        background: $surface; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "Close"),
    ]

    def __init__(self, sections: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        lines: list[str] = []
        for title, keys in self.sections:
            lines.append(f"[b]{title}[/b]")
            lines.extend(f"  [reverse] {key} [/reverse]  {what}" for key, what in keys)
            lines.append("")
        with VerticalScroll():
            yield Static("\n".join(lines), id="help-text")

    def action_dismiss(self, result: None = None) -> None:  # type: ignore[override]
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; `y` / Enter on Yes confirms, `n` / Esc cancels."""

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Grid { grid-size: 2; grid-gutter: 1 2; grid-rows: auto 3; padding: 1 2; width: 64;
        height: auto; border: thick $error; background: $surface; }
    ConfirmScreen #question { column-span: 2; width: 1fr; content-align: center middle; }
    ConfirmScreen Button { width: 100%; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Grid():
            yield Label(self.question, id="question")
            yield Button("Yes (y)", variant="error", id="yes")
            yield Button("No (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

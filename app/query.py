"""The operator's table filter, shared by the TUI and the GUI: a regex over a row's text plus ``-l`` labels.

A query is ``[regex] [-l selector]``: ``web-7``, ``crash|backoff``, ``-l app=web,tier!=db``, or both.
The text part is matched case-insensitively against a row's text, which each front end builds lower-cased
from the row's cells; the selector is kubectl's equality-based one (``k=v``, ``k==v``, ``k!=v``, ``k``,
``!k``, comma-joined) over the row's labels. Two things keep a keystroke cheap over 100,000 rows:

* text without regex syntax is a plain substring (``literal``), several times faster than a regex;
* a regex that lower-casing does not change in meaning is compiled lower-cased and case-sensitive:
  ``IGNORECASE`` defeats ``re``'s literal-prefix search, about 10x slower on these texts.

:meth:`Filter.narrows` tells whether a new query can only drop rows the previous one kept, so a UI can
filter the previous result instead of every row as the user types on. Anything unusable (a broken regex,
``-l`` without a selector, a malformed label key) raises :class:`FilterError` naming it.

Deliberately not done: set-based selectors (``env in (a,b)``) and field selectors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from app.errors import FleetOpsError

SelectorOp = Literal["=", "!=", "exists", "!exists"]

_LABEL_KEY = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_SELECTOR_FLAG = re.compile(r"(?:^|\s)-l\s*(\S*)")
_UPPER_ESCAPE = re.compile(r"\\[A-Z]")
_LITERAL_CHARS = frozenset("-_/:= ")


class FilterError(FleetOpsError):
    """A filter that cannot be used (an invalid regex or label selector); the UI shows the message."""


class Filterable(Protocol):
    """What a filter reads of a row: its lower-cased text and its labels."""

    @property
    def text(self) -> str: ...

    @property
    def labels(self) -> Mapping[str, str]: ...


R = TypeVar("R", bound=Filterable)


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: SelectorOp
    value: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "=":
            return labels.get(self.key) == self.value
        if self.op == "!=":
            return labels.get(self.key) != self.value
        if self.op == "exists":
            return self.key in labels
        return self.key not in labels


def parse_selector(text: str) -> tuple[Requirement, ...]:
    """kubectl's equality-based label selector; FilterError names a bad part."""
    out: list[Requirement] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        op: SelectorOp
        if "!=" in part:
            k, v = part.split("!=", 1)
            op = "!="
        elif "=" in part:
            k, v = part.split("==", 1) if "==" in part else part.split("=", 1)
            op = "="
        elif part.startswith("!"):
            k, v, op = part[1:], "", "!exists"
        else:
            k, v, op = part, "", "exists"
        k, v = k.strip(), v.strip()
        if not _LABEL_KEY.match(k):
            raise FilterError(f"invalid label selector {part!r}: {k!r} is not a label key")
        out.append(Requirement(k, op, v))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Filter:
    """A parsed query: ``literal`` (a substring) or ``pattern`` (a regex) over the row text, and labels."""

    text: str = ""
    pattern: re.Pattern[str] | None = None
    literal: str | None = None
    selector: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.text and not self.selector

    def narrows(self, previous: Filter) -> bool:
        """Every row this filter keeps was kept by ``previous`` (so it may filter previous's result)."""
        if previous.selector and self.selector[: len(previous.selector)] != previous.selector:
            return False
        if previous.literal is not None and self.literal is not None:
            return previous.literal in self.literal
        return not previous.text and (not previous.selector or bool(self.selector))

    def matches(self, row: Filterable) -> bool:
        if self.literal is not None:
            if self.literal not in row.text:
                return False
        elif self.pattern is not None and self.pattern.search(row.text) is None:
            return False
        return all(r.matches(row.labels) for r in self.selector)

    def apply(self, rows: Iterable[R]) -> list[R]:
        """The rows this filter keeps, in their order (a bare substring is one comprehension: ~5 ms for
        100,000 rows)."""
        if self.empty:
            return list(rows)
        if self.literal is not None and not self.selector:
            needle = self.literal
            return [r for r in rows if needle in r.text]
        return [r for r in rows if self.matches(r)]


NO_FILTER = Filter()


def parse_filter(query: str) -> Filter:
    """``[regex] [-l selector]``, case-insensitive; FilterError names what is wrong."""
    selector: tuple[Requirement, ...] = ()
    m = _SELECTOR_FLAG.search(query)
    if m is not None:
        selector = parse_selector(m.group(1))
        if not selector:
            raise FilterError("-l needs a label selector, e.g. -l app=web")
        query = query[: m.start()] + query[m.end() :]
    text = query.strip()
    if not text:
        return Filter(selector=selector)
    lowered = text.lower()
    if re.escape(lowered) == lowered or all(ch.isalnum() or ch in _LITERAL_CHARS for ch in lowered):
        return Filter(text, None, lowered, selector)
    try:
        pattern = re.compile(text, re.IGNORECASE)
    except re.error as exc:
        raise FilterError(f"invalid regex {text!r}: {exc}") from exc
    if text.isascii() and _UPPER_ESCAPE.search(text) is None:
        # Not with \S, \W, \D..., whose meaning lower-casing would change.
        pattern = re.compile(lowered)
    return Filter(text, pattern, None, selector)

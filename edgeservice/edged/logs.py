"""Reading container logs written by the shim in the CRI format, for the edge's local API.

The shim (``shim.py``) writes one record per line, ``<RFC3339Nano> stdout|stderr F|P <text>``, to
``<container>.log`` and rotates by size: ``<name>.log`` becomes ``<name>.log.1``, ``.1`` becomes ``.2`` and so
on up to ``.{maxFiles-1}``, the oldest being deleted. A line longer than 16 KiB is split into ``P`` (partial)
records ended by an ``F`` (full) record; :class:`CriLogReader` joins them per stream, so callers see whole
lines, as ``kubectl logs`` does. A joined line carries the time of its first fragment.

Reading: the rotated files are opened oldest first and then the current one, and read through their open
descriptors, so a rotation during the read neither loses nor repeats lines (a renamed file keeps its inode).
Work is done in slices of at most ``budget`` input bytes per :meth:`CriLogReader.read` call, so that an event
loop serving several clients can interleave them; ``tail_lines`` keeps at most that many lines in memory.

Following: :func:`follow` polls the current file every ``poll_interval`` (50 ms by default; the stdlib has
no inotify) and compares its inode with the one it holds. A new inode means the shim rotated: the old
descriptor is drained to its end (the shim closes it before it opens the new file) and the new file is read
from its start. The cost is up to one interval of latency per new line and one ``stat`` per interval per
follower; nothing is read while the file does not grow.

``previous``: the process runtime keeps every instance of a container in the same file (a restarted
container appends), so there is no separate file for the previous instance. The local API instead selects
the previous instance's lines by time, from its ``lastState.terminated`` ``startedAt``/``finishedAt``
(``since_time``/``until_time`` below). Those times have second precision, so lines the current instance
writes within the second its predecessor ended may show up in both; lines rotated away are gone.

Not done: the ``stream`` (stdout/stderr only) selector; reading compressed rotations (the shim does not
compress); two rotations within one poll interval (the file in between is skipped; at the default 10 MiB
per file that needs 200 MB/s of logs); a rotation in the instant between opening the rotated files.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
from collections import deque
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

# Between two looks at a followed file: the latency a follower sees for a new line, and one stat() each.
POLL_INTERVAL = 0.05
# Input bytes one read() call may consume: a few milliseconds of work, so other clients keep being served.
READ_BUDGET = 256 * 1024
# Rotated files beyond this index are not looked for (the runtime's default keeps 4 besides the current).
_MAX_ROTATIONS = 64


@dataclass(frozen=True, slots=True)
class CriRecord:
    """One record of a CRI log file."""

    time: str
    stream: str
    partial: bool
    text: bytes


@dataclass(frozen=True, slots=True)
class LogLine:
    """A whole log line (partial records joined), without its newline."""

    time: str
    stream: str
    text: bytes


@dataclass(frozen=True, slots=True)
class LogOptions:
    """What ``kubectl logs`` asks for. Times are seconds since the epoch; ``None`` means no limit."""

    tail_lines: int | None = None
    since_time: float | None = None
    until_time: float | None = None
    timestamps: bool = False
    limit_bytes: int | None = None


def parse_cri_line(line: bytes) -> CriRecord | None:
    """Parse one record (with or without its newline); None for a line that is not a CRI record."""
    line = line.removesuffix(b"\n")
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr") or parts[2] not in (b"F", b"P"):
        return None
    if parse_time(parts[0].decode("ascii", "replace")) is None:
        return None
    return CriRecord(
        parts[0].decode("ascii"),
        parts[1].decode("ascii"),
        parts[2] == b"P",
        parts[3] if len(parts) == 4 else b"",
    )


def parse_time(value: str) -> float | None:
    """RFC 3339 with optional fraction (up to nanoseconds) and ``Z`` or an offset, to epoch seconds."""
    try:
        head, sep, rest = value.partition(".")
        if sep:
            digits = len(rest) - len(rest.lstrip("0123456789"))
            fraction, zone = rest[:digits], rest[digits:]
        else:
            head, zone, fraction = value[:19], value[19:], ""
        base = dt.datetime.fromisoformat(head + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return None
    if base.tzinfo is None or (fraction and not fraction.isdigit()):
        return None
    return base.timestamp() + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def kubectl_time(value: str) -> str:
    """The timestamp as kubelet prints it with ``timestamps=true``: Go's RFC3339Nano (no trailing zeros)."""
    head, sep, rest = value.partition(".")
    if not sep or not rest.endswith("Z"):
        return value
    fraction = rest[:-1].rstrip("0")
    return f"{head}.{fraction}Z" if fraction else f"{head}Z"


def log_files(path: Path) -> list[Path]:
    """The existing files of a container's log, oldest first: ``path.N`` .. ``path.1``, then ``path``."""
    rotated = []
    for i in range(1, _MAX_ROTATIONS):
        candidate = path.with_name(f"{path.name}.{i}")
        if not candidate.exists():
            break
        rotated.append(candidate)
    current = [path] if path.exists() else []
    return [*reversed(rotated), *current]


@dataclass(slots=True)
class _Joiner:
    """Joins P records per stream (stdout and stderr may interleave their fragments)."""

    pending: dict[str, list[CriRecord]] = field(default_factory=dict)

    def feed(self, rec: CriRecord) -> LogLine | None:
        if rec.partial:
            self.pending.setdefault(rec.stream, []).append(rec)
            return None
        parts = self.pending.pop(rec.stream, [])
        if not parts:
            return LogLine(rec.time, rec.stream, rec.text)
        return LogLine(parts[0].time, rec.stream, b"".join(p.text for p in parts) + rec.text)

    def flush(self) -> list[LogLine]:
        """Lines still waiting for their F record, as they are so far."""
        out = [LogLine(p[0].time, s, b"".join(r.text for r in p)) for s, p in self.pending.items() if p]
        self.pending.clear()
        return sorted(out, key=lambda line: line.time)


class CriLogReader:
    """Reads one container's log across its rotated files; see the module docstring.

    Call :meth:`read` until :attr:`at_end`, then :meth:`finish` (a one-shot read), or, made with
    ``following=True``, keep calling :meth:`refresh` and :meth:`read` to follow. Always :meth:`close`
    (or use ``with``).
    """

    def __init__(self, path: Path, options: LogOptions | None = None, *, following: bool = False) -> None:
        self.path = path
        self.following = following
        self.options = options or LogOptions()
        self._files: list[BinaryIO] = []
        self._ino: int | None = None
        self._buf = b""
        self._joiner = _Joiner()
        tail = self.options.tail_lines
        self._tail: deque[LogLine] | None = deque(maxlen=tail) if tail is not None else None
        self._sent = 0
        self._opened = False
        self.at_end = False

    def __enter__(self) -> CriLogReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def done(self) -> bool:
        """The byte limit was reached: nothing more will be returned."""
        limit = self.options.limit_bytes
        return limit is not None and self._sent >= limit

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files.clear()

    def _open(self) -> None:
        self._opened = True
        names = log_files(self.path)
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                f = name.open("rb")
                self._files.append(f)
                if name == self.path:
                    self._ino = os.fstat(f.fileno()).st_ino

    def refresh(self) -> None:
        """For followers: notice a rotation or truncation of the current file, or its creation."""
        if not self._opened:
            self._open()
            return
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return
        if st.st_ino != self._ino:
            # Rotated: keep draining what we hold (its tail is read first), then go on with the new file.
            try:
                f = self.path.open("rb")
            except FileNotFoundError:
                return
            self._files.append(f)
            self._ino = os.fstat(f.fileno()).st_ino
        elif self._files and st.st_size < self._files[-1].tell():
            self._files[-1].seek(0)  # truncated in place: start over
            self._buf = b""

    def _next_record(self, budget: list[int]) -> CriRecord | None:
        while self._files and budget[0] > 0:
            f = self._files[0]
            chunk = f.readline()
            budget[0] -= len(chunk) or 1
            if chunk.endswith(b"\n"):
                line, self._buf = self._buf + chunk, b""
                rec = parse_cri_line(line)
                if rec is not None:
                    return rec
                continue
            self._buf += chunk
            if len(self._files) == 1:
                self.at_end = True  # the current file: the rest of this line may still be coming
                return None
            f.close()  # a rotated file is complete: go on with the next one
            self._files.pop(0)
            rec = parse_cri_line(self._buf) if self._buf else None
            self._buf = b""
            if rec is not None:
                return rec
        if not self._files:
            self.at_end = True
        return None

    def _wanted(self, line: LogLine) -> bool:
        since, until = self.options.since_time, self.options.until_time
        if since is None and until is None:
            return True
        when = parse_time(line.time) or 0.0
        return (since is None or when >= since) and (until is None or when <= until)

    def _format(self, line: LogLine) -> bytes:
        if self.options.timestamps:
            return b"%s %s\n" % (kubectl_time(line.time).encode(), line.text)
        return line.text + b"\n"

    def _emit(self, out: bytearray, lines: list[LogLine] | deque[LogLine]) -> None:
        limit = self.options.limit_bytes
        for line in lines:
            if self.done:
                return
            data = self._format(line)
            if limit is not None and self._sent + len(data) > limit:
                data = data[: limit - self._sent]
            out += data
            self._sent += len(data)

    def read(self, budget: int = READ_BUDGET) -> bytes:
        """The output for what can be read now, consuming at most about ``budget`` input bytes.

        Sets :attr:`at_end` when the current file's end was reached (more may come later). With
        ``tail_lines``, nothing is returned before :meth:`finish` or, when ``following``, before the end is
        reached the first time (a line still waiting for its F record then only shows once it is whole).
        """
        if not self._opened:
            self._open()
        self.at_end = False
        out = bytearray()
        left = [budget]
        while not self.done:
            rec = self._next_record(left)
            if rec is None:
                break
            line = self._joiner.feed(rec)
            if line is None or not self._wanted(line):
                continue
            if self._tail is not None:
                self._tail.append(line)
            else:
                self._emit(out, [line])
        if self.following and self.at_end and self._tail is not None:
            tail, self._tail = self._tail, None
            self._emit(out, tail)
        return bytes(out)

    def finish(self) -> bytes:
        """End of a one-shot read: lines still waiting for their end are returned as they are."""
        pending = [line for line in self._joiner.flush() if self._wanted(line)]
        if self._tail is not None:
            self._tail.extend(pending)
            pending, self._tail = list(self._tail), None
        out = bytearray()
        self._emit(out, pending)
        return bytes(out)


def read_log(
    path: Path, options: LogOptions | None = None, *, budget: int = READ_BUDGET
) -> Generator[bytes, None, None]:
    """A container's whole log (as selected by ``options``) in chunks; each chunk is one bounded slice of
    work, so an async caller can yield to its loop between chunks."""
    with CriLogReader(path, options) as reader:
        while not reader.done:
            chunk = reader.read(budget)
            if chunk:
                yield chunk
            if reader.at_end:
                break
        last = reader.finish()
        if last:
            yield last


async def follow(
    path: Path,
    options: LogOptions | None = None,
    *,
    poll_interval: float = POLL_INTERVAL,
    stop: Callable[[], bool] | None = None,
    budget: int = READ_BUDGET,
) -> AsyncGenerator[bytes, None]:
    """The log as selected by ``options``, then new lines as they are appended, across rotations.

    Ends when ``limit_bytes`` is reached or ``stop()`` returns true (checked every ``poll_interval``);
    otherwise it runs until cancelled. The file need not exist yet.
    """
    with CriLogReader(path, options, following=True) as reader:
        while not reader.done:
            if stop is not None and stop():
                return
            chunk = reader.read(budget)
            if chunk:
                yield chunk
            if reader.at_end:
                await asyncio.sleep(poll_interval)
                reader.refresh()
            else:
                await asyncio.sleep(0)  # a full slice: let others run before the next one

"""The CRI log reader: parsing, joining partial records, rotated files, the kubectl options, following."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edgeservice.edged.logs import (
    CriLogReader,
    CriRecord,
    LogOptions,
    follow,
    kubectl_time,
    log_files,
    parse_cri_line,
    parse_time,
    read_log,
)

T0 = "2024-05-01T10:00:00.000000000Z"
T1 = "2024-05-01T10:00:01.500000000Z"
T2 = "2024-05-01T10:00:02.000000100Z"
T3 = "2024-05-01T10:00:03.000000000Z"
EPOCH_T0 = 1714557600.0


def rec(t: str, text: str, *, stream: str = "stdout", tag: str = "F") -> str:
    return f"{t} {stream} {tag} {text}\n"


def write(path: Path, *records: str) -> None:
    path.write_text("".join(records), encoding="utf-8")


def read_all(path: Path, **opts: object) -> str:
    return b"".join(read_log(path, LogOptions(**opts))).decode()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            b"2024-05-01T10:00:00.000000000Z stdout F hello world\n",
            CriRecord(T0, "stdout", False, b"hello world"),
        ),
        (b"2024-05-01T10:00:00.000000000Z stderr P part", CriRecord(T0, "stderr", True, b"part")),
        (b"2024-05-01T10:00:00.000000000Z stdout F \n", CriRecord(T0, "stdout", False, b"")),
        (b"2024-05-01T10:00:00.000000000Z stdout F", CriRecord(T0, "stdout", False, b"")),
        (
            b"2024-05-01T10:00:00.000000000Z stdout F  two  spaces ",
            CriRecord(T0, "stdout", False, b" two  spaces "),
        ),
        (b"2024-05-01T10:00:00.000000000Z stdin F x", None),
        (b"2024-05-01T10:00:00.000000000Z stdout X x", None),
        (b"yesterday stdout F x", None),
        (b"not a record", None),
        (b"", None),
    ],
)
def test_parse_cri_line(line: bytes, expected: CriRecord | None) -> None:
    assert parse_cri_line(line) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (T0, EPOCH_T0),
        (T1, EPOCH_T0 + 1.5),
        ("2024-05-01T10:00:00Z", EPOCH_T0),
        ("2024-05-01T12:00:00+02:00", EPOCH_T0),
        ("2024-05-01T10:00:00.25+00:00", EPOCH_T0 + 0.25),
        ("2024-05-01T10:00:00", None),  # no zone: not RFC 3339
        ("soon", None),
        ("", None),
    ],
)
def test_parse_time(value: str, expected: float | None) -> None:
    got = parse_time(value)
    assert got == pytest.approx(expected) if expected is not None else got is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (T0, "2024-05-01T10:00:00Z"),
        (T1, "2024-05-01T10:00:01.5Z"),
        (T2, "2024-05-01T10:00:02.0000001Z"),
        ("2024-05-01T10:00:00Z", "2024-05-01T10:00:00Z"),
    ],
)
def test_kubectl_time_trims_like_go_rfc3339nano(value: str, expected: str) -> None:
    assert kubectl_time(value) == expected


def test_log_files_oldest_first(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    assert log_files(log) == []
    for name in ("c.log", "c.log.1", "c.log.2", "c.log.4"):  # .4 without .3 is not part of the chain
        (tmp_path / name).write_text("")
    assert [p.name for p in log_files(log)] == ["c.log.2", "c.log.1", "c.log"]


# One log across three files, with a stdout line split into partials across a rotation and a stderr
# partial interleaved with it.
ROTATED = {
    "c.log.2": [rec(T0, "first"), rec(T0, "second", stream="stderr")],
    "c.log.1": [rec(T1, "long-", tag="P"), rec(T1, "err-", stream="stderr", tag="P"), rec(T1, "third")],
    "c.log": [rec(T2, "line-", tag="P"), rec(T2, "end"), rec(T2, "or", stream="stderr"), rec(T3, "last")],
}


@pytest.fixture
def rotated(tmp_path: Path) -> Path:
    for name, records in ROTATED.items():
        write(tmp_path / name, *records)
    return tmp_path / "c.log"


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        ({}, "first\nsecond\nlong-third\nline-end\nerr-or\nlast\n"),
        ({"tail_lines": 2}, "err-or\nlast\n"),
        ({"tail_lines": 0}, ""),
        ({"tail_lines": 100}, "first\nsecond\nlong-third\nline-end\nerr-or\nlast\n"),
        ({"since_time": EPOCH_T0 + 1.5}, "long-third\nline-end\nerr-or\nlast\n"),
        ({"since_time": EPOCH_T0 + 1.6}, "line-end\nlast\n"),  # err-or began at 1.5
        ({"since_time": EPOCH_T0 + 1, "until_time": EPOCH_T0 + 2.5}, "long-third\nline-end\nerr-or\n"),
        ({"since_time": EPOCH_T0 + 1, "tail_lines": 1}, "last\n"),
        ({"limit_bytes": 8}, "first\nse"),
        ({"limit_bytes": 6}, "first\n"),
        ({"tail_lines": 1, "limit_bytes": 2}, "la"),
        (
            {"timestamps": True, "tail_lines": 3},
            "2024-05-01T10:00:02.0000001Z line-end\n"
            "2024-05-01T10:00:01.5Z err-or\n"
            "2024-05-01T10:00:03Z last\n",
        ),
    ],
)
def test_read_across_rotations(rotated: Path, opts: dict[str, object], expected: str) -> None:
    assert read_all(rotated, **opts) == expected


@pytest.mark.parametrize("budget", [1, 7, 64, 1 << 20])
def test_read_in_slices_gives_the_same_result(rotated: Path, budget: int) -> None:
    chunks = list(read_log(rotated, LogOptions(), budget=budget))
    assert b"".join(chunks) == b"first\nsecond\nlong-third\nline-end\nerr-or\nlast\n"


def test_garbage_lines_are_skipped_and_unfinished_partials_shown(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    write(log, rec(T0, "ok"), "garbage without a timestamp\n", rec(T1, "still being writ", tag="P"))
    assert read_all(log) == "ok\nstill being writ\n"
    assert read_all(log, tail_lines=1) == "still being writ\n"


def test_missing_log_is_empty(tmp_path: Path) -> None:
    assert read_all(tmp_path / "nothing.log") == ""


def test_rotation_during_a_read_loses_nothing(rotated: Path) -> None:
    with CriLogReader(rotated) as reader:
        out = reader.read(budget=1)  # the files are open now
        # The shim rotates: every file moves up one, the oldest goes, a new current file starts.
        d = rotated.parent
        (d / "c.log.2").unlink()
        os.replace(d / "c.log.1", d / "c.log.2")
        os.replace(d / "c.log", d / "c.log.1")
        write(rotated, rec(T3, "after rotation"))
        while not reader.at_end:
            out += reader.read()
        out += reader.finish()
    assert out == b"first\nsecond\nlong-third\nline-end\nerr-or\nlast\n"


async def collect_until(stream: AsyncIterator[bytes], text: bytes) -> bytes:
    got = b""
    async with asyncio.timeout(5):
        async for chunk in stream:
            got += chunk
            if text in got:
                return got
    return got


class Shim:
    """Appends and rotates like shim.RotatingLog."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, *records: str) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write("".join(records))

    def rotate(self) -> None:
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self.path.write_text("")


async def test_follow_sees_appends_across_rotation_and_truncation(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    shim = Shim(log)
    shim.append(rec(T0, "old"), rec(T0, "older"))
    stopped = False
    stream = follow(log, LogOptions(tail_lines=1, timestamps=True), poll_interval=0.01, stop=lambda: stopped)
    try:
        assert await collect_until(stream, b"older\n") == b"2024-05-01T10:00:00Z older\n"
        shim.append(rec(T1, "new-", tag="P"))
        shim.append(rec(T1, "line"))
        assert await collect_until(stream, b"line\n") == b"2024-05-01T10:00:01.5Z new-line\n"
        shim.append(rec(T2, "before rotation"))
        shim.rotate()
        shim.append(rec(T3, "after rotation"))
        got = await collect_until(stream, b"after rotation\n")
        assert got.decode().splitlines() == [
            "2024-05-01T10:00:02.0000001Z before rotation",
            "2024-05-01T10:00:03Z after rotation",
        ]
        log.write_text("")  # truncated (copytruncate-style): start over
        shim.append(rec(T3, "fresh"))
        assert await collect_until(stream, b"fresh\n") == b"2024-05-01T10:00:03Z fresh\n"
        stopped = True
        async with asyncio.timeout(5):
            assert [c async for c in stream] == []
    finally:
        await stream.aclose()


async def test_follow_waits_for_the_file_and_stops_at_the_byte_limit(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    stream = follow(log, LogOptions(limit_bytes=10), poll_interval=0.01)
    try:
        first = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.05)  # the file does not exist yet: the follower keeps waiting
        assert not first.done()
        Shim(log).append(rec(T0, "12345"), rec(T0, "67890"))
        async with asyncio.timeout(5):
            got = await first
            got += b"".join([c async for c in stream])
        assert got == b"12345\n6789"
    finally:
        await stream.aclose()

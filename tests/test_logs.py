"""Log stream decoding: frames, lines across frames, UTF-8, timestamps and the resume cursor."""

from __future__ import annotations

import asyncio
import struct

from remote_docker.logs import (
    STDERR,
    STDOUT,
    FrameDecoder,
    Line,
    LineSplitter,
    LogCursor,
    rfc3339_to_unix,
    split_timestamp,
    stdout_lines,
)


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def test_frames_split_anywhere() -> None:
    data = frame(STDOUT, b"hello\n") + frame(STDERR, b"oops\n") + frame(STDOUT, b"x" * 70000)
    for cut in (1, 3, 8, 9, 100, len(data) - 1):
        decoder = FrameDecoder()
        got = list(decoder.feed(data[:cut])) + list(decoder.feed(data[cut:]))
        assert got == [(STDOUT, b"hello\n"), (STDERR, b"oops\n"), (STDOUT, b"x" * 70000)]


def test_tty_stream_is_lines() -> None:
    decoder = FrameDecoder(tty=True)
    assert list(decoder.feed(b"a\r\nb")) == [(STDOUT, b"a\r\n")]
    assert decoder.leftover() == b"b"


def test_lines_across_frames_per_stream() -> None:
    splitter = LineSplitter()
    out = []
    out += splitter.feed(STDOUT, b"par")
    out += splitter.feed(STDERR, b"err line\n")
    out += splitter.feed(STDOUT, b"tial\nnext")
    assert out == [Line(STDERR, "err line"), Line(STDOUT, "partial")]
    assert list(splitter.flush()) == [Line(STDOUT, "next")]


def test_multibyte_character_split_between_frames() -> None:
    splitter = LineSplitter()
    euro = "€".encode()
    out = list(splitter.feed(STDOUT, b"price " + euro[:1])) + list(splitter.feed(STDOUT, euro[1:] + b"5\n"))
    assert out == [Line(STDOUT, "price €5")]


def test_invalid_utf8_replaced_and_crlf() -> None:
    async def chunks():
        data = frame(STDOUT, b"2026-01-02T03:04:05.1Z bad \xff\xfe\r\n") + frame(STDOUT, b"2026-01-02T03:04:05.2Z ok")
        yield data[:7]
        yield data[7:]

    assert asyncio.run(stdout_lines(chunks())) == ["bad \ufffd\ufffd", "ok"]


def test_long_line_emitted_in_pieces_never_lost() -> None:
    splitter = LineSplitter(max_line_bytes=10)
    pieces = list(splitter.feed(STDOUT, b"a" * 25)) + list(splitter.feed(STDOUT, b"b\nc\n"))
    assert [(p.text, p.continues) for p in pieces] == [("a" * 10, True), ("a" * 10, True), ("a" * 5 + "b", False), ("c", False)]


def test_long_line_pieces_never_split_a_character() -> None:
    splitter = LineSplitter(max_line_bytes=10)
    text = "€" * 9  # 27 bytes: three-byte characters never fall on a 10-byte boundary
    pieces = list(splitter.feed(STDOUT, text.encode() + b"\n"))
    assert "".join(p.text for p in pieces) == text
    assert all(len(p.text.encode()) <= 10 for p in pieces) and "\ufffd" not in "".join(p.text for p in pieces)


def test_timestamps() -> None:
    stamp, message = split_timestamp(b"2026-01-02T03:04:05.1234Z hello world\n")
    assert stamp == "2026-01-02T03:04:05.123400000Z" and message == b"hello world\n"
    assert split_timestamp(b"no stamp here") == (None, b"no stamp here")
    assert rfc3339_to_unix("2026-01-02T03:04:05.123456789Z") == "1767323045.123456789"
    assert rfc3339_to_unix("1970-01-01T00:00:01Z") == "1.000000000"


def test_cursor_skips_exactly_what_was_read() -> None:
    t1, t2, t3 = "2026-01-01T00:00:00.000000001Z", "2026-01-01T00:00:00.000000002Z", "2026-01-01T00:00:01.000000000Z"
    cursor = LogCursor()
    # first pass: one entry at t1, two pieces of a long line at t2 (they share a timestamp)
    assert [cursor.admit(t) for t in (t1, t2, t2)] == [True, True, True]
    assert cursor.since == t2
    assert cursor.since_param() == "1767225599.800000002", "resume a little before the newest entry"
    # the stream drops; the daemon resends the overlap window and then new entries
    cursor.start_pass()
    assert [cursor.admit(t) for t in (t1, t2, t2, t2, t3)] == [False, False, False, True, True]
    # a later trigger run resumes from the serialized cursor
    resumed = LogCursor.from_dict(cursor.to_dict())
    resumed.start_pass()
    assert resumed.admit(t3) is False
    assert resumed.admit("2026-01-01T00:00:02.000000000Z") is True


def test_cursor_handles_streams_out_of_timestamp_order() -> None:
    """dockerd may write a stderr entry stamped before the stdout entry that precedes it in the log."""
    out, err = "2026-01-01T00:00:00.000200000Z", "2026-01-01T00:00:00.000100000Z"
    cursor = LogCursor()
    assert cursor.admit(out, STDOUT) and cursor.admit(err, STDERR)
    assert cursor.since == out, "the cursor never moves back"
    cursor.start_pass()  # a reconcile read resends both: neither may repeat
    assert [cursor.admit(err, STDERR), cursor.admit(out, STDOUT)] == [False, False]
    assert cursor.admit(out, STDERR), "same stamp, other stream: a different entry"


def test_cursor_window_is_pruned() -> None:
    cursor = LogCursor()
    for second in range(100):
        cursor.admit(f"2026-01-01T00:01:{second // 2:02d}.{second % 2}00000000Z")
    assert len(cursor.to_dict()["recent"]) <= 2

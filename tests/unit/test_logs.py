"""Log stream decoding (frames, lines across frames, UTF-8, timestamps, the resume cursor) and the
follower that turns lines into task-log records."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

from helpers import Records, entries, frame

from remote_docker.lifecycle.payloads import LogHandover
from remote_docker.logs.follower import FLOOD_LINES, LINES_PER_RECORD, LogFollower
from remote_docker.logs.stream import (
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


def test_one_record_per_line_at_normal_rates() -> None:
    out = Records()
    follower = LogFollower(out)
    follower.feed(entries((STDOUT, "a"), (STDERR, "oops"), (STDOUT, "b")))
    assert out.records == [("info", "a"), ("warning", "oops"), ("info", "b")]


def test_a_flood_shares_records_in_order_and_every_line_is_accounted() -> None:
    out = Records()
    follower = LogFollower(out, tail_lines=3)
    lines = [(STDOUT, f"out-{i}") for i in range(FLOOD_LINES)] + [(STDERR, "err")] + [(STDOUT, f"more-{i}") for i in range(LINES_PER_RECORD + 1)]
    follower.feed(entries(*lines))
    joined = [(level, event.split("\n")) for level, event in out.records]
    assert [line for _, event in joined for line in event] == [text for _, text in lines], "every line once, in order"
    assert [level for level, _ in joined] == ["info", "warning", "info", "info"]
    assert max(len(event) for _, event in joined) == LINES_PER_RECORD
    assert follower.counts == {"stdout": FLOOD_LINES + LINES_PER_RECORD + 1, "stderr": 1}
    assert follower.summary().last_stdout_line == f"more-{LINES_PER_RECORD}"
    assert [text for _, text in follower.summary().tail] == [f"more-{LINES_PER_RECORD - 2}", f"more-{LINES_PER_RECORD - 1}", f"more-{LINES_PER_RECORD}"]


def test_private_values_are_redacted_in_every_line_and_the_last_one_is_not_in_the_event() -> None:
    out = Records()
    follower = LogFollower(out)
    follower.keep_secret("s3cret-value")
    follower.feed(entries((STDOUT, "token=s3cret-value"), (STDERR, "again s3cret-value")))
    assert out.records == [("info", "token=***"), ("warning", "again ***")]
    assert follower.summary().last_stdout_line is None and not follower.summary().last_line_in_event


def test_a_half_read_line_travels_with_the_hand_over() -> None:
    first = LogFollower(Records())
    first.feed(frame(STDOUT, b"2026-01-02T03:04:05.000000001Z par"))
    handed = first.handover()
    out = Records()
    second = LogFollower.taking_over(out, handed)
    second.feed(frame(STDOUT, b"2026-01-02T03:04:05.000000002Z tial\n"))
    assert out.records == [("info", "partial")]


def test_a_begun_line_holding_part_of_a_private_value_travels_sealed_and_is_redacted_whole() -> None:
    from remote_docker.daemon.ownership import Deployment

    deployment = Deployment(b"a" * 64)
    first = LogFollower(Records())
    first.keep_secret("s3cret-value")
    first.feed(frame(STDOUT, b"2026-01-02T03:04:05.000000001Z token=s3cr"))
    handed = first.handover(seal=deployment.seal)
    assert first.out.records == [] and handed.partial == {} and b"s3cr" not in json.dumps(handed.to_payload()).encode()
    opened = replace(handed, partial=json.loads(deployment.unseal(handed.sealed_partial)), sealed_partial=None)
    out = Records()
    second = LogFollower.taking_over(out, opened)
    second.keep_secret("s3cret-value")
    second.feed(frame(STDOUT, b"2026-01-02T03:04:05.000000002Z et-value\n"))
    assert out.records == [("info", "token=***")]


def test_without_a_seal_a_begun_line_with_private_values_set_is_logged_before_the_hand_over() -> None:
    first = LogFollower(Records())
    first.keep_secret("s3cret-value")
    first.feed(frame(STDOUT, b"2026-01-02T03:04:05.000000001Z begun"))
    assert first.handover().partial == {} and first.out.records == [("info", "begun")]


def test_recent_lines_count_every_follower_within_the_window() -> None:
    from remote_docker.logs.follower import RecentLines

    recent = RecentLines()
    recent.add(30, now=100.0)
    recent.add(12, now=100.6)
    recent._trim(100.9)
    assert sum(count for _, count in recent._writes) == 42
    recent._trim(101.3)  # the first write is more than a second old
    assert sum(count for _, count in recent._writes) == 12


def test_the_drain_pause_grows_with_what_this_process_logged_lately(monkeypatch) -> None:
    from remote_docker import triggers
    from remote_docker.logs.follower import RecentLines

    quiet, busy, flood = RecentLines(), RecentLines(), RecentLines()
    busy.add(400, now=time.monotonic())
    flood.add(1_000_000, now=time.monotonic())
    pauses = []
    for recent in (quiet, busy, flood):
        monkeypatch.setattr(triggers, "recent_lines", recent)
        pauses.append(triggers.log_drain_seconds())
    assert pauses == [triggers.LOG_DRAIN_FLOOR, triggers.LOG_DRAIN_FLOOR + 400 / triggers.SUPERVISOR_LINES_PER_SECOND,
                      triggers.LOG_DRAIN_SECONDS]


def test_until_supervisor_read_follows_the_log_sockets_queue() -> None:
    """A trigger fires once its supervisor has read what it logged: the socket's queue says when."""
    import json
    import socket

    import structlog

    from remote_docker.logs.follower import until_supervisor_read

    ours, supervisor = socket.socketpair()
    with ours, supervisor, ours.makefile("wb", buffering=0) as channel:
        as_bytes = structlog.processors.JSONRenderer(serializer=lambda event, **_: json.dumps(event).encode())
        out = structlog.wrap_logger(structlog.BytesLogger(channel), processors=[as_bytes]).bind()
        out.info("the last line of a container")

        async def scenario() -> list:
            behind = await until_supervisor_read(out, within=0.05, poll=0.01)  # nobody read it yet
            reader = asyncio.get_running_loop().call_later(0.05, supervisor.recv, 65536)
            caught_up = await until_supervisor_read(out, within=5.0, poll=0.01)
            reader.cancel()
            return [behind, caught_up]

        assert asyncio.run(scenario()) == [False, True]
        unknown = structlog.wrap_logger(structlog.PrintLogger(), processors=[structlog.processors.JSONRenderer()]).bind()
        assert asyncio.run(until_supervisor_read(unknown, within=1.0, poll=0.01)) is None


class BindingRecords(Records):
    """Records that keep the fields a follower binds (``stream``, ``replay``), as structlog's loggers do."""

    def __init__(self, shared: list | None = None, **fields) -> None:
        super().__init__()
        self.records = shared if shared is not None else self.records
        self.fields = fields

    def bind(self, **more) -> BindingRecords:
        return BindingRecords(self.records, **{**self.fields, **more})

    def info(self, event: str) -> None:
        self.records.append(("info", event, self.fields))

    def warning(self, event: str) -> None:
        self.records.append(("warning", event, self.fields))


def test_a_log_the_stream_skipped_part_of_is_told_by_its_bytes_and_replayed_whole() -> None:
    out = BindingRecords()
    lines = [(STDOUT, f"line-{i}") for i in range(6)] + [(STDERR, "err")]
    whole = entries(*lines)
    decoder, sizes = FrameDecoder(), {"stdout": 0, "stderr": 0}
    for stream, payload in decoder.feed(whole):
        sizes["stderr" if stream == STDERR else "stdout"] += len(split_timestamp(payload)[1])
    follower = LogFollower(out)
    follower.start_pass()
    follower.feed(entries(*lines[:2]) + entries(*lines[4:], start=4))  # a stream that skipped line-2 and line-3
    follower.end_pass()
    assert not follower.complete(sizes)
    follower.start_replay()
    follower.start_pass()
    follower.feed(whole)
    follower.end_pass()
    assert follower.complete(sizes)
    replayed = [(level, text) for level, text, fields in out.records if fields.get("replay")]
    assert replayed == [("info", f"line-{i}") for i in range(6)] + [("warning", "err")]
    assert all(fields["stream"] == ("stderr" if level == "warning" else "stdout") for level, _, fields in out.records)
    assert follower.summary().last_stdout_line == "line-5" and follower.summary().lines == {"stdout": 6, "stderr": 1}


def test_received_bytes_travel_with_the_hand_over() -> None:
    first = LogFollower(Records())
    first.start_pass()
    first.feed(entries((STDOUT, "one"), (STDERR, "two")))
    handed = first.handover()
    assert handed.received == {"stdout": 4, "stderr": 4}
    second = LogFollower.taking_over(Records(), handed)
    second.start_pass()
    second.feed(entries((STDOUT, "one"), (STDERR, "two"), (STDOUT, "three"), start=0))
    assert second.received == {"stdout": 10, "stderr": 4}, "what the first took is not counted twice"
    older = LogHandover.from_payload({k: v for k, v in handed.to_payload().items() if k != "received"})
    assert LogFollower.taking_over(Records(), older).complete({"stdout": 99}), "unknown counts: can't tell, so trusted"


def test_a_private_value_across_the_pieces_of_an_over_long_line_is_redacted_wherever_it_is_cut(monkeypatch) -> None:
    from remote_docker.logs import follower as logs

    monkeypatch.setattr(logs, "MAX_LINE_BYTES", 64)  # pieces of 64 bytes instead of 4 MiB: same code path
    secret = "hunter2-very-private"
    for shift in range(len(secret) + 2):
        line = "x" * (64 - shift) + secret + "y" * 100 + secret + "z" * 7  # across the first cut, then inside a piece
        out = Records()
        follower = LogFollower(out)
        follower.keep_secret(secret)
        # as dockerd sends a long line: entries of at most 16 bytes here, only the last one ends in a newline
        chunks = [line[i:i + 16] for i in range(0, len(line), 16)]
        follower.feed(b"".join(frame(STDOUT, b"2026-01-02T03:04:05.%09dZ %s" % (i, chunk.encode()))
                               for i, chunk in enumerate(chunks[:-1]))
                      + frame(STDOUT, b"2026-01-02T03:04:05.%09dZ %s\n" % (len(chunks), chunks[-1].encode())))
        pieces = [event for level, event in out.records if level == "info"]
        assert "".join(pieces) == line.replace(secret, "***"), shift
        assert not any(part in piece for piece in pieces for part in (secret[:8], secret[-8:])), (shift, pieces)
        assert follower.summary().lines["stdout"] == 1


def test_a_held_back_end_of_an_over_long_line_is_logged_when_the_container_ends(monkeypatch) -> None:
    from remote_docker.logs import follower as logs

    monkeypatch.setattr(logs, "MAX_LINE_BYTES", 64)
    out = Records()
    follower = LogFollower(out)
    follower.keep_secret("hunter2-very-private")
    follower.feed(frame(STDOUT, b"2026-01-02T03:04:05.000000001Z " + b"a" * 128))  # two whole pieces, no end
    follower.flush()
    assert "".join(event for level, event in out.records if level == "info") == "a" * 128

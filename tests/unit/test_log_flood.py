"""A flood's fast path through the log follower (whole lines, a few calls per run instead of several per
line) gives exactly what the entry-by-entry path gives; the end of a log read from its tail is used only
when it reaches back to what was read."""

from __future__ import annotations

import random

import pytest
from helpers import Records, frame

from remote_docker.logs.follower import LogFollower
from remote_docker.logs.stream import STDERR, STDOUT, LogCursor, scan_whole_lines


def stamp(n: int) -> bytes:
    """dockerd's fixed-width stamp, ``n`` microseconds into a second (a flood's lines are microseconds apart)."""
    return b"2026-01-02T03:04:%02d.%06d000Z" % (5 + n // 1_000_000, n % 1_000_000)


class EntryByEntry(LogFollower):
    """The reference: the follower with its fast path turned off."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cursor.takes_newer = lambda: False  # type: ignore[method-assign]


def random_log(seed: int, entries: int = 3000) -> bytes:
    """What dockerd can send, mostly floods of whole lines, with each thing that leaves the fast path: a
    stderr entry stamped before the stdout one it follows, pieces of a line, an empty line, CRLF, invalid
    UTF-8, a character split between pieces, a stamp that isn't fixed-width, a secret, a newline inside
    an entry (dockerd writes none), the same stamp twice."""
    rng = random.Random(seed)
    out, clock = [], 0
    for i in range(entries):
        clock += rng.choice((1, 1, 1, 2, 7, 300))
        stream = STDERR if rng.random() < 0.15 else STDOUT
        when = stamp(clock)
        text = b"line-%d %s" % (i, b"x" * rng.choice((0, 5, 80)))
        roll = rng.random()
        if roll < 0.03:
            when = stamp(clock - rng.choice((1, 50, 250_000)))  # out of order, within and beyond the overlap
        elif roll < 0.05:
            out.append(frame(stream, when + b" piece-of-" + "€".encode()[:2]))  # no newline: a line continues
            text = "€".encode()[2:] + text
        elif roll < 0.06:
            text = b""
        elif roll < 0.07:
            text += b"\r"
        elif roll < 0.08:
            text += b" bad \xff\xfe"
        elif roll < 0.09:
            when = when[:-4] + b"Z"  # a stamp with fewer digits: not dockerd's, still an entry
        elif roll < 0.10:
            text += b" token=s3cret-value"
        elif roll < 0.11:
            text += b"\ninner"
        elif roll < 0.12:
            clock -= 1  # the next entry shares this one's stamp
        out.append(frame(stream, when + b" " + text + b"\n"))
    return b"".join(out)


def follow(follower: LogFollower, data: bytes, seed: int) -> LogFollower:
    rng = random.Random(seed)
    follower.keep_secret("s3cret-value")
    offset = 0
    while offset < len(data):  # chunk boundaries anywhere, small and large
        size = rng.choice((1, 7, 100, 4096, 65536))
        follower.feed(data[offset:offset + size])
        offset += size
    follower.flush()
    return follower


@pytest.mark.parametrize("seed", range(12))
def test_the_fast_path_gives_what_the_entry_by_entry_path_gives(seed: int) -> None:
    data = random_log(seed)
    fast, reference = follow(LogFollower(Records()), data, seed), follow(EntryByEntry(Records()), data, seed)
    assert fast.out.records == reference.out.records
    assert fast.counts == reference.counts and fast.counts["stdout"] > 2000
    assert fast.summary() == reference.summary()
    assert fast.handover() == reference.handover()


def test_a_resumed_pass_after_a_fast_flood_repeats_nothing() -> None:
    """The fast path's entries are in the overlap window like any others: a resumed read skips them."""
    lines = [frame(STDOUT, stamp(n) + b" line-%d\n" % n) for n in range(1000)]
    follower = LogFollower(Records())
    follower.feed(b"".join(lines[:600]))
    assert len(follower.out.records) > 1, "the flood went through"
    follower.start_pass()  # the daemon resends from a little before the newest entry, then goes on
    follower.feed(b"".join(lines[300:]))
    logged = [line for _, event in follower.out.records for line in event.split("\n")]
    assert logged == [f"line-{n}" for n in range(1000)]
    assert LogCursor.from_dict(follower.cursor.to_dict()).since == stamp(999).decode()


def test_scan_stops_at_the_first_entry_that_is_not_a_whole_newer_line() -> None:
    first, second = frame(STDOUT, stamp(1) + b" a\n"), frame(STDERR, stamp(2) + b" b\n")
    partial = frame(STDOUT, stamp(3) + b" no newline")
    offset, runs = scan_whole_lines(first + second + partial, 0, stamp(0), 1024)
    assert offset == len(first + second)
    assert runs == [(STDOUT, [stamp(1)], [b"a"]), (STDERR, [stamp(2)], [b"b"])]
    assert scan_whole_lines(first + second, 0, stamp(1), 1024) == (0, []), "not newer than the newest read"
    assert scan_whole_lines(first[:-1], 0, stamp(0), 1024) == (0, []), "an incomplete frame waits"


def tail_follower(read: int) -> LogFollower:
    """A follower that has read entries 0..read-1, 10 ms apart (the overlap window holds the last 20)."""
    follower = LogFollower(Records())
    follower.feed(b"".join(frame(STDOUT, stamp(n * 10_000) + b" line-%d\n" % n) for n in range(read)))
    return follower


def log_of(entries: range) -> bytes:
    return b"".join(frame(STDOUT, stamp(n * 10_000) + b" line-%d\n" % n) for n in entries)


def test_a_tail_that_reaches_back_is_the_rest_of_the_log() -> None:
    follower = tail_follower(read=300)
    assert follower.tail_reaches_back(log_of(range(290, 310)), asked=50), "the whole log: fewer than asked"
    assert follower.tail_reaches_back(log_of(range(260, 310)), asked=50), "starts before the window: read"
    assert follower.tail_reaches_back(log_of(range(295, 345)), asked=50), "starts with an entry read"
    assert not follower.tail_reaches_back(log_of(range(300, 350)), asked=50), "starts after the newest read"
    assert not tail_follower(read=0).tail_reaches_back(log_of(range(0, 50)), asked=50), "nothing read yet"


def test_a_tail_pass_logs_only_what_was_missed() -> None:
    follower = tail_follower(read=300)
    follower.start_pass(from_tail=True)
    follower.feed(log_of(range(260, 310)))  # older than the window, in it, and new
    logged = [line for _, event in follower.out.records for line in event.split("\n")]
    assert logged == [f"line-{n}" for n in range(310)]

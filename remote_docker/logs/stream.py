"""Docker's log stream as lines, exactly as the container wrote them (the wire format).

The ``/containers/{id}/logs`` endpoint (with ``timestamps=1``) sends, for a container without
a TTY, frames of ``[stream, 0, 0, 0, size(4 bytes BE)] + payload``; each frame is one log
entry prefixed with its RFC 3339 nano timestamp. An entry is a whole line or a ≤16 KiB piece
of a longer one, and a frame may split a multi-byte character. So:

* lines are split on ``\\n`` per stream, across frames, and decoded only once complete
  (invalid UTF-8 becomes U+FFFD, never dropped);
* a partial last line is held until it is completed or the container exits;
* ``LogCursor`` remembers the newest timestamp and the entries read just before it, so a
  stream resumed with ``since=`` skips exactly what was already read.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections import deque
from collections.abc import AsyncIterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

STDOUT, STDERR = 1, 2
_HEADER = struct.Struct(">BxxxL")


# dockerd copies stdout and stderr in separate goroutines, so entries of the two streams can
# reach the log slightly out of timestamp order. A resumed read starts this much before the
# newest entry seen and skips what was already read in that window.
RESUME_OVERLAP = dt.timedelta(milliseconds=200)


@dataclass
class LogCursor:
    """Where a log stream got to, so a resumed read neither loses nor repeats an entry.

    ``since`` is the newest entry's timestamp; ``recent`` counts the entries read per
    ``(timestamp, stream)`` within ``RESUME_OVERLAP`` of it (pieces of one long line share a
    timestamp, hence counts).
    """

    since: str | None = None
    recent: dict[tuple[str, int], int] = field(default_factory=dict)
    _order: deque = field(default_factory=deque, repr=False, compare=False)  # keys, oldest first
    _replay: dict[tuple[str, int], int] = field(default_factory=dict, repr=False, compare=False)
    # Runs taken by ``admit_newer`` (a flood's fast path), kept as they came: (stream, stamps as bytes).
    # Folded into ``recent`` only when a lookup needs them; most are pruned before that.
    _runs: deque = field(default_factory=deque, repr=False, compare=False)
    _run_entries: int = field(default=0, repr=False, compare=False)  # since the runs were last pruned
    _floor: str | None = field(default=None, repr=False, compare=False)  # a tail pass: older entries were read

    def __post_init__(self) -> None:
        self._order.extend(sorted(self.recent))

    def window_start(self) -> str:
        """The overlap window's start, ``RESUME_OVERLAP`` before the newest entry ("" before any entry)."""
        return _shift(self.since, -RESUME_OVERLAP) if self.since else ""

    def takes_newer(self) -> bool:
        """True when ``admit_newer`` may be used: a newest entry is known and no window is being replayed."""
        return self.since is not None and not self._replay

    def admit_newer(self, stream: int, stamps: list[bytes]) -> None:
        """Record entries of one stream known to be newer than ``since`` and each newer than the one
        before (what ``scan_whole_lines`` returns): ``admit`` for each, without a lookup per entry."""
        self._runs.append((stream, stamps))
        self.since = stamps[-1].decode("ascii")
        self._run_entries += len(stamps)
        if self._run_entries > 4096:
            self._run_entries = 0
            floor = self.window_start().encode("ascii")
            while len(self._runs) > 1 and self._runs[0][1][-1] < floor:
                self._runs.popleft()

    def _fold(self) -> None:
        """Move the fast path's runs into ``recent`` (each of their entries was new: a count of 1)."""
        floor = self.window_start().encode("ascii")
        while self._runs:
            stream, stamps = self._runs.popleft()
            if stamps[-1] < floor:
                continue  # the window has passed all of it
            keys = [(stamp.decode("ascii"), stream) for stamp in stamps]
            self.recent.update(dict.fromkeys(keys, 1))
            self._order.extend(keys)
        self._run_entries = 0

    def since_param(self) -> str | None:
        """The ``since`` query value (``seconds.nanoseconds``): the overlap window's start."""
        return rfc3339_to_unix(self.window_start()) if self.since else None

    def start_pass(self, from_tail: bool = False) -> None:
        """A new request from ``since_param``: the daemon resends the window's entries once more. ``from_tail``:
        a request for the log's last entries instead, whose entries older than the window are skipped here."""
        self._fold()
        self._replay = dict(self.recent)
        self._floor = self.window_start() if from_tail and self.since else None

    def covers(self, stamp: str, stream: int) -> bool:
        """Whether a read that starts with this entry reaches back to what was read: it was read (it is in
        the window), or it is older than the window (in the log before the newest entry read)."""
        if self.since is None:
            return False
        self._fold()
        return stamp < self.window_start() or (stamp, stream) in self.recent

    def admit(self, timestamp: str, stream: int = STDOUT) -> bool:
        """Record an entry; False if it was already read before this pass."""
        key = (timestamp, stream)
        if self._runs:
            self._fold()  # in the order they came
        if not self._replay and self.since is not None and timestamp > self.since:
            # the usual entry: newer than anything read, so unseen (the same work as below, fewer lookups)
            self.recent[key] = 1
            self._order.append(key)
            self.since = timestamp
            if len(self._order) & 0x3FF == 0:
                self._prune(timestamp)
            return True
        if self._floor is not None and timestamp < self._floor:
            return False
        if self._replay.get(key, 0) > 0:
            self._replay[key] -= 1
            return False
        count = self.recent.get(key, 0)
        self.recent[key] = count + 1
        if not count:
            self._order.append(key)
        if self.since is None or timestamp > self.since:
            self.since = timestamp
            if len(self._order) & 0x3FF == 0:
                self._prune(timestamp)
        return True

    def _prune(self, newest: str) -> None:
        """Now and then: the window only needs to be at least ``RESUME_OVERLAP`` big."""
        floor = _shift(newest, -RESUME_OVERLAP)
        while self._order and self._order[0][0] < floor:
            self.recent.pop(self._order.popleft(), None)

    def to_dict(self) -> dict:
        self._fold()
        floor = self.window_start()
        return {"since": self.since, "recent": [[t, s, n] for (t, s), n in self.recent.items() if t >= floor]}

    @classmethod
    def from_dict(cls, data: dict | None) -> LogCursor:
        if not data:
            return cls()
        return cls(since=data.get("since"), recent={(t, s): n for t, s, n in data.get("recent", [])})


def _shift(stamp: str, delta: dt.timedelta) -> str:
    """Move a normalized RFC 3339 nano timestamp by ``delta`` (microsecond steps suffice here)."""
    seconds_part, _, fraction = stamp.rstrip("Z").partition(".")
    nanos = int(fraction.ljust(9, "0")[:9])
    moment = dt.datetime.strptime(seconds_part, "%Y-%m-%dT%H:%M:%S") + dt.timedelta(microseconds=nanos // 1000) + delta
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond:06d}{nanos % 1000:03d}Z"


def rfc3339_to_unix(stamp: str) -> str:
    """``2026-01-02T03:04:05.123456789Z`` -> ``1767323045.123456789`` (exact, no float rounding)."""
    seconds_part, _, fraction = stamp.rstrip("Z").partition(".")
    whole = dt.datetime.strptime(seconds_part, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc)
    return f"{int(whole.timestamp())}.{(fraction or '0')[:9].ljust(9, '0')}"


def _normalize_stamp(stamp: str) -> str:
    """Pad the fraction to 9 digits so timestamps compare correctly as strings."""
    if len(stamp) == 30 and stamp[19] == ".":  # dockerd writes RFC3339NanoFixed: already so
        return stamp
    seconds_part, _, fraction = stamp.rstrip("Z").partition(".")
    return f"{seconds_part}.{fraction[:9].ljust(9, '0')}Z"


class FrameDecoder:
    """Incremental parser of the multiplexed (non-TTY) stream: bytes in, ``(stream, payload)`` out."""

    def __init__(self, tty: bool = False) -> None:
        self.tty = tty
        self._held = b""  # the start of an incomplete frame (a TTY: of an unterminated entry)

    def take(self, data: bytes) -> bytes:
        """What is held plus ``data``, for a caller that parses it itself and gives the incomplete end
        back with ``keep`` (a stream of whole frames is never copied)."""
        data, self._held = (self._held + data if self._held else data), b""
        return data

    def keep(self, rest: bytes) -> None:
        self._held = rest

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        data, offset = self.take(data), 0
        try:
            if self.tty:
                # A TTY stream has no frames; entries are lines, each with its timestamp.
                while (end := data.find(b"\n", offset)) >= 0:
                    yield STDOUT, data[offset:end + 1]
                    offset = end + 1
                return
            while (frame := next_frame(data, offset)) is not None:
                stream, payload, offset = frame
                yield stream, payload
        finally:
            self.keep(data[offset:])

    def leftover(self) -> bytes:
        """Bytes of an incomplete frame (a TTY's unterminated last entry)."""
        rest, self._held = self._held, b""
        return rest


def next_frame(data: bytes, offset: int) -> tuple[int, bytes, int] | None:
    """The frame at ``offset``: ``(stream, payload, where the next one starts)``, or None if incomplete."""
    if len(data) - offset < _HEADER.size:
        return None
    stream, size = _HEADER.unpack_from(data, offset)
    start = offset + _HEADER.size
    if len(data) - start < size:
        return None
    return stream, data[start:start + size], start + size


STAMP_BYTES = 30  # dockerd's RFC3339NanoFixed, "2026-01-02T03:04:05.123456789Z"


def scan_whole_lines(data: bytes, offset: int, newest: bytes,
                     max_bytes: int) -> tuple[int, list[tuple[int, list[bytes], list[bytes]]]]:
    """A flood's fast path: from ``offset``, the frames that are each one whole line of at most ``max_bytes``
    with dockerd's fixed-width timestamp, each newer than the one before it (and than ``newest``).

    Returns where it stopped (the first frame that is anything else, or incomplete) and the runs of one
    stream it read: ``(stream, stamps, messages without their newline)``. A message may still hold a
    newline of its own (dockerd writes none): the caller checks that once per run, not per line.
    """
    runs: list[tuple[int, list[bytes], list[bytes]]] = []
    unpack, end, run_stream = _HEADER.unpack_from, len(data), 0
    stamps: list[bytes] = []
    messages: list[bytes] = []
    while end - offset >= 8:
        stream, size = unpack(data, offset)
        start = offset + 8
        stop = start + size
        # hot: one flooding container runs this for each of its lines, so every test is a cheap one
        if stop > end or size <= STAMP_BYTES + 1 or size > max_bytes + STAMP_BYTES + 2 \
                or data[stop - 1] != 10 or data[start + STAMP_BYTES] != 32 or data[start + STAMP_BYTES - 1] != 90:
            break
        stamp = data[start:start + STAMP_BYTES]
        if stamp <= newest:
            break
        if stream != run_stream:
            stamps, messages, run_stream = [], [], stream
            runs.append((stream, stamps, messages))
        stamps.append(stamp)
        messages.append(data[start + STAMP_BYTES + 1:stop - 1])
        newest, offset = stamp, stop
    return offset, runs


def split_timestamp(payload: bytes) -> tuple[str | None, bytes]:
    """Split ``b"<RFC3339> message"`` into the normalized timestamp and the message."""
    head, sep, rest = payload.partition(b" ")
    if sep and head[:2].isdigit() and head.endswith(b"Z"):
        return _normalize_stamp(head.decode("ascii")), rest
    return None, payload


class Line(NamedTuple):
    stream: int
    text: str
    continues: bool = False  # a piece of an over-long line; the next piece of this stream follows


@dataclass
class LineSplitter:
    """Per-stream line assembly; holds a partial line until its newline (or ``flush``)."""

    max_line_bytes: int | None = None  # beyond this a line is emitted in pieces, never lost
    _partial: dict[int, bytearray] = field(default_factory=dict)

    def whole_line(self, stream: int, payload: bytes) -> str | None:
        """The line, decoded, when ``payload`` is exactly one whole line and nothing is held (the usual
        entry); None otherwise (then ``feed`` it)."""
        if payload.find(b"\n") != len(payload) - 1 or self._partial.get(stream) \
                or (self.max_line_bytes and len(payload) > self.max_line_bytes):
            return None
        return decode_line(payload[:-1])

    def feed(self, stream: int, payload: bytes) -> Iterator[Line]:
        buffer = self._partial.setdefault(stream, bytearray())
        limit = self.max_line_bytes
        if b"\n" not in payload and (not limit or len(buffer) + len(payload) <= limit):
            buffer += payload  # the middle of a long line: don't rescan what is held
            return
        buffer += payload
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            stop = len(buffer) if end < 0 else end
            while limit and stop - start > limit:
                cut = _char_boundary(buffer, start + limit, start)
                yield Line(stream, bytes(buffer[start:cut]).decode("utf-8", errors="replace"), continues=True)
                start = cut
            if end < 0:
                break
            yield Line(stream, decode_line(buffer[start:end]))
            start = end + 1
        del buffer[:start]

    def hold(self, stream: int, begun: bytes) -> None:
        """Go on from a line another splitter had begun."""
        self._partial.setdefault(stream, bytearray()).extend(begun)

    def holding(self) -> bool:
        """Whether any stream has a begun, unfinished line."""
        return any(self._partial.values())

    def held(self) -> dict[int, bytearray]:
        """The begun, unfinished line of each stream."""
        return {stream: buffer for stream, buffer in self._partial.items() if buffer}

    def flush(self) -> Iterator[Line]:
        for stream, buffer in self._partial.items():
            if buffer:
                yield Line(stream, decode_line(buffer))
                buffer.clear()


def _char_boundary(data: bytearray, cut: int, floor: int) -> int:
    """The largest cut ≤ ``cut`` that doesn't split a UTF-8 character (``cut`` itself if the bytes aren't UTF-8)."""
    for candidate in range(cut, max(cut - 3, floor + 1) - 1, -1):
        if data[candidate] & 0xC0 != 0x80:  # not a continuation byte: a character starts here
            return candidate
    return cut


def decode_line(raw: bytes | bytearray) -> str:
    """UTF-8 with replacement; a trailing ``\\r`` (CRLF output, TTYs) is not part of the line."""
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return bytes(raw).decode("utf-8", errors="replace")


async def stdout_lines(chunks: AsyncIterable[bytes], tty: bool = False, max_bytes: int | None = None) -> list[str] | None:
    """All stdout lines of a non-follow ``/logs`` read (``timestamps=1``, stdout only); None once the
    stream passes ``max_bytes``."""
    decoder, splitter, lines, received = FrameDecoder(tty=tty), LineSplitter(), [], 0
    async for chunk in chunks:
        received += len(chunk)
        if max_bytes is not None and received > max_bytes:
            return None
        for stream, payload in decoder.feed(chunk):
            lines += [line.text for line in splitter.feed(stream, split_timestamp(payload)[1])]
    if tty and (rest := decoder.leftover()):
        lines += [line.text for line in splitter.feed(STDOUT, split_timestamp(rest)[1])]
    return lines + [line.text for line in splitter.flush()]

"""Turning Docker's log stream into lines, exactly as the container wrote them.

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
import time
from collections import deque
from collections.abc import AsyncIterable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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

    def __post_init__(self) -> None:
        self._order.extend(sorted(self.recent))

    def since_param(self) -> str | None:
        """The ``since`` query value (``seconds.nanoseconds``): the overlap window's start."""
        return rfc3339_to_unix(_shift(self.since, -RESUME_OVERLAP)) if self.since else None

    def start_pass(self) -> None:
        """A new request from ``since_param``: the daemon resends the window's entries once more."""
        self._replay = dict(self.recent)

    def admit(self, timestamp: str, stream: int = STDOUT) -> bool:
        """Record an entry; False if it was already read before this pass."""
        key = (timestamp, stream)
        if self._replay.get(key, 0) > 0:
            self._replay[key] -= 1
            return False
        count = self.recent.get(key, 0)
        self.recent[key] = count + 1
        if not count:
            self._order.append(key)
        if self.since is None or timestamp > self.since:
            self.since = timestamp
            if len(self._order) & 0x3FF == 0:  # prune now and then: the window only needs to be at least this big
                floor = _shift(timestamp, -RESUME_OVERLAP)
                while self._order and self._order[0][0] < floor:
                    self.recent.pop(self._order.popleft(), None)
        return True

    def to_dict(self) -> dict:
        floor = _shift(self.since, -RESUME_OVERLAP) if self.since else ""
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
    seconds_part, _, fraction = stamp.rstrip("Z").partition(".")
    return f"{seconds_part}.{fraction[:9].ljust(9, '0')}Z"


class FrameDecoder:
    """Incremental parser of the multiplexed (non-TTY) stream: bytes in, ``(stream, payload)`` out."""

    def __init__(self, tty: bool = False) -> None:
        self.tty = tty
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        if self.tty:
            # A TTY stream has no frames; entries are lines, each with its timestamp.
            self._buffer += data
            while (end := self._buffer.find(b"\n")) >= 0:
                yield STDOUT, bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
            return
        self._buffer += data
        buffer, offset, end = self._buffer, 0, len(self._buffer)
        try:
            while end - offset >= _HEADER.size:
                stream, size = _HEADER.unpack_from(buffer, offset)
                if end - offset < _HEADER.size + size:
                    return
                start = offset + _HEADER.size
                offset = start + size
                yield stream, bytes(buffer[start:offset])
        finally:
            del buffer[:offset]  # once per chunk, not once per frame

    def leftover(self) -> bytes:
        """Bytes of an incomplete frame (a TTY's unterminated last entry)."""
        rest, self._buffer = bytes(self._buffer), bytearray()
        return rest


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


# A line longer than this is logged in pieces of this size (nothing is dropped); memory stays bounded.
MAX_LINE_BYTES = 4 * 1024 * 1024
# The last stdout line travels in the event (it is the default XCom) up to this size;
# a longer one is re-read by the worker from the daemon.
MAX_EVENT_LINE_BYTES = 1024 * 1024
# Shorter private_environment values are not redacted (Airflow's masker does the same with
# [logging] min_length_masked_secret): "1" would otherwise turn every 1 in the output into ***.
MIN_REDACTED_LENGTH = 5
_TAIL_CHARS = 2000


# A container's own lines are logged under this name, on a worker and in a triggerer alike, so they
# can be told apart from the provider's messages (routing to the task's log is by context, not name).
CONTAINER_LOGGER = "remote_docker.container"


def container_log() -> Any:
    """The logger for a container's lines, bound once: structlog's lazy proxy would rebuild it per line."""
    import structlog

    return structlog.get_logger(CONTAINER_LOGGER).bind()


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


@dataclass
class LogSummary:
    """What the end of a watch reports about the container's output."""

    last_stdout_line: str | None = None
    last_line_in_event: bool = True  # False: the worker must read the last line back from the daemon
    tail: list[list[str]] = field(default_factory=list)  # [stream, text] pairs, redacted
    lines: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})


class LogFollower:
    """A container's log, turned into task-log lines: one record per line, stdout as INFO and
    stderr as WARNING, ``private_environment`` values redacted in every line, a bounded tail
    and the last stdout line kept for the result, and a cursor to resume from."""

    def __init__(self, out: Any, cursor: LogCursor | None = None, *, tty: bool = False, tail_lines: int = 20,
                 counts: dict[str, int] | None = None, partial: dict[str, str] | None = None) -> None:
        self.out = out  # logger with .info / .warning, bound once (structlog's proxy rebuilds per call)
        self.cursor = cursor or LogCursor()
        self.tty = tty
        self.splitter = LineSplitter(max_line_bytes=MAX_LINE_BYTES)
        self.tail: deque[tuple[str, str]] = deque(maxlen=tail_lines)
        self.counts = {"stdout": 0, "stderr": 0, **(counts or {})}
        self.secrets: list[str] = []
        self.last_stdout: str | None = None
        self.last_stdout_whole = True
        self.last_stdout_private = False
        self.last_stdout_unknown = False  # resumed mid-log and no stdout line since
        self.last_line_at: float | None = None  # monotonic time of the last line logged
        self._in_long_line: set[int] = set()  # streams in the middle of an over-long line
        self._decoder = FrameDecoder(tty=tty)
        for stream, text in (partial or {}).items():  # a line another follower had begun
            self.splitter.feed(int(stream), text.encode("latin-1"))

    @classmethod
    def taking_over(cls, out: Any, handed: dict | None, **kwargs: Any) -> LogFollower:
        """A follower that goes on where ``handover()`` of another one stopped."""
        handed = handed or {}
        return cls(out, LogCursor.from_dict(handed), counts=handed.get("lines"), partial=handed.get("partial"), **kwargs)

    def handover(self) -> dict[str, Any]:
        """Where this follower stopped, for another to go on without repeating or splitting a line. A line
        begun but not ended travels too, unless private values are set (a fragment can't be redacted)."""
        held = {str(stream): bytes(buffer).decode("latin-1") for stream, buffer in self.splitter.held().items()}
        if held and self.secrets:
            self.flush()
            held = {}
        return {**self.cursor.to_dict(), "lines": dict(self.counts), "partial": held}

    def keep_secret(self, value: str) -> None:
        if len(value) >= MIN_REDACTED_LENGTH and value not in self.secrets:
            self.secrets.append(value)

    def resumed_midway(self) -> None:
        """The log before the cursor was logged by someone else: the last stdout line is unknown here."""
        self.last_stdout_unknown = True

    # -- a pass over the stream

    def start_pass(self) -> None:
        """A new request from ``cursor.since_param()``; the daemon resends the overlap window once more."""
        self.cursor.start_pass()
        self._decoder = FrameDecoder(tty=self.tty)

    def feed(self, chunk: bytes) -> None:
        for stream, payload in self._decoder.feed(chunk):
            self.feed_entry(stream, payload)

    def end_pass(self) -> None:
        if self.tty and (rest := self._decoder.leftover()):
            self.feed_entry(STDOUT, rest)

    def feed_entry(self, stream: int, payload: bytes) -> None:
        stamp, message = split_timestamp(payload)
        if stamp is None or self.cursor.admit(stamp, stream):
            for line in self.splitter.feed(stream, message):
                self._emit(line)

    def flush(self) -> None:
        """The container ended: its unterminated last lines are lines too."""
        for line in self.splitter.flush():
            self._emit(line)

    # -- lines

    def _emit(self, line: Line) -> None:
        name = "stderr" if line.stream == STDERR else "stdout"  # a TTY's single stream counts as stdout
        piece = line.continues or line.stream in self._in_long_line  # part of a line too long to log whole
        if line.continues and line.stream not in self._in_long_line:
            self._in_long_line.add(line.stream)
            self.out.warning(f"The container wrote a {name} line longer than {MAX_LINE_BYTES:,} bytes: "
                             "it is logged in pieces of that size.")
        elif not line.continues:
            self._in_long_line.discard(line.stream)
            self.counts[name] += 1
        text = redact(line.text, self.secrets) if self.secrets else line.text
        self.last_line_at = time.monotonic()
        self.tail.append((name, text[:_TAIL_CHARS]))
        if line.stream == STDERR:
            self.out.warning(text)
            return
        self.last_stdout = line.text
        self.last_stdout_whole = not piece
        self.last_stdout_unknown = False
        self.last_stdout_private = text != line.text
        self.out.info(text)

    def summary(self) -> LogSummary:
        last = self.last_stdout
        fits = last is None or len(last.encode("utf-8", errors="replace")) <= MAX_EVENT_LINE_BYTES
        # Otherwise the worker reads the last line back from the daemon: it was too long or logged in
        # pieces, holds a private_environment value (events are stored in clear), or was logged before
        # a triggerer restart.
        in_event = fits and self.last_stdout_whole and not self.last_stdout_private and not self.last_stdout_unknown
        return LogSummary(last_stdout_line=last if in_event else None, last_line_in_event=in_event,
                          tail=[list(item) for item in self.tail], lines=dict(self.counts))

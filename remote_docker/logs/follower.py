"""A container's log in the task's log: one record per line, stdout as INFO and stderr as WARNING,
``private_environment`` values redacted, a bounded tail and the last stdout line kept for the
result, and a cursor another follower can go on from (``logstream`` turns the stream into lines).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import stat
import struct
import termios
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from remote_docker.lifecycle.payloads import LogHandover, LogSummary
from remote_docker.logs.stream import (
    STDERR,
    STDOUT,
    FrameDecoder,
    Line,
    LineSplitter,
    LogCursor,
    next_frame,
    scan_whole_lines,
    split_timestamp,
)

# A line longer than this is logged in pieces of this size (nothing is dropped); memory stays bounded.
MAX_LINE_BYTES = 4 * 1024 * 1024
# The last stdout line travels in the event (it is the default XCom) up to this size;
# a longer one is re-read by the worker from the daemon.
MAX_EVENT_LINE_BYTES = 1024 * 1024
# Shorter private_environment values are not redacted (Airflow's masker does the same with
# [logging] min_length_masked_secret): "1" would otherwise turn every 1 in the output into ***.
MIN_REDACTED_LENGTH = 5
_TAIL_CHARS = 2000
# More lines than this from one read of the stream is a flood: they are logged up to LINES_PER_RECORD per record.
FLOOD_LINES = 64
LINES_PER_RECORD = 256


# A container's own lines are logged under this name, on a worker and in a triggerer alike, so they
# can be told apart from the provider's messages (routing to the task's log is by context, not name).
CONTAINER_LOGGER = "remote_docker.container"


def container_log() -> Any:
    """The logger for a container's lines, bound once: structlog's lazy proxy would rebuild it per line."""
    import structlog

    return structlog.get_logger(CONTAINER_LOGGER).bind()


class RecentLines:
    """How many container lines this process logged lately, every follower together: what the triggerer's
    supervisor may still have to read when a trigger fires (``ContainerTrigger`` waits for that)."""

    window = 1.0

    def __init__(self) -> None:
        self._writes: deque[tuple[float, int]] = deque()  # (monotonic time, lines) per write

    def add(self, count: int, now: float) -> None:
        self._writes.append((now, count))
        self._trim(now)

    def count(self) -> int:
        self._trim(time.monotonic())
        return sum(count for _, count in self._writes)

    def _trim(self, now: float) -> None:
        while self._writes and self._writes[0][0] < now - self.window:
            self._writes.popleft()


recent_lines = RecentLines()


def unread_log_bytes(out: Any) -> int | None:
    """Bytes this process logged through ``out`` that its supervisor has not read yet, or None if unknown.

    A task or trigger process logs to a socket its supervisor reads between its other work (in a
    triggerer 4 KiB a loop; it falls behind under load). What sits in that socket is lost if both die:
    checkpoints wait for it to drain. Linux reports a unix socket's unread bytes as its outgoing queue.
    """
    try:
        fd = out._logger._file.fileno()  # structlog's bound logger -> Airflow's BytesLogger -> the log channel
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return None
        return struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0" * 4))[0]
    except (AttributeError, OSError, ValueError):
        return None


async def until_supervisor_read(out: Any, within: float, poll: float) -> bool | None:
    """Wait at most ``within`` seconds until the supervisor has read every byte logged through ``out``
    so far (the channel is a FIFO: empty once means all of it was read). True once it has, False if it
    is still behind at the end, None if that can't be told (not a socket: a worker or a test's logger)."""
    deadline = time.monotonic() + within
    while True:
        unread = unread_log_bytes(out)
        if unread is None:
            return None
        if unread == 0:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(poll)


# C0 controls but tab and newline, DEL and C1 controls: a container's escape sequences, carriage returns and NULs
# would restyle or rewrite what a reader of the task log sees, so they are shown as \xNN instead
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def shown(text: str) -> str:
    """``text`` with control characters written as ``\\xNN``, for the task log."""
    return _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", text) if _CONTROL.search(text) else text


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class LogFollower:
    """A container's log, turned into task-log lines: one record per line, stdout as INFO and
    stderr as WARNING, ``private_environment`` values redacted in every line, a bounded tail
    and the last stdout line kept for the result, and a cursor to resume from."""

    def __init__(self, out: Any, cursor: LogCursor | None = None, *, tty: bool = False, tail_lines: int = 20,
                 counts: dict[str, int] | None = None, partial: dict[str, str] | None = None,
                 received: dict[str, int] | None = None) -> None:
        self.out = out  # logger with .info / .warning, bound once (structlog's proxy rebuilds per call)
        # each line carries the stream it came from: told apart from the provider's own lines in the task log
        bind = getattr(out, "bind", None)
        self._outs = {stream: bind(stream=name) if bind else out for stream, name in ((STDOUT, "stdout"), (STDERR, "stderr"))}
        self.cursor = cursor or LogCursor()
        self.tty = tty
        self.splitter = LineSplitter(max_line_bytes=MAX_LINE_BYTES)
        self.tail: deque[tuple[str, str]] = deque(maxlen=tail_lines)
        self.counts = {"stdout": 0, "stderr": 0, **(counts or {})}
        # bytes of log entries taken per stream, every follower before this one included (``complete``); None:
        # unknown (taken over from a version that did not count them)
        self.received: dict[str, int] | None = {"stdout": 0, "stderr": 0, **(received or {})} \
            if received is not None or cursor is None or cursor.since is None else None
        self.secrets: list[str] = []
        self.last_stdout: str | None = None
        self.last_stdout_whole = True
        self.last_stdout_private = False
        self.last_stdout_unknown = False  # resumed mid-log and no stdout line since
        self.last_line_at: float | None = None  # monotonic time of the last line logged
        self._in_long_line: set[int] = set()  # streams in the middle of an over-long line
        self._piece_carry: dict[int, str] = {}  # an over-long line's end held back: a secret may go on in the next piece
        self._decoder = FrameDecoder(tty=tty)
        for stream, text in (partial or {}).items():  # a line another follower had begun
            self.splitter.hold(int(stream), text.encode("latin-1"))

    @classmethod
    def taking_over(cls, out: Any, handed: LogHandover | None, **kwargs: Any) -> LogFollower:
        """A follower that goes on where ``handover()`` of another one stopped (its sealed line opened first)."""
        handed = handed or LogHandover()
        return cls(out, LogCursor.from_dict(handed.cursor), counts=handed.lines, partial=handed.partial,
                   received=handed.received, **kwargs)

    def handover(self, seal: Callable[[bytes], str] | None = None) -> LogHandover:
        """Where this follower stopped, for another to go on without repeating or splitting a line. A line begun
        but not ended travels too; when private values are set it travels sealed (``seal``: it may hold the start
        of one, and the hand-over is stored), so the next follower redacts the whole line. Without ``seal`` the
        begun line is logged here (it can't be redacted whole then)."""
        held = {str(stream): bytes(buffer).decode("latin-1") for stream, buffer in self.splitter.held().items()}
        sealed = None
        if held and self.secrets:
            if seal is None:
                self.flush()
            else:
                sealed = seal(json.dumps(held).encode())
            held = {}
        cursor = self.cursor.to_dict()
        return LogHandover(since=cursor["since"], recent=cursor["recent"], lines=dict(self.counts), partial=held,
                           sealed_partial=sealed, received=dict(self.received) if self.received is not None else None)

    def keep_secret(self, value: str) -> None:
        if len(value) >= MIN_REDACTED_LENGTH and value not in self.secrets:
            self.secrets.append(value)

    def resumed_midway(self) -> None:
        """The log before the cursor was logged by someone else: the last stdout line is unknown here."""
        self.last_stdout_unknown = True

    # -- a pass over the stream

    def start_pass(self, from_tail: bool = False) -> None:
        """A new request from ``cursor.since_param()`` (or of the log's last entries, ``from_tail``); the
        daemon resends the overlap window once more."""
        self.cursor.start_pass(from_tail)
        self._decoder = FrameDecoder(tty=self.tty)

    def tail_reaches_back(self, data: bytes, asked: int) -> bool:
        """Whether a read of the log's last ``asked`` entries holds everything after what was read: it is the
        whole log, or its first entry was read already (then nothing between was missed)."""
        decoder = FrameDecoder(tty=self.tty)
        entries = list(decoder.feed(data))
        if self.tty and (rest := decoder.leftover()):
            entries.append((STDOUT, rest))
        if len(entries) < asked:
            return True
        stream, payload = entries[0]
        stamp = split_timestamp(payload)[0]
        return stamp is not None and self.cursor.covers(stamp, stream)

    def feed(self, chunk: bytes) -> None:
        if self.tty:
            self._write(self._runs_of(self._lines_of(stream, payload) for stream, payload in self._decoder.feed(chunk)))
            return
        data, offset, runs = self._decoder.take(chunk), 0, []
        cursor, splitter, in_long_line = self.cursor, self.splitter, self._in_long_line
        while True:
            if not in_long_line and not splitter.holding() and cursor.takes_newer():
                offset, fast = scan_whole_lines(data, offset, cursor.since.encode("ascii"), MAX_LINE_BYTES)
                for stream, stamps, messages in fast:
                    cursor.admit_newer(stream, stamps)
                    self._received(stream, sum(map(len, messages)) + len(messages))  # each with its newline
                    self._add_run(runs, stream, self._take_whole_lines(stream, messages))
            if (frame := next_frame(data, offset)) is None:
                break
            stream, payload, offset = frame
            self._add_run(runs, stream, [text for _, text in self._lines_of(stream, payload)])
        self._decoder.keep(data[offset:])
        self._write(runs)

    def end_pass(self) -> None:
        if self.tty and (rest := self._decoder.leftover()):
            self._write(self._runs_of([self._lines_of(STDOUT, rest)]))

    def _lines_of(self, stream: int, payload: bytes) -> list[tuple[int, str]]:
        """One entry's lines (or pieces), accounted for and redacted: ``(stream, text)`` each."""
        stamp, message = split_timestamp(payload)
        if stamp is not None and not self.cursor.admit(stamp, stream):
            return []
        self._received(stream, len(message))
        if stream not in self._in_long_line and (text := self.splitter.whole_line(stream, message)) is not None:
            return [self._take_whole(stream, text)]
        return [self._take(line) for line in self.splitter.feed(stream, message)]

    def _received(self, stream: int, size: int) -> None:
        if self.received is not None:
            self.received["stderr" if stream == STDERR else "stdout"] += size

    def complete(self, whole_log: dict[str, int]) -> bool:
        """Whether every byte of ``whole_log`` (bytes per stream of a full read of the log) was taken; True when
        that can't be told (taken over from a follower that did not count)."""
        return self.received is None or all(self.received.get(name, 0) >= size for name, size in whole_log.items())

    def start_replay(self) -> None:
        """The engine's stream skipped part of the log: what follows is the whole log once more, from its
        start, every line marked ``replay`` (what was logged stays; the last line and tail are the replay's)."""
        bind = getattr(self.out, "bind", None)
        self._outs = {stream: bind(stream=name, replay=True) if bind else self.out
                      for stream, name in ((STDOUT, "stdout"), (STDERR, "stderr"))}
        self.cursor, self.splitter = LogCursor(), LineSplitter(max_line_bytes=MAX_LINE_BYTES)
        self.counts, self.received = {"stdout": 0, "stderr": 0}, {"stdout": 0, "stderr": 0}
        self.tail.clear()
        self._in_long_line.clear()
        self._piece_carry.clear()
        self.last_stdout, self.last_stdout_whole, self.last_stdout_private, self.last_stdout_unknown = None, True, False, False

    def flush(self) -> None:
        """The container ended: its unterminated last lines are lines too (an over-long one's held-back end too)."""
        lines = [self._take(line) for line in self.splitter.flush()]
        lines += [self._take(Line(stream, "")) for stream in list(self._piece_carry)]
        self._write(self._runs_of([lines]))

    @classmethod
    def _runs_of(cls, groups: Iterable[list[tuple[int, str]]]) -> list[tuple[int, list[str]]]:
        runs: list[tuple[int, list[str]]] = []
        for lines in groups:
            for stream, text in lines:
                cls._add_run(runs, stream, [text])
        return runs

    @staticmethod
    def _add_run(runs: list[tuple[int, list[str]]], stream: int, texts: list[str]) -> None:
        """Append lines of one stream, to the last run if it is of that stream (records group runs)."""
        if runs and runs[-1][0] == stream:
            runs[-1][1].extend(texts)
        elif texts:
            runs.append((stream, texts))

    # -- lines

    def _take(self, line: Line) -> tuple[int, str]:
        """Account for one line or piece (counts, tail, last stdout line); returns it redacted, to be logged."""
        name = "stderr" if line.stream == STDERR else "stdout"  # a TTY's single stream counts as stdout
        piece = line.continues or line.stream in self._in_long_line  # part of a line too long to log whole
        if line.continues and line.stream not in self._in_long_line:
            self._in_long_line.add(line.stream)
            self.out.warning(f"The container wrote a {name} line longer than {MAX_LINE_BYTES:,} bytes: "
                             "it is logged in pieces of that size.")
        elif not line.continues:
            self._in_long_line.discard(line.stream)
            self.counts[name] += 1
        text = self._piece_carry.pop(line.stream, "") + line.text
        if line.continues and self.secrets:
            text, self._piece_carry[line.stream] = self._split_clear_of_secrets(text)
        return self._account(line.stream, name, text, whole=not piece)

    def _split_clear_of_secrets(self, text: str) -> tuple[str, str]:
        """``text`` (a piece of an over-long line) cut where no private value can straddle the cut: what may be the
        start of one that goes on in the next piece, and any occurrence across the cut, stay for the next piece."""
        cut, moved = max(0, len(text) - (max(map(len, self.secrets)) - 1)), True
        while moved:
            moved = False
            for secret in self.secrets:
                start = text.find(secret, max(0, cut - len(secret) + 1))
                if start != -1 and start < cut:  # this occurrence straddles the cut: cut before it
                    cut, moved = start, True
        return text[:cut], text[cut:]

    def _take_whole_lines(self, stream: int, messages: list[bytes]) -> list[str]:
        """``_take_whole`` for a run of whole lines of one stream (``scan_whole_lines``), decoded, redacted and
        accounted for with a few calls per run instead of several per line; the lines, to be logged."""
        text = b"\n".join(messages).decode("utf-8", errors="replace")  # \n never ends a UTF-8 sequence: as per line
        lines = text.split("\n")
        if len(lines) != len(messages):  # a message held a newline of its own: take them one by one
            return [self._take(line)[1] for message in messages for line in self.splitter.feed(stream, message + b"\n")]
        if "\r" in text:
            lines = [line[:-1] if line.endswith("\r") else line for line in lines]
        visible = lines
        if self.secrets:  # no secret spans lines (those holding a newline never match one)
            visible = redact("\n".join(lines), [secret for secret in self.secrets if "\n" not in secret]).split("\n")
        name = "stderr" if stream == STDERR else "stdout"
        self.counts[name] += len(lines)
        if self.tail.maxlen:
            self.tail.extend((name, shown(line[:_TAIL_CHARS])) for line in visible[-self.tail.maxlen:])
        if stream != STDERR:
            self.last_stdout = lines[-1]
            self.last_stdout_whole, self.last_stdout_unknown = True, False
            self.last_stdout_private = visible[-1] != lines[-1]
        return visible

    def _take_whole(self, stream: int, raw: str) -> tuple[int, str]:
        """``_take`` for a whole line outside any over-long one (the usual case)."""
        name = "stderr" if stream == STDERR else "stdout"
        self.counts[name] += 1
        return self._account(stream, name, raw, whole=True)

    def _account(self, stream: int, name: str, raw: str, *, whole: bool) -> tuple[int, str]:
        text = redact(raw, self.secrets) if self.secrets else raw
        self.tail.append((name, shown(text[:_TAIL_CHARS])))
        if stream != STDERR:
            self.last_stdout = raw
            self.last_stdout_whole = whole
            self.last_stdout_unknown = False
            self.last_stdout_private = text != raw
        return stream, text

    def _write(self, runs: list[tuple[int, list[str]]]) -> None:
        """One record per line; when one read brings a flood, consecutive lines of a stream share records
        (Airflow's per-record cost, paid twice in a triggerer, would otherwise cap the throughput)."""
        if not runs:
            return
        count = sum(len(texts) for _, texts in runs)
        self.last_line_at = now = time.monotonic()
        recent_lines.add(count, now)
        for stream, texts in runs:
            log = self._outs[STDERR].warning if stream == STDERR else self._outs[STDOUT].info
            if count <= FLOOD_LINES:
                for text in texts:
                    log(shown(text))
                continue
            for start in range(0, len(texts), LINES_PER_RECORD):
                log(shown("\n".join(texts[start:start + LINES_PER_RECORD])))

    def summary(self) -> LogSummary:
        last = self.last_stdout
        fits = last is None or len(last.encode("utf-8", errors="replace")) <= MAX_EVENT_LINE_BYTES
        # Otherwise the worker reads the last line back from the daemon: it was too long or logged in
        # pieces, holds a private_environment value (events are stored in clear), or was logged before
        # a triggerer restart.
        in_event = fits and self.last_stdout_whole and not self.last_stdout_private and not self.last_stdout_unknown
        return LogSummary(last_stdout_line=last if in_event else None, last_line_in_event=in_event,
                          tail=[list(item) for item in self.tail], lines=dict(self.counts))

"""When the daemon is out of reach, and whether a kill from outside is what stopped a container.

A watch rides out a daemon that goes away for a while (restart, network blip): it backs off,
resumes, and remembers each outage so that a container which stopped during one is reported
as stopped by the daemon's restart rather than as a failure of its own. A daemon shutting
down without live-restore stops every container first and closes its API last, so a
container stopped by a kill may be the first sign of one: ``sit_out_shutdown`` watches
the daemon a while before the exit is reported.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from remote_docker.engine import Engine, EngineError
from remote_docker.logs.stream import rfc3339_to_unix

# how much later than the exit it caused an engine may stamp a kill event (the exit can be recorded first)
KILL_LOGGED_WITHIN = 0.1

# How long a daemon may keep answering after it stopped a container as it shuts down: it waits
# for every container's stop timeout (10 s by default) before it closes its API.
SHUTDOWN_WATCH_SECONDS = 20.0
# A stop request (docker stop, a daemon shutting down) ends the container within its stop timeout.
DEFAULT_STOP_TIMEOUT = 10
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGKILL}
_T = TypeVar("_T")


class DaemonLost(Exception):
    """The daemon stayed unreachable past the watch's limit; the message names it."""


class Outages:
    """Periods the daemon was unreachable during one watch, and the back-off while it is."""

    def __init__(self, log: Any, give_up_after: float) -> None:
        self.log = log
        self.give_up_after = give_up_after
        self.unreachable_since: float | None = None  # monotonic
        self.spans: list[list[float]] = []  # [began, ended] UNIX times; ended 0 while ongoing

    def reachable(self) -> None:
        if self.unreachable_since is not None:
            self.unreachable_since = None
            self.spans[-1][1] = time.time()

    async def lost(self, err: EngineError) -> None:
        """Back off after a transport failure; raise ``DaemonLost`` past ``give_up_after``."""
        now = time.monotonic()
        if self.unreachable_since is None:
            self.unreachable_since = now
            self.spans.append([time.time(), 0.0])
            self.log.warning("Lost the daemon (%s); resuming the log from where it stopped.", err)
        elif now - self.unreachable_since > self.give_up_after:
            raise DaemonLost(f"{err} (gave up after {self.give_up_after:g}s)")
        await asyncio.sleep(min(5.0, 0.5 + (now - self.unreachable_since) / 4))

    async def retrying(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """``call()`` until the daemon answers; other failures propagate."""
        while True:
            try:
                result = await call()
            except EngineError as err:
                if not err.unreachable:
                    raise
                await self.lost(err)
                continue
            self.reachable()
            return result

    def ended_during(self, state: dict[str, Any]) -> list[float] | None:
        """The outage ([began, ended] UNIX times) during which the container stopped, if it did."""
        finished = state.get("FinishedAt") or ""
        if not self.spans or finished.startswith("0001"):
            return None
        try:
            finished_at = float(rfc3339_to_unix(finished))
        except ValueError:
            return None
        for began, ended in self.spans:
            if began - SHUTDOWN_WATCH_SECONDS - 2 <= finished_at <= (ended or time.time()) + 2:
                return [began, ended]
        return None

    async def sit_out_shutdown(self, engine: Engine) -> None:
        """Watch the daemon for ``SHUTDOWN_WATCH_SECONDS``; if it goes away, wait until it is back
        (the outage then explains the exit)."""
        until = time.monotonic() + SHUTDOWN_WATCH_SECONDS
        while time.monotonic() < until:
            try:
                await engine.ping()
            except EngineError as err:
                if err.unreachable:
                    await self.lost(err)
                    await self.retrying(engine.ping)
                return
            await asyncio.sleep(0.5)


def _signal_of(value: Any) -> signal.Signals | None:
    text = str(value or "").strip().upper()
    try:
        return signal.Signals(int(text)) if text.isdigit() else signal.Signals[text if text.startswith("SIG") else f"SIG{text}"]
    except (KeyError, ValueError):
        return None


def signal_of_exit(exit_code: Any) -> signal.Signals | None:
    """The signal an exit code above 128 says killed the process (137: SIGKILL), if it names one."""
    return _signal_of(exit_code - 128) if isinstance(exit_code, int) and 128 < exit_code < 128 + 65 else None


def stopping_signal(state: dict[str, Any], kills: list[dict[str, Any]], stop_timeout: int | None = None) -> str | None:
    """The signal of the kill from outside that ended the container, or None if none did.

    A kill ended it if the exit code says the signal killed it (128 + signal), or if it was a
    stop request (TERM, INT, QUIT, KILL) and the container finished within its stop timeout.
    Signals a program handles and lives on (USR1, a HUP reload) don't explain a later exit.
    Podman's kill events name no signal (and its stop sends none): there a kill event counts
    only when the exit code names the signal that killed the container.
    """
    exit_code = state.get("ExitCode")
    try:
        finished_at = float(rfc3339_to_unix(state.get("FinishedAt") or ""))
    except ValueError:
        finished_at = None
    grace = (stop_timeout if stop_timeout is not None else DEFAULT_STOP_TIMEOUT) + 2
    for kill in reversed(kills):
        attributes = kill.get("Actor", {}).get("Attributes", {})
        sent = _signal_of(attributes.get("signal"))
        at = kill.get("timeNano", 0) / 1e9 or float(kill.get("time", 0))
        in_grace = finished_at is not None and at <= finished_at + 1 and finished_at - at <= grace
        if sent is None and "signal" not in attributes:  # the engine does not say which signal
            by_exit = signal_of_exit(exit_code)
            if by_exit is not None and in_grace:
                return by_exit.name
            continue
        if sent is None:
            continue
        if exit_code == 128 + sent.value:
            return sent.name
        if sent in _STOP_SIGNALS and in_grace:
            return sent.name
    return None


def kill_events_until(finished: float, now: float) -> float:
    """Where a look for the kills that ended a container stops: ``stopping_signal`` counts those up to 1 s after
    the exit, but an ``until`` in the daemon's future holds the answer back until then, which cost every non-zero
    exit up to a second (BENCHMARKS.md, the sweep). So: now, if sooner, yet never before the engine's margin."""
    return max(finished + KILL_LOGGED_WITHIN, min(finished + 1, now))


async def kill_that_ended(engine: Engine, info: dict[str, Any]) -> str | None:
    """Ask the daemon for the container's kill events and tell whether one of them ended it."""
    state = info["State"]
    try:
        facts = await engine.facts()
        if not facts.kill_events_name_signal and signal_of_exit(state.get("ExitCode")) is None:
            return None  # such a kill explains an exit only by the exit code's signal (stopping_signal)
        started = int(float(rfc3339_to_unix(state["StartedAt"])))
        now = time.time()
        until = kill_events_until(float(rfc3339_to_unix(state["FinishedAt"])), now) \
            if facts.reads_past_events_at_once else int(now) + 1
        kills = await engine.kill_events(info["Id"], since=started, until=until)
    except (EngineError, KeyError, ValueError):
        return None  # only sharpens the message: without it the exit is reported as it is
    return stopping_signal(state, kills, (info.get("Config") or {}).get("StopTimeout"))

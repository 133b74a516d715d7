"""The one follow path: a started container followed until it ends, by the trigger and the worker alike.

The log is followed with a timestamp cursor; a dropped stream is resumed, never taken as an
exit; the container's state decides when it has ended. After the end a non-follow read
catches lines a follow stream missed (under load a follow stream can end before the last
frames arrive), and a non-zero exit is checked against the daemon's kill events and outages
so the report says what stopped it. Watching never creates or removes anything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import anyio

from remote_docker import compat
from remote_docker.engine import Engine, EngineError
from remote_docker.lifecycle.outages import DaemonLost, Outages, kill_that_ended
from remote_docker.lifecycle.payloads import WatchEnd
from remote_docker.logs.follower import LogFollower
from remote_docker.logs.stream import STDERR, FrameDecoder, split_timestamp

# Stop streaming (and only wait for the exit) after this many log reads fail in a row.
MAX_LOG_ERRORS = 3
# The end of a log is read back as its last this many entries when that reaches back to what was read.
REST_TAIL_ENTRIES = 256


class ContainerWatch:
    """One container, one daemon, one follower; ``until_end()`` returns how it ended."""

    def __init__(self, engine: Engine, container_id: str, follower: LogFollower, *, log: Any, daemon: str | None = None,
                 poll_interval: float = 2.0, give_up_after: float = 300.0, secret_env: Iterable[str] = (),
                 on_exit: Callable[[], None] | None = None, stop_timeout: int = 10) -> None:
        self.engine = engine
        self.daemon = daemon  # the pool member's name, for the event
        self.on_exit = on_exit  # told the moment the daemon says it stopped (or it is gone), before the log's end is read
        self.container_id = container_id
        self.follower = follower
        self.log = log
        self.poll_interval = poll_interval
        self.stop_timeout = stop_timeout  # SIGTERM to SIGKILL at the deadline
        self.outages = Outages(log, give_up_after)
        self.secret_env = set(secret_env)
        self.logs_readable = True

    async def until_end_or_deadline(self, deadline: float | None) -> WatchEnd:
        """``until_end()``, killing the container if the absolute UNIX ``deadline`` passes first."""
        with anyio.move_on_after(None if deadline is None else deadline - time.time()):
            return await self.until_end()
        return await self.kill_at_deadline()

    async def within(self, seconds: float, deadline: float | None) -> WatchEnd | None:
        """``until_end_or_deadline()`` for at most ``seconds``; None if the container still runs then."""
        with anyio.move_on_after(seconds):
            return await self.until_end_or_deadline(deadline)
        return None

    async def until_end(self) -> WatchEnd:
        try:
            return await self._follow()
        except DaemonLost as err:
            self.follower.flush()
            return self.end("error", message=str(err))

    async def _follow(self) -> WatchEnd:
        log_errors = 0
        if self.secret_env:
            info = await self.inspect()
            if info is None:
                return self._gone()
            await self._mask_secrets(info)
        while True:
            if self.logs_readable:
                try:
                    await self._read(follow=True)
                    log_errors = 0
                except EngineError as err:
                    if err.kind == "gone":
                        return self._gone()
                    if err.unreachable:
                        await self.outages.lost(err)
                    elif err.kind == "unsupported":
                        self.log.warning("The container's log driver can't be read back; waiting for it to exit "
                                         "without streaming its output.")
                        self.logs_readable = False
                    else:  # e.g. 409 while someone removes the container: its state (below) decides
                        log_errors += 1
                        if log_errors >= MAX_LOG_ERRORS:
                            self.log.warning("Can't read the container's log (%s); waiting for it to exit without "
                                             "streaming.", err)
                            self.logs_readable = False
            info = await self.inspect()
            if info is None:
                return self._gone()
            status = info["State"]["Status"]
            if status in ("exited", "dead"):
                if self.on_exit is not None:
                    self.on_exit()
                return await self._ended(info)
            # Still running (the stream dropped), not started yet, or paused: look again shortly.
            await asyncio.sleep(0.2 if self.logs_readable and status == "running" else self.poll_interval)

    async def inspect(self) -> dict[str, Any] | None:
        """The container's inspect document, waiting out daemon outages; None once it is gone."""
        return await self.outages.retrying(lambda: self.engine.inspect(self.container_id))

    async def _read(self, *, follow: bool) -> None:
        follower = self.follower
        follower.start_pass()
        async with self.engine.logs(self.container_id, follow=follow, since=follower.cursor.since_param()) as chunks:
            self.outages.reachable()
            async for chunk in chunks:
                follower.feed(chunk)
        follower.end_pass()

    async def _read_rest(self) -> None:
        """A non-follow read of whatever the follow stream did not deliver."""
        if not self.logs_readable:
            return
        while True:
            try:
                if not (await self.engine.facts()).tail_counts_entries or not await self._read_tail():
                    await self._read(follow=False)
                return
            except EngineError as err:
                if not err.unreachable:
                    if err.kind != "gone":
                        self.log.warning("Could not read the end of the container's log: %s", err)
                    return
                await self.outages.lost(err)

    async def _read_tail(self) -> bool:
        """The rest as the log's last ``REST_TAIL_ENTRIES`` entries, if they reach back to what was read (the
        usual case: the stream missed none or a few). False otherwise, then a ``since`` read is needed: dockerd
        finds ``since`` by decoding the log from its start (2 s for a 140 MB log), ``tail`` from its end."""
        async with self.engine.logs(self.container_id, follow=False, tail=REST_TAIL_ENTRIES) as chunks:
            data = b"".join([chunk async for chunk in chunks])  # at most REST_TAIL_ENTRIES entries of <= 16 KiB
        if not self.follower.tail_reaches_back(data, REST_TAIL_ENTRIES):
            return False
        self.follower.start_pass(from_tail=True)
        self.follower.feed(data)
        self.follower.end_pass()
        return True

    async def _ended(self, info: dict[str, Any]) -> WatchEnd:
        await self._read_rest()
        await self._make_complete()
        self.follower.flush()
        state = info["State"]
        kill_signal = None
        if state.get("ExitCode"):
            kill_signal = await kill_that_ended(self.engine, info)
            if kill_signal is not None:
                await self.outages.sit_out_shutdown(self.engine)
        return self.end(
            "exited", exit_code=state.get("ExitCode"), oom_killed=bool(state.get("OOMKilled")),
            error=state.get("Error") or None, finished_at=state.get("FinishedAt"), started_at=state.get("StartedAt"),
            kill_signal=kill_signal,
            ended_while_unreachable=self.outages.ended_during(state),
        )

    async def _make_complete(self) -> None:
        """Where the engine's follow stream may skip entries (Podman), count the whole log's bytes once more
        after the exit; if the stream skipped some, log the whole log again, marked as a replay."""
        if not self.logs_readable or self.follower.tty or (await self.engine.facts()).follow_is_complete:
            return
        try:
            whole = await self._bytes_per_stream()
            if self.follower.complete(whole):
                return
            missed = sum(whole.values()) - sum((self.follower.received or {}).values())
            self.log.warning("--- remote-docker: the engine's log stream skipped %s bytes of this container's output "
                             "(a Podman bug, containers/podman#21914); its whole log follows once more, each line "
                             "marked replay=True ---", f"{missed:,}")
            self.follower.start_replay()
            await self._read(follow=False)
        except EngineError as err:
            self.log.warning("Could not check the container's log is complete: %s", err)

    async def _bytes_per_stream(self) -> dict[str, int]:
        decoder, counted = FrameDecoder(tty=False), {"stdout": 0, "stderr": 0}
        async with self.engine.logs(self.container_id, follow=False) as chunks:
            async for chunk in chunks:
                for stream, payload in decoder.feed(chunk):
                    counted["stderr" if stream == STDERR else "stdout"] += len(split_timestamp(payload)[1])
        return counted

    async def kill_at_deadline(self) -> WatchEnd:
        """The task's deadline passed: stop the container as a user's stop does (SIGTERM, ``stop_timeout``, SIGKILL:
        its clean-up trap runs, as with the official operator) and report a timeout."""
        self.log.error("execution_timeout reached: stopping container %s (SIGTERM, SIGKILL after %ss)",
                       self.container_id[:12], self.stop_timeout)
        killed = False
        try:
            killed = await self.engine.stop(self.container_id, self.stop_timeout)
        except EngineError as err:
            self.log.error("Could not stop container %s: %s", self.container_id[:12], err)
        with anyio.move_on_after(self.engine.config.timeout):
            await self._read_rest()
        self.follower.flush()
        return self.end("timeout", killed=killed)

    def _gone(self) -> WatchEnd:
        if self.on_exit is not None:
            self.on_exit()
        self.follower.flush()
        return self.end("gone", message=f"container {self.container_id[:12]} was removed by someone else while "
                                        "the task was deferred")

    def end(self, status: str, **details: Any) -> WatchEnd:
        return WatchEnd(status=status, container_id=self.container_id, log=self.follower.summary(),  # type: ignore[arg-type]
                        daemon=self.daemon, **details)

    async def _mask_secrets(self, info: dict[str, Any]) -> None:
        """Redact the values of ``secret_env`` as the container has them: the triggerer never got them
        otherwise. Airflow's masker gets them too, for its own logs."""
        for item in info.get("Config", {}).get("Env") or []:
            name, _, value = item.partition("=")
            if name in self.secret_env and value:
                await compat.mask_secret_in_trigger(value, name)
                self.follower.keep_secret(value)

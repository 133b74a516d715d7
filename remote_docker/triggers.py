"""``ContainerTrigger``: watch a started container from the triggerer, stream its log, report its end.

The trigger only watches, streams and reports. It never creates or removes a container:
a trigger can run more than once (triggerer restart, hand-over), and the worker owns the
container's lifecycle. The two things it may do to the container are the ones nobody else
can do while the task is deferred: kill it when the task's deadline passes, and stop it
when a user marks or clears the task (``on_kill``, Airflow ≥ 3.3).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiodocker
import aiohttp
import anyio
from airflow.triggers.base import BaseTrigger, TriggerEvent

from remote_docker.connection import DaemonConfig, DaemonConfigError
from remote_docker.errors import explain
from remote_docker.hook import RemoteDockerHook
from remote_docker.logs import (
    STDERR,
    STDOUT,
    FrameDecoder,
    Line,
    LineSplitter,
    LogCursor,
    rfc3339_to_unix,
    split_timestamp,
)


class _DaemonLost(Exception):
    """The daemon stayed unreachable past ``daemon_lost_timeout``."""


# A line longer than this is logged in pieces of this size (nothing is dropped); memory stays bounded.
MAX_LINE_BYTES = 4 * 1024 * 1024
# The last stdout line travels in the event (it is the default XCom) up to this size;
# a longer one is re-read by the worker from the daemon.
MAX_EVENT_LINE_BYTES = 1024 * 1024
_CONNECTION_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError)
# Shorter private_environment values are not redacted from event payloads (Airflow's masker does the same
# with [logging] min_length_masked_secret): "1" would otherwise turn every 1 in the tail into ***.
MIN_REDACTED_LENGTH = 5
# How long a daemon may keep answering after it stopped a container as it shuts down: it waits
# for every container's stop timeout (10 s by default) before it closes its API.
SHUTDOWN_WATCH_SECONDS = 20.0
# In a triggerer, trigger log lines reach the task's log file through the triggerer's supervisor, which
# reads them 4 KiB at a time and closes the file as soon as it hears the trigger finished: lines still
# queued then go to the triggerer's own output instead (Airflow 3.3; seen under load with the last
# line of a container). Firing no sooner than this after the last line lets the queue drain first.
LOG_DRAIN_SECONDS = 1.0
# XCom key (of the task instance itself) where a running trigger records how far it has logged,
# so a trigger started after a triggerer crash or hand-over resumes there instead of at the start.
CHECKPOINT_KEY = "remote_docker_log_checkpoint"
# A checkpoint is written this long after the cursor it records was taken, so every line it
# covers has certainly reached the log before a crash could lose it.
CHECKPOINT_LAG = 2.0


def _is_gone(err: BaseException) -> bool:
    return isinstance(err, aiodocker.DockerError) and err.status == 404


def _is_connection_error(err: BaseException) -> bool:
    # aiodocker reports connection failures as DockerError(900, ...)
    return isinstance(err, _CONNECTION_ERRORS) or (isinstance(err, aiodocker.DockerError) and err.status == 900)


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class _Checkpoints:
    """The trigger's log cursor, saved as an XCom of its own task instance.

    Trigger kwargs are fixed at deferral, so this is where a trigger leaves word for the one
    that replaces it. The worker writes the first record as it defers (so the first read never
    misses) and deletes it when the task resumes; a new try starts without it.
    """

    def __init__(self, task_instance: Any, log: Any) -> None:
        self.ti = task_instance
        self.log = log
        self.broken = False

    @classmethod
    def for_trigger(cls, trigger: ContainerTrigger) -> _Checkpoints | None:
        if not trigger.checkpoint_interval or trigger.task_instance_in_triggerer is None:
            return None
        return cls(trigger.task_instance_in_triggerer, trigger.log)

    def _where(self) -> dict[str, Any]:
        ti = self.ti
        return {"key": CHECKPOINT_KEY, "dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id, "map_index": ti.map_index}

    async def load(self) -> dict | None:
        from airflow.sdk.execution_time.xcom import XCom

        try:
            saved = await XCom.aget_one(**self._where())
        except Exception as err:  # checkpoints are an aid: without one the log is replayed from the start
            self._broken(err)
            return None
        return saved if isinstance(saved, dict) else None

    async def save(self, container_id: str, cursor: dict, counts: dict[str, int]) -> bool:
        from airflow.sdk.execution_time.xcom import XCom

        if self.broken:
            return False
        try:
            record = {"container_id": container_id, "cursor": cursor, "lines": counts, "by": "trigger"}
            await XCom.aset(value=record, **self._where())
            return True
        except Exception as err:
            self._broken(err)
            return False

    def _broken(self, err: Exception) -> None:
        if not self.broken:
            self.broken = True
            self.log.warning("Can't keep log checkpoints (%s); after a triggerer restart this log would be replayed "
                             "from the start.", err)


@dataclass
class _Watch:
    """What one run of the trigger has seen so far."""

    cursor: LogCursor
    splitter: LineSplitter = field(default_factory=lambda: LineSplitter(max_line_bytes=MAX_LINE_BYTES))
    tail: deque = field(default_factory=lambda: deque(maxlen=20))
    last_stdout: str | None = None
    last_stdout_whole: bool = True
    last_stdout_private: bool = False
    last_stdout_unknown: bool = False  # resumed at a checkpoint and no stdout line since
    counts: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    in_long_line: set[int] = field(default_factory=set)  # streams in the middle of an over-long line
    secrets: list[str] | None = None  # private_environment values, read from the container itself
    out: Any = None  # the logger the container's lines go to
    last_line_at: float | None = None  # monotonic time of the last line logged
    unreachable_since: float | None = None  # monotonic
    outages: list[list[float]] = field(default_factory=list)  # [began, ended] wall times, daemon unreachable

    def reachable(self) -> None:
        if self.unreachable_since is not None:
            self.unreachable_since = None
            self.outages[-1][1] = time.time()


class ContainerTrigger(BaseTrigger):
    """Stream a container's stdout/stderr into the task log and fire once when it ends.

    :param container_id: the started container.
    :param remote_docker_conn_id: daemon connection; ``hook_params`` are the operator's overrides.
    :param deadline: absolute UNIX time after which the container is killed (``execution_timeout``).
    :param log_cursor: where an earlier watcher stopped reading (see ``LogCursor``).
    :param tty: whether the container has a TTY (its log stream is then not multiplexed).
    :param stop_timeout: seconds between SIGTERM and SIGKILL when a user stops the task.
    :param poll_interval: seconds between state checks when no log stream can be followed.
    :param daemon_lost_timeout: give up after the daemon has been unreachable this long.
    :param not_before: UNIX time before which no event is fired (see the operator's ``min_deferred_seconds``).
    :param secret_env: names of ``private_environment`` variables. Their values are read from the
        container and masked in the log and the event; they are never part of the trigger's kwargs.
    :param checkpoint_interval: seconds between log checkpoints (an XCom of the task instance), so a
        trigger restarted elsewhere repeats at most this much (+ ``CHECKPOINT_LAG``) of the log; 0: none.
    """

    def __init__(
        self,
        container_id: str,
        remote_docker_conn_id: str | None,
        hook_params: dict[str, Any] | None = None,
        deadline: float | None = None,
        log_cursor: dict | None = None,
        tty: bool = False,
        stop_timeout: int = 10,
        poll_interval: float = 2.0,
        daemon_lost_timeout: float = 300.0,
        tail_lines: int = 20,
        not_before: float | None = None,
        secret_env: list[str] | None = None,
        checkpoint_interval: float = 5.0,
    ) -> None:
        super().__init__()
        self.container_id = container_id
        self.remote_docker_conn_id = remote_docker_conn_id
        self.hook_params = dict(hook_params or {})
        self.deadline = deadline
        self.log_cursor = log_cursor
        self.tty = tty
        self.stop_timeout = stop_timeout
        self.poll_interval = poll_interval
        self.daemon_lost_timeout = daemon_lost_timeout
        self.tail_lines = tail_lines
        self.not_before = not_before
        self.secret_env = list(secret_env or [])
        self.checkpoint_interval = checkpoint_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "remote_docker.triggers.ContainerTrigger",
            {
                "container_id": self.container_id,
                "remote_docker_conn_id": self.remote_docker_conn_id,
                "hook_params": self.hook_params,
                "deadline": self.deadline,
                "log_cursor": self.log_cursor,
                "tty": self.tty,
                "stop_timeout": self.stop_timeout,
                "poll_interval": self.poll_interval,
                "daemon_lost_timeout": self.daemon_lost_timeout,
                "tail_lines": self.tail_lines,
                "not_before": self.not_before,
                "secret_env": self.secret_env,
                "checkpoint_interval": self.checkpoint_interval,
            },
        )

    def _hook(self) -> RemoteDockerHook:
        return RemoteDockerHook(self.remote_docker_conn_id, **self.hook_params)

    @property
    def task_instance_in_triggerer(self) -> Any | None:
        """The task instance a triggerer sets before ``run()``; None when the trigger runs inline
        (``dags test``, ``deferrable=False``): then there is no checkpoint store and no log race."""
        return getattr(self, "task_instance", None)

    # ------------------------------------------------------------------ run

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = self._hook()
        try:
            config = await hook.aconfig()
        except DaemonConfigError as err:
            yield TriggerEvent(self._event("error", message=str(err)))
            return
        watch = _Watch(cursor=LogCursor.from_dict(self.log_cursor), tail=deque(maxlen=self.tail_lines))
        # bound once: structlog's lazy proxy would rebuild the logger for every line
        watch.out = self.log.bind() if hasattr(self.log, "bind") else self.log
        checkpoints = _Checkpoints.for_trigger(self)
        checkpointing = None
        if checkpoints:
            await self._resume_from_checkpoint(checkpoints, watch)
            checkpointing = asyncio.create_task(self._keep_checkpointing(checkpoints, watch))
        try:
            async with hook.async_client() as docker:
                remaining = None if self.deadline is None else self.deadline - time.time()
                event: dict | None = None
                try:
                    with anyio.move_on_after(remaining) as deadline_scope:
                        event = await self._watch(docker, config, watch)
                    if deadline_scope.cancelled_caught:
                        event = await self._on_deadline(docker, config, watch)
                except _DaemonLost as err:
                    self._flush(watch)
                    event = self._event("error", message=f"{err} (gave up after {self.daemon_lost_timeout:g}s)",
                                        **self._log_summary(watch))
        finally:
            if checkpointing:
                checkpointing.cancel()
        pause = 0.0
        if self.task_instance_in_triggerer is not None and watch.last_line_at is not None:
            pause = LOG_DRAIN_SECONDS - (time.monotonic() - watch.last_line_at)
        if self.not_before:
            # Airflow 3.3 can fail a task whose trigger fires right after deferral: the scheduler may
            # drain the worker's stale defer-exit event after the resumed try started (apache/airflow#72716).
            pause = max(pause, self.not_before - time.time())
        if pause > 0:
            await asyncio.sleep(pause)
        yield TriggerEvent(event)

    async def _resume_from_checkpoint(self, checkpoints: _Checkpoints, watch: _Watch) -> None:
        saved = await checkpoints.load()
        # the worker leaves a first record at deferral ("by": "worker"); a trigger's own means one ran before
        if saved and saved.get("container_id") == self.container_id and saved.get("by") == "trigger":
            watch.cursor = LogCursor.from_dict(saved["cursor"])
            watch.counts.update(saved.get("lines") or {})
            watch.last_stdout_unknown = True
            self.log.warning(
                "--- remote-docker: a new triggerer resumes this log at its checkpoint; lines the container wrote "
                "after %s may appear twice (up to %gs of them) ---",
                watch.cursor.since or "its start", self.checkpoint_interval + CHECKPOINT_LAG,
            )
        else:
            # a first checkpoint at once, so a successor knows it resumes (and says so) even if we die early
            await checkpoints.save(self.container_id, watch.cursor.to_dict(), watch.counts)

    async def _keep_checkpointing(self, checkpoints: _Checkpoints, watch: _Watch) -> None:
        saved_since = watch.cursor.since
        while True:
            await asyncio.sleep(max(self.checkpoint_interval - CHECKPOINT_LAG, 0.5))
            cursor, counts = watch.cursor.to_dict(), dict(watch.counts)
            if cursor["since"] == saved_since:
                continue
            await asyncio.sleep(CHECKPOINT_LAG)
            if not await checkpoints.save(self.container_id, cursor, counts):
                return
            saved_since = cursor["since"]

    async def _watch(self, docker: aiodocker.Docker, config: DaemonConfig, watch: _Watch) -> dict:
        """Follow the log until the container ends; a dropped stream is resumed, never taken as an exit."""
        logs_readable = True
        log_errors = 0
        while True:
            if self.secret_env and watch.secrets is None:
                info = await self._inspect(docker, config, watch)
                if info is None:
                    return self._gone(watch)
                await self._mask_secrets(info, watch)
            if logs_readable:
                try:
                    await self._read_logs(docker, config, watch, follow=True)
                    log_errors = 0
                except aiodocker.DockerError as err:
                    if _is_gone(err):
                        return self._gone(watch)
                    if _is_connection_error(err):
                        await self._lost(config, watch, err)
                    elif err.status == 501 or "does not support reading" in str(err):
                        self.log.warning("The container's log driver can't be read back; waiting for it to exit without streaming its output.")
                        logs_readable = False
                    else:
                        # e.g. 409 while someone removes the container: its state (below) decides
                        log_errors += 1
                        if log_errors >= 3:
                            self.log.warning("Can't read the container's log (%s); waiting for it to exit without streaming.", err)
                            logs_readable = False
                except _CONNECTION_ERRORS as err:
                    await self._lost(config, watch, err)
            info = await self._inspect(docker, config, watch)
            if info is None:
                return self._gone(watch)
            state = info["State"]
            if state["Status"] in ("exited", "dead"):
                if logs_readable:
                    # Under load a follow stream can end before the last entries arrive: read what is left.
                    await self._read_logs_retrying(docker, config, watch)
                self._flush(watch)
                kill_signal = None
                if state.get("ExitCode"):
                    kill_signal = await self._kill_signal(docker, config, state)
                    if kill_signal is not None:
                        await self._sit_out_daemon_shutdown(docker, config, watch)
                return self._event(
                    "exited",
                    exit_code=state.get("ExitCode"),
                    oom_killed=bool(state.get("OOMKilled")),
                    error=state.get("Error") or None,
                    finished_at=state.get("FinishedAt"),
                    kill_signal=kill_signal,
                    ended_while_unreachable=self._ended_while_unreachable(state, watch),
                    **self._log_summary(watch),
                )
            # Still running (the stream dropped), not started yet, or paused: look again shortly.
            await asyncio.sleep(0.2 if logs_readable and state["Status"] == "running" else self.poll_interval)

    async def _read_logs(self, docker: aiodocker.Docker, config: DaemonConfig, watch: _Watch, *, follow: bool) -> None:
        params: dict[str, Any] = {"stdout": True, "stderr": True, "follow": follow, "timestamps": True}
        since = watch.cursor.since_param()
        if since:
            params["since"] = since
        watch.cursor.start_pass()
        decoder = FrameDecoder(tty=self.tty)
        # Follow streams have no total timeout; silence is normal while the container works.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.timeout, sock_read=None if follow else config.timeout)
        # aiodocker's own log() drops the stdout/stderr marker, so read the raw stream.
        async with docker._query(f"containers/{self.container_id}/logs", params=params, timeout=timeout) as response:
            watch.reachable()
            async for chunk in response.content.iter_any():
                for stream, payload in decoder.feed(chunk):
                    self._entry(watch, stream, payload)
            if self.tty and (rest := decoder.leftover()):
                self._entry(watch, STDOUT, rest)

    async def _read_logs_retrying(self, docker: aiodocker.Docker, config: DaemonConfig, watch: _Watch) -> None:
        while True:
            try:
                await self._read_logs(docker, config, watch, follow=False)
                return
            except aiodocker.DockerError as err:
                if not _is_connection_error(err):
                    if not _is_gone(err):
                        self.log.warning("Could not read the end of the container's log: %s", err)
                    return
                await self._lost(config, watch, err)
            except _CONNECTION_ERRORS as err:
                await self._lost(config, watch, err)

    def _entry(self, watch: _Watch, stream: int, payload: bytes) -> None:
        stamp, message = split_timestamp(payload)
        if stamp is not None and not watch.cursor.admit(stamp, stream):
            return
        for line in watch.splitter.feed(stream, message):
            self._emit(watch, line)

    def _flush(self, watch: _Watch) -> None:
        for line in watch.splitter.flush():
            self._emit(watch, line)

    def _emit(self, watch: _Watch, line: Line) -> None:
        name = "stderr" if line.stream == STDERR else "stdout"  # a TTY's single stream counts as stdout
        piece = line.continues or line.stream in watch.in_long_line  # part of a line too long to log whole
        if line.continues and line.stream not in watch.in_long_line:
            watch.in_long_line.add(line.stream)
            self.log.warning("The container wrote a %s line longer than %s bytes: it is logged in pieces of that size.",
                             name, f"{MAX_LINE_BYTES:,}")
        elif not line.continues:
            watch.in_long_line.discard(line.stream)
            watch.counts[name] += 1
        text = line.text
        watch.last_line_at = time.monotonic()
        if watch.secrets:
            watch.tail.append((name, _redact(text[:2000], watch.secrets)))
        else:
            watch.tail.append((name, text[:2000]))
        if line.stream == STDERR:
            watch.out.warning(text)
        else:
            watch.last_stdout = text
            watch.last_stdout_whole = not piece
            watch.last_stdout_unknown = False
            watch.last_stdout_private = bool(watch.secrets) and any(secret in text for secret in watch.secrets)
            watch.out.info(text)

    async def _inspect(self, docker: aiodocker.Docker, config: DaemonConfig, watch: _Watch) -> dict | None:
        """The container's inspect data, retrying while the daemon is unreachable; None if it is gone."""
        while True:
            try:
                info = await docker._query_json(f"containers/{self.container_id}/json",
                                                timeout=aiohttp.ClientTimeout(total=config.timeout))
                watch.reachable()
                return info
            except aiodocker.DockerError as err:
                if _is_gone(err):
                    return None
                if not _is_connection_error(err):
                    raise
                await self._lost(config, watch, err)
            except _CONNECTION_ERRORS as err:
                await self._lost(config, watch, err)

    async def _mask_secrets(self, info: dict, watch: _Watch) -> None:
        """Mask the values of ``secret_env`` as the container has them; the triggerer never got them otherwise."""
        # async variant: the sync one can deadlock talking to the triggerer's supervisor
        from airflow.sdk.log import amask_secret

        wanted = set(self.secret_env)
        watch.secrets = []
        for item in info.get("Config", {}).get("Env") or []:
            name, _, value = item.partition("=")
            if name in wanted and value:
                await amask_secret(value, name)
                if len(value) >= MIN_REDACTED_LENGTH:
                    watch.secrets.append(value)

    async def _kill_signal(self, docker: aiodocker.Docker, config: DaemonConfig, state: dict) -> str | None:
        """The signal of the last ``kill`` the daemon recorded for the container (docker stop/kill, or the
        daemon stopping it as it shuts down), if one ended it; None if it ended by itself."""
        try:
            since = rfc3339_to_unix(state["StartedAt"]).split(".")[0]
            params = {"since": since, "until": str(int(time.time()) + 1),
                      "filters": json.dumps({"container": [self.container_id], "event": ["kill"]})}
            async with docker._query("events", params=params, timeout=aiohttp.ClientTimeout(total=config.timeout)) as response:
                body = await response.read()
        except (aiodocker.DockerError, *_CONNECTION_ERRORS, KeyError, ValueError):
            return None  # only sharpens the message: without it the exit is reported as it is
        kills = [json.loads(line) for line in body.splitlines() if line.strip()]
        return kills[-1].get("Actor", {}).get("Attributes", {}).get("signal") if kills else None

    async def _sit_out_daemon_shutdown(self, docker: aiodocker.Docker, config: DaemonConfig, watch: _Watch) -> None:
        """A daemon shutting down without live-restore stops every container first and closes its API
        last, so a container stopped from outside may be the first sign of a restart: watch the daemon
        a while, and if it goes away, wait for it (the outage then explains the exit)."""
        until = time.monotonic() + SHUTDOWN_WATCH_SECONDS
        while time.monotonic() < until:
            try:
                async with docker._query("_ping", timeout=aiohttp.ClientTimeout(total=config.timeout)):
                    pass
            except (aiodocker.DockerError, *_CONNECTION_ERRORS) as err:
                if not _is_connection_error(err):
                    return
                await self._lost(config, watch, err)
                await self._inspect(docker, config, watch)  # returns once the daemon answers again
                return
            await asyncio.sleep(0.5)

    @staticmethod
    def _ended_while_unreachable(state: dict, watch: _Watch) -> list[float] | None:
        """The outage ([began, ended] UNIX times) during which the container stopped, if it did."""
        finished = state.get("FinishedAt") or ""
        if not watch.outages or finished.startswith("0001"):
            return None
        try:
            finished_at = float(rfc3339_to_unix(finished))
        except ValueError:
            return None
        for began, ended in watch.outages:
            if began - SHUTDOWN_WATCH_SECONDS - 2 <= finished_at <= (ended or time.time()) + 2:
                return [began, ended]
        return None

    async def _lost(self, config: DaemonConfig, watch: _Watch, err: BaseException) -> None:
        """Back off after a connection failure; give up after ``daemon_lost_timeout``."""
        now = time.monotonic()
        if watch.unreachable_since is None:
            watch.unreachable_since = now
            watch.outages.append([time.time(), 0.0])
            self.log.warning("Lost the daemon (%s); resuming the log from where it stopped.", explain(err, config, "reading"))
        elif now - watch.unreachable_since > self.daemon_lost_timeout:
            raise _DaemonLost(explain(err, config, "reading"))
        await asyncio.sleep(min(5.0, 0.5 + (now - watch.unreachable_since) / 4))

    # ------------------------------------------------------------------ endings

    def _log_summary(self, watch: _Watch) -> dict:
        last = watch.last_stdout
        fits = last is None or len(last.encode("utf-8", errors="replace")) <= MAX_EVENT_LINE_BYTES
        # Otherwise the worker reads the last line back from the daemon: it was too long or logged in
        # pieces, holds a private_environment value (events are stored in clear), or was logged before
        # a triggerer restart.
        in_event = fits and watch.last_stdout_whole and not watch.last_stdout_private and not watch.last_stdout_unknown
        return {
            "last_stdout_line": last if in_event else None,
            "last_line_in_event": in_event,
            "tail": [list(item) for item in watch.tail],
            "lines": dict(watch.counts),
        }

    def _event(self, status: str, **details: Any) -> dict:
        return {"status": status, "container_id": self.container_id, **details}

    def _gone(self, watch: _Watch) -> dict:
        self._flush(watch)
        return self._event(
            "gone",
            message=f"container {self.container_id[:12]} was removed by someone else while the task was deferred",
            **self._log_summary(watch),
        )

    async def _on_deadline(self, docker: aiodocker.Docker, config: DaemonConfig, watch: _Watch) -> dict:
        self.log.error("execution_timeout reached: killing container %s", self.container_id[:12])
        killed = False
        try:
            async with docker._query(f"containers/{self.container_id}/kill", method="POST",
                                     timeout=aiohttp.ClientTimeout(total=config.timeout)):
                killed = True
        except aiodocker.DockerError as err:
            if err.status not in (404, 409):  # 409: it had just exited by itself
                self.log.error("Could not kill container %s: %s", self.container_id[:12], explain(err, config, "killing"))
        except _CONNECTION_ERRORS as err:
            self.log.error("Could not kill container %s: %s", self.container_id[:12], explain(err, config, "killing"))
        with anyio.move_on_after(config.timeout):
            await self._read_logs_retrying(docker, config, watch)
        self._flush(watch)
        return self._event("timeout", killed=killed, **self._log_summary(watch))

    async def on_kill(self) -> None:
        """A user marked the task failed/success or cleared it while deferred: stop the container.

        Airflow ≥ 3.3 calls this only for user actions, never for a triggerer shutdown or hand-over.
        """
        hook = self._hook()
        config = await hook.aconfig()
        async with hook.async_client() as docker:
            self.log.info("Task stopped by a user: stopping container %s (grace %ss)", self.container_id[:12], self.stop_timeout)
            try:
                async with docker._query(
                    f"containers/{self.container_id}/stop", method="POST", params={"t": self.stop_timeout},
                    timeout=aiohttp.ClientTimeout(total=self.stop_timeout + config.timeout),
                ):
                    pass
            except aiodocker.DockerError as err:
                if err.status not in (304, 404):  # already stopped / already gone
                    raise

"""``ContainerTrigger``: watch a started container from the triggerer, stream its log, report its end.

The trigger only watches, streams and reports. It never creates or removes a container:
a trigger can run more than once (triggerer restart, hand-over), and the worker owns the
container's lifecycle. The two things it may do to the container are the ones nobody else
can do while the task is deferred: kill it when the task's deadline passes, and stop it
when a user marks or clears the task (``on_kill``, Airflow ≥ 3.3).
"""

from __future__ import annotations

import asyncio
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
from remote_docker.logs import STDERR, STDOUT, FrameDecoder, LineSplitter, LogCursor, split_timestamp


class _DaemonLost(Exception):
    """The daemon stayed unreachable past ``daemon_lost_timeout``."""


# A line longer than this is logged in pieces of this size (nothing is dropped); memory stays bounded.
MAX_LINE_BYTES = 4 * 1024 * 1024
# The last stdout line travels in the event (it is the default XCom) up to this size;
# a longer one is re-read by the worker from the daemon.
MAX_EVENT_LINE_BYTES = 1024 * 1024
_CONNECTION_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


def _is_gone(err: BaseException) -> bool:
    return isinstance(err, aiodocker.DockerError) and err.status == 404


def _is_connection_error(err: BaseException) -> bool:
    # aiodocker reports connection failures as DockerError(900, ...)
    return isinstance(err, _CONNECTION_ERRORS) or (isinstance(err, aiodocker.DockerError) and err.status == 900)


@dataclass
class _Watch:
    """What one run of the trigger has seen so far."""

    cursor: LogCursor
    splitter: LineSplitter = field(default_factory=lambda: LineSplitter(max_line_bytes=MAX_LINE_BYTES))
    tail: deque = field(default_factory=lambda: deque(maxlen=20))
    last_stdout: str | None = None
    last_stdout_whole: bool = True
    counts: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    unreachable_since: float | None = None


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
    :param secrets: values to mask in the log (``private_environment``); the triggerer is another
        process, so the worker's masks don't reach it. Trigger kwargs are encrypted at rest.
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
        secrets: list[str] | None = None,
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
        self.secrets = list(secrets or [])

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
                "secrets": self.secrets,
            },
        )

    def _hook(self) -> RemoteDockerHook:
        return RemoteDockerHook(self.remote_docker_conn_id, **self.hook_params)

    # ------------------------------------------------------------------ run

    async def run(self) -> AsyncIterator[TriggerEvent]:
        if self.secrets:
            # async variant: the sync one can deadlock talking to the triggerer's supervisor
            from airflow.sdk.log import amask_secret

            for secret in self.secrets:
                await amask_secret(secret)
        hook = self._hook()
        try:
            config = await hook.aconfig()
        except DaemonConfigError as err:
            yield TriggerEvent(self._event("error", message=str(err)))
            return
        watch = _Watch(cursor=LogCursor.from_dict(self.log_cursor), tail=deque(maxlen=self.tail_lines))
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
        if self.not_before and (early := self.not_before - time.time()) > 0:
            # Airflow 3.3 can fail a task whose trigger fires right after deferral: the scheduler may
            # drain the worker's stale defer-exit event after the resumed try started (apache/airflow#72716).
            await asyncio.sleep(early)
        yield TriggerEvent(event)

    async def _watch(self, docker: aiodocker.Docker, config: DaemonConfig, watch: _Watch) -> dict:
        """Follow the log until the container ends; a dropped stream is resumed, never taken as an exit."""
        logs_readable = True
        log_errors = 0
        while True:
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
            state = await self._state(docker, config, watch)
            if state is None:
                return self._gone(watch)
            if state["Status"] in ("exited", "dead"):
                if logs_readable:
                    # Under load a follow stream can end before the last entries arrive: read what is left.
                    await self._read_logs_retrying(docker, config, watch)
                self._flush(watch)
                return self._event(
                    "exited",
                    exit_code=state.get("ExitCode"),
                    oom_killed=bool(state.get("OOMKilled")),
                    error=state.get("Error") or None,
                    finished_at=state.get("FinishedAt"),
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
            watch.unreachable_since = None
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
        for line_stream, line in watch.splitter.feed(stream, message):
            self._emit(watch, line_stream, line, whole=message.endswith(b"\n") or line_stream != stream)

    def _flush(self, watch: _Watch) -> None:
        for stream, line in watch.splitter.flush():
            self._emit(watch, stream, line)

    def _emit(self, watch: _Watch, stream: int, line: str, whole: bool = True) -> None:
        name = "stderr" if stream == STDERR else "stdout"  # a TTY's single stream counts as stdout
        watch.counts[name] += 1
        watch.tail.append((name, line[:2000]))
        if stream == STDERR:
            self.log.warning("%s", line)
        else:
            watch.last_stdout = line
            watch.last_stdout_whole = whole
            self.log.info("%s", line)

    async def _state(self, docker: aiodocker.Docker, config: DaemonConfig, watch: _Watch) -> dict | None:
        """The container's State, retrying while the daemon is unreachable; None if it is gone."""
        while True:
            try:
                info = await docker._query_json(f"containers/{self.container_id}/json",
                                                timeout=aiohttp.ClientTimeout(total=config.timeout))
                watch.unreachable_since = None
                return info["State"]
            except aiodocker.DockerError as err:
                if _is_gone(err):
                    return None
                if not _is_connection_error(err):
                    raise
                await self._lost(config, watch, err)
            except _CONNECTION_ERRORS as err:
                await self._lost(config, watch, err)

    async def _lost(self, config: DaemonConfig, watch: _Watch, err: BaseException) -> None:
        """Back off after a connection failure; give up after ``daemon_lost_timeout``."""
        now = time.monotonic()
        if watch.unreachable_since is None:
            watch.unreachable_since = now
            self.log.warning("Lost the daemon (%s); resuming the log from where it stopped.", explain(err, config, "reading"))
        elif now - watch.unreachable_since > self.daemon_lost_timeout:
            raise _DaemonLost(explain(err, config, "reading"))
        await asyncio.sleep(min(5.0, 0.5 + (now - watch.unreachable_since) / 4))

    # ------------------------------------------------------------------ endings

    def _log_summary(self, watch: _Watch) -> dict:
        last = watch.last_stdout
        fits = last is None or len(last.encode("utf-8", errors="replace")) <= MAX_EVENT_LINE_BYTES
        return {
            "last_stdout_line": last if fits and watch.last_stdout_whole else None,
            "last_line_in_event": fits and watch.last_stdout_whole,
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

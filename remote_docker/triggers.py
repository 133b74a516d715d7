"""``ContainerTrigger``: watch a started container from the triggerer and report how it ended.

Lifecycle of ``run()``: resume (the log cursor from the worker, or a checkpoint a dead
triggerer left) → follow the log and wait for the exit, riding out daemon outages → at the
deadline kill the container → fire one event (``events.WatchEnd``).

A trigger can run more than once (triggerer restart, hand-over), so it never creates or
removes a container. The two things it may do to one are those nobody else can do while the
task is deferred: kill it when the task's deadline passes, and stop it when a user marks or
clears the task (``on_kill``, Airflow >= 3.3).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from remote_docker import checkpoints
from remote_docker.connection import DaemonConfigError
from remote_docker.engine import Engine, EngineError
from remote_docker.events import WatchEnd
from remote_docker.hook import RemoteDockerHook
from remote_docker.logs import LogCursor, LogFollower, container_log
from remote_docker.watch import ContainerWatch

# In a triggerer, trigger log lines reach the task's log file through the triggerer's supervisor, which
# reads them 4 KiB at a time and closes the file as soon as it hears the trigger finished: lines still
# queued then go to the triggerer's own output instead (Airflow 3.3; seen under load with the last
# line of a container). Firing no sooner than this after the last line lets the queue drain first.
LOG_DRAIN_SECONDS = 1.0


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
        container and redacted from every line logged and from the event; they are never part of
        the trigger's kwargs (Airflow stores those in its database).
    :param checkpoint_interval: seconds between log checkpoints (an XCom of the task instance), so a
        trigger restarted elsewhere repeats at most this much (+ ``checkpoints.LAG``) of the log; 0: none.
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
        names = ("container_id", "remote_docker_conn_id", "hook_params", "deadline", "log_cursor", "tty", "stop_timeout",
                 "poll_interval", "daemon_lost_timeout", "tail_lines", "not_before", "secret_env", "checkpoint_interval")
        return "remote_docker.triggers.ContainerTrigger", {name: getattr(self, name) for name in names}

    @property
    def task_instance_in_triggerer(self) -> Any | None:
        """The task instance a triggerer sets before ``run()``; None when the trigger runs inline
        (``dags test``): then there is no checkpoint store and no log race."""
        return getattr(self, "task_instance", None)

    def hook(self) -> RemoteDockerHook:
        return RemoteDockerHook(self.remote_docker_conn_id, **self.hook_params)

    # ------------------------------------------------------------------ run

    async def run(self) -> AsyncIterator[TriggerEvent]:
        follower = LogFollower(container_log(), LogCursor.from_dict(self.log_cursor), tty=self.tty,
                               tail_lines=self.tail_lines, counts=(self.log_cursor or {}).get("lines"))
        try:
            async with self.hook().engine() as engine:
                end = await self._watch(engine, follower)
        except (DaemonConfigError, EngineError) as err:
            follower.flush()
            end = WatchEnd("error", self.container_id, log=follower.summary(), message=str(err))
        await self._pause_before_firing(follower)
        yield TriggerEvent(end.to_payload())

    async def _watch(self, engine: Engine, follower: LogFollower) -> WatchEnd:
        watch = ContainerWatch(engine, self.container_id, follower, log=self.log, poll_interval=self.poll_interval,
                               give_up_after=self.daemon_lost_timeout, secret_env=self.secret_env)
        keeping = await self._resume(follower)
        try:
            return await watch.until_end_or_deadline(self.deadline)
        finally:
            if keeping:
                keeping.cancel()

    async def _resume(self, follower: LogFollower) -> asyncio.Task | None:
        """Pick up a checkpoint a dead triggerer left, and keep our own while we watch."""
        ti = self.task_instance_in_triggerer
        if not self.checkpoint_interval or ti is None:
            return None
        keeper = checkpoints.Checkpoints(ti, self.container_id, self.checkpoint_interval, self.log)
        await keeper.resume(follower)
        return asyncio.create_task(keeper.keep(follower))

    async def _pause_before_firing(self, follower: LogFollower) -> None:
        pause = 0.0
        if self.task_instance_in_triggerer is not None and follower.last_line_at is not None:
            pause = LOG_DRAIN_SECONDS - (time.monotonic() - follower.last_line_at)
        if self.not_before:
            # Airflow can fail a task whose trigger fires right after deferral: the scheduler may drain
            # the worker's stale defer-exit event after the resumed try started (see compat.STALE_EVENT_GUARD).
            pause = max(pause, self.not_before - time.time())
        if pause > 0:
            await asyncio.sleep(pause)

    async def on_kill(self) -> None:
        """A user marked the task failed/success or cleared it while deferred: stop the container.

        Airflow >= 3.3 calls this only for user actions, never for a triggerer shutdown or hand-over.
        """
        self.log.info("Task stopped by a user: stopping container %s (grace %ss)", self.container_id[:12], self.stop_timeout)
        async with self.hook().engine() as engine:  # stop() is bounded by the grace plus the API timeout
            await engine.stop(self.container_id, self.stop_timeout)

"""``ContainerTrigger``: a task's container, watched (and on Airflow >= 3.3 started) from the triggerer.

Lifecycle of ``run()``:

1. start, when the task starts in the triggerer (``start``): the one start path (``start.start``), which
   finds this try's container by its labels or creates and starts it, exactly once however often this runs;
2. resume: the log hand-over from the worker, or a checkpoint a dead triggerer left;
3. follow the log and wait for the exit (the one follow path, ``watch.ContainerWatch``), riding out daemon
   outages; at the deadline kill the container;
4. end: a container whose end needs nothing of a worker (exit 0, a skip code, a failure: ``payloads.Ending``)
   ends its task here (``finish.end_in_triggerer``); otherwise one event (``payloads.WatchEnd``) resumes the
   task on a worker.

Besides starting, the only things it does to a container are those nobody else can do while
the task is deferred: kill it at the deadline, stop it when a user marks or clears the task
(``on_kill``), and remove it after success when ``auto_remove`` asks.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from remote_docker import compat
from remote_docker.daemon import ownership
from remote_docker.lifecycle import checkpoints
from remote_docker.lifecycle.payloads import Ending, LogHandover, StartRequest, WatchEnd
from remote_docker.lifecycle.spec import TEMPLATED_FIELDS, ContainerSpec, SpecError, task_labels
from remote_docker.logs.follower import LogFollower, container_log, recent_lines, until_supervisor_read

if TYPE_CHECKING:
    from remote_docker.engine import Engine
    from remote_docker.hook import RemoteDockerHook

# Airflow imports this module on the triggerer's event loop (triggerer_job_runner.py, get_trigger_by_classpath), so
# it imports only what is light; the engine layer (aiodocker, aiohttp, docker-py: ~0.4 s) is imported in a thread the
# first time a trigger runs here (``engine_layer``), and the methods below import from it once it is there.
ENGINE_LAYER = ("remote_docker.lifecycle.finish", "remote_docker.hook", "remote_docker.lifecycle.start", "remote_docker.lifecycle.watch")
_engine_layer_ready = False


async def engine_layer() -> None:
    """The engine layer imported, off the event loop: concurrent first triggers each wait in a thread of their own."""
    global _engine_layer_ready
    if not _engine_layer_ready:
        await asyncio.to_thread(lambda: [importlib.import_module(name) for name in ENGINE_LAYER])
        _engine_layer_ready = True


# In a triggerer, trigger log lines reach the task's log file through the triggerer's supervisor, which
# reads them 4 KiB at a time between its other work and closes the file as soon as it hears the trigger
# finished: lines still queued then go to the triggerer's own output instead (Airflow 3.3; seen under
# load with the last line of a container). So a trigger fires once the supervisor has read everything
# this process logged (the log socket's queue is empty; polled every LOG_DRAIN_POLL), at most
# LOG_DRAIN_SECONDS after its last line. Where the queue can't be read, it waits LOG_DRAIN_FLOOR after its
# last line, more when this process logged many lines lately (at SUPERVISOR_LINES_PER_SECOND).
LOG_DRAIN_POLL = 0.01
LOG_DRAIN_FLOOR = 0.2
LOG_DRAIN_SECONDS = 1.0
SUPERVISOR_LINES_PER_SECOND = 2000.0
_KWARGS = ("container_id", "remote_docker_conn_id", "daemon", "hook_params", "deadline", "log_cursor", "tty", "stop_timeout",
           "poll_interval", "daemon_lost_timeout", "tail_lines", "not_before", "secret_env", "checkpoint_interval",
           "ending", "start", *TEMPLATED_FIELDS)


class ContainerTrigger(BaseTrigger):
    """Stream a container's stdout/stderr into the task log and fire once when it ends.

    :param container_id: the started container; None when this trigger starts it (``start``).
    :param remote_docker_conn_id: daemon connection; ``hook_params`` are the operator's overrides.
    :param daemon: the daemon of a pool connection the container is on (placed here when it starts here).
    :param deadline: absolute UNIX time after which the container is killed (``execution_timeout``).
    :param log_cursor: where an earlier watcher stopped reading (``payloads.LogHandover``).
    :param tty: whether the container has a TTY (its log stream is then not multiplexed).
    :param stop_timeout: seconds between SIGTERM and SIGKILL when a user stops the task.
    :param poll_interval: seconds between state checks when no log stream can be followed.
    :param daemon_lost_timeout: give up after the daemon has been unreachable this long.
    :param not_before: UNIX time before which no event resumes the task on a worker (``compat.STALE_EVENT_GUARD_SECONDS``).
    :param secret_env: names of ``private_environment`` variables. Their values are read from the
        container and redacted from every line logged and from the event; they are never part of
        the trigger's kwargs (Airflow stores those in its database).
    :param checkpoint_interval: seconds between log checkpoints (an XCom of the task instance), so a
        trigger restarted elsewhere repeats at most this much (+ ``checkpoints.LAG``) of the log; 0: none.
    :param ending: how the task may end here (``payloads.Ending``); None: always resume on a worker.
    :param start: the container to start here (``payloads.StartRequest``); the templated ``ContainerSpec``
        fields are kwargs of their own, so the triggerer renders them.
    """

    def __init__(
        self,
        container_id: str | None,
        remote_docker_conn_id: str | None,
        hook_params: dict[str, Any] | None = None,
        daemon: str | None = None,
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
        ending: dict | None = None,
        start: dict | None = None,
        **templated: Any,
    ) -> None:
        super().__init__()
        self.container_id = container_id
        self.remote_docker_conn_id = remote_docker_conn_id
        self.daemon = daemon
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
        self.ending = ending
        self.start = start
        self._created_here = False  # this run created the container: no earlier run left a checkpoint
        unknown = set(templated) - set(TEMPLATED_FIELDS)
        if unknown:
            raise TypeError(f"ContainerTrigger got unknown argument(s) {', '.join(sorted(unknown))}")
        for name in TEMPLATED_FIELDS:  # attributes of their own: the triggerer renders them in place
            setattr(self, name, templated.get(name))

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return "remote_docker.triggers.ContainerTrigger", {name: getattr(self, name) for name in _KWARGS}

    @property
    def task_instance_in_triggerer(self) -> Any | None:
        """The task instance a triggerer sets before ``run()``; None when the trigger runs inline
        (``dags test``): then there is no checkpoint store, no log race and no ending here."""
        return getattr(self, "task_instance", None)

    def hook(self) -> RemoteDockerHook:
        from remote_docker.hook import RemoteDockerHook  # the engine layer: see engine_layer

        return RemoteDockerHook(self.remote_docker_conn_id, daemon=self.daemon, **self.hook_params)

    # ------------------------------------------------------------------ run

    async def run(self) -> AsyncIterator[TriggerEvent]:
        await engine_layer()
        from remote_docker.daemon.connection import DaemonConfigError
        from remote_docker.engine import EngineError
        from remote_docker.lifecycle.finish import end_in_triggerer
        from remote_docker.pool.placement import room_freed

        follower = LogFollower.taking_over(container_log(), await self._handed_log(), tty=self.tty, tail_lines=self.tail_lines)
        task_end = None
        try:
            end = await self._start() if self.start else None
            async with self.hook().engine() as engine:
                end = end or await self._watch(engine, follower)
                # an exit or a removal was told to the waiters by the watch (on_exit) when it saw it; after a
                # timeout the container was killed, or not: the daemon is asked again how many run
                if end.status == "timeout":
                    room_freed(engine.url)
                if ending := self._ending_here():
                    task_end = await end_in_triggerer(engine, end, ending, self.task_instance, self.log)
        except (DaemonConfigError, EngineError) as err:
            follower.flush()
            end = WatchEnd("error", self.container_id, log=follower.summary(), message=str(err), daemon=self.daemon)
        await self._pause_before_firing(follower, resuming_on_worker=task_end is None)
        yield task_end or TriggerEvent(end.to_payload())

    async def _handed_log(self) -> LogHandover:
        """``log_cursor`` with the line the worker had begun opened: it travels sealed when private values are set."""
        handed = LogHandover.from_payload(self.log_cursor)
        if handed.sealed_partial is None:
            return handed
        try:
            deployment = await ownership.for_trigger()
            partial = json.loads(deployment.unseal(handed.sealed_partial))
        except Exception as err:  # a secret changed mid-task (InvalidToken), or none can be read here
            self.log.warning("The line the container had begun when the worker deferred could not be opened here "
                             "(%s): its beginning is not in this log.", type(err).__name__)
            partial = {}
        return replace(handed, partial=partial, sealed_partial=None)

    async def _start(self) -> WatchEnd | None:
        """Start this try's container here, placed on a daemon of the pool; a ``WatchEnd`` when that can't be done."""
        from remote_docker.lifecycle.launch import Launch, LaunchError
        from remote_docker.lifecycle.start import EarlierTryRuns, Full, start
        from remote_docker.pool.placement import PlacementError

        ti = self.task_instance
        identity = task_labels(ti.dag_id, ti.task_id, ti.run_id, ti.map_index, ti.try_number)
        try:
            deployment = await ownership.for_trigger()
        except ownership.NoSecretYet as err:
            return WatchEnd("start_on_worker", None, message=str(err))
        request = StartRequest.from_payload(self.start)
        try:
            spec = ContainerSpec(**request.spec, **{name: getattr(self, name) for name in TEMPLATED_FIELDS})
            launch = Launch(image=spec.image, body=spec.create_body(deployment.stamp(identity)), deployment=deployment,
                            name=spec.container_name, pull=request.pull,
                            missing_executable=request.missing_executable or Launch.missing_executable)
            hook = self.hook()
            pool = await hook.apool()
            pool.say_checks_off(self.log)
            started = await start(pool, launch, identity, hook.engine, self.log, daemon=request.daemon,
                                  daemon_labels=request.daemon_labels, in_triggerer=True, poll_interval=self.poll_interval)
        except (SpecError, LaunchError, PlacementError) as err:
            return WatchEnd("error", None, message=str(err), retryable=isinstance(err, PlacementError), daemon=self.daemon)
        assert not isinstance(started, Full)  # the triggerer waits for room instead
        self.daemon = started.daemon.name
        if isinstance(started, EarlierTryRuns):
            return WatchEnd("start_on_worker", None, daemon=self.daemon,
                            message="a container of an earlier try of this task is still running")
        self.container_id, self._created_here = started.container_id, started.created
        if request.execution_timeout and self.deadline is None:
            began = getattr(ti, "start_date", None)
            self.deadline = (began.timestamp() if began else time.time()) + request.execution_timeout
        return None

    async def _watch(self, engine: Engine, follower: LogFollower) -> WatchEnd:
        from remote_docker.lifecycle.watch import ContainerWatch
        from remote_docker.pool.placement import room_freed

        container_id = self.container_id
        # a task of this triggerer waiting for room on this daemon looks as soon as the daemon says it stopped
        watch = ContainerWatch(engine, container_id, follower, log=self.log, daemon=self.daemon,
                               poll_interval=self.poll_interval,
                               give_up_after=self.daemon_lost_timeout, secret_env=self.secret_env,
                               on_exit=lambda: room_freed(engine.url, container_id), stop_timeout=self.stop_timeout)
        keeping = await self._resume(follower)
        try:
            return await watch.until_end_or_deadline(self.deadline)
        finally:
            if keeping:
                keeping.cancel()

    async def _resume(self, follower: LogFollower) -> asyncio.Task | None:
        """Pick up a checkpoint a dead triggerer left, and keep our own while we watch."""
        ti = self.task_instance_in_triggerer
        if not self.checkpoint_interval or ti is None or not compat.TRIGGER_XCOMS:
            return None
        keeper = checkpoints.Checkpoints(ti, self.container_id, self.checkpoint_interval, self.log)
        await keeper.resume(follower, fresh=self._created_here)
        return asyncio.create_task(keeper.keep(follower))

    def _ending_here(self) -> Ending | None:
        from remote_docker.lifecycle.finish import possible_in_triggerer

        if self.task_instance_in_triggerer is None or not possible_in_triggerer():
            return None
        return Ending.from_payload(self.ending)

    async def _pause_before_firing(self, follower: LogFollower, *, resuming_on_worker: bool) -> None:
        pause = 0.0
        if self.task_instance_in_triggerer is not None and follower.last_line_at is not None:
            since = time.monotonic() - follower.last_line_at
            if await until_supervisor_read(follower.out, LOG_DRAIN_SECONDS - since, LOG_DRAIN_POLL) is None:
                pause = log_drain_seconds() - since
        # the stale executor event needs an executor: a trigger run inline (`airflow dags test`) has none
        if self.not_before and resuming_on_worker and self.task_instance_in_triggerer is not None:
            pause = max(pause, self.not_before - time.time())
        if pause > 0:
            await asyncio.sleep(pause)

    async def on_kill(self) -> None:
        """A user marked the task failed/success or cleared it while deferred: stop the container.

        Airflow >= 3.3 calls this for user actions, never for a triggerer shutdown; 3.3 also calls it
        when another triggerer took this trigger over (``compat.ON_KILL_ON_HANDOVER``).
        """
        await engine_layer()
        if await self._handed_over():
            self.log.info("This trigger moved to another triggerer, which watches the container on; "
                          "nothing is stopped.")
            return
        async with self.hook().engine() as engine:
            if self.container_id:
                await self._stop(engine, self.container_id)
                return
            for container in await self._this_try(engine):  # the user acted while run() was starting one
                if container["State"] == "created":
                    await engine.remove(container["Id"])  # it never ran
                else:
                    await self._stop(engine, container["Id"])

    async def _handed_over(self) -> bool:
        """Whether on_kill came from a hand-over: a user's action takes the task out of deferred first."""
        ti = self.task_instance_in_triggerer
        if not compat.ON_KILL_ON_HANDOVER or ti is None:
            return False
        try:
            state = await task_state(ti)
        except Exception as err:  # Airflow won't say: act as asked, as Airflow meant a user's action
            self.log.warning("Could not read this task's state (%s); taking on_kill as a user's action.", err)
            return False
        return state == "deferred"

    async def _stop(self, engine: Engine, container_id: str) -> None:
        self.log.info("Task stopped by a user: stopping container %s (grace %ss)", container_id[:12], self.stop_timeout)
        await engine.stop(container_id, self.stop_timeout)  # bounded by the grace plus the API timeout

    async def _this_try(self, engine: Engine) -> list[dict[str, Any]]:
        ti = self.task_instance_in_triggerer
        if ti is None:
            return []
        from remote_docker.lifecycle.start import ours_of_task

        identity = task_labels(ti.dag_id, ti.task_id, ti.run_id, ti.map_index, ti.try_number)
        try:
            deployment = await ownership.for_trigger()
        except ownership.NoSecretYet:  # no task of this Airflow ever made a container
            return []
        return await ours_of_task(engine, identity, deployment, self.log, try_too=True)


def log_drain_seconds() -> float:
    """How long after its last line a trigger waits before it fires (see LOG_DRAIN_SECONDS)."""
    return min(LOG_DRAIN_SECONDS, LOG_DRAIN_FLOOR + recent_lines.count() / SUPERVISOR_LINES_PER_SECOND)


def state_key(task_id: str, map_index: int) -> str:
    """How Airflow's get_task_states names a task instance within a run."""
    return task_id if map_index < 0 else f"{task_id}_{map_index}"


async def task_state(ti: Any) -> str | None:
    """This task instance's state, asked of Airflow through the triggerer's supervisor (3.3+)."""
    from airflow.sdk.execution_time.comms import GetTaskStates
    from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS

    answer = await SUPERVISOR_COMMS.asend(GetTaskStates(dag_id=ti.dag_id, map_index=ti.map_index,
                                                        task_ids=[ti.task_id], run_ids=[ti.run_id]))
    per_run = (getattr(answer, "task_states", None) or {}).get(ti.run_id) or {}
    return per_run.get(state_key(ti.task_id, ti.map_index))

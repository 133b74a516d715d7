"""``RemoteDockerOperator``: run a container on a remote daemon while the task is deferred.

A task's life, in three paths shared by worker and triggerer (docs/architecture.md):

1. ``execute`` (worker): the task's ``TaskPlan`` (``plan``), then the one start path (``start.start``:
   reattach, or place and launch; a full pool waits in ``CapacityTrigger``); follow the container
   (``watch.ContainerWatch``) for ``plan.follow_for`` seconds, then defer to ``ContainerTrigger``. A container
   that ends within that time finishes here (``finish``) with no deferral; with ``start_from_trigger`` the
   triggerer starts it instead.
2. ``ContainerTrigger.run`` (triggerer): follow to the end; a container that exited 0 whose result needs
   no decoding ends its task there (``finish.end_in_triggerer``), else the trigger reports the end.
3. ``execute_complete`` (worker): the one finish path (``finish.Finish.on_worker``): judge the end by a fresh
   inspect, read the result (decoded here only), remove the container per ``auto_remove``.

With ``deferrable=False`` the worker follows to the end itself.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Container, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from airflow.sdk import BaseOperator

from remote_docker import compat
from remote_docker.capacity import CapacityTrigger
from remote_docker.compat import AirflowException, AirflowFailException, AirflowTaskTimeout
from remote_docker.daemon import ownership
from remote_docker.daemon.connection import DEFAULT_CONN_ID, OVERRIDE_ARGUMENTS, DaemonConfigError, is_inline_pem
from remote_docker.daemon.registry import PULL_POLICIES, ImageError, source_for
from remote_docker.hook import RemoteDockerHook
from remote_docker.lifecycle import checkpoints, history, start
from remote_docker.lifecycle.launch import Launch, LaunchError
from remote_docker.lifecycle.output import DEFAULT_MAX_OUTPUT_BYTES, OUTPUT_FORMATS
from remote_docker.lifecycle.payloads import ContainerRecord, LogHandover, RoomFound, WatchEnd
from remote_docker.lifecycle.plan import OWN_METHODS, PerTask, TaskPlan, plan_of, start_trigger_args_of, trigger_kwargs
from remote_docker.lifecycle.spec import (
    TEMPLATED_FIELDS,
    ContainerSpec,
    SpecError,
    files_archive,
    parse_command,
    parse_env_file,
    task_labels,
)
from remote_docker.lifecycle.watch import ContainerWatch
from remote_docker.logs.follower import LogFollower, container_log
from remote_docker.pool.members import Member
from remote_docker.pool.placement import PlacementError
from remote_docker.triggers import ContainerTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

AUTO_REMOVE_MODES = ("never", "success", "force")
_T = TypeVar("_T")


@dataclass(frozen=True)
class Ended:
    """The container ended while this worker followed it: the task's result."""

    result: Any


@dataclass(frozen=True)
class StillRunning:
    """The container outlasted the worker's follow: the task defers, its trigger going on from ``handover``."""

    started: start.Started
    handover: LogHandover


def _choice(value: Any, allowed: Sequence[str], name: str) -> str:
    if value in allowed:
        return value
    raise ValueError(f"{name}={value!r} is not valid; use one of {', '.join(map(repr, allowed))}")


class RemoteDockerOperator(BaseOperator):
    """Run a command in a container on a (remote) Docker daemon, deferring while it runs.

    Accepts the parameters of the official ``DockerOperator`` (switch by changing the import);
    the container's own (``image``, ``command``, ``environment``, ``mounts``, ...) are the
    fields of ``remote_docker.lifecycle.spec.ContainerSpec``. Added:

    :param remote_docker_conn_id: connection of type ``remote_docker`` for the daemon, or a pool of them.
    :param daemon: pin the container to this daemon of a pool (its name or URL).
    :param daemon_labels: keep to the daemons of a pool whose labels include these (``{"gpu": "true"}``).
    :param docker_conn_id: an Airflow ``docker`` connection with registry credentials (as upstream);
        ``credential_helper``: a Docker credential helper's name; ``aws_conn_id``: ECR tokens (``registry``).
    :param pull: ``"missing"`` (default), ``"always"`` or ``"never"``; ``force_pull=True`` means ``"always"``.
    :param auto_remove: ``"never"`` (default), ``"success"`` (only when the task succeeded) or ``"force"``.
    :param files: container path -> text, bytes or a local ``pathlib.Path`` (file or folder),
        copied in before the container starts: inputs without bind mounts.
    :param output_format: ``"pickle"`` (default, as upstream) or ``"json"`` for ``retrieve_output``.
    :param max_output_bytes: refuse a ``retrieve_output_path`` file larger than this.
    :param deferrable: free the worker slot while the container runs (default True).
    :param poll_interval: seconds between state checks when the log can't be followed.
    :param stop_timeout: seconds between SIGTERM and SIGKILL when the task is stopped.
    :param daemon_lost_timeout: fail the task once its daemon has been unreachable this long (default 300).
    :param defer_after: seconds the worker follows the container before deferring (0: at once); default:
        ``REMOTE_DOCKER_DEFER_AFTER``, else from the task's history (``TaskPlan.follow_for``), else 2 s.
    :param start_from_trigger: start the task in the triggerer, with no worker (Airflow >= 3.3), when it needs
        nothing of one (``TaskPlan.worker_start_reason``, logged by the worker when it does); off by default:
        it saves long parallel tasks a worker start and costs a short task ~2 s of the triggerer's latency.
    :param min_deferred_seconds: a task that resumes on a worker after a worker deferral does so no sooner than
        this after deferring (the stale executor event, ``compat``; default 10 s, or
        ``REMOTE_DOCKER_MIN_DEFERRED_SECONDS``). docs/parameters.md has every parameter's type and default.
    """

    template_fields: Sequence[str] = (*TEMPLATED_FIELDS, "docker_conn_id")
    template_fields_renderers = {"env_file": "yaml", "command": "bash", "environment": "json"}
    template_ext: Sequence[str] = (".sh", ".bash", ".env")
    ui_color = "#d9ecfb"
    missing_executable = Launch.missing_executable
    # Airflow reads these on the class (mapped tasks: never from the triggerer) and on each task when it
    # serializes the DAG (the plan decides, with everything set by then)
    start_from_trigger = PerTask(False, lambda task: task.plan().worker_start_reason is None)
    start_trigger_args = PerTask(None, lambda task: start_trigger_args_of(task.plan()))

    def __init__(
        self,
        *,
        image: str,
        command: str | list[str] | None = None,
        entrypoint: str | list[str] | None = None,
        environment: dict[str, Any] | None = None,
        private_environment: dict[str, Any] | None = None,
        env_file: str | None = None,
        container_name: str | None = None,
        working_dir: str | None = None,
        user: str | int | None = None,
        hostname: str | None = None,
        mounts: list[Any] | None = None,
        network_mode: str | None = None,
        dns: list[str] | None = None,
        dns_search: list[str] | None = None,
        extra_hosts: dict[str, str] | None = None,
        port_bindings: dict | None = None,
        cpus: float | None = None,
        mem_limit: int | str | None = None,
        shm_size: int | str | None = None,
        privileged: bool = False,
        cap_add: Iterable[str] | None = None,
        device_requests: list[Any] | None = None,
        ulimits: list[Any] | None = None,
        labels: dict[str, str] | list[str] | None = None,
        ipc_mode: str | None = None,
        tty: bool = False,
        log_opts_max_size: str | None = None,
        log_opts_max_file: str | None = None,
        api_version: str | None = None,
        auto_remove: Literal["never", "success", "force"] = "never",
        skip_on_exit_code: int | Container[int] | None = None,
        xcom_all: bool = False,
        retrieve_output: bool = False,
        retrieve_output_path: str | None = None,
        output_format: Literal["pickle", "json"] = "pickle",
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        files: Mapping[str, str | bytes | Path] | None = None,
        remote_docker_conn_id: str | None = DEFAULT_CONN_ID,
        daemon: str | None = None,
        daemon_labels: Mapping[str, str] | None = None,
        docker_conn_id: str | None = None,
        credential_helper: str | None = None,
        aws_conn_id: str | None = None,
        docker_url: str | None = None,
        tls_ca_cert: str | None = None,
        tls_client_cert: str | None = None,
        tls_client_key: str | None = None,
        tls_verify: bool | None = None,
        tls_hostname: str | bool | None = None,
        timeout: float | None = None,
        pull: Literal["missing", "always", "never"] = "missing",
        force_pull: bool = False,
        deferrable: bool = True,
        poll_interval: float = 2.0,
        stop_timeout: int = 10,
        daemon_lost_timeout: float = 300.0,
        min_deferred_seconds: float | None = None,
        defer_after: float | None = None,
        start_from_trigger: bool = False,
        # Accepted for compatibility with the official DockerOperator; they have no effect here.
        mount_tmp_dir: bool = False,
        tmp_dir: str | None = None,
        host_tmp_dir: str | None = None,
        tls_ssl_version: str | None = None,
        **kwargs: Any,
    ) -> None:
        arguments = dict(locals())  # before any other local: the container's fields are set from it below
        super().__init__(**kwargs)
        for name in (*ContainerSpec.__dataclass_fields__, *OVERRIDE_ARGUMENTS):
            setattr(self, name, arguments[name])
        self.environment = dict(environment or {})
        self.private_environment = dict(private_environment or {})
        self.mounts = list(mounts or [])
        self.auto_remove = _choice(auto_remove, AUTO_REMOVE_MODES, "auto_remove")
        self.skip_on_exit_code: Container[int] = (() if skip_on_exit_code is None else (skip_on_exit_code,)
                                                  if isinstance(skip_on_exit_code, int) else skip_on_exit_code)
        self.xcom_all, self.retrieve_output, self.retrieve_output_path = xcom_all, retrieve_output, retrieve_output_path
        if port_bindings and network_mode == "host":  # at parse, as the official operator
            raise ValueError("port_bindings can't be used with network_mode='host'; drop one of them")
        self.output_format = _choice(output_format, OUTPUT_FORMATS, "output_format")
        if max_output_bytes <= 0:
            raise ValueError(f"max_output_bytes={max_output_bytes} must be positive")
        self.max_output_bytes = max_output_bytes
        self.files = dict(files or {})
        self.folders: dict[str, int] = {}  # container folders to create first (path -> mode)
        self.remote_docker_conn_id, self.daemon = remote_docker_conn_id, daemon
        self.daemon_labels = dict(daemon_labels or {})
        self.docker_conn_id, self.credential_helper, self.aws_conn_id = docker_conn_id, credential_helper, aws_conn_id
        self.pull = "always" if force_pull else _choice(pull, PULL_POLICIES, "pull")
        self.deferrable, self.poll_interval = deferrable, poll_interval
        self.stop_timeout, self.daemon_lost_timeout = stop_timeout, daemon_lost_timeout
        self.min_deferred_seconds = min_deferred_seconds if min_deferred_seconds is not None else \
            float(os.environ.get("REMOTE_DOCKER_MIN_DEFERRED_SECONDS", compat.STALE_EVENT_GUARD_SECONDS))
        if defer_after is None and os.environ.get("REMOTE_DOCKER_DEFER_AFTER"):
            defer_after = float(os.environ["REMOTE_DOCKER_DEFER_AFTER"])
        if defer_after is not None and defer_after < 0:
            raise ValueError(f"defer_after={defer_after} must be 0 or more seconds")
        self.defer_after = defer_after  # None: decided when the task runs (follow_for)
        self.start_from_trigger_wish = start_from_trigger
        self.mount_tmp_dir = mount_tmp_dir
        # the official operator's, without effect here: said once in this task's own log when it runs
        self.ignored_arguments = [name for name, value in (("mount_tmp_dir", mount_tmp_dir), ("tmp_dir", tmp_dir),
                                                           ("host_tmp_dir", host_tmp_dir),
                                                           ("tls_ssl_version", tls_ssl_version)) if value]
        # where the container runs, once it does: on_kill, ``cli`` and ``container`` need them
        self.container_id: str | None = None
        self.running_on: Member | None = None
        self._worker_start_reason: str | None = None  # as the scheduler saw it, before the templates were rendered

    # ------------------------------------------------------------------ connection

    @property
    def hook_params(self) -> dict[str, Any]:
        """Overrides of the daemon connection, passed to the hook and the trigger as they are."""
        return {name: getattr(self, name) for name in OVERRIDE_ARGUMENTS if getattr(self, name) is not None}

    @cached_property
    def hook(self) -> RemoteDockerHook:
        return RemoteDockerHook(self.remote_docker_conn_id, **self.hook_params)

    def get_hook(self) -> RemoteDockerHook:
        """The official operator's name for ``hook``."""
        return self.hook

    @property
    def cli(self) -> Any:
        """A docker-py ``APIClient`` for the container's daemon (the official operator's ``cli``), for subclasses
        and callbacks."""
        if self.running_on is None:
            return self.hook.get_conn().api
        return RemoteDockerHook(self.remote_docker_conn_id, daemon=self.running_on.name, **self.hook_params).get_conn().api

    @property
    def container(self) -> dict[str, str] | None:
        """``{"Id": ...}`` once the container exists (the official operator's ``container``)."""
        return {"Id": self.container_id} if self.container_id else None

    format_command = staticmethod(parse_command)  # the official operator's: a "[...]" string becomes a list
    unpack_environment_variables = staticmethod(parse_env_file)  # the official operator's: KEY=VALUE lines

    def plan(self) -> TaskPlan:
        """This task's plan, from its arguments as they stand (``plan.plan_of``)."""
        own = frozenset(name for name in OWN_METHODS if getattr(type(self), name) is not getattr(RemoteDockerOperator, name))
        return plan_of(self, own)

    def _run(self, work: Coroutine[Any, Any, _T]) -> _T:
        """Run engine work on this worker: one event loop, one client, failures as one line."""
        try:
            return asyncio.run(work)
        except (SpecError, DaemonConfigError, ImageError, LaunchError) as err:
            raise AirflowFailException(str(err)) from None
        except PlacementError as err:  # no daemon answered: a retry may find one back
            raise AirflowException(str(err)) from None
        except AirflowException as err:  # the task's verdict, one line already: the frames of the event loop and of
            raise err.with_traceback(None) from err.__cause__  # our engine work under it say nothing more to a user

    # ------------------------------------------------------------------ execute

    def execute(self, context: Context) -> Any:
        plan = self.plan()
        self._mask_private_environment(plan)
        if self.ignored_arguments:
            self.log.warning("%s: %s ignored: a remote daemon can't see the worker's folders (use files= or a named "
                             "volume), and TLS is always 1.2 or newer", self.task_id, ", ".join(self.ignored_arguments))
        if plan.deferrable and is_inline_pem(self.tls_client_key):
            # Airflow 3.3 stores trigger kwargs (where overrides travel) unencrypted in its database
            raise AirflowFailException(
                "tls_client_key is PEM text: a deferred task would store it in clear in Airflow's trigger table; "
                "put the key in the remote_docker connection (remote_docker_conn_id) or pass a file path"
            )
        if self.start_from_trigger_wish and self._worker_start_reason:
            self.log.info("Starting on a worker, not in the triggerer: %s.", self._worker_start_reason)
        ti = context["ti"]
        identity = task_labels(ti.dag_id, ti.task_id, ti.run_id, ti.map_index, ti.try_number)
        deployment = ownership.for_worker()
        try:
            launch = Launch(image=plan.spec.image, body=plan.spec.create_body(deployment.stamp(identity)),
                            deployment=deployment, name=plan.spec.container_name, pull=plan.pull,
                            credentials=source_for(*plan.registry),
                            archive=files_archive(plan.files, plan.folders) if plan.files or plan.folders else None,
                            missing_executable=plan.missing_executable)
        except (SpecError, ImageError) as err:
            raise AirflowFailException(str(err)) from None
        deadline = plan.deadline(ti)
        step = self._run(self._start_and_follow(context, plan, launch, identity, deadline))
        if isinstance(step, Ended):
            return step.result
        if isinstance(step, start.Full):  # every daemon that may take it is full: wait, without the slot
            self.defer(trigger=CapacityTrigger(plan.conn_id, identity, hook_params=plan.hook_params, daemon=plan.daemon,
                                               daemon_labels=plan.daemon_labels, deadline=deadline,
                                               poll_interval=plan.poll_interval),
                       method_name="execute_after_wait")
        trigger = ContainerTrigger(**trigger_kwargs(plan, container_id=step.started.container_id, deadline=deadline,
                                                    daemon=step.started.daemon.name, handover=step.handover,
                                                    not_before=plan.not_before()))
        self.log.info("Deferring while container %s runs; its output follows in this log.", self.container_id[:12])
        start.remember(context, ContainerRecord(self.container_id, "deferred", step.started.daemon.name), self.log)
        checkpoints.begin(ti, self.container_id)
        self.defer(trigger=trigger, method_name="execute_complete")

    def execute_after_wait(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """A daemon has room again (``capacity.CapacityTrigger``): place and start as ``execute`` does."""
        if RoomFound.from_payload(event).timeout:
            raise AirflowTaskTimeout(f"execution_timeout ({self.execution_timeout}) reached while waiting for room on the pool")
        return self.execute(context)

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        # why a worker runs this, read as the scheduler saw it: from the templates before they are rendered
        self._worker_start_reason = self.plan().worker_start_reason
        super().render_template_fields(context, jinja_env)

    async def _start_and_follow(self, context: Context, plan: TaskPlan, launch: Launch, identity: dict[str, str],
                                deadline: float | None) -> Ended | start.Full | StillRunning:
        """Start (or reattach), then follow the container here: to its end with ``deferrable=False``, else
        for ``follow_for`` seconds."""
        pool = await self.hook.apool()
        pool.say_checks_off(self.log)
        started = await start.start(pool, launch, identity, self.hook.engine, self.log, daemon=plan.daemon,
                                    daemon_labels=plan.daemon_labels, record=start.recall(context, self.log),
                                    stop_timeout=plan.stop_timeout)
        if isinstance(started, start.Full):
            return started
        assert isinstance(started, start.Started)  # a worker's start decides about earlier tries itself
        self.running_on, self.container_id = started.daemon, started.container_id
        start.remember(context, ContainerRecord(started.container_id, "started", started.daemon.name), self.log)
        async with self.hook.engine(started.daemon) as engine:
            follower = LogFollower(container_log(), tty=plan.tty)
            for value in plan.private_environment.values():
                follower.keep_secret(str(value))
            watch = ContainerWatch(engine, started.container_id, follower, log=self.log, daemon=started.daemon.name,
                                   poll_interval=plan.poll_interval, give_up_after=plan.daemon_lost_timeout,
                                   stop_timeout=plan.stop_timeout)
            if plan.deferrable:
                ti, began = context["ti"], time.monotonic()
                end = await watch.within(plan.follow_for(ti, self.log), deadline)
                history.remember(ti.dag_id, ti.task_id, history.DEFERRED if end is None else time.monotonic() - began)
                if end is None:  # still running: the trigger goes on from here
                    return StillRunning(started, follower.handover(seal=launch.deployment.seal))
            else:
                try:
                    end = await watch.until_end_or_deadline(deadline)
                except BaseException:
                    await asyncio.shield(engine.stop(started.container_id, plan.stop_timeout))
                    raise
            return Ended(await plan.finish.on_worker(engine, end, self.log, explain=self.explain_failure))

    def _mask_private_environment(self, plan: TaskPlan) -> None:
        from airflow.sdk.log import mask_secret

        for key, value in plan.private_environment.items():
            mask_secret(str(value), key)

    # ------------------------------------------------------------------ completion

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Back on a worker after the trigger fired: judge the container, collect the result, clean up."""
        plan = self.plan()
        self._mask_private_environment(plan)
        end = WatchEnd.from_payload(event)
        if end.status == "start_on_worker":  # the triggerer started nothing: decide here, as a worker does
            self.log.info("Starting on a worker: %s.", end.message)
            return self.execute(context)
        self.container_id = end.container_id
        ti = context["ti"]
        checkpoints.end(ti, self.log)
        if (ran := end.ran_seconds()) is not None:  # its length, which the worker that deferred could not know
            history.remember(ti.dag_id, ti.task_id, ran)
        if end.status == "error":  # it may live on: a retry reattaches
            start.remember(context, ContainerRecord(self.container_id, "lost", end.daemon), self.log)
        return self._run(self._finish(plan, end))

    async def _finish(self, plan: TaskPlan, end: WatchEnd) -> Any:
        pool = await self.hook.apool()
        self.running_on = pool.member(end.daemon) if end.daemon and not pool.single else pool.members[0]
        async with self.hook.engine(self.running_on) as engine:
            return await plan.finish.on_worker(engine, end, self.log, explain=self.explain_failure)

    def explain_failure(self, err: AirflowException, end: WatchEnd) -> AirflowException:
        """The exception that fails the task; subclasses may know better than the exit code."""
        return err

    def on_kill(self) -> None:
        """The task was killed while its worker held it (deferrable=False, or before deferring)."""
        if not (container_id := self.container_id):
            return

        async def stop() -> None:
            async with self.hook.engine(self.running_on) as engine:
                if await engine.stop(container_id, self.stop_timeout) and self.auto_remove == "force":
                    await engine.remove(container_id)

        def stop_in_own_loop() -> None:
            try:
                asyncio.run(stop())
            except Exception as err:
                self.log.warning("Could not stop container %s: %s", container_id[:12], err)

        thread = threading.Thread(target=stop_in_own_loop, daemon=True)  # called from a signal handler, maybe
        thread.start()  # while this thread runs our event loop
        thread.join(self.stop_timeout + 2 * (self.running_on.config.timeout if self.running_on else 60))

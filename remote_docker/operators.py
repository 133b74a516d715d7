"""``RemoteDockerOperator``: run a container on a remote daemon while the task is deferred.

1. ``execute`` (worker): resolve the daemon or pool; reattach to a running container of an earlier
   try (``reattach``), or place and start one (``placement``, ``launch``; a full pool waits in
   ``capacity``); follow it ``defer_after`` seconds, then defer to ``ContainerTrigger``.
   A container that ends within that time finishes here (step 3) with no deferral; with
   ``start_from_trigger`` the triggerer starts it instead (``trigger_start``).
2. ``ContainerTrigger.run`` (triggerer): stream the log, wait for the end; a container that exited 0
   whose result needs no decoding ends its task there (``ending``), else the trigger reports the end.
3. ``execute_complete`` (worker): judge the end by a fresh inspect, collect the result
   (decoded here only), remove the container per ``auto_remove`` (``outcome``).

With ``deferrable=False`` the worker runs the same watch itself. See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import threading
import time
from collections.abc import Container, Coroutine, Iterable, Mapping, Sequence
from dataclasses import fields
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from airflow.sdk import BaseOperator

from remote_docker import capacity, checkpoints, compat, ending, history, ownership, reattach, trigger_start
from remote_docker.compat import AirflowException, AirflowFailException, AirflowTaskTimeout
from remote_docker.connection import DEFAULT_CONN_ID, OVERRIDE_ARGUMENTS, DaemonConfigError, is_inline_pem
from remote_docker.engine import Engine
from remote_docker.events import WatchEnd
from remote_docker.hook import RemoteDockerHook
from remote_docker.launch import Launch, LaunchError
from remote_docker.logs import LogFollower, container_log
from remote_docker.outcome import Outcome
from remote_docker.output import DEFAULT_MAX_OUTPUT_BYTES, OUTPUT_FORMATS
from remote_docker.placement import Placement, PlacementError, start_placed
from remote_docker.pool import DaemonPool, Member
from remote_docker.registry import PULL_POLICIES, ImageError, source_for
from remote_docker.spec import (
    TEMPLATED_FIELDS,
    ContainerSpec,
    SpecError,
    files_archive,
    parse_command,
    parse_env_file,
    task_labels,
)
from remote_docker.triggers import ContainerTrigger
from remote_docker.watch import ContainerWatch

if TYPE_CHECKING:
    from airflow.sdk import Context

# A container of a task with no history that ends within this many seconds of starting finishes on the worker with
# no deferral; within this plus min_deferred_seconds when its task would resume on a worker (3.3+, follow_for).
DEFAULT_DEFER_AFTER = 2.0
# A task whose last successful run took at least this long defers at once (follow_for): what a deferral
# costs it is then at most ~1/5 of its run (BENCHMARKS.md, the length sweep). Ending in the triggerer costs
# its pickup and event; resuming on a worker also a worker start and the stale-event guard.
LONG_IF_ENDING_IN_TRIGGERER = 10.0
LONG_IF_RESUMING_ON_WORKER = 50.0
AUTO_REMOVE_MODES = ("never", "success", "force")
# Operator arguments that become the container (one per ContainerSpec field)
SPEC_FIELDS = tuple(f.name for f in fields(ContainerSpec))
_T = TypeVar("_T")


def _choice(value: Any, allowed: Sequence[str], name: str) -> str:
    if value in allowed:
        return value
    raise ValueError(f"{name}={value!r} is not valid; use one of {', '.join(map(repr, allowed))}")


class RemoteDockerOperator(BaseOperator):
    """Run a command in a container on a (remote) Docker daemon, deferring while it runs.

    Accepts the parameters of the official ``DockerOperator`` (switch by changing the import);
    the container's own (``image``, ``command``, ``environment``, ``mounts``, ...) are the
    fields of ``remote_docker.spec.ContainerSpec``. Added:

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
    :param defer_after: seconds the worker follows the container before deferring: one that ends
        sooner finishes on the worker without a deferral; 0 defers at once. Default:
        ``REMOTE_DOCKER_DEFER_AFTER``, else decided from the task's previous successful run (Airflow >=
        3.3): one that took long defers at once, one that was short is followed on the worker as the
        official operator does (deferring only if it runs twice as long); without one, 2 s.
    :param start_from_trigger: start the task in the triggerer, with no worker (Airflow >= 3.3), when it
        needs nothing of one (``trigger_start.why_not``; the worker logs the reason when it does). For
        many parallel long containers: it saves a worker start per task, and costs a short task the
        triggerer's own pickup and event latency (~2 s), so it is off by default.
    :param min_deferred_seconds: a task that resumes on a worker after a worker deferral does so no
        sooner than this after deferring (the stale executor event, ``compat``); default:
        ``REMOTE_DOCKER_MIN_DEFERRED_SECONDS``, else the installed Airflow's need (10 s, no fixed release yet).
    """

    template_fields: Sequence[str] = (*TEMPLATED_FIELDS, "docker_conn_id")
    template_fields_renderers = {"env_file": "yaml", "command": "bash", "environment": "json"}
    template_ext: Sequence[str] = (".sh", ".bash", ".env")
    ui_color = "#d9ecfb"
    missing_executable = Launch.missing_executable
    # Airflow reads these on the class (mapped tasks: never from the triggerer) and on each task when it
    # serializes the DAG (trigger_start decides, with everything set by then)
    start_from_trigger = trigger_start.start_from_trigger
    start_trigger_args = trigger_start.start_trigger_args

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
        for name in (*SPEC_FIELDS, *OVERRIDE_ARGUMENTS):
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
        self.remote_docker_conn_id, self.daemon_pin = remote_docker_conn_id, daemon
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
        self.container_id: str | None = None
        self.daemon: Member | None = None  # the daemon of the pool the container is on
        self._handed_over: dict | None = None  # the log cursor the trigger takes over
        self._worker_start_reason: str | None = None

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
        if self.daemon is None:
            return self.hook.get_conn().api
        return RemoteDockerHook(self.remote_docker_conn_id, daemon=self.daemon.name, **self.hook_params).get_conn().api

    @property
    def container(self) -> dict[str, str] | None:
        """``{"Id": ...}`` once the container exists (the official operator's ``container``)."""
        return {"Id": self.container_id} if self.container_id else None

    format_command = staticmethod(parse_command)  # the official operator's: a "[...]" string becomes a list
    unpack_environment_variables = staticmethod(parse_env_file)  # the official operator's: KEY=VALUE lines

    def container_spec(self) -> ContainerSpec:
        return ContainerSpec(**{name: getattr(self, name) for name in SPEC_FIELDS})

    def outcome(self) -> Outcome:
        return Outcome(image=self.image, skip_on_exit_code=self.skip_on_exit_code, execution_timeout=self.execution_timeout,
                       do_xcom_push=self.do_xcom_push, xcom_all=self.xcom_all, tty=self.tty,
                       retrieve_output=self.retrieve_output, retrieve_output_path=self.retrieve_output_path,
                       output_format=self.output_format, max_output_bytes=self.max_output_bytes,
                       auto_remove=self.auto_remove, stop_timeout=self.stop_timeout)

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
        self._mask_private_environment()
        if self.ignored_arguments:
            self.log.warning("%s: %s ignored: a remote daemon can't see the worker's folders (use files= or a named "
                             "volume), and TLS is always 1.2 or newer", self.task_id, ", ".join(self.ignored_arguments))
        if self.deferrable and is_inline_pem(self.tls_client_key):
            # Airflow 3.3 stores trigger kwargs (where overrides travel) unencrypted in its database
            raise AirflowFailException(
                "tls_client_key is PEM text: a deferred task would store it in clear in Airflow's trigger table; "
                "put the key in the remote_docker connection (remote_docker_conn_id) or pass a file path"
            )
        if self.start_from_trigger_wish and self._worker_start_reason:
            self.log.info("Starting on a worker, not in the triggerer: %s.", self._worker_start_reason)
        ti = context["ti"]
        labels = task_labels(ti.dag_id, ti.task_id, ti.run_id, ti.map_index, ti.try_number)
        deployment = ownership.for_worker()
        try:
            launch = Launch(image=self.image, body=self.container_spec().create_body(deployment.stamp(labels)),
                            deployment=deployment, name=self.container_name,
                            pull=self.pull, credentials=source_for(self.docker_conn_id, self.credential_helper, self.aws_conn_id),
                            archive=files_archive(self.files, self.folders) if self.files or self.folders else None,
                            missing_executable=self.missing_executable)
        except (SpecError, ImageError) as err:
            raise AirflowFailException(str(err)) from None
        deadline = self._deadline(ti)
        result = self._run(self._start_and_follow(context, launch, labels, deadline))
        if isinstance(result, Placement):  # every daemon that may take it is full: wait, without the slot
            self.log.info("Every daemon this task may use is full (%s); waiting for room.", result.describe())
            self.defer(trigger=capacity.trigger_for(self, labels, deadline), method_name="execute_after_wait")
        if result is not _STILL_RUNNING:
            return result
        trigger = ContainerTrigger(
            container_id=self.container_id, remote_docker_conn_id=self.remote_docker_conn_id, daemon=self.daemon.name,
            hook_params=self.hook_params, deadline=deadline, log_cursor=self._handed_over, tty=self.tty,
            stop_timeout=self.stop_timeout, poll_interval=self.poll_interval, secret_env=sorted(self.private_environment),
            daemon_lost_timeout=self.daemon_lost_timeout,
            not_before=time.time() + self.min_deferred_seconds if self.min_deferred_seconds else None,
            ending=self.ending_here(),
        )
        self.log.info("Deferring while container %s runs; its output follows in this log.", self.container_id[:12])
        reattach.remember(context, self.container_id, "deferred", self.log, self.daemon.name)
        checkpoints.begin(ti, self.container_id)
        self.defer(trigger=trigger, method_name="execute_complete")

    def execute_after_wait(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """A daemon has room again (``capacity.CapacityTrigger``): place and start as ``execute`` does."""
        if (event or {}).get("timeout"):
            raise AirflowTaskTimeout(f"execution_timeout ({self.execution_timeout}) reached while waiting for room on the pool")
        return self.execute(context)

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        # why a worker runs this, read as the scheduler saw it: from the templates before they are rendered
        self._worker_start_reason = trigger_start.why_not(self)
        super().render_template_fields(context, jinja_env)

    async def _start(self, pool: DaemonPool, launch: Launch, labels: dict, record: dict | None) -> tuple[Member, str] | Placement:
        """Reattach to an earlier try's container wherever it is in the pool, or place and start one."""
        found = await reattach.find_running_in(pool, self.hook.engine, labels, launch.deployment, record, self.stop_timeout,
                                               self.log)
        return found or await start_placed(pool, launch, labels, self.hook.engine, self.log, pin=self.daemon_pin,
                                           wanted=self.daemon_labels)

    async def _start_and_follow(self, context: Context, launch: Launch, labels: dict[str, str],
                                deadline: float | None) -> Any:
        """Start (or reattach), then follow the container here: to its end with ``deferrable=False``, else
        for ``defer_after`` seconds. The result if it ended, ``_STILL_RUNNING`` if the task should defer."""
        record = reattach.recall(context, self.log)
        pool = await self.hook.apool()
        pool.say_checks_off(self.log)
        started = await self._start(pool, launch, labels, record)
        if isinstance(started, Placement):
            return started
        self.daemon, self.container_id = started
        async with self.hook.engine(self.daemon) as engine:
            reattach.remember(context, self.container_id, "started", self.log, self.daemon.name)
            follower = LogFollower(container_log(), tty=self.tty)
            for value in self.private_environment.values():
                follower.keep_secret(str(value))
            watch = ContainerWatch(engine, self.container_id, follower, log=self.log, poll_interval=self.poll_interval,
                                   give_up_after=self.daemon_lost_timeout, stop_timeout=self.stop_timeout)
            if self.deferrable:
                began = time.monotonic()
                end = await watch.within(self.follow_for(context["ti"]), deadline)
                ti = context["ti"]
                history.remember(ti.dag_id, ti.task_id, history.DEFERRED if end is None else time.monotonic() - began)
                if end is None:  # still running: the trigger goes on from here
                    self._handed_over = follower.handover(seal=launch.deployment.seal)
                    return _STILL_RUNNING
            else:
                try:
                    end = await watch.until_end_or_deadline(deadline)
                except BaseException:
                    await asyncio.shield(engine.stop(self.container_id, self.stop_timeout))
                    raise
            return await self._collect(engine, end)

    def follow_for(self, ti: Any) -> float:
        """Seconds this worker follows the container before the task defers (``defer_after``, else from history).

        Deferring frees the slot but costs: the triggerer's pickup and event (~1-2 s), and for a task that resumes
        on a worker a second worker start and the stale-event guard (``min_deferred_seconds``). So a task whose
        last successful run was long defers at once, and one that was short is followed here, as the official
        operator follows it, deferring only if it runs twice as long as then. A short run this worker followed to
        its end is on record here (``history``); otherwise Airflow is asked (Airflow >= 3.3)."""
        if self.defer_after is not None:
            return self.defer_after
        ends_in_triggerer = compat.END_IN_TRIGGERER and self.ending_here() is not None
        previous = history.last(ti.dag_id, ti.task_id)  # a short run ended on this worker: no need to ask Airflow
        if previous is None or previous == history.DEFERRED:
            asked = _previous_duration(ti) if compat.PREVIOUS_TASK_INSTANCE else None
            if asked is None and previous == history.DEFERRED:
                self.log.info("Deferring at once: this task outlasted its worker's follow time when it last ran here.")
                return 0.0
            previous = asked
        if previous is None:  # no history
            # where other tasks end in the triggerer, one that would resume on a worker pays the stale-event guard for a
            # deferral: it is followed that long first. Before 3.3 every deferral resumes on a worker, and the short
            # window is what frees a long task's slot at all.
            guard = (self.min_deferred_seconds or 0.0) if compat.END_IN_TRIGGERER and not ends_in_triggerer else 0.0
            return DEFAULT_DEFER_AFTER + guard
        long = LONG_IF_ENDING_IN_TRIGGERER if ends_in_triggerer else LONG_IF_RESUMING_ON_WORKER + self.min_deferred_seconds
        if previous >= long:
            self.log.info("Deferring at once: this task's last successful run took %.0fs.", previous)
            return 0.0
        return max(DEFAULT_DEFER_AFTER, 2 * previous)

    def ending_here(self) -> dict | None:  # how the trigger may end this task without a worker (ending.Ending)
        return ending.for_task(self, RemoteDockerOperator)

    def _mask_private_environment(self) -> None:
        from airflow.sdk.log import mask_secret

        for key, value in self.private_environment.items():
            mask_secret(str(value), key)

    def _deadline(self, ti: Any) -> float | None:
        """``execution_timeout`` as an absolute time: Airflow does not enforce it while deferred."""
        started = getattr(ti, "start_date", None) or dt.datetime.now(dt.timezone.utc)
        return (started + self.execution_timeout).timestamp() if self.execution_timeout else None

    # ------------------------------------------------------------------ completion

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Back on a worker after the trigger fired: judge the container, collect the result, clean up."""
        self._mask_private_environment()
        end = WatchEnd.from_payload(event)
        if end.status == "start_on_worker":  # the triggerer started nothing: decide here, as a worker does
            self.log.info("Starting on a worker: %s.", end.message)
            return self.execute(context)
        self.container_id = end.container_id
        ti = context["ti"]
        checkpoints.end(ti, self.log)
        if (ran := end.ran_seconds()) is not None:  # its length, which the worker that deferred could not know
            history.remember(ti.dag_id, ti.task_id, ran)
        if end.status == "error":
            reattach.remember(context, self.container_id, "lost", self.log, end.daemon)  # it may live on: a retry reattaches
        return self._run(self._complete(end))

    async def _complete(self, end: WatchEnd) -> Any:
        pool = await self.hook.apool()
        self.daemon = pool.member(end.daemon) if end.daemon and not pool.single else pool.members[0]
        async with self.hook.engine(self.daemon) as engine:
            return await self._collect(engine, end)

    async def _collect(self, engine: Engine, end: WatchEnd) -> Any:
        return await self.outcome().collect(engine, end, self.log, explain=self.explain_failure)

    def explain_failure(self, err: AirflowException, end: WatchEnd) -> AirflowException:
        """The exception that fails the task; subclasses may know better than the exit code."""
        return err

    def on_kill(self) -> None:
        """The task was killed while its worker held it (deferrable=False, or before deferring)."""
        if not (container_id := self.container_id):
            return

        async def stop() -> None:
            async with self.hook.engine(self.daemon) as engine:
                if await engine.stop(container_id, self.stop_timeout) and self.auto_remove == "force":
                    await engine.remove(container_id)

        def stop_in_own_loop() -> None:
            try:
                asyncio.run(stop())
            except Exception as err:
                self.log.warning("Could not stop container %s: %s", container_id[:12], err)

        thread = threading.Thread(target=stop_in_own_loop, daemon=True)  # called from a signal handler, maybe
        thread.start()  # while this thread runs our event loop
        thread.join(self.stop_timeout + 2 * (self.daemon.config.timeout if self.daemon else 60))


_STILL_RUNNING = object()


def _previous_duration(ti: Any) -> float | None:
    """How long this task's previous successful run took (seconds), or None when there is none to ask."""
    try:
        previous = ti.get_previous_ti(state="success", map_index=ti.map_index)
    except Exception:  # a history aid only: a failed lookup leaves the default
        return None
    duration = getattr(previous, "duration", None)
    return float(duration) if duration is not None else None

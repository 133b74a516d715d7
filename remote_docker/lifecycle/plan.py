"""A task's plan: what to run, where, and how to follow and finish it, from the operator's arguments, once.

``plan_of`` is the one place that reads a ``RemoteDockerOperator``'s attributes (``RemoteDockerOperator.plan``
calls it); the start, follow and finish paths and the triggers get the plan or what it gives them. It also
decides, from what the task asks for, where its life may run outside a worker:

* ``worker_start_reason``: why the task can't start in the triggerer (``start_from_trigger``, Airflow >= 3.3),
  None when it can. Airflow reads ``start_from_trigger`` / ``start_trigger_args`` when it serializes the DAG,
  so cluster policies and attributes set after ``__init__`` count (``PerTask``);
* ``ending``: how a trigger may end the task without a worker (``payloads.Ending``), None when its worker has
  something left to do;
* ``follow_for``: how long a worker follows the container before the task defers.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from remote_docker import compat
from remote_docker.daemon.connection import is_inline_pem
from remote_docker.lifecycle import history
from remote_docker.lifecycle.finish import Finish
from remote_docker.lifecycle.payloads import Ending, LogHandover, StartRequest
from remote_docker.lifecycle.spec import TEMPLATED_FIELDS, ContainerSpec

# A container of a task with no history that ends within this many seconds of starting finishes on the worker with
# no deferral; within this plus min_deferred_seconds when its task would resume on a worker (3.3+, follow_for).
DEFAULT_DEFER_AFTER = 2.0
# A task whose last successful run took at least this long defers at once (follow_for): what a deferral
# costs it is then at most ~1/5 of its run (BENCHMARKS.md, the length sweep). Ending in the triggerer costs
# its pickup and event; resuming on a worker also a worker start and the stale-event guard.
LONG_IF_ENDING_IN_TRIGGERER = 10.0
LONG_IF_RESUMING_ON_WORKER = 50.0
# The operator's methods a subclass may replace; one replaced means its worker has something to do
OWN_METHODS = ("execute", "pre_execute", "execute_complete", "post_execute", "explain_failure")
_DEFAULT_POOL = "default_pool"


@dataclass(frozen=True)
class TaskPlan:
    """Everything a task's start, follow and finish need, as plain data."""

    # where: the daemon connection (its overrides as given), the pin and the wanted labels
    conn_id: str | None
    hook_params: dict[str, Any]
    daemon: str | None
    daemon_labels: dict[str, str]
    # what: the container, its image and inputs
    spec: ContainerSpec
    pull: str
    registry: tuple[str | None, str | None, str | None]  # docker_conn_id, credential_helper, aws_conn_id
    files: dict[str, Any]
    folders: dict[str, int]  # container folders to create first (path -> mode)
    missing_executable: str
    # follow
    deferrable: bool
    poll_interval: float
    stop_timeout: int
    daemon_lost_timeout: float
    private_environment: dict[str, Any]
    execution_timeout: dt.timedelta | None
    defer_after: float | None  # None: decided when the task runs (follow_for)
    min_deferred_seconds: float
    # finish
    finish: Finish
    ending: Ending | None
    worker_start_reason: str | None
    start_request: StartRequest | None = field(default=None, compare=False)

    @property
    def tty(self) -> bool:
        return self.spec.tty

    def deadline(self, ti: Any) -> float | None:
        """``execution_timeout`` as an absolute time: Airflow does not enforce it while deferred."""
        started = getattr(ti, "start_date", None) or dt.datetime.now(dt.timezone.utc)
        return (started + self.execution_timeout).timestamp() if self.execution_timeout else None

    def not_before(self) -> float | None:
        """When a trigger may resume the task on a worker at the earliest (the stale executor event, ``compat``)."""
        return time.time() + self.min_deferred_seconds if self.min_deferred_seconds else None

    def follow_for(self, ti: Any, log: Any) -> float:
        """Seconds a worker follows the container before the task defers (``defer_after``, else from history).

        Deferring frees the slot but costs: the triggerer's pickup and event (~1-2 s), and for a task that resumes
        on a worker a second worker start and the stale-event guard (``min_deferred_seconds``). So a task whose
        last successful run was long defers at once, and one that was short is followed here, as the official
        operator follows it, deferring only if it runs twice as long as then. A short run this worker followed to
        its end is on record here (``history``); otherwise Airflow is asked (Airflow >= 3.3)."""
        if self.defer_after is not None:
            return self.defer_after
        ends_in_triggerer = compat.END_IN_TRIGGERER and self.ending is not None
        previous = history.last(ti.dag_id, ti.task_id)  # a short run ended on this worker: no need to ask Airflow
        if previous is None or previous == history.DEFERRED:
            # a task that skips on an exit code ends as skipped, not as a success: its skipped runs tell its length too
            states = ("success", "skipped") if self.ending and self.ending.skip_on_exit_code else ("success",)
            asked = previous_duration(ti, states) if compat.PREVIOUS_TASK_INSTANCE else None
            if asked is None and previous == history.DEFERRED:
                log.info("Deferring at once: this task outlasted its worker's follow time when it last ran here.")
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
            log.info("Deferring at once: this task's last successful run took %.0fs.", previous)
            return 0.0
        return max(DEFAULT_DEFER_AFTER, 2 * previous)


def previous_duration(ti: Any, states: tuple[str, ...] = ("success",)) -> float | None:
    """How long this task's previous run that ended in one of ``states`` (asked in that order) took, in seconds;
    None when there is none to ask."""
    for state in states:
        try:
            previous = ti.get_previous_ti(state=state, map_index=ti.map_index)
        except Exception:  # a history aid only: a failed lookup leaves the default
            return None
        if (duration := getattr(previous, "duration", None)) is not None:
            return float(duration)
    return None


# ---------------------------------------------------------------------- reading the operator


def plan_of(op: Any, own_methods: frozenset[str] = frozenset()) -> TaskPlan:
    """The plan of a ``RemoteDockerOperator`` task as it stands; ``own_methods``: those of ``OWN_METHODS`` its
    class replaces."""
    spec = ContainerSpec(**{f.name: getattr(op, f.name) for f in fields(ContainerSpec)})
    plan = TaskPlan(
        conn_id=op.remote_docker_conn_id, hook_params=dict(op.hook_params), daemon=op.daemon, daemon_labels=dict(op.daemon_labels),
        spec=spec, pull=op.pull, registry=(op.docker_conn_id, op.credential_helper, op.aws_conn_id),
        files=dict(op.files), folders=dict(op.folders), missing_executable=op.missing_executable,
        deferrable=op.deferrable, poll_interval=op.poll_interval, stop_timeout=op.stop_timeout,
        daemon_lost_timeout=op.daemon_lost_timeout, private_environment=dict(op.private_environment),
        execution_timeout=op.execution_timeout, defer_after=op.defer_after, min_deferred_seconds=op.min_deferred_seconds,
        finish=Finish(image=op.image, skip_on_exit_code=op.skip_on_exit_code, execution_timeout=op.execution_timeout,
                      do_xcom_push=op.do_xcom_push, xcom_all=op.xcom_all, tty=op.tty, retrieve_output=op.retrieve_output,
                      retrieve_output_path=op.retrieve_output_path, output_format=op.output_format,
                      max_output_bytes=op.max_output_bytes, auto_remove=op.auto_remove, stop_timeout=op.stop_timeout),
        ending=_ending(op, own_methods), worker_start_reason=None,
    )
    reason = _worker_start_reason(op, plan, own_methods)
    request = None
    if reason is None:
        request = StartRequest(spec={name: value for name, value in vars(spec).items() if name not in TEMPLATED_FIELDS},
                               pull=op.pull, missing_executable=op.missing_executable, daemon=op.daemon,
                               daemon_labels=dict(op.daemon_labels),
                               execution_timeout=op.execution_timeout.total_seconds() if op.execution_timeout else None)
    return replace(plan, worker_start_reason=reason, start_request=request)


def _ending(op: Any, own_methods: frozenset[str]) -> Ending | None:
    """How a trigger may end the task, or None when its worker has something left to do: decode a file, push
    several XComs, emit asset events, skip on exit 0, feed mapped tasks (the worker records the length to map
    over), or run a subclass's own completion. A skip code ends it there too, unless an ``on_skipped_callback``
    is to run (a worker runs it; Airflow sends no callback for a skip a trigger makes); so does a failure, where
    Airflow routes its retries (``compat.FAIL_IN_TRIGGERER``) and no failure or retry callback or email expects
    the exception a worker raises, nor a subclass explains it."""
    if op.retrieve_output or op.multiple_outputs or op.outlets or 0 in op.skip_on_exit_code \
            or getattr(op, "returns_dag_result", False) or own_methods & {"execute_complete", "post_execute"}:
        return None
    try:
        if next(op.iter_mapped_dependants(), None) is not None:
            return None
    except Exception:  # not in a DAG (yet)
        pass
    xcom = ("all" if op.xcom_all else "last") if op.do_xcom_push else None
    try:
        skips = sorted(int(code) for code in op.skip_on_exit_code)
    except (TypeError, ValueError):  # a Container that can't be listed: a worker tests each code against it
        return None
    fail_here = compat.FAIL_IN_TRIGGERER and not (op.on_failure_callback or op.on_retry_callback or op.email
                                                   or "explain_failure" in own_methods)
    return Ending(xcom=xcom, remove=op.auto_remove in ("success", "force"), tty=op.tty, skip_on_exit_code=skips,
                  skip_here=not op.on_skipped_callback, remove_always=op.auto_remove == "force", fail_here=bool(fail_here), image=str(op.image))


def _worker_start_reason(op: Any, plan: TaskPlan, own_methods: frozenset[str]) -> str | None:
    """Why this task can't start in the triggerer (or would quietly change meaning there), or None if it can."""
    if not op.start_from_trigger_wish:
        return "start_from_trigger is not set"
    if not compat.START_IN_TRIGGERER:
        return "Airflow < 3.3 can't start tasks in the triggerer"
    if not plan.deferrable:
        return "deferrable=False"
    if plan.private_environment:
        return "private_environment values would be stored in the serialized DAG"
    if any(plan.registry):
        return "registry credentials are fetched on a worker only"
    if getattr(op, "python_callable", None) is not None:
        return "a @task.remote_docker function and its arguments are copied in from a worker"
    if plan.files or plan.folders:
        return "files= are copied in from a worker"
    if op.pool != _DEFAULT_POOL or op.max_active_tis_per_dag or op.max_active_tis_per_dagrun:
        return "its pool and concurrency limits are enforced only when a worker starts it"
    if op.on_execute_callback:
        return "on_execute_callback runs on a worker"
    if own_methods & {"execute", "pre_execute"}:
        return f"{type(op).__name__} has its own execute"
    if is_inline_pem(op.tls_client_key):
        return "tls_client_key is PEM text"
    try:
        json.dumps([vars(plan.spec), plan.hook_params, plan.daemon_labels])
    except (TypeError, ValueError):
        return "an argument is not plain data (an XComArg or an object); it is resolved on a worker"
    if not compat.TRIGGERER_TEMPLATES_PULL_XCOMS and "xcom" in json.dumps(
            [getattr(plan.spec, name) for name in TEMPLATED_FIELDS], default=str).lower():
        return "its templates pull XComs, which this Airflow's triggerer can't serve (see compat.py)"
    return None


# ---------------------------------------------------------------------- what Airflow reads when it serializes the DAG


class PerTask:
    """An attribute Airflow reads both on the operator class (as a default) and on each task.

    On the class it is ``default`` (mapped tasks, which 3.3 can't start in the triggerer, read it
    there); on a task it is ``compute(task)`` at the moment it is read.
    """

    def __init__(self, default: Any, compute: Callable[[Any], Any]) -> None:
        self.default = default
        self.compute = compute

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self.default
        try:
            return self.compute(obj)
        except AttributeError:  # read by BaseOperator's own __init__, before ours has set everything
            return self.default


def trigger_kwargs(plan: TaskPlan, *, container_id: str | None = None, daemon: str | None = None,
                   deadline: float | None = None, handover: LogHandover | None = None,
                   not_before: float | None = None) -> dict[str, Any]:
    """``ContainerTrigger``'s kwargs: to watch ``container_id`` (a worker deferring), or, without it, to start the
    container in the triggerer (``start_request``, with the templated fields as kwargs of their own: the
    triggerer renders them). Stored in Airflow's database: never a secret (``private_environment`` travels
    by name only)."""
    kwargs: dict[str, Any] = {
        "container_id": container_id, "remote_docker_conn_id": plan.conn_id, "daemon": daemon,
        "hook_params": plan.hook_params, "deadline": deadline, "tty": plan.tty, "stop_timeout": plan.stop_timeout,
        "poll_interval": plan.poll_interval, "daemon_lost_timeout": plan.daemon_lost_timeout, "not_before": not_before,
        "secret_env": sorted(plan.private_environment), "ending": plan.ending.to_payload() if plan.ending else None,
        "log_cursor": handover.to_payload() if handover else None,
    }
    if container_id is None and plan.start_request is not None:
        kwargs["start"] = plan.start_request.to_payload()
        kwargs.update({name: getattr(plan.spec, name) for name in TEMPLATED_FIELDS})
    return kwargs


def start_trigger_args_of(plan: TaskPlan) -> Any:
    """Airflow's ``StartTriggerArgs`` for a task that starts in the triggerer (None: it starts on a worker)."""
    if plan.worker_start_reason is not None:
        return None
    from airflow.triggers.base import StartTriggerArgs

    return StartTriggerArgs(trigger_cls="remote_docker.triggers.ContainerTrigger",
                            trigger_kwargs=json.loads(json.dumps(trigger_kwargs(plan))), next_method="execute_complete")

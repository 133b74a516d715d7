"""Starting a task in the triggerer (Airflow >= 3.3): no worker at all for a task that needs none.

Each worker start costs about a second of slot time; with ``start_from_trigger=True`` the scheduler
defers the task as it schedules it, and the triggerer creates and starts the container
(``launch.start_once``), watches it and, when it succeeds, ends the task there (``ending``). It is
opt-in: the triggerer's own loops add ~2 s of pickup and event latency, which a single short task
feels more than the worker start it saves (BENCHMARKS.md, P5 and P1 in both modes).

A task starts on a worker instead when something it asks for needs one, or when starting in
the triggerer would quietly change what it means; ``why_not`` names the reason, which the
worker logs when it starts such a task. Everything is read when Airflow serializes the DAG,
so cluster policies and attributes set after ``__init__`` count.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from remote_docker import compat
from remote_docker.connection import is_inline_pem
from remote_docker.spec import TEMPLATED_FIELDS

if TYPE_CHECKING:
    from remote_docker.operators import RemoteDockerOperator

TRIGGER_CLASS = "remote_docker.triggers.ContainerTrigger"
_DEFAULT_POOL = "default_pool"


def why_not(op: RemoteDockerOperator) -> str | None:
    """Why this task can't start in the triggerer, or None if it can."""
    from remote_docker.operators import RemoteDockerOperator

    if not op.start_from_trigger_wish:
        return "start_from_trigger is not set"
    if not compat.START_IN_TRIGGERER:
        return "Airflow < 3.3 can't start tasks in the triggerer"
    if not op.deferrable:
        return "deferrable=False"
    if op.private_environment:
        return "private_environment values would be stored in the serialized DAG"
    if op.docker_conn_id or op.credential_helper or op.aws_conn_id:
        return "registry credentials are fetched on a worker only"
    if getattr(op, "python_callable", None) is not None:
        return "a @task.remote_docker function and its arguments are copied in from a worker"
    if op.files or op.folders:
        return "files= are copied in from a worker"
    if op.pool != _DEFAULT_POOL or op.max_active_tis_per_dag or op.max_active_tis_per_dagrun:
        return "its pool and concurrency limits are enforced only when a worker starts it"
    if op.on_execute_callback:
        return "on_execute_callback runs on a worker"
    if any(getattr(type(op), name) is not getattr(RemoteDockerOperator, name) for name in ("execute", "pre_execute")):
        return f"{type(op).__name__} has its own execute"
    if is_inline_pem(op.tls_client_key):
        return "tls_client_key is PEM text"
    try:
        kwargs = trigger_kwargs(op)
    except (TypeError, ValueError):
        return "an argument is not plain data (an XComArg or an object); it is resolved on a worker"
    if not compat.TRIGGERER_TEMPLATES_PULL_XCOMS and "xcom" in json.dumps([kwargs[name] for name in TEMPLATED_FIELDS]).lower():
        return "its templates pull XComs, which this Airflow's triggerer can't serve (see compat.py)"
    return None


def trigger_kwargs(op: RemoteDockerOperator) -> dict[str, Any]:
    """The trigger's kwargs for a start in the triggerer (stored in the serialized DAG: no secrets)."""
    spec = op.container_spec()
    templated = {name: getattr(spec, name) for name in TEMPLATED_FIELDS}
    rest = {name: value for name, value in vars(spec).items() if name not in TEMPLATED_FIELDS}
    kwargs = {
        "container_id": None,
        "remote_docker_conn_id": op.remote_docker_conn_id,
        "hook_params": op.hook_params,
        "tty": op.tty,
        "stop_timeout": op.stop_timeout,
        "poll_interval": op.poll_interval,
        "daemon_lost_timeout": op.daemon_lost_timeout,
        "ending": op.ending_here(),
        "start": {"spec": rest, "pull": op.pull, "missing_executable": op.missing_executable,
                  "pin": op.daemon_pin, "daemon_labels": op.daemon_labels,
                  "execution_timeout": op.execution_timeout.total_seconds() if op.execution_timeout else None},
        **templated,
    }
    return json.loads(json.dumps(kwargs))  # plain data only (Mount and friends are dicts); raises otherwise


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


def _start_from_trigger(op: RemoteDockerOperator) -> bool:
    return why_not(op) is None


def _start_trigger_args(op: RemoteDockerOperator) -> Any:
    if why_not(op) is not None:
        return None
    from airflow.triggers.base import StartTriggerArgs

    return StartTriggerArgs(trigger_cls=TRIGGER_CLASS, trigger_kwargs=trigger_kwargs(op), next_method="execute_complete")


start_from_trigger = PerTask(False, _start_from_trigger)
start_trigger_args = PerTask(None, _start_trigger_args)

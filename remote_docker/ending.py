"""Ending a task from the triggerer, when nothing left needs a worker.

A container that exited 0, whose result is its last stdout line or all of them (no file to
decode: unpickling happens only on a worker), can end its task where the trigger runs: the
XCom is written through the SDK exactly as a worker writes it (the configured XCom backend
included), the container is removed if ``auto_remove`` says so (gone counts as done, so a
second run is harmless), and the trigger yields Airflow's ``TaskSuccessEvent``. The task then
goes from DEFERRED to SUCCESS without a second worker start, and without ever being
SCHEDULED again, so the stale executor event (see ``compat``) can't touch it.

Anything else (a failure, a skip code, a result too big for this) resumes on a worker, so
retries, callbacks and ``skip_on_exit_code`` behave as Airflow users expect.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from remote_docker import compat
from remote_docker.engine import Engine, EngineError
from remote_docker.events import WatchEnd
from remote_docker.logstream import stdout_lines
from remote_docker.outcome import xcom_of

# An XCom the triggerer writes is held in its memory first: past this, a worker writes it instead.
MAX_XCOM_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Ending:
    """How a trigger may end its task (travels in the trigger's kwargs)."""

    xcom: Literal["last", "all"] | None = "last"  # None: push nothing (do_xcom_push=False)
    remove: bool = False  # auto_remove says the container goes when the task succeeds
    tty: bool = False

    def to_kwargs(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_kwargs(cls, value: dict[str, Any] | None) -> Ending | None:
        return cls(**value) if value else None


def for_task(task: Any, base: type) -> dict[str, Any] | None:
    """The ``Ending`` (as trigger kwargs) for a ``RemoteDockerOperator`` task, or None when its worker has
    something left to do: decode a file, push several XComs, emit asset events, skip on exit 0, feed
    mapped tasks (the worker records the length to map over), or run a subclass's own completion."""
    if task.retrieve_output or task.multiple_outputs or task.outlets or 0 in task.skip_on_exit_code \
            or getattr(task, "returns_dag_result", False):
        return None
    if any(getattr(type(task), name) is not getattr(base, name) for name in ("execute_complete", "post_execute")):
        return None
    try:
        if next(task.iter_mapped_dependants(), None) is not None:
            return None
    except Exception:  # not in a DAG (yet)
        pass
    xcom = ("all" if task.xcom_all else "last") if task.do_xcom_push else None
    return Ending(xcom=xcom, remove=task.auto_remove in ("success", "force"), tty=task.tty).to_kwargs()


def possible_here() -> bool:
    """Whether this Airflow lets a trigger end its task with the same effects a worker would have."""
    if not compat.END_IN_TRIGGERER:
        return False
    from airflow.sdk.listener import get_listener_manager

    # listener plugins hear of a success only from a worker (Airflow refuses end_from_trigger with them)
    return not get_listener_manager().has_listeners


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


async def end_task(engine: Engine, end: WatchEnd, ending: Ending, ti: Any, log: Any) -> Any | None:
    """The ``TaskSuccessEvent`` that ends the task here, or None to resume on a worker instead."""
    from airflow.sdk.execution_time.xcom import XCom
    from airflow.triggers.base import TaskSuccessEvent

    try:
        value = await _xcom_value(engine, end, ending) if ending.xcom else None
        if value is _TOO_BIG:
            return None
        if value is not None:  # a worker pushes nothing for None (no stdout line) either
            await XCom.aset(key=XCom.XCOM_RETURN_KEY, value=value, dag_id=ti.dag_id, task_id=ti.task_id,
                            run_id=ti.run_id, map_index=ti.map_index)
        if ending.remove:
            await engine.remove(end.container_id)
    except (EngineError, OSError, ValueError, TypeError) as err:
        log.warning("Could not end the task from the triggerer (%s); a worker will collect the result.", err)
        return None
    log.info("Container %s exited 0: the task ends here, without a worker.", end.container_id[:12])
    return TaskSuccessEvent()


_TOO_BIG = object()


async def _xcom_value(engine: Engine, end: WatchEnd, ending: Ending) -> Any:
    if ending.xcom == "last" and end.log.last_line_in_event:
        return xcom_of(None if end.log.last_stdout_line is None else [end.log.last_stdout_line], everything=False)
    # The whole stdout, or a last line the event could not carry (too long, private, logged before a restart)
    async with engine.logs(end.container_id, follow=False, stderr=False) as chunks:
        lines = await stdout_lines(chunks, ending.tty, max_bytes=MAX_XCOM_BYTES)
    if lines is None:
        return _TOO_BIG
    return xcom_of(lines, everything=ending.xcom == "all")

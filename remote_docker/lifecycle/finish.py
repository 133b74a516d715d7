"""The one finish path: a watched container's end becomes the task's outcome and result.

``Finish.on_worker`` (a worker, the usual end): judge the end by a fresh inspect (the event may be old, the
container may have been removed since), read the result (the last stdout line, all of them, or the
decoded ``retrieve_output_path`` file) and remove the container as ``auto_remove`` says, with its
anonymous volumes. ``end_in_triggerer`` (Airflow >= 3.3): a container that exited 0 whose result is a
stdout line or all of them ends its task where the trigger runs, with the same XCom and removal; so does a
skip code, and (3.3.1+) a failure, retries applying, when no callback waits for a worker's exception.

Decoding happens here on a worker and only here: unpickling runs arbitrary code, so a task whose result
is a file never ends in the triggerer (``TaskPlan.ending``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any

from remote_docker import compat
from remote_docker.compat import AirflowException, AirflowFailException, AirflowSkipException, AirflowTaskTimeout
from remote_docker.engine import Engine, EngineError
from remote_docker.lifecycle.outages import signal_of_exit
from remote_docker.lifecycle.output import OutputError, decode, read_single_file
from remote_docker.lifecycle.payloads import Ending, WatchEnd
from remote_docker.logs.stream import stdout_lines

_GO_MODE_DIR = 1 << 31  # os.ModeDir in the archive stat header
# An XCom the triggerer writes is held in its memory first: past this, a worker writes it instead.
MAX_TRIGGERER_XCOM_BYTES = 1024 * 1024

try:  # the official provider's, when it is installed: a user's `except DockerContainerFailedException` catches ours
    from airflow.providers.docker.exceptions import DockerContainerFailedException as _Failed
    from airflow.providers.docker.exceptions import DockerContainerFailedSkipException as _Skipped
except ImportError:
    _Failed, _Skipped = AirflowException, AirflowSkipException


class ContainerFailedException(_Failed):
    """The container exited with a failing code; ``logs``: its last output lines (as the official operator's)."""

    def __init__(self, message: str, logs: list[str] | None = None) -> None:
        AirflowException.__init__(self, message)
        self.logs = list(logs or [])


class ContainerFailedSkipException(_Skipped):
    """The container exited with a code in ``skip_on_exit_code``; ``logs``: its last output lines."""

    def __init__(self, message: str, logs: list[str] | None = None) -> None:
        AirflowSkipException.__init__(self, message)
        self.logs = list(logs or [])


@dataclass(frozen=True)
class Finish:
    """The operator's parameters that decide a finished container's outcome and result."""

    image: str
    skip_on_exit_code: Container[int] = ()
    execution_timeout: Any = None
    do_xcom_push: bool = True
    xcom_all: bool = False
    tty: bool = False
    retrieve_output: bool = False
    retrieve_output_path: str | None = None
    output_format: str = "pickle"
    max_output_bytes: int = 64 * 1024 * 1024
    auto_remove: str = "never"
    stop_timeout: int = 10  # SIGTERM to SIGKILL when the deadline passed and it still runs

    async def on_worker(self, engine: Engine, end: WatchEnd, log: Any,
                        explain: Callable[[AirflowException, WatchEnd], AirflowException] = lambda err, end: err) -> Any:
        """Judge the end and return the result; remove the container per ``auto_remove`` either way. ``explain``
        may turn the failure into the task's own exception."""
        succeeded = False
        try:
            info = await self._inspect(engine, end, log) if end.status not in ("error", "gone") else None
            try:
                await self.judge(engine, end, info)
            except AirflowException as err:
                raise explain(err, end) from None
            result = await self.result(engine, end, log)
            succeeded = True
            return result
        finally:
            if end.container_id and end.status != "error" and (
                    self.auto_remove == "force" or (self.auto_remove == "success" and succeeded)):
                await remove_container(engine, end.container_id, log)

    async def _inspect(self, engine: Engine, end: WatchEnd, log: Any) -> dict[str, Any] | None:
        """A fresh inspect; when the daemon can't be reached now, the exit the trigger saw (a failure
        stays that failure, with its own reason, instead of becoming "connection refused")."""
        try:
            return await engine.inspect(end.container_id)
        except EngineError as err:
            if not (err.unreachable and end.status == "exited" and end.exit_code not in (None, 0)):
                raise
            log.warning("Can't reach the daemon to confirm how container %s ended (%s); going by what the "
                        "trigger saw.", end.container_id[:12], err)
            return {"Id": end.container_id, "State": {"Running": False, "ExitCode": end.exit_code,
                                                      "OOMKilled": end.oom_killed}}

    async def judge(self, engine: Engine, end: WatchEnd, info: dict[str, Any] | None) -> None:
        """Raise the exception that ends the task, or return if the container succeeded. A container still
        running past the deadline is stopped; a failure during a daemon outage asks the daemon why."""
        state = (info or {}).get("State") or {}
        if end.status == "timeout" and state.get("Running"):
            await engine.stop(info["Id"], self.stop_timeout)
        restart_line = None
        if end.ended_while_unreachable and end.status == "exited" and self.failing(state.get("ExitCode")):
            restart_line = await self._daemon_restart_line(engine, (end.container_id or "?")[:12], state.get("ExitCode"),
                                                           end.ended_while_unreachable)
        if (verdict := self.verdict(end, info, restart_line=restart_line)) is not None:
            raise verdict

    def failing(self, exit_code: int | None) -> bool:
        return exit_code != 0 and exit_code not in self.skip_on_exit_code

    def verdict(self, end: WatchEnd, info: dict[str, Any] | None, *, restart_line: str | None = None) -> AirflowException | None:
        """The exception that ends the task (None: it succeeded), from the end and a fresh inspect ``info``;
        ``restart_line``: what the daemon says of an outage the container failed in."""
        container = (end.container_id or "?")[:12]
        if end.status == "error":
            return (AirflowException if end.retryable else AirflowFailException)(end.message)
        if end.status == "gone":
            return AirflowException(end.message)
        if info is None:
            return AirflowException(f"container {container} was removed by someone else before its result was read")
        state = info["State"]
        if end.status == "timeout":
            return AirflowTaskTimeout(f"execution_timeout ({self.execution_timeout}) reached; container {container} "
                                      f"was stopped{tail_text(end)}")
        exit_code = state.get("ExitCode")
        if exit_code in self.skip_on_exit_code:
            return ContainerFailedSkipException(f"container {container} exited with code {exit_code}, listed in "
                                                "skip_on_exit_code", logs=last_lines(end))
        if exit_code != 0 and restart_line:
            return AirflowException(restart_line)
        if exit_code != 0:
            cause = ""
            if state.get("OOMKilled"):
                cause = ", OOMKilled: it ran out of memory (raise mem_limit)"
            elif end.kill_signal:
                cause = f", after a kill ({end.kill_signal}) from outside the task: docker stop/kill on the daemon"
            elif killed_by := signal_of_exit(exit_code):  # the engine did not record who sent it (Podman)
                cause = f", killed by {killed_by.name}"
            return ContainerFailedException(f"container {container} ({self.image}) exited with code {exit_code}{cause}"
                                            f"{tail_text(end)}", logs=last_lines(end))
        return None

    async def _daemon_restart_line(self, engine: Engine, container: str, exit_code: int, outage: list[float]) -> str:
        began, ended = (dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%H:%M:%S") if t else "?" for t in outage)
        try:
            live_restore = (await engine.info()).get("LiveRestoreEnabled")
        except EngineError:
            live_restore = None
        if live_restore is True:
            why = "the daemon was restarted or stopped, and its containers with it; a retry starts a fresh container"
        else:
            why = ("live-restore is off there, so a daemon restart stops every container" if live_restore is False
                   else "the daemon was restarted")
            why += ("; a retry starts a fresh container (enable live-restore in the daemon's config to keep "
                    "containers running across restarts)")
        return (f"container {container} ({self.image}) stopped with code {exit_code} while the daemon at "
                f"{engine.url} was unreachable ({began}-{ended} UTC): {why}")

    async def result(self, engine: Engine, end: WatchEnd, log: Any) -> Any:
        """The XCom value: the decoded output file, all stdout lines, or the last one."""
        if self.retrieve_output:
            if not self.retrieve_output_path:  # as the official operator: nothing to read, no result
                log.warning("retrieve_output=True without retrieve_output_path: no file is read and there is no result")
                return None
            return await self._read_output_file(engine, end.container_id, log)
        if not self.do_xcom_push:
            return None
        return await stdout_result(engine, end, everything=self.xcom_all, tty=self.tty)

    async def _read_output_file(self, engine: Engine, container_id: str, log: Any) -> Any:
        path = self.retrieve_output_path
        try:
            async with engine.archive(container_id, path) as found:
                if found is None:
                    log.warning("retrieve_output_path %s does not exist in the container; the result is None", path)
                    return None
                stat, chunks = found
                if stat.get("mode", 0) & _GO_MODE_DIR:
                    raise OutputError(f"retrieve_output_path {path} is a folder; point it at a file")
                if stat.get("size", 0) == 0:
                    log.warning("retrieve_output_path %s is empty; the result is None", path)
                    return None
                data = await read_single_file(chunks, path, self.max_output_bytes)
            return decode(data, self.output_format, path)
        except OutputError as err:  # what the container wrote: the task's retries apply, as for any failure of it
            raise AirflowException(str(err)) from None


_TOO_BIG = object()


async def stdout_result(engine: Engine, end: WatchEnd, *, everything: bool, tty: bool, max_bytes: int | None = None) -> Any:
    """The stdout XCom as the official operator makes it: the last line, from the event when it carries it, else
    read back (all lines for ``everything``). ``_TOO_BIG`` when the output passes ``max_bytes``."""
    if not everything and end.log.last_line_in_event:
        return xcom_of(None if end.log.last_stdout_line is None else [end.log.last_stdout_line], everything=False)
    # the whole stdout, or a last line the event could not carry (too long, private, logged before a restart)
    async with engine.logs(end.container_id, follow=False, stderr=False) as chunks:
        lines = await stdout_lines(chunks, tty, max_bytes=max_bytes)
    return _TOO_BIG if lines is None else xcom_of(lines, everything=everything)


async def remove_container(engine: Engine, container_id: str, log: Any) -> None:
    """``auto_remove``'s removal (gone counts as done); a failure is logged, never the task's."""
    try:
        await engine.remove(container_id)
    except EngineError as err:
        log.warning("Could not remove container %s: %s", container_id[:12], err)


def xcom_of(lines: list[str] | None, *, everything: bool) -> Any:
    """The XCom of stdout ``lines``, as the official operator makes it: each line without its trailing
    whitespace; all of them, or the last; None (no XCom) when there was no line."""
    if not lines:
        return None
    return [line.rstrip() for line in lines] if everything else lines[-1].rstrip()


def last_lines(end: WatchEnd) -> list[str]:
    return [line for _, line in end.log.tail]


def tail_text(end: WatchEnd) -> str:
    if not end.log.tail:
        return ""
    return "; last lines of output:\n" + "\n".join(f"  [{stream}] {line}" for stream, line in end.log.tail)


# ---------------------------------------------------------------------- ending in the triggerer (Airflow >= 3.3)


def possible_in_triggerer() -> bool:
    """Whether this Airflow lets a trigger end its task with the same effects a worker would have."""
    if not compat.END_IN_TRIGGERER:
        return False
    from airflow.sdk.listener import get_listener_manager

    # listener plugins hear of a success only from a worker (Airflow refuses end_from_trigger with them)
    return not get_listener_manager().has_listeners


async def end_in_triggerer(engine: Engine, end: WatchEnd, ending: Ending, ti: Any, log: Any) -> Any | None:
    """Airflow's event that ends the task here (``TaskSuccessEvent`` on exit 0, ``TaskSkippedEvent`` on a code of
    ``ending.skip_on_exit_code``, ``TaskFailedEvent`` on another exit with ``ending.fail_here``), or None to resume
    on a worker instead (any other end, a result too big for the triggerer's memory, or a call that failed). The task then goes from DEFERRED to its end without being
    SCHEDULED again: the stale executor event can't touch it."""
    if end.status != "exited":
        return None
    if end.succeeded:
        return await _succeed_in_triggerer(engine, end, ending, ti, log)
    if end.exit_code in ending.skip_on_exit_code:
        return await _skip_or_fail_in_triggerer(engine, end, ending, log, skip=True) if ending.skip_here else None
    # a failure during a daemon outage is explained by asking the daemon (Finish.judge): a worker does that
    if ending.fail_here and end.exit_code is not None and not end.ended_while_unreachable:
        return await _skip_or_fail_in_triggerer(engine, end, ending, log, skip=False)
    return None


async def _skip_or_fail_in_triggerer(engine: Engine, end: WatchEnd, ending: Ending, log: Any, *, skip: bool) -> Any | None:
    """The skip or failure a worker would raise, its line logged (a failure's with the last lines), the container
    removed if ``auto_remove='force'``, and Airflow's ``TaskSkippedEvent`` / ``TaskFailedEvent`` (retries apply)."""
    from airflow.triggers.base import TaskFailedEvent, TaskSkippedEvent

    try:
        if ending.remove_always:
            await engine.remove(end.container_id)
    except EngineError as err:
        log.warning("Could not end the task from the triggerer (%s); a worker will.", err)
        return None
    if skip:
        log.info("Container %s exited with code %s, listed in skip_on_exit_code: the task is skipped here, without a "
                 "worker.", end.container_id[:12], end.exit_code)
        return TaskSkippedEvent()
    exited = {"Id": end.container_id, "State": {"Running": False, "ExitCode": end.exit_code, "OOMKilled": end.oom_killed}}
    verdict = Finish(image=ending.image, skip_on_exit_code=tuple(ending.skip_on_exit_code)).verdict(end, exited)
    log.error("%s: %s (the task fails here, without a worker; its retries apply)", type(verdict).__name__, verdict)
    return TaskFailedEvent()


async def _succeed_in_triggerer(engine: Engine, end: WatchEnd, ending: Ending, ti: Any, log: Any) -> Any | None:
    """The XCom written through the SDK exactly as a worker writes it (the configured XCom backend included), the
    container removed if ``auto_remove`` says so, and ``TaskSuccessEvent``."""
    from airflow.sdk.execution_time.xcom import XCom
    from airflow.triggers.base import TaskSuccessEvent

    try:
        value = await stdout_result(engine, end, everything=ending.xcom == "all", tty=ending.tty,
                                    max_bytes=MAX_TRIGGERER_XCOM_BYTES) if ending.xcom else None
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

"""Back on a worker: turn how the container ended into the task's outcome, and collect its result.

The container is judged by a fresh inspect, not only by the event (the event may be old,
the container may have been removed since). Results are decoded here and only here:
unpickling runs arbitrary code, so it never happens in the triggerer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any

from remote_docker.compat import AirflowException, AirflowFailException, AirflowSkipException, AirflowTaskTimeout
from remote_docker.engine import Engine, EngineError
from remote_docker.events import WatchEnd
from remote_docker.logstream import stdout_lines
from remote_docker.outages import signal_of_exit
from remote_docker.output import OutputError, decode, read_single_file

_GO_MODE_DIR = 1 << 31  # os.ModeDir in the archive stat header

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


@dataclass
class Outcome:
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

    async def collect(self, engine: Engine, end: WatchEnd, log: Any,
                      explain: Callable[[AirflowException, WatchEnd], AirflowException] = lambda err, end: err) -> Any:
        """Judge the end (by a fresh inspect) and collect the result; remove the container per ``auto_remove``
        either way. ``explain`` may turn the failure into the task's own exception."""
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
                try:
                    await engine.remove(end.container_id)
                except EngineError as err:
                    log.warning("Could not remove container %s: %s", end.container_id[:12], err)

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
        """Raise the exception that ends the task, or return if the container succeeded."""
        container = (end.container_id or "?")[:12]
        if end.status == "error":
            raise (AirflowException if end.retryable else AirflowFailException)(end.message)
        if end.status == "gone":
            raise AirflowException(end.message)
        if info is None:
            raise AirflowException(f"container {container} was removed by someone else before its result was read")
        state = info["State"]
        if end.status == "timeout":
            if state.get("Running"):
                await engine.stop(info["Id"], self.stop_timeout)
            raise AirflowTaskTimeout(f"execution_timeout ({self.execution_timeout}) reached; container {container} "
                                     f"was stopped{tail_text(end)}")
        exit_code = state.get("ExitCode")
        if exit_code in self.skip_on_exit_code:
            raise ContainerFailedSkipException(f"container {container} exited with code {exit_code}, listed in "
                                               "skip_on_exit_code", logs=last_lines(end))
        if exit_code != 0 and end.ended_while_unreachable:
            raise AirflowException(await self._daemon_restart_line(engine, container, exit_code, end.ended_while_unreachable))
        if exit_code != 0:
            cause = ""
            if state.get("OOMKilled"):
                cause = ", OOMKilled: it ran out of memory (raise mem_limit)"
            elif end.kill_signal:
                cause = f", after a kill ({end.kill_signal}) from outside the task: docker stop/kill on the daemon"
            elif killed_by := signal_of_exit(exit_code):  # the engine did not record who sent it (Podman)
                cause = f", killed by {killed_by.name}"
            raise ContainerFailedException(f"container {container} ({self.image}) exited with code {exit_code}{cause}"
                                           f"{tail_text(end)}", logs=last_lines(end))

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
        if self.xcom_all or not end.log.last_line_in_event:
            async with engine.logs(end.container_id, follow=False, stderr=False) as chunks:
                lines = await stdout_lines(chunks, self.tty)
            return xcom_of(lines, everything=self.xcom_all)
        return xcom_of(None if end.log.last_stdout_line is None else [end.log.last_stdout_line], everything=False)

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

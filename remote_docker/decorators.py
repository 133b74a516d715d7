"""``@task.remote_docker``: run a Python callable in a container on the remote daemon, deferred.

The callable's source, its arguments and ``container_runner.py`` reach the container with
put_archive before it starts (no environment variables, no bind mounts), so arguments of
any size work and nothing must exist on the daemon's host. The result file comes back
through ``retrieve_output`` and is decoded on the worker.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pickle
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.decorator import DecoratedOperator, task_decorator_factory

from remote_docker import container_runner
from remote_docker.compat import AirflowException, AirflowFailException
from remote_docker.lifecycle.payloads import WatchEnd
from remote_docker.operators import RemoteDockerOperator

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.bases.decorator import TaskDecorator

SERIALIZERS = ("pickle", "cloudpickle", "dill", "json")
WORK_DIR = "/tmp/airflow-remote-docker"


def _check_callable(function: Callable) -> None:
    """Only the source travels, so the function must stand on its own."""
    name = getattr(function, "__name__", repr(function))
    if not inspect.isfunction(function):
        raise TypeError(f"@task.remote_docker needs a plain function; {name} is a {type(function).__name__}")
    if name == "<lambda>":
        raise TypeError("@task.remote_docker needs a plain top-level function, not a lambda; define it with def")
    if function.__code__.co_freevars:
        free = ", ".join(function.__code__.co_freevars)
        raise TypeError(f"@task.remote_docker needs a plain top-level function: {name} uses {free} from its enclosing "
                        "function, which can't travel to the container; pass them as arguments")


def _def_line(function: Callable) -> int:
    """The line of the DAG file where the function's ``def`` is (``get_python_source`` drops its decorators)."""
    try:
        lines, start = inspect.getsourcelines(function)
    except (OSError, TypeError):
        return 1
    for offset, line in enumerate(lines):
        if line.lstrip().startswith(("def ", "async def ")):
            return start + offset
    return start


def _materialize(value: Any) -> Any:
    """Plain data for the container: Airflow hands mapped results over as a lazy XCom sequence."""
    from airflow.sdk.execution_time.lazy_sequence import LazyXComSequence

    if isinstance(value, LazyXComSequence):
        return [_materialize(item) for item in value]
    if isinstance(value, (list, tuple)):
        return type(value)(_materialize(item) for item in value)
    if isinstance(value, dict):
        return {key: _materialize(item) for key, item in value.items()}
    return value


class _RemoteDockerDecoratedOperator(DecoratedOperator, RemoteDockerOperator):
    """Runs ``python_callable`` in a container; all ``RemoteDockerOperator`` arguments apply.

    :param python_command: the interpreter in the image (default ``python3``).
    :param serializer: ``"pickle"`` (default; also for None, as the official ``@task.docker``),
        ``"cloudpickle"``, ``"dill"`` or ``"json"`` for arguments and result.
    """

    custom_operator_name = "@task.remote_docker"
    template_fields: Sequence[str] = (*RemoteDockerOperator.template_fields, "op_args", "op_kwargs")

    def __init__(self, *, python_command: str = "python3", serializer: str | None = "pickle", expect_airflow: bool = True,
                 **kwargs: Any) -> None:
        # expect_airflow (the official @task.docker's) is accepted and has no effect: the runner needs only the stdlib
        serializer = serializer or "pickle"
        if serializer not in SERIALIZERS:
            raise ValueError(f"serializer={serializer!r} is not valid; use one of {', '.join(map(repr, SERIALIZERS))}")
        _check_callable(kwargs["python_callable"])
        self.python_command = python_command
        self.serializer = serializer
        super().__init__(
            command=[python_command, f"{WORK_DIR}/runner.py"],
            retrieve_output=True,
            retrieve_output_path=f"{WORK_DIR}/result.out",
            output_format="json" if serializer == "json" else "pickle",
            **kwargs,
        )

    def execute(self, context: Context) -> Any:
        self.files = {**self.files, **self._call_files()}
        self.folders = {WORK_DIR: 0o1777}  # writable for any `user`
        return super().execute(context)

    def _call_files(self) -> dict[str, bytes | str]:
        arguments = {"args": [_materialize(a) for a in self.op_args],
                     "kwargs": {k: _materialize(v) for k, v in self.op_kwargs.items()}}
        name = self.python_callable.__name__
        try:
            payload = json.dumps(arguments).encode() if self.serializer == "json" else self._codec().dumps(arguments)
        except Exception as err:
            raise AirflowFailException(f"the arguments of {name} can't be serialized with {self.serializer} "
                                       f"({type(err).__name__}: {err}); pass plain data or pick another serializer") from None
        call = {
            "serializer": self.serializer,
            "function": name,
            "input": "input.bin",
            "source_file": Path(inspect.getsourcefile(self.python_callable) or "task.py").name,
            "first_line": _def_line(self.python_callable),
            "worker_python": sys.version.split()[0],
        }
        return {
            f"{WORK_DIR}/runner.py": Path(container_runner.__file__).read_text(),
            f"{WORK_DIR}/source.py": self.get_python_source(),
            f"{WORK_DIR}/call.json": json.dumps(call),
            f"{WORK_DIR}/input.bin": payload,
        }

    def _codec(self):
        if self.serializer in ("cloudpickle", "dill"):
            try:
                return importlib.import_module(self.serializer)
            except ImportError:
                raise AirflowFailException(f"serializer={self.serializer!r} needs {self.serializer} on the worker too: "
                                           f"pip install {self.serializer}") from None
        return pickle

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        if self.serializer in ("cloudpickle", "dill"):
            self._codec()  # its reducers must be importable before the result is unpickled
        return super().execute_complete(context, event)

    def explain_failure(self, err: AirflowException, end: WatchEnd) -> AirflowException:
        """The runner's own one-line diagnosis beats "exited with code 97"."""
        for _, line in reversed(end.log.tail):
            if line.startswith(container_runner.ERROR_PREFIX):
                return AirflowFailException(line.removeprefix(container_runner.ERROR_PREFIX))
        return err

    @property
    def missing_executable(self) -> str:
        return (f"{{image}} has no {self.python_command!r} ({{message}}); use an image with Python, "
                "or set python_command to its interpreter")


def remote_docker_task(
    python_callable: Callable | None = None,
    multiple_outputs: bool | None = None,
    **kwargs: Any,
) -> TaskDecorator:
    """Wrap a function into a task that runs in a container on a remote Docker daemon.

    Accepts every ``RemoteDockerOperator`` argument, plus ``python_command`` and ``serializer``.
    """
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=multiple_outputs,
        decorated_operator_class=_RemoteDockerDecoratedOperator,
        **kwargs,
    )

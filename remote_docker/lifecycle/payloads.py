"""Everything that persists or crosses a process: one typed, versioned dataclass each.

Airflow stores each of these (trigger kwargs and events, an XCom, ``task_state_store``) and hands it to
whatever version of this package runs next: a worker or triggerer of another release, after an upgrade,
or a successor triggerer. So each is a contract between versions: ``to_payload`` writes plain JSON data
carrying this release's ``version``; ``from_payload`` keeps the version it read and reads every version so far and ignores keys it does not know, so
an older reader can read a newer writer's payload.

| payload | written by | stored as | read by |
|---|---|---|---|
| ``WatchEnd`` | the watch (trigger or worker) | the trigger's event (``next_kwargs``) | ``execute_complete`` |
| ``RoomFound`` | ``CapacityTrigger`` | its event | ``execute_after_wait`` |
| ``StartRequest`` | the operator, at DAG serialization | the start trigger's kwargs | the triggerer's start |
| ``LogHandover`` | the follower that stops (worker) | the trigger's kwargs | the follower that goes on |
| ``Checkpoint`` | worker (at deferral), trigger | an XCom of the task instance | a successor trigger |
| ``ContainerRecord`` | worker | ``task_state_store`` (Airflow >= 3.3) | the next try's worker |
| ``Ending`` | the operator | the trigger's kwargs | the trigger that may end its task |

This module imports nothing heavy: Airflow imports the trigger modules, which use it, on the
triggerer's event loop.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

_P = TypeVar("_P")


def _known(cls: type, data: dict[str, Any], *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keys of ``data`` that are fields of ``cls`` (a newer writer's extra keys are left out)."""
    names = {f.name for f in dataclasses.fields(cls)} - {"version", *skip}
    return {key: value for key, value in data.items() if key in names}


def _write(payload: Any) -> dict[str, Any]:
    """``payload`` as plain data, in this release's version of it (whatever version it was read from)."""
    data = dataclasses.asdict(payload)
    data["version"] = type(payload).__dataclass_fields__["version"].default
    return data


def _read(cls: type[_P], data: Any, what: str) -> _P:
    if not isinstance(data, dict):
        raise ValueError(f"not a remote-docker {what}: {data!r:.200}")
    return cls(**_known(cls, data), version=int(data.get("version", 1)))


def _read_or_none(cls: type[_P], data: Any) -> _P | None:
    """An aid's payload (a checkpoint, a record), or None for anything that is not one: never a failure."""
    try:
        return _read(cls, data, cls.__name__)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------- the watch's end (trigger -> worker)

EVENT_VERSION = 2

Status = Literal["exited", "timeout", "gone", "error", "start_on_worker"]


@dataclass(frozen=True)
class LogSummary:
    """What the end of a watch reports about the container's output (part of ``WatchEnd``)."""

    last_stdout_line: str | None = None
    last_line_in_event: bool = True  # False: the worker must read the last line back from the daemon
    tail: list[list[str]] = field(default_factory=list)  # [stream, text] pairs, redacted
    lines: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})


@dataclass(frozen=True)
class WatchEnd:
    """How a container's watch ended: the one event between trigger and operator.

    * ``exited``: the container stopped; ``exit_code``, ``oom_killed``, ``error`` (the daemon's
      ``State.Error``), ``kill_signal`` (a kill from outside that ended it), ``ended_while_unreachable``
      ([began, ended] of the daemon outage it stopped in).
    * ``timeout``: the deadline passed; ``killed`` says whether the kill reached the container.
    * ``gone``: someone removed the container while it was watched.
    * ``error``: it could not be watched (or started) at all; ``message`` says why and
      ``retryable`` whether another try could do better.
    * ``start_on_worker``: a trigger that was to start the container found a decision only a worker
      can make (an earlier try's container still runs); the worker starts or reattaches.

    Version 1 had the same flat keys, without ``retryable`` and ``daemon``.
    """

    status: Status
    container_id: str | None
    log: LogSummary = field(default_factory=LogSummary)
    message: str | None = None
    retryable: bool = True
    exit_code: int | None = None
    oom_killed: bool = False
    error: str | None = None
    finished_at: str | None = None
    started_at: str | None = None  # with finished_at: how long the container ran (``ran_seconds``), for the history
    kill_signal: str | None = None
    ended_while_unreachable: list[float] | None = None
    killed: bool = False
    daemon: str | None = None  # the pool member it ran on, by name (older events: its URL; DaemonPool.member takes either)
    version: int = EVENT_VERSION

    @property
    def succeeded(self) -> bool:
        return self.status == "exited" and self.exit_code == 0

    def ran_seconds(self) -> float | None:
        """How long the container ran, when the daemon said when it started and finished."""
        from remote_docker.logs.stream import rfc3339_to_unix

        try:
            ran = float(rfc3339_to_unix(self.finished_at or "")) - float(rfc3339_to_unix(self.started_at or ""))
        except (TypeError, ValueError):
            return None
        return ran if 0 <= ran < 10 * 365 * 86400 else None  # a zero time ("0001-01-01...") is no answer

    def to_payload(self) -> dict[str, Any]:
        payload = {key: value for key, value in _write(self).items() if key != "log"}
        payload.update(dataclasses.asdict(self.log))
        return payload

    @classmethod
    def from_payload(cls, payload: Any) -> WatchEnd:
        if not isinstance(payload, dict) or "status" not in payload:
            raise ValueError(f"not a remote-docker watch event: {payload!r:.200}")
        log = LogSummary(**{key: value for key, value in _known(LogSummary, payload).items() if value is not None})
        return cls(log=log, version=int(payload.get("version", 1)), **_known(cls, payload, skip=("log",)))


# ---------------------------------------------------------------------- waiting for room (CapacityTrigger -> worker)


@dataclass(frozen=True)
class RoomFound:
    """A waiting task's event: ``room`` names the daemon that has room; ``timeout``: the deadline passed first."""

    room: str | None = None
    timeout: bool = False
    version: int = 1

    def to_payload(self) -> dict[str, Any]:
        return _write(self)

    @classmethod
    def from_payload(cls, payload: Any) -> RoomFound:
        return _read(cls, payload or {}, "room event")


# ---------------------------------------------------------------------- a start in the triggerer (DAG -> triggerer)


@dataclass(frozen=True)
class StartRequest:
    """What a trigger needs to start the task's container itself (``start_from_trigger``): the ``ContainerSpec``
    fields but the templated ones (kwargs of the trigger's own, which the triggerer renders), the pull policy,
    the message for a missing executable, where it may go, and ``execution_timeout`` in seconds.
    Stored in the serialized DAG: never a secret. Version 1 called ``daemon`` ``pin``."""

    spec: dict[str, Any] = field(default_factory=dict)
    pull: str = "missing"
    missing_executable: str | None = None
    daemon: str | None = None
    daemon_labels: dict[str, str] = field(default_factory=dict)
    execution_timeout: float | None = None
    version: int = 2

    def to_payload(self) -> dict[str, Any]:
        return _write(self)

    @classmethod
    def from_payload(cls, payload: Any) -> StartRequest:
        if isinstance(payload, dict) and "pin" in payload and "daemon" not in payload:
            payload = {**payload, "daemon": payload["pin"]}
        request = _read(cls, payload, "start request")
        return dataclasses.replace(request, daemon_labels=dict(request.daemon_labels or {}))


# ---------------------------------------------------------------------- the log, handed on (worker -> trigger -> trigger)


@dataclass(frozen=True)
class LogHandover:
    """Where a log follower stopped, for the next one to go on without repeating or splitting a line.

    ``since`` / ``recent``: the cursor (``logs.stream.LogCursor``); ``lines``: lines logged per stream;
    ``partial``: a line begun per stream (latin-1 text); ``sealed_partial``: the same, sealed
    (``ownership.Deployment.seal``) when it may hold a private value; ``received``: bytes received per
    stream where the engine's stream may skip entries (Podman)."""

    since: str | None = None
    recent: list[list[Any]] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)
    partial: dict[str, str] = field(default_factory=dict)
    sealed_partial: str | None = None
    received: dict[str, int] | None = None
    version: int = 1

    @property
    def cursor(self) -> dict[str, Any]:
        return {"since": self.since, "recent": self.recent}

    def to_payload(self) -> dict[str, Any]:
        return {key: value for key, value in _write(self).items()
                if value is not None or key not in ("sealed_partial", "received")}

    @classmethod
    def from_payload(cls, payload: Any) -> LogHandover:
        return _read(cls, payload or {}, "log hand-over")


@dataclass(frozen=True)
class Checkpoint:
    """How far a trigger has logged a container (an XCom of the task instance). ``by``: ``worker`` for the
    first record a worker leaves as it defers (no trigger ran yet), ``trigger`` for a trigger's own."""

    container_id: str | None = None
    by: Literal["worker", "trigger"] = "trigger"
    cursor: dict[str, Any] | None = None
    lines: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] | None = None
    version: int = 1

    def to_payload(self) -> dict[str, Any]:
        return {key: value for key, value in _write(self).items() if value is not None or key == "container_id"}

    @classmethod
    def from_payload(cls, payload: Any) -> Checkpoint | None:
        return _read_or_none(cls, payload)


# ---------------------------------------------------------------------- a try's container (worker -> next try's worker)


@dataclass(frozen=True)
class ContainerRecord:
    """Which container a try runs, on which daemon (by name), and how far the try got with it:
    ``started``, ``deferred`` (its trigger watches it) or ``lost`` (its daemon could not be reached)."""

    container_id: str | None = None
    phase: Literal["started", "deferred", "lost"] = "started"
    daemon: str | None = None
    version: int = 1

    def to_payload(self) -> dict[str, Any]:
        return _write(self)

    @classmethod
    def from_payload(cls, payload: Any) -> ContainerRecord | None:
        return _read_or_none(cls, payload)


# ---------------------------------------------------------------------- how a trigger may end its task (operator -> trigger)


@dataclass(frozen=True)
class Ending:
    """How a trigger may end its task without a worker: on exit 0, with the XCom to push (``last`` / ``all``
    stdout lines, or None for none); on an exit code of ``skip_on_exit_code`` with ``skip_here``, as skipped; on
    another non-zero exit with ``fail_here``, as failed (its retries apply), the failure line naming ``image``. ``remove``: ``auto_remove`` removes the container on success; ``remove_always``: on any
    end (``force``). ``tty``: the container has a TTY. Version 1 had neither skip nor failure."""

    xcom: Literal["last", "all"] | None = "last"
    remove: bool = False
    tty: bool = False
    skip_on_exit_code: list[int] = field(default_factory=list)
    skip_here: bool = False
    remove_always: bool = False
    fail_here: bool = False
    image: str = ""
    version: int = 2

    def to_payload(self) -> dict[str, Any]:
        return _write(self)

    @classmethod
    def from_payload(cls, payload: Any) -> Ending | None:
        return _read(cls, payload, "ending") if payload else None

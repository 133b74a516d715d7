"""What a watch of a container ends with: the one event between trigger and operator.

Airflow stores trigger events (``next_kwargs``) in its database and hands them to whatever
version of the operator resumes the task, possibly after an upgrade, so the payload is a
contract between versions: ``to_payload`` writes a flat JSON dict carrying ``version``;
``from_payload`` reads every version so far (version 1 had no ``version`` key) and ignores
keys it does not know, so an older worker can read a newer trigger's event.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from remote_docker.logs import LogSummary

EVENT_VERSION = 2

Status = Literal["exited", "timeout", "gone", "error", "start_on_worker"]


@dataclass(frozen=True)
class WatchEnd:
    """How a container's watch ended.

    * ``exited``: the container stopped; ``exit_code``, ``oom_killed``, ``error`` (the daemon's
      ``State.Error``), ``kill_signal`` (a kill from outside that ended it), ``ended_while_unreachable``
      ([began, ended] of the daemon outage it stopped in).
    * ``timeout``: the deadline passed; ``killed`` says whether the kill reached the container.
    * ``gone``: someone removed the container while it was watched.
    * ``error``: it could not be watched (or started) at all; ``message`` says why and
      ``retryable`` whether another try could do better.
    * ``start_on_worker``: a trigger that was to start the container found a decision only a worker
      can make (an earlier try's container still runs); the worker starts or reattaches.
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
    daemon: str | None = None  # the pool member it ran on or was pinned to: its URL or name (DaemonPool.member takes either)
    version: int = EVENT_VERSION

    @property
    def succeeded(self) -> bool:
        return self.status == "exited" and self.exit_code == 0

    def ran_seconds(self) -> float | None:
        """How long the container ran, when the daemon said when it started and finished."""
        from remote_docker.logstream import rfc3339_to_unix

        try:
            ran = float(rfc3339_to_unix(self.finished_at or "")) - float(rfc3339_to_unix(self.started_at or ""))
        except (TypeError, ValueError):
            return None
        return ran if 0 <= ran < 10 * 365 * 86400 else None  # a zero time ("0001-01-01...") is no answer

    def to_payload(self) -> dict[str, Any]:
        payload = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "log"}
        payload.update(dataclasses.asdict(self.log))
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> WatchEnd:
        if not isinstance(payload, dict) or "status" not in payload:
            raise ValueError(f"not a remote-docker watch event: {payload!r:.200}")
        own = {f.name for f in dataclasses.fields(cls)} - {"log", "version"}
        log_fields = {f.name for f in dataclasses.fields(LogSummary)}
        values = {key: value for key, value in payload.items() if key in own}
        log = LogSummary(**{key: value for key, value in payload.items() if key in log_fields and value is not None})
        # version 1 (no version key) had the same flat keys, without retryable and daemon
        return cls(log=log, version=int(payload.get("version", 1)), **values)

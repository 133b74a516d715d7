"""Waiting for room on a pool: every daemon a task may use is at its ``max_containers``.

The task defers to ``CapacityTrigger``, which holds no worker slot: it asks the candidate daemons for
their counts (the same one cheap list call placement makes) every ``poll_interval`` seconds, and
again as soon as a container this triggerer watches ends, and fires when one has room. The task then resumes on a worker and is placed as any other; should a burst have
taken the room first, it waits again. It creates and removes nothing, so it can run any number of
times. ``execution_timeout`` counts while it waits: past the deadline the task fails as a timeout.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from remote_docker.triggers import engine_layer  # Airflow imports this module on the triggerer's loop: light

if TYPE_CHECKING:
    from remote_docker.operators import RemoteDockerOperator


class CapacityTrigger(BaseTrigger):
    """Fire once a daemon of the pool that the task may use has room for one more container.

    :param labels: the task's container labels (placement hashes them, as the worker will).
    :param pin: / :param daemon_labels: the task's ``daemon`` and ``daemon_labels``.
    :param deadline: absolute UNIX time when ``execution_timeout`` runs out.
    """

    def __init__(self, remote_docker_conn_id: str | None, labels: dict[str, str], hook_params: dict[str, Any] | None = None,
                 pin: str | None = None, daemon_labels: dict[str, str] | None = None, deadline: float | None = None,
                 poll_interval: float = 2.0) -> None:
        super().__init__()
        self.remote_docker_conn_id = remote_docker_conn_id
        self.labels = dict(labels)
        self.hook_params = dict(hook_params or {})
        self.pin = pin
        self.daemon_labels = dict(daemon_labels or {})
        self.deadline = deadline
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return "remote_docker.capacity.CapacityTrigger", {
            "remote_docker_conn_id": self.remote_docker_conn_id, "labels": self.labels, "hook_params": self.hook_params,
            "pin": self.pin, "daemon_labels": self.daemon_labels, "deadline": self.deadline,
            "poll_interval": self.poll_interval}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        await engine_layer()
        from remote_docker.connection import DaemonConfigError
        from remote_docker.hook import RemoteDockerHook
        from remote_docker.placement import PlacementError, place, room_mark, room_or_timeout, task_key

        hook = RemoteDockerHook(self.remote_docker_conn_id, **self.hook_params)
        waited_from = time.monotonic()
        while True:
            if self.deadline is not None and time.time() >= self.deadline:
                yield TriggerEvent({"room": None, "timeout": True})
                return
            mark = room_mark()
            try:
                placement = await place(await hook.apool(), task_key(self.labels), pin=self.pin, labels=self.daemon_labels,
                                        hold=False)  # the worker places it again when the task resumes
            except (PlacementError, DaemonConfigError) as err:  # none answers now: they may come back
                self.log.warning("Waiting for room: %s", err)
            else:
                if placement.member is not None:
                    self.log.info("Daemon %s has room after %.0fs (%s)", placement.member.describe(),
                                  time.monotonic() - waited_from, placement.describe())
                    yield TriggerEvent({"room": placement.member.name})
                    return
            await room_or_timeout(self.poll_interval, since=mark)


def trigger_for(op: RemoteDockerOperator, labels: dict[str, str], deadline: float | None) -> CapacityTrigger:
    return CapacityTrigger(op.remote_docker_conn_id, labels, hook_params=op.hook_params, pin=op.daemon_pin,
                           daemon_labels=op.daemon_labels, deadline=deadline, poll_interval=op.poll_interval)

"""Waiting for room on a pool: every daemon a task may use is at its ``max_containers``.

The task defers to ``CapacityTrigger``, which holds no worker slot: it asks the candidate daemons for
their counts (``placement.wait_for_room``, the one cheap list call placement makes) every ``poll_interval``
seconds, and again as soon as a container this triggerer watches ends, and fires when one has room
(``payloads.RoomFound``). The task then resumes on a worker and is placed as any other; should a burst
have taken the room first, it waits again. It creates and removes nothing, so it can run any number of
times. ``execution_timeout`` counts while it waits: past the deadline the task fails as a timeout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from remote_docker.lifecycle.payloads import RoomFound
from remote_docker.triggers import engine_layer  # Airflow imports this module on the triggerer's loop: light


class CapacityTrigger(BaseTrigger):
    """Fire once a daemon of the pool that the task may use has room for one more container.

    :param labels: the task's container labels (placement hashes them, as the worker will).
    :param daemon: / :param daemon_labels: the task's ``daemon`` and ``daemon_labels``.
    :param pin: ``daemon`` as triggers of earlier releases stored it (read, never written).
    :param deadline: absolute UNIX time when ``execution_timeout`` runs out.
    """

    def __init__(self, remote_docker_conn_id: str | None, labels: dict[str, str], hook_params: dict[str, Any] | None = None,
                 daemon: str | None = None, daemon_labels: dict[str, str] | None = None, deadline: float | None = None,
                 poll_interval: float = 2.0, pin: str | None = None) -> None:
        super().__init__()
        self.remote_docker_conn_id = remote_docker_conn_id
        self.labels = dict(labels)
        self.hook_params = dict(hook_params or {})
        self.daemon = daemon or pin
        self.daemon_labels = dict(daemon_labels or {})
        self.deadline = deadline
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return "remote_docker.capacity.CapacityTrigger", {
            "remote_docker_conn_id": self.remote_docker_conn_id, "labels": self.labels, "hook_params": self.hook_params,
            "daemon": self.daemon, "daemon_labels": self.daemon_labels, "deadline": self.deadline,
            "poll_interval": self.poll_interval}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        await engine_layer()
        from remote_docker.hook import RemoteDockerHook
        from remote_docker.pool.placement import task_key, wait_for_room

        hook = RemoteDockerHook(self.remote_docker_conn_id, **self.hook_params)
        placement = await wait_for_room(await hook.apool(), task_key(self.labels), daemon=self.daemon,
                                        daemon_labels=self.daemon_labels, poll_interval=self.poll_interval, log=self.log,
                                        hold=False,  # the worker places it again when the task resumes
                                        deadline=self.deadline, unreachable_waits=True)  # they may come back
        found = RoomFound(room=placement.member.name) if placement.member else RoomFound(timeout=True)
        yield TriggerEvent(found.to_payload())

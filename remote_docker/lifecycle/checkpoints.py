"""Log checkpoints: how far a trigger has logged a container, kept as an XCom of its task instance.

Trigger kwargs are fixed at deferral, so this is where a trigger leaves word for the one that
replaces it after a triggerer crash or hand-over: the successor resumes the log at the
checkpoint instead of replaying it from the start, and marks the spot. Both halves live here:

* worker: ``begin`` writes a first record as the task defers (so a successor's first read
  never misses whether one ran before) and ``end`` deletes it when the task resumes;
* trigger: ``Checkpoints.load`` / ``save`` / ``keep`` while it watches.

A task that ends in the triggerer keeps its checkpoint (a cursor and line counts, no log text):
deleting it there is one more round trip through the triggerer's supervisor per task, paid when
many tasks end together. It belongs to that try only (it names the container) and Airflow drops
it with the try's other XComs when the task is cleared.
"""

from __future__ import annotations

import asyncio
from typing import Any

from remote_docker import compat
from remote_docker.lifecycle.payloads import Checkpoint
from remote_docker.logs.follower import LogFollower, until_supervisor_read

KEY = "remote_docker_log_checkpoint"
# A checkpoint is written this long after the cursor it records was taken, so every line it
# covers has certainly reached the log before a crash could lose it.
LAG = 2.0
DRAIN_POLL = 0.1


def _where(ti: Any) -> dict[str, Any]:
    return {"key": KEY, "dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id, "map_index": ti.map_index}


# ---------------------------------------------------------------------- the worker's half


def begin(ti: Any, container_id: str) -> None:
    """The task is about to defer watching ``container_id``."""
    if not compat.TRIGGER_XCOMS:  # this Airflow's triggers can't keep checkpoints
        return
    ti.xcom_push(KEY, Checkpoint(container_id=container_id, by="worker").to_payload())


def end(ti: Any, log: Any) -> None:
    """The task resumed: the checkpoint has served its purpose."""
    if not compat.TRIGGER_XCOMS:
        return
    from airflow.sdk.execution_time.xcom import XCom

    try:
        XCom.delete(**_where(ti))
    except Exception as err:  # it only costs a stray XCom
        log.warning("Could not delete the log checkpoint XCom %s: %s", KEY, err)


# ---------------------------------------------------------------------- the trigger's half


class Checkpoints:
    """The trigger's log cursor, saved as an XCom of its own task instance."""

    def __init__(self, ti: Any, container_id: str, interval: float, log: Any) -> None:
        self.ti = ti
        self.container_id = container_id
        self.interval = interval
        self.log = log
        self.broken = False

    async def resume(self, follower: LogFollower, *, fresh: bool = False) -> None:
        """Continue where an earlier trigger of this try left off, or leave a first record.

        ``fresh``: this trigger created the container itself, so no one watched it before; a successor
        that adopts it knows it resumes (it finds the container already there), so nothing is saved yet.
        """
        if fresh:
            return
        saved = await self._load()
        # the worker leaves a first record at deferral (by "worker"); a trigger's own means one ran before
        if saved and saved.container_id == self.container_id and saved.by == "trigger" and saved.cursor:
            follower.cursor = type(follower.cursor).from_dict(saved.cursor)
            follower.counts.update(saved.lines or {})
            follower.received = dict(saved.received) if isinstance(saved.received, dict) else None
            follower.resumed_midway()
            self.log.warning(
                "--- remote-docker: a new triggerer resumes this log at its checkpoint; lines the container wrote "
                "after %s may appear twice ---", follower.cursor.since or "its start",
            )
        else:
            # a first checkpoint at once, so a successor knows it resumes (and says so) even if we die early
            await self._save(follower.cursor.to_dict(), follower.counts, follower.received)

    async def keep(self, follower: LogFollower) -> None:
        """Save the cursor every ``interval`` seconds (each ``LAG`` after it was taken, and only once the
        supervisor has read every line logged before it) until cancelled."""
        saved_since = follower.cursor.since
        while True:
            await asyncio.sleep(max(self.interval - LAG, 0.5))
            cursor, counts = follower.cursor.to_dict(), dict(follower.counts)
            received = dict(follower.received) if follower.received is not None else None
            if cursor["since"] == saved_since:
                continue
            await asyncio.sleep(LAG)
            if not await self._supervisor_caught_up(follower):
                continue  # the older checkpoint stands: a successor repeats more, never loses a line
            if not await self._save(cursor, counts, received):
                return
            saved_since = cursor["since"]

    async def _supervisor_caught_up(self, follower: LogFollower) -> bool:
        """Whether the log channel was empty at some moment within ``interval`` from now: then every line
        logged before the cursor was taken has reached the task's log file (unknown: LAG is all we have)."""
        if await until_supervisor_read(follower.out, self.interval, DRAIN_POLL) is False:
            self.log.debug("The triggerer's supervisor is behind on this log; the checkpoint waits")
            return False
        return True

    async def _load(self) -> Checkpoint | None:
        from airflow.sdk.execution_time.xcom import XCom

        try:
            saved = await XCom.aget_one(**_where(self.ti))
        except Exception as err:  # checkpoints are an aid: without one the log is replayed from the start
            self._broken(err)
            return None
        return Checkpoint.from_payload(saved)

    async def _save(self, cursor: dict, counts: dict[str, int], received: dict[str, int] | None) -> bool:
        from airflow.sdk.execution_time.xcom import XCom

        if self.broken:
            return False
        try:
            record = Checkpoint(container_id=self.container_id, by="trigger", cursor=cursor, lines=counts, received=received)
            await XCom.aset(value=record.to_payload(), **_where(self.ti))
            return True
        except Exception as err:
            self._broken(err)
            return False

    def _broken(self, err: Exception) -> None:
        if not self.broken:
            self.broken = True
            self.log.warning("Can't keep log checkpoints (%s); after a triggerer restart this log would be replayed "
                             "from the start.", err)

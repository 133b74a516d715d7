"""Reattach instead of starting a duplicate: find what an earlier try of this task left running.

Containers carry the task instance's labels, so a new try finds those of earlier tries; only those
this deployment made (``ownership``) and of an earlier try count: a container of this or a later try,
or one that fails the proof, is never adopted. ``task_state_store`` (Airflow >= 3.3) records which
container a try ran and how far it got: the recorded container is preferred, and the record tells a
try that crashed before deferring (reattach to its container) from one a user ended while deferred (its
trigger's on_kill is stopping that container: stop it here too and start afresh). Containers created
but never started are removed: they never ran.
"""

from __future__ import annotations

from typing import Any

from remote_docker import compat
from remote_docker.engine import Engine, EngineError
from remote_docker.launch import ours_of_task, try_of
from remote_docker.ownership import Deployment
from remote_docker.placement import EngineFor
from remote_docker.pool import DaemonPool, Member
from remote_docker.spec import TRY_LABEL

# task_state_store key: which container this task instance runs, and how far the try got with it.
STATE_KEY = "remote_docker_container"
_RUNNING_STATES = ("running", "paused", "restarting")


def remember(context: Any, container_id: str | None, phase: str, log: Any, daemon: str | None = None) -> None:
    """Record the try's container, the daemon it is on (name or URL) and the phase (``started`` / ``deferred`` /
    ``lost``)."""
    store = context.get("task_state_store") if compat.TASK_STATE_STORE else None
    if store is None or not container_id:
        return
    try:
        store.set(STATE_KEY, {"container_id": container_id, "phase": phase, "daemon": daemon})
    except Exception as err:  # the store is an aid to recovery, never a reason to fail the task
        log.warning("Could not record the container in task_state_store: %s", err)


def recall(context: Any, log: Any) -> dict | None:
    store = context.get("task_state_store") if compat.TASK_STATE_STORE else None
    if store is None:
        return None
    try:
        record = store.get(STATE_KEY)
    except Exception as err:
        log.warning("Could not read task_state_store: %s", err)
        return None
    return record if isinstance(record, dict) else None


async def find_running_in(pool: DaemonPool, engine_for: EngineFor, identity: dict[str, str], deployment: Deployment,
                          record: dict | None, stop_timeout: int, log: Any) -> tuple[Member, str] | None:
    """``find_running`` on every daemon of the pool: exactly one container of the task, wherever it is. A
    daemon that does not answer is passed over (with a warning), unless the try's record puts its
    container there: then the try fails rather than start a second one elsewhere. Try 1 has no earlier
    try: nothing is asked."""
    if int(identity[TRY_LABEL]) <= 1:
        return None
    recorded = (record or {}).get("daemon")
    for member in pool.members:
        try:
            async with engine_for(member) as engine:
                found = await find_running(engine, identity, deployment, record, stop_timeout, log)
        except EngineError as err:
            if not err.unreachable or pool.single or recorded in (member.name, member.url):
                raise
            log.warning("Could not look for an earlier try's container on %s (%s); going on without it",
                        member.describe(), err)
            continue
        if found:
            return member, found
    return None


async def find_running(engine: Engine, identity: dict[str, str], deployment: Deployment, record: dict | None,
                       stop_timeout: int, log: Any) -> str | None:
    """A running container this deployment made for an earlier try of this task instance to reattach to
    (the one the record names, if it runs), or None."""
    this_try = int(identity[TRY_LABEL])
    found = [c for c in await ours_of_task(engine, identity, deployment, log) if try_of(c["Labels"]) < this_try]
    for leftover in (c for c in found if c["State"] == "created"):
        # created but never started: the earlier try died in between; it never ran
        log.info("Removing container %s left unstarted by an earlier try", leftover["Id"][:12])
        await engine.remove(leftover["Id"])
    running = [c for c in found if c["State"] in _RUNNING_STATES]
    if record and record.get("phase") == "deferred":
        for ended in (c for c in running if c["Id"] == record.get("container_id")):
            log.info("Container %s belongs to a try a user ended while it was deferred; stopping it and "
                     "starting a fresh one", ended["Id"][:12])
            await engine.stop(ended["Id"], stop_timeout)
        running = [c for c in running if c["Id"] != record.get("container_id")]
    if not running:
        return None
    recorded = [c for c in running if record and c["Id"] == record.get("container_id")]
    chosen = (recorded or running)[-1]  # oldest first: the newest of the earlier tries' when none is recorded
    try_number = chosen["Labels"].get(TRY_LABEL, "?")
    log.info("Reattaching to container %s, started by try %s and still %s", chosen["Id"][:12], try_number, chosen["State"])
    return chosen["Id"]

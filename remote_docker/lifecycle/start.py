"""The one start path: a task's container running on a daemon of its pool, from a worker or the triggerer.

``start()`` is the entry point, used by the worker (``RemoteDockerOperator.execute``) and by the triggerer
(``ContainerTrigger``, for a task started there):

1. **adopt** what already runs: on a worker, a running container of an earlier try of this task instance
   (reattach: the try's ``ContainerRecord`` in ``task_state_store`` tells a crashed try from one a user
   ended); in the triggerer, this try's own container, made by an earlier run of the same trigger;
2. **place** it (``placement``): the least busy daemon with room; when every daemon the task may use is
   full a worker gets ``Full`` (it waits in ``CapacityTrigger``, without its slot) and the triggerer waits;
3. **launch** it there (``launch``: pull, create, copy files in, start), admitted against ``max_containers``;
4. a daemon that failed the start for reasons of its own is left out and the next best tried.

Only containers this deployment made (``ownership``) are adopted, stopped or removed; any other container
that carries this task's labels is named in one log line and left alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from typing import Any

from remote_docker import compat
from remote_docker.daemon.ownership import Deployment, describe_stranger
from remote_docker.engine import Engine, EngineError
from remote_docker.lifecycle.launch import Launch, LaunchError, NoRoom, try_name, try_of
from remote_docker.lifecycle.payloads import ContainerRecord
from remote_docker.lifecycle.spec import TRY_LABEL
from remote_docker.pool.members import DaemonPool, Member
from remote_docker.pool.placement import (
    PROBE_SECONDS,
    Placement,
    Reservation,
    invalidate,
    listing,
    note_down,
    over_capacity,
    place,
    task_key,
    wait_for_room,
)

EngineFor = Callable[[Member], AbstractAsyncContextManager[Engine]]  # RemoteDockerHook.engine

# task_state_store key of the try's ContainerRecord
STATE_KEY = "remote_docker_container"
_RUNNING_STATES = ("running", "paused", "restarting")


@dataclass(frozen=True)
class Started:
    """The container runs: ``created`` by this call, or adopted (an earlier watcher may have logged part of it)."""

    daemon: Member
    container_id: str
    created: bool


@dataclass(frozen=True)
class Full:
    """Every daemon the task may use is at its ``max_containers`` (a worker's start only)."""

    placement: Placement


@dataclass(frozen=True)
class EarlierTryRuns:
    """The triggerer found an earlier try's container still running: only a worker, which knows how that try
    ended, may decide whether to reattach to it."""

    daemon: Member


@dataclass(frozen=True)
class Reattach:
    """What a new try does with the containers earlier tries of its task instance left (``reattach_choice``)."""

    remove: list[str] = field(default_factory=list)  # created but never started: the earlier try died in between
    stop: list[str] = field(default_factory=list)  # a user ended that try while it was deferred
    chosen: dict[str, Any] | None = None  # the running one to reattach to


async def start(pool: DaemonPool, launch: Launch, identity: Mapping[str, str], engine_for: EngineFor, log: Any, *,
                daemon: str | None = None, daemon_labels: Mapping[str, str] | None = None, in_triggerer: bool = False,
                record: ContainerRecord | None = None, stop_timeout: int = 10,
                poll_interval: float = 2.0) -> Started | Full | EarlierTryRuns:
    """Adopt, place and launch this try's container (see the module's docstring). ``daemon`` / ``daemon_labels``:
    the task's pin and wanted labels. Raises ``LaunchError`` (the task's own fault), ``PlacementError`` (no
    daemon answers) or ``EngineError`` (the one daemon went away)."""
    if not in_triggerer and (found := await reattach_in_pool(pool, engine_for, identity, launch.deployment, record,
                                                             stop_timeout, log)):
        return found
    holder = await holder_of_this_try(pool, identity, launch.deployment, daemon, daemon_labels) if in_triggerer else None
    failed: dict[str, str] = {}
    while True:
        if holder is not None:
            member, slot = holder, Reservation()
        else:
            placement = await (wait_for_room(pool, task_key(identity), daemon=daemon, daemon_labels=daemon_labels,
                                             exclude=failed, poll_interval=poll_interval, log=log)
                               if in_triggerer else place(pool, task_key(identity), daemon=daemon,
                                                          daemon_labels=daemon_labels, exclude=failed))
            if placement.member is None:
                return Full(placement)
            member, slot = placement.member, placement.reservation
            if not pool.single:
                log.info("Placing the container on %s (%s)", member.describe(), placement.describe())
        holder, made = None, None
        try:
            async with engine_for(member) as engine:
                admit = admission(member, slot)
                made = await (this_try_once(engine, launch, identity, log, admit) if in_triggerer
                              else _created(launch.start(engine, log, admit=admit)))
        except NoRoom:  # another start took the room first: placed again on fresh counts (or a wait)
            invalidate(member)
            log.info("Daemon %s filled up meanwhile; placing again", member.describe())
        except (EngineError, LaunchError) as err:
            if pool.single or not await failed_here(member, engine_for, err):
                raise
            failed[member.name] = str(err)
            log.warning("Daemon %s failed the start (%s); trying the next one", member.describe(), err)
        finally:
            if made is None or made[0] is None:  # nothing of it is there (a start that fails removes what it made)
                slot.release()
            elif slot.created_at is None:  # adopted: the listing shows it from now on
                slot.created()
        if made is not None:
            container_id, created = made
            return EarlierTryRuns(member) if container_id is None else Started(member, container_id, created)


async def _created(starting: Awaitable[str]) -> tuple[str, bool]:
    return await starting, True


def admission(member: Member, slot: Reservation) -> Callable[[Engine, str], Awaitable[bool]]:
    """``Launch.start``'s admit check, asked once the container exists: the slot is marked created (so the
    next listing, which shows the container, replaces it), and on a member with ``max_containers`` the
    container is refused if it is beyond the limit (``placement.over_capacity``)."""
    async def admit(engine: Engine, container_id: str) -> bool:
        slot.created()
        return not member.max_containers or not await over_capacity(engine, member, container_id)

    return admit


async def failed_here(member: Member, engine_for: EngineFor, err: Exception) -> bool:
    """Is a failed start on ``member`` the daemon's fault, so another daemon of the pool should try: it went
    away (it shuts down, and its last answers are errors of any kind: it is then noted down), or its own
    parts failed under it (``LaunchError.daemon_fault``: a daemon shutting down fails starts with
    containerd's "transport is closing" while it still answers pings)."""
    if isinstance(err, LaunchError) and err.daemon_fault:
        return True
    if isinstance(err, EngineError) and err.unreachable:
        note_down(member, str(err))
        return True
    try:
        async with engine_for(member) as engine:
            await asyncio.wait_for(engine.ping(), PROBE_SECONDS)
        return False
    except (EngineError, asyncio.TimeoutError) as probe:
        note_down(member, str(probe))
        return True


# ---------------------------------------------------------------------- adopting what runs


async def ours_of_task(engine: Engine, identity: Mapping[str, str], deployment: Deployment, log: Any,
                       *, try_too: bool = False) -> list[dict[str, Any]]:
    """This deployment's containers of the task instance ``identity`` names (of its try only, ``try_too``),
    oldest first; each other container carrying its labels is named in one log line and left alone."""
    wanted = {k: v for k, v in identity.items() if try_too or k != TRY_LABEL}
    ours = []
    for container in await engine.find(wanted):
        if deployment.owns(container.get("Labels")):
            ours.append(container)
        else:
            log.warning("%s", describe_stranger(container))
    return ours


async def holder_of_this_try(pool: DaemonPool, identity: Mapping[str, str], deployment: Deployment, daemon: str | None,
                             daemon_labels: Mapping[str, str] | None) -> Member | None:
    """The daemon that holds this try's container already (an earlier run of the trigger made it), if any: only a
    container this deployment made counts, so another's carrying the same labels can't steer the placement."""
    if pool.single:
        return pool.members[0]
    for member in pool.matching(daemon, daemon_labels):
        try:
            found = await listing(member)
        except EngineError as err:
            if not err.unreachable:
                raise
            continue
        if any(deployment.owns(c.get("Labels")) and all(c["Labels"].get(k) == v for k, v in identity.items())
               for c in found):
            return member
    return None


async def this_try_once(engine: Engine, launch: Launch, identity: Mapping[str, str], log: Any,
                        admit: Callable[[Engine, str], Awaitable[bool]] | None = None) -> tuple[str | None, bool]:
    """Start this try's container in the triggerer, exactly once however often this runs (a triggerer restart or a
    hand-over runs it again): the try's own container, if this deployment made it, is adopted (and started if
    it was only created). ``(container id, created here)``; the id is None when an earlier try's container
    still runs (``EarlierTryRuns``)."""
    named = launch if launch.name else replace(launch, name=try_name(identity))
    this_try = int(identity[TRY_LABEL])
    mine: list[dict[str, Any]] = []
    if this_try != 1:  # try 1 has no earlier try, and a second run of it fails on the try's name
        ours = await ours_of_task(engine, identity, launch.deployment, log)
        mine = [c for c in ours if try_of(c["Labels"]) == this_try]
        if not mine and any(c["State"] in _RUNNING_STATES and try_of(c["Labels"]) < this_try for c in ours):
            return None, False
    if not mine:
        try:
            return await named.start(engine, log, admit=admit), True
        except LaunchError:
            # an earlier run of this trigger (or a twin) created it first
            mine = await ours_of_task(engine, identity, launch.deployment, log, try_too=True)
            if not mine:
                raise
    container = mine[-1]
    if container["State"] == "created":
        await engine.start(container["Id"])
    log.info("Continuing with container %s, which this try started before (%s); its log is followed from the last "
             "checkpoint, or from its start: earlier lines may appear twice", container["Id"][:12], container["State"])
    return container["Id"], False


def reattach_choice(earlier: list[dict[str, Any]], record: ContainerRecord | None) -> Reattach:
    """What to do with this deployment's containers of earlier tries (oldest first): remove those never started,
    stop the one a user ended while deferred (the record says ``deferred``: its trigger's on_kill is stopping
    it), and reattach to the recorded one if it runs, else to the newest running."""
    running = [c for c in earlier if c["State"] in _RUNNING_STATES]
    recorded_id = record.container_id if record else None
    stop = []
    if record and record.phase == "deferred":
        stop = [c["Id"] for c in running if c["Id"] == recorded_id]
        running = [c for c in running if c["Id"] != recorded_id]
    recorded = [c for c in running if c["Id"] == recorded_id]
    return Reattach(remove=[c["Id"] for c in earlier if c["State"] == "created"], stop=stop,
                    chosen=(recorded or running)[-1] if running else None)


async def find_running(engine: Engine, identity: Mapping[str, str], deployment: Deployment,
                       record: ContainerRecord | None, stop_timeout: int, log: Any) -> str | None:
    """A running container this deployment made for an earlier try of this task instance to reattach to, or None
    (``reattach_choice`` decides; this carries it out)."""
    this_try = int(identity[TRY_LABEL])
    earlier = [c for c in await ours_of_task(engine, identity, deployment, log) if try_of(c["Labels"]) < this_try]
    choice = reattach_choice(earlier, record)
    for leftover in choice.remove:
        log.info("Removing container %s left unstarted by an earlier try", leftover[:12])
        await engine.remove(leftover)
    for ended in choice.stop:
        log.info("Container %s belongs to a try a user ended while it was deferred; stopping it and starting a "
                 "fresh one", ended[:12])
        await engine.stop(ended, stop_timeout)
    if (chosen := choice.chosen) is None:
        return None
    log.info("Reattaching to container %s, started by try %s and still %s", chosen["Id"][:12],
             chosen["Labels"].get(TRY_LABEL, "?"), chosen["State"])
    return chosen["Id"]


async def reattach_in_pool(pool: DaemonPool, engine_for: EngineFor, identity: Mapping[str, str], deployment: Deployment,
                           record: ContainerRecord | None, stop_timeout: int, log: Any) -> Started | None:
    """``find_running`` on every daemon of the pool: exactly one container of the task, wherever it is. A daemon
    that does not answer is passed over (with a warning), unless the try's record puts its container there:
    then the try fails rather than start a second one elsewhere. Try 1 has no earlier try: nothing is asked."""
    if int(identity[TRY_LABEL]) <= 1:
        return None
    recorded = record.daemon if record else None
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
            return Started(member, found, created=False)
    return None


# ---------------------------------------------------------------------- the try's record (worker, Airflow >= 3.3)


def remember(context: Any, record: ContainerRecord, log: Any) -> None:
    """Keep the try's ``ContainerRecord`` in ``task_state_store``, where the next try looks."""
    store = context.get("task_state_store") if compat.TASK_STATE_STORE else None
    if store is None or not record.container_id:
        return
    try:
        store.set(STATE_KEY, record.to_payload())
    except Exception as err:  # the store is an aid to recovery, never a reason to fail the task
        log.warning("Could not record the container in task_state_store: %s", err)


def recall(context: Any, log: Any) -> ContainerRecord | None:
    """The ``ContainerRecord`` an earlier try of this task instance left, if any."""
    store = context.get("task_state_store") if compat.TASK_STATE_STORE else None
    if store is None:
        return None
    try:
        return ContainerRecord.from_payload(store.get(STATE_KEY))
    except Exception as err:
        log.warning("Could not read task_state_store: %s", err)
        return None

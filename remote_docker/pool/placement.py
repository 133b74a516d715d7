"""Which daemon of a pool a task's container goes to.

Default least busy: each candidate's containers that carry our labels and are running or
created-but-not-started (a burst's containers count from the moment they exist), counted with one
filtered list call per daemon and kept for ``COUNT_SECONDS``, so a burst of tasks placed together
costs each daemon one call per second per process. A placement made in this process holds its slot
(a ``Reservation``) until its container exists and a listing taken after that shows it, so a listing
fetched while a create is under way does not make the slot look free. Equal loads are broken by a
hash of the task and the daemon (rendezvous hashing), so tasks placed in the same second by separate
worker processes, which see the same counts, spread instead of piling onto one daemon.
``max_containers`` is a hard limit: a daemon at it is skipped, and ``over_capacity`` catches the
burst that filled it between a count and a create (the youngest containers beyond the limit give
way). Tasks waiting for room in a triggerer look again as soon as a container it watches ends
(``room_freed``, told by the watch the moment the daemon says it stopped), not only every
``poll_interval``; an end while a waiter is counting is not lost (``room_mark``), and a container seen
ending here counts as gone in every listing from then on, so the next count needs no new call.

A daemon that does not answer within ``PROBE_SECONDS`` is skipped and remembered as down for
``DOWN_SECONDS`` in this process; the task goes to the next best. None reachable: one line naming
every daemon tried and why.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import weakref
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from remote_docker.engine import Engine, EngineError
from remote_docker.engine.clients import shared_async_client
from remote_docker.lifecycle.spec import TRY_LABEL
from remote_docker.pool.members import DaemonPool, Member

COUNT_SECONDS = 1.0
PROBE_SECONDS = 2.0
DOWN_SECONDS = 30.0
HOLD_SECONDS = 60.0  # a reservation neither created nor released by then is dropped (its starter died)
ENDED_SECONDS = 30.0  # a container seen ending here counts as gone this long (its daemon's listing shows it by then)
WAIT_LOG_SECONDS = 60.0  # a task waiting for room says so when it starts waiting, then this often
# ours and occupying a slot: running, or made and about to run
_OCCUPYING = ("created", "running", "restarting", "paused")


class PlacementError(Exception):
    """No daemon of the pool can take the container; the message names each one and why."""


@dataclass(eq=False)
class Reservation:
    """A slot a placement in this process took, which the daemon's listing may not show yet."""

    at: float = field(default_factory=time.monotonic)
    created_at: float | None = None  # the container exists from here on: a listing sent later shows it
    released: bool = False

    def created(self) -> None:
        self.created_at = time.monotonic()

    def release(self) -> None:
        """Nothing was made after all (the start failed or gave way)."""
        self.released = True

    def counts(self, listed_at: float, now: float) -> bool:
        """Whether this slot is still missing from a listing sent at ``listed_at``."""
        if self.released:
            return False
        if self.created_at is not None:
            return self.created_at > listed_at
        return now - self.at < HOLD_SECONDS


@dataclass(frozen=True)
class Placement:
    """Where a container goes, or why it must wait: ``member`` None means every candidate is full."""

    member: Member | None
    loads: dict[str, int] = field(default_factory=dict)  # daemon name -> containers counted
    skipped: dict[str, str] = field(default_factory=dict)  # daemon name -> why it was passed over
    reservation: Reservation = field(default_factory=Reservation, compare=False)  # the slot taken on ``member``

    def describe(self) -> str:
        counts = ", ".join(f"{name} {count}" for name, count in self.loads.items())
        passed = "; ".join(f"{name}: {why}" for name, why in self.skipped.items())
        return f"containers per daemon: {counts or 'none counted'}" + (f"; skipped {passed}" if passed else "")


@dataclass
class _Health:
    """What this process knows of each daemon (by URL): its containers of ours lately, which daemons are
    down, and the placements made here since the last listing (not in it yet)."""

    listings: dict[str, tuple[float, list[dict[str, Any]]]] = field(default_factory=dict)
    down_until: dict[str, tuple[float, str]] = field(default_factory=dict)
    reserved: dict[str, list[Reservation]] = field(default_factory=dict)
    ended: dict[str, dict[str, float]] = field(default_factory=dict)  # url -> {container id: when seen ending here}


@dataclass
class _RoomSignal:
    """Containers ended in one event loop so far, and the event the tasks waiting for room sleep on."""

    generation: int = 0
    event: asyncio.Event = field(default_factory=asyncio.Event)


_health = _Health()
# one listing per daemon in flight per event loop: the triggers a triggerer starts at once share it
_inflight: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Future]] = weakref.WeakKeyDictionary()
# bumped when a container of ours ends in this event loop: tasks waiting for room look again
_room: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _RoomSignal] = weakref.WeakKeyDictionary()


def forget() -> None:
    """Drop what this process remembers of every daemon (tests, and a daemon known to be back)."""
    _health.listings.clear()
    _health.down_until.clear()
    _health.reserved.clear()
    _health.ended.clear()


def note_down(member: Member, reason: str) -> None:
    _health.down_until[member.url] = (time.monotonic() + DOWN_SECONDS, reason)
    _health.listings.pop(member.url, None)


def invalidate(member: Member) -> None:
    """The member's listing is out of date (a placement there just lost a race): ask again next time."""
    _health.listings.pop(member.url, None)


def room_freed(url: str, container_id: str | None = None) -> None:
    """A container of ours on the daemon at ``url`` stopped (watched in this event loop): tasks waiting
    for room count afresh now rather than at their next poll. With its id it counts as gone in every
    listing from now on (the daemon's may lag its exit); without, the next count asks the daemon."""
    if container_id is None:
        _health.listings.pop(url, None)
    else:
        now = time.monotonic()
        ended = _health.ended[url] = {c: at for c, at in _health.ended.get(url, {}).items() if now - at < ENDED_SECONDS}
        if container_id in ended:
            return  # said already
        ended[container_id] = now
    signal = _room.get(asyncio.get_running_loop())
    if signal is not None:
        signal.generation += 1
        signal.event.set()
        signal.event = asyncio.Event()


def room_mark() -> int:
    """How many containers have ended in this event loop so far: taken before counting, and given to
    ``room_or_timeout``, so an end while the count was under way wakes the waiter at once."""
    return _room.setdefault(asyncio.get_running_loop(), _RoomSignal()).generation


async def room_or_timeout(seconds: float, since: int | None = None) -> None:
    """Sleep ``seconds``, or less if a container ends in this event loop meanwhile (``room_freed``);
    not at all if one ended after ``room_mark()`` gave ``since``."""
    signal = _room.setdefault(asyncio.get_running_loop(), _RoomSignal())
    if since is not None and signal.generation != since:
        return
    with suppress(asyncio.TimeoutError):
        await asyncio.wait_for(signal.event.wait(), seconds)


async def occupying(engine: Engine, bound: float | None = None) -> list[dict[str, Any]]:
    """Containers of ours on this daemon that hold a slot (running or created), oldest first."""
    return await engine.find({TRY_LABEL: None}, _OCCUPYING, bound=bound)


async def listing(member: Member) -> list[dict[str, Any]]:
    """Every container of ours on the member (any state), at most ``COUNT_SECONDS`` old; callers in one
    event loop share one request. Raises ``EngineError``."""
    return (await _listed(member))[1]


async def _listed(member: Member) -> tuple[float, list[dict[str, Any]]]:
    """``listing`` with the moment its request was sent."""
    cached = _health.listings.get(member.url)
    if cached and time.monotonic() - cached[0] < COUNT_SECONDS:
        return cached
    pending = _inflight.setdefault(asyncio.get_running_loop(), {})
    if member.url not in pending or pending[member.url].done():
        pending[member.url] = asyncio.ensure_future(_fetch(member))
    return await asyncio.shield(pending[member.url])


async def _fetch(member: Member) -> tuple[float, list[dict[str, Any]]]:
    taken = time.monotonic()
    async with shared_async_client(member.config) as client:
        found = await Engine(client, member.config).find({TRY_LABEL: None}, bound=PROBE_SECONDS)
    _health.listings[member.url] = (taken, found)
    return taken, found


async def _reach(member: Member) -> tuple[float, list[dict[str, Any]]] | str:
    """The member's listing and when it was sent, or why it can't be had (unreachable, down, refused)."""
    now = time.monotonic()
    down = _health.down_until.get(member.url)
    if down and down[0] > now:
        return f"down ({down[1]}; not asked again for {down[0] - now:.0f}s)"
    try:
        return await _listed(member)
    except EngineError as err:
        reason = f"no answer within {PROBE_SECONDS:g}s" if err.timed_out else str(err)
        note_down(member, reason)
        return reason


def _load(member: Member, listed: tuple[float, list[dict[str, Any]]]) -> int:
    """The member's count of ours that hold a slot: the listing's, and this process's reservations it
    can't show (made or created after it was sent). Synchronous, so a count and the reservation made
    from it can't be split by an await."""
    now = time.monotonic()
    taken, found = listed
    reserved = _health.reserved[member.url] = [r for r in _health.reserved.get(member.url, []) if r.counts(taken, now)]
    ended = _health.ended.get(member.url, {})
    return sum(1 for c in found if c["State"] in _OCCUPYING and c["Id"] not in ended) + len(reserved)


def _affinity(task_key: str, member: Member) -> str:
    return hashlib.sha256(f"{task_key}\0{member.name}".encode()).hexdigest()


async def place(pool: DaemonPool, task_key: str, *, daemon: str | None = None,
                daemon_labels: Mapping[str, str] | None = None, exclude: Mapping[str, str] | None = None,
                hold: bool = True) -> Placement:
    """The daemon for the task ``task_key`` (its labels joined), or a Placement with no member when every
    candidate is full. ``exclude``: daemons that just failed this task (name -> why). ``hold``: the caller
    creates the container and marks ``reservation`` created or released; else (a probe, which creates
    nothing here) the slot counts only until the next listing. Raises ``PlacementError`` when none
    answers, ``DaemonConfigError`` for a bad pin or labels."""
    exclude = dict(exclude or {})
    candidates = [m for m in pool.matching(daemon, daemon_labels) if m.name not in exclude]
    if not candidates:
        tried = "; ".join(f"{pool.member(name).describe()}: {why}" for name, why in exclude.items())
        raise PlacementError(f"no daemon of {pool.source} could take the container ({tried})")
    if len(candidates) == 1 and candidates[0].max_containers is None and not exclude:
        return Placement(candidates[0])  # nothing to weigh: no call at all
    results = await asyncio.gather(*(_reach(m) for m in candidates))
    # counted after every await: the tasks woken together by room_freed each see the others' reservations
    loads = {m.name: _load(m, r) for m, r in zip(candidates, results, strict=True) if not isinstance(r, str)}
    skipped = {m.name: r for m, r in zip(candidates, results, strict=True) if isinstance(r, str)}
    if not loads:
        skipped.update(exclude)
        tried = "; ".join(f"{pool.member(name).describe()}: {why}" for name, why in skipped.items())
        raise PlacementError(f"no daemon of {pool.source} is reachable ({tried}); check that they run and "
                             "accept our certificate (remote-docker doctor)")
    room = [m for m in candidates if m.name in loads and (m.max_containers is None or loads[m.name] < m.max_containers)]
    full = {m.name: f"full ({loads[m.name]}/{m.max_containers})" for m in candidates if m.name in loads and m not in room}
    if not room:
        return Placement(None, loads, {**skipped, **full})
    least = min(loads[m.name] for m in room)
    tied = [m for m in room if loads[m.name] == least]
    chosen = max(tied, key=lambda m: _affinity(task_key, m))
    reservation = Reservation() if hold else Reservation(created_at=time.monotonic())
    _health.reserved.setdefault(chosen.url, []).append(reservation)
    return Placement(chosen, loads, {**skipped, **full}, reservation)


async def over_capacity(engine: Engine, member: Member, container_id: str) -> bool:
    """After creating ``container_id`` on a member with ``max_containers``: is it beyond the limit? Every
    racer sees the same order (creation time, then id), so exactly the youngest beyond it give way."""
    if member.max_containers is None:
        return False
    ended = _health.ended.get(member.url, {})  # stopped, though the daemon may list them as running a moment longer
    ordered = [c for c in await occupying(engine) if c["Id"] not in ended]
    rank = next((i for i, c in enumerate(ordered) if c["Id"] == container_id), None)
    over = rank is not None and rank >= member.max_containers
    if over:
        invalidate(member)
    return over


async def wait_for_room(pool: DaemonPool, key: str, *, daemon: str | None, daemon_labels: Mapping[str, str] | None,
                        poll_interval: float, log: Any, exclude: Mapping[str, str] | None = None, hold: bool = True,
                        deadline: float | None = None, unreachable_waits: bool = False) -> Placement:
    """``place``, again and again until a daemon has room: every ``poll_interval`` seconds, and at once when a
    container this event loop watches ends (``room_freed``). Said in the log when the wait begins, every
    ``WAIT_LOG_SECONDS`` after, and when it ends. A Placement with no member when the absolute UNIX ``deadline``
    passes first. ``unreachable_waits``: no daemon answering is waited out too (a probe that creates nothing),
    else ``PlacementError``."""
    began = said_at = None
    while True:
        if deadline is not None and time.time() >= deadline:
            return Placement(None)
        mark = room_mark()
        try:
            placement = await place(pool, key, daemon=daemon, daemon_labels=daemon_labels, exclude=exclude, hold=hold)
        except PlacementError as err:
            if not unreachable_waits:
                raise
            log.warning("Waiting for room: %s", err)
        else:
            if placement.member is not None:
                if began is not None:
                    log.info("Daemon %s has room after %.0fs (%s)", placement.member.describe(),
                             time.monotonic() - began, placement.describe())
                return placement
            began = time.monotonic() if began is None else began
            if said_at is None or time.monotonic() - said_at >= WAIT_LOG_SECONDS:
                log.info("Every daemon this task may use is full (%s); waiting for room.", placement.describe())
                said_at = time.monotonic()
        await room_or_timeout(poll_interval, since=mark)


def task_key(labels: Mapping[str, str]) -> str:
    """One task instance's try as a string (what placement hashes)."""
    return "\0".join(f"{k}={v}" for k, v in sorted(labels.items()))



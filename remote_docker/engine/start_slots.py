"""How many container starts one process has in flight on one daemon.

A start is CPU work on the daemon's host (containerd's shim, runc, mounts). Sent all at once, a burst's
starts share those cores and all finish late; let through as many at a time as the host has CPUs, they
finish one after another at the same total rate. Measured here (bench/ANALYSIS.md, "Starts, a few at a
time"): 30 starts over 3 daemons on 2 cores take ~3.3 s either way, but the average start is done after
2.1 s against 3.1 s. A burst's first containers run sooner, and in a pool at its limit the exits come
spread out, so the next wave's starts don't pile up on each other either.

The limit is the daemon's own CPU count (``/info`` ``NCPU``), asked only once two starts overlap in this
event loop: a worker, which starts one container, never asks. Waiters go in the order they came.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

FALLBACK_LIMIT = 4  # the daemon would not say how many CPUs it has
ASK_SECONDS = 2.0


@dataclass
class _Slots:
    limit: int | None = None  # unknown until two starts overlap
    in_flight: int = 0
    asking: asyncio.Future | None = None
    freed: asyncio.Condition = field(default_factory=asyncio.Condition)


_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Slots]] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def start_slot(url: str, cpus: Callable[[], Awaitable[int | None]]) -> AsyncIterator[None]:
    """Hold one of the daemon's start slots in this event loop for the body; ``cpus`` says how many
    CPUs the daemon has (asked at most once per event loop and daemon)."""
    slots = _slots.setdefault(asyncio.get_running_loop(), {}).setdefault(url, _Slots())
    if slots.in_flight and slots.limit is None:
        if slots.asking is None:
            slots.asking = asyncio.ensure_future(_ask(cpus))
        slots.limit = await asyncio.shield(slots.asking)
    async with slots.freed:
        while slots.limit is not None and slots.in_flight >= slots.limit:
            await slots.freed.wait()
        slots.in_flight += 1
    try:
        yield
    finally:
        async with slots.freed:
            slots.in_flight -= 1
            slots.freed.notify()


async def _ask(cpus: Callable[[], Awaitable[int | None]]) -> int:
    try:
        count = await asyncio.wait_for(cpus(), ASK_SECONDS)
    except Exception:  # any failure: the start itself will say what is wrong
        count = None
    return count if isinstance(count, int) and count > 0 else FALLBACK_LIMIT

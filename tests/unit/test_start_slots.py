"""The start slots (pure asyncio, no daemon): as many starts in flight per daemon as it has CPUs, in the
order they came, the daemon asked only once two starts overlap."""

from __future__ import annotations

import asyncio

from remote_docker.engine import start_slots


def test_a_lone_start_never_asks_the_daemon() -> None:
    asked: list[str] = []

    async def cpus() -> int:
        asked.append("info")
        return 2

    async def one() -> None:
        for _ in range(3):
            async with start_slots.start_slot("https://127.0.0.1:1", cpus):
                await asyncio.sleep(0)

    asyncio.run(one())
    assert asked == []


def test_overlapping_starts_are_held_to_the_daemons_cpus_in_order() -> None:
    asked: list[str] = []
    in_flight, most, order = 0, 0, []

    async def cpus() -> int:
        asked.append("info")
        return 2

    async def start(i: int) -> None:
        nonlocal in_flight, most
        async with start_slots.start_slot("https://127.0.0.1:2", cpus):
            in_flight += 1
            most = max(most, in_flight)
            order.append(i)
            await asyncio.sleep(0.01)
            in_flight -= 1

    async def burst() -> None:
        await asyncio.gather(*(start(i) for i in range(12)))

    asyncio.run(burst())
    assert most == 2 and asked == ["info"] and order == sorted(order)


def test_a_daemon_that_wont_say_gets_the_fallback_limit() -> None:
    most, in_flight = 0, 0

    async def cpus() -> int:
        raise OSError("no answer")

    async def start() -> None:
        nonlocal in_flight, most
        async with start_slots.start_slot("https://127.0.0.1:3", cpus):
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1

    async def burst() -> None:
        await asyncio.gather(*(start() for _ in range(10)))

    asyncio.run(burst())
    assert most == start_slots.FALLBACK_LIMIT

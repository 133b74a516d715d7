"""P2: how many containers one triggerer process can watch.

N ``ContainerTrigger.run()`` coroutines run concurrently in one asyncio loop, as the triggerer
runs them, against N running containers that, once all are watched and an idle window is
measured, are made to exit at a fixed rate (SIGUSR1). Measured: RSS over the idle baseline, CPU
while waiting, and exit -> event delay (container FinishedAt to the event reaching the loop),
split into the daemon's share (its own "die" event) and ours. ``shared=False`` gives each trigger its own client (a distinct
config fingerprint) to show what sharing is worth.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
from common import Daemon, Result, rss_mb, summary

from remote_docker.engine.clients import TLS_BUFFER_ENV
from remote_docker.hook import RemoteDockerHook
from remote_docker.lifecycle.watch import ContainerWatch
from remote_docker.triggers import ContainerTrigger

IDLE_WINDOW = 10.0  # seconds of pure waiting measured for CPU and memory
# Once all are watched and the idle window is measured, containers are made to exit this many per
# second. All at once measures dockerd instead: it takes ~5 s to process 300 exits landing in one
# second on 2 cores (its own die events lag as much).
EXIT_RATE = 20.0


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_containers(daemon: Daemon, n: int) -> list[str]:
    """N containers that print a line and wait, without using CPU, until they get SIGUSR1."""
    client = daemon.client()
    script = "trap 'echo exiting; exit 0' USR1; echo started; sleep 86400 & wait"

    def start(i: int) -> str:
        body = {"Image": "rd-test/busybox:latest", "Cmd": ["sh", "-c", script],
                "Labels": {"rd-bench": "p2"}, "HostConfig": {"NetworkMode": "none"}}
        container_id = client.api.create_container_from_config(body)["Id"]
        client.api.start(container_id)
        return container_id

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(start, range(n)))
    client.close()
    return ids


async def release(daemon: Daemon, ids: list[str], rate: float | None) -> None:
    """Make the containers exit, ``rate`` per second (container i at i / rate s); None: all at once."""
    async with RemoteDockerHook(None, **daemon.hook_params()).engine() as engine:
        if rate is None:
            await asyncio.gather(*(engine.kill(c, signal="USR1") for c in ids))
            return
        began = time.monotonic()
        for i, container_id in enumerate(ids):
            await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
            await engine.kill(container_id, signal="USR1")


def remove_containers(daemon: Daemon) -> None:
    client = daemon.client()
    found = client.api.containers(all=True, filters={"label": "rd-bench=p2"})
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda c: client.api.remove_container(c["Id"], force=True), found))
    client.close()


def finished_at(daemon: Daemon, ids: list[str]) -> dict[str, float]:
    client = daemon.client()

    def when(container_id: str) -> float:
        stamp = client.api.inspect_container(container_id)["State"]["FinishedAt"]
        head, _, fraction = stamp.rstrip("Z").partition(".")
        moment = dt.datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc)
        return moment.timestamp() + float(f"0.{fraction or 0}")

    with ThreadPoolExecutor(8) as pool:
        found = dict(zip(ids, pool.map(when, ids), strict=False))
    client.close()
    return found


class Phases:
    """When each container's watch passed each phase (bench-only instrumentation of ContainerWatch)."""

    def __init__(self) -> None:
        self.stream_ended: dict[str, float] = {}  # the follow stream returned for the last time
        self.ended_started: dict[str, float] = {}  # the watch saw the container exited (after an inspect)
        self.rest_read: dict[str, float] = {}  # the reconcile read of the log's end returned

    def install(self) -> None:
        original_read, original_rest, original_ended = ContainerWatch._read, ContainerWatch._read_rest, ContainerWatch._ended
        phases = self

        async def read(watch, *, follow):
            await original_read(watch, follow=follow)
            if follow:
                phases.stream_ended[watch.container_id] = time.time()

        async def read_rest(watch):
            await original_rest(watch)
            phases.rest_read[watch.container_id] = time.time()

        async def ended(watch, info):
            phases.ended_started[watch.container_id] = time.time()
            return await original_ended(watch, info)

        ContainerWatch._read, ContainerWatch._read_rest, ContainerWatch._ended = read, read_rest, ended


async def watch_all(daemon: Daemon, ids: list[str], shared: bool, rate: float | None,
                    phases: Phases) -> tuple[dict[str, float], dict[str, float], dict]:
    """Watch every container with its own ContainerTrigger.run(), as one triggerer process would."""
    hook_base = daemon.hook_params()
    arrivals: dict[str, float] = {}
    statuses: dict[str, str] = {}
    died: dict[str, float] = {}  # when the daemon's own "die" event for a container reached us

    async def daemon_die_events() -> None:
        async with RemoteDockerHook(None, **hook_base).engine() as engine:
            subscriber = engine.docker.events.subscribe(filters={"type": ["container"], "event": ["die"], "label": ["rd-bench=p2"]})
            while (event := await subscriber.get()) is not None:
                died[event["id"]] = time.time()

    listener = asyncio.create_task(daemon_die_events())
    phases.install()

    async def one(index: int, container_id: str) -> None:
        params = dict(hook_base) if shared else {**hook_base, "timeout": 60 + index / 1e6}  # distinct client
        trigger = ContainerTrigger(container_id, None, hook_params=params)
        async for event in trigger.run():
            arrivals[container_id] = time.time()
            statuses[container_id] = event.payload["status"]

    process = psutil.Process()
    baseline = rss_mb()
    tasks = [asyncio.create_task(one(i, c)) for i, c in enumerate(ids)]
    await asyncio.sleep(min(5.0 + len(ids) / 100, 20))  # every trigger connected and streaming
    waiting_rss = rss_mb()
    cpu_before, wall_before = process.cpu_times(), time.monotonic()
    await asyncio.sleep(IDLE_WINDOW)
    cpu_after, wall_after = process.cpu_times(), time.monotonic()
    still_waiting = sum(1 for t in tasks if not t.done())
    await release(daemon, ids, rate)
    await asyncio.gather(*tasks)
    listener.cancel()
    cpu = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / (wall_after - wall_before)
    return arrivals, died, {
        "baseline_rss_mb": round(baseline, 1),
        "waiting_rss_mb": round(waiting_rss, 1),
        "rss_over_baseline_mb": round(waiting_rss - baseline, 1),
        "kb_per_container": round((waiting_rss - baseline) * 1000 / len(ids), 1),
        "cpu_percent_of_one_core_waiting": round(max(cpu, 0.0) * 100, 2),
        "triggers_still_waiting_during_window": still_waiting,
        "events_not_exited": sum(1 for s in statuses.values() if s != "exited"),
    }


def run_one(daemon: Daemon, n: int, shared: bool, rate: float | None) -> dict:
    _raise_fd_limit()
    ids = start_containers(daemon, n)
    try:
        logging.getLogger("remote_docker").setLevel(logging.WARNING)  # container lines: not the point here
        phases = Phases()
        arrivals, died, figures = asyncio.run(watch_all(daemon, ids, shared, rate, phases))
        finished = finished_at(daemon, ids)

        def gaps(later: dict[str, float], earlier: dict[str, float]) -> dict[str, float]:
            return {k: round(v, 3) for k, v in summary([later[c] - earlier[c] for c in ids if c in later and c in earlier]).items()}

        figures.update({"n": n, "shared_client": shared, "events": len(arrivals), "exits_per_s": rate or "all at once",
                        "exit_to_event_s": gaps(arrivals, finished),
                        # the daemon's share: its own die event lags the exit as much when it is busy
                        "exit_to_daemon_die_event_s": gaps(died, finished),
                        "die_event_to_trigger_event_s": gaps(arrivals, died),
                        "phases_s": {"exit_to_follow_stream_end": gaps(phases.stream_ended, finished),
                                     "stream_end_to_exit_seen": gaps(phases.ended_started, phases.stream_ended),
                                     "exit_seen_to_end_of_log_read": gaps(phases.rest_read, phases.ended_started),
                                     "end_of_log_read_to_event": gaps(arrivals, phases.rest_read)}})
        return figures
    finally:
        remove_containers(daemon)


def run_in_subprocess(daemon: Daemon, n: int, shared: bool, rate: float | None = EXIT_RATE) -> dict:
    """One row in a fresh process, so no row inherits the memory an earlier one left behind."""
    args = [sys.executable, __file__, str(daemon.state), str(daemon.port), str(n), "shared" if shared else "unshared",
            str(rate or 0)]
    env = {k: v for k, v in os.environ.items() if k != TLS_BUFFER_ENV}  # the defaults, no opt-in variable
    done = subprocess.run(args, capture_output=True, text=True, check=False, env=env)
    if done.returncode:
        raise RuntimeError(f"P2 row n={n} shared={shared} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _meets(row: dict) -> bool:
    return (row["rss_over_baseline_mb"] <= 150 and row["cpu_percent_of_one_core_waiting"] <= 5
            and row["exit_to_event_s"]["p99"] <= 1.0)


def run(daemon: Daemon, sizes: list[int], unshared_sizes: list[int]) -> Result:
    rows = []
    for n in sizes:
        rows.append(run_in_subprocess(daemon, n, shared=True))
        print(f"[p2] shared n={n}: {rows[-1]}", flush=True)
    for n in unshared_sizes:
        rows.append(run_in_subprocess(daemon, n, shared=False))
        print(f"[p2] one client per trigger n={n}: {rows[-1]}", flush=True)
    # exits landing in one second: where the time between a container's exit and its event goes
    burst = run_in_subprocess(daemon, 300, shared=True, rate=None)
    print(f"[p2] 300 exits at once: {burst}", flush=True)
    at_target = [r for r in rows if r["shared_client"] and r["n"] >= 1000]
    met = all(_meets(r) for r in at_target) if at_target else None
    return Result(
        name="P2 triggerer density",
        figures={"rows": rows, "all_at_once_300": burst},
        target="at 1000, defaults: <= 150 MB RSS over baseline, <= 5 % of one core waiting, p99 exit->event <= 1 s",
        met=met,
    )


if __name__ == "__main__":  # one row: python p2_density.py STATE PORT N shared|unshared RATE (0: all at once)
    state, port, count, mode, rate = sys.argv[1:6]
    print(json.dumps(run_one(Daemon(Path(state), int(port)), int(count), mode == "shared", float(rate) or None)))

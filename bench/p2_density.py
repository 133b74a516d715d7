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

import aiohttp
import psutil
from common import Daemon, Result, rss_mb, summary

from remote_docker.clients import TLS_BUFFER_ENV
from remote_docker.triggers import ContainerTrigger

IDLE_WINDOW = 10.0  # seconds of pure waiting measured for CPU and memory
# Once all are watched and the idle window is measured, containers are made to exit this many per
# second. All at once measures dockerd instead: it takes ~5 s to process 300 exits landing in one
# second on 2 cores (its own die events lag as much).
EXIT_RATE = 20.0
TUNED_TLS_BUFFER_KB = 32


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


async def release(daemon: Daemon, ids: list[str]) -> None:
    """Make the containers exit, EXIT_RATE per second (container i at i / EXIT_RATE s)."""
    from remote_docker.clients import make_async_client

    docker = make_async_client(daemon.config())
    began = time.monotonic()
    try:
        for i, container_id in enumerate(ids):
            await asyncio.sleep(max(0.0, began + i / EXIT_RATE - time.monotonic()))
            async with docker._query(f"containers/{container_id}/kill", method="POST", params={"signal": "USR1"}):
                pass
    finally:
        await docker.close()


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


async def watch_all(daemon: Daemon, ids: list[str], shared: bool) -> tuple[dict[str, float], dict[str, float], dict]:
    hook_base = {"docker_url": daemon.url, "tls_ca_cert": daemon.extras()["ca_cert"],
                 "tls_client_cert": daemon.extras()["client_cert"], "tls_client_key": daemon.extras()["client_key"]}
    arrivals: dict[str, float] = {}
    statuses: dict[str, str] = {}
    died: dict[str, float] = {}  # when the daemon's own "die" event for a container reached us

    async def daemon_die_events() -> None:
        from remote_docker.clients import make_async_client

        docker = make_async_client(daemon.config())
        try:
            params = {"filters": json.dumps({"type": ["container"], "event": ["die"], "label": ["rd-bench=p2"]})}
            async with docker._query("events", params=params, timeout=aiohttp.ClientTimeout(total=None)) as response:
                async for line in response.content:
                    died[json.loads(line)["id"]] = time.time()
        finally:
            await docker.close()

    listener = asyncio.create_task(daemon_die_events())

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
    await release(daemon, ids)
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


def run_one(daemon: Daemon, n: int, shared: bool) -> dict:
    _raise_fd_limit()
    ids = start_containers(daemon, n)
    try:
        logging.getLogger("remote_docker").setLevel(logging.WARNING)  # container lines: not the point here
        arrivals, died, figures = asyncio.run(watch_all(daemon, ids, shared))
        finished = finished_at(daemon, ids)
        delays = [arrivals[c] - finished[c] for c in ids if c in arrivals]
        # the daemon's share: its own die event lags the exit as much when it is busy
        daemon_share = [died[c] - finished[c] for c in ids if c in died]
        ours = [arrivals[c] - died[c] for c in ids if c in died and c in arrivals]
        figures.update({"n": n, "shared_client": shared, "events": len(arrivals), "exits_per_s": EXIT_RATE,
                        "exit_to_event_s": {k: round(v, 3) for k, v in summary(delays).items()},
                        "exit_to_daemon_die_event_s": {k: round(v, 3) for k, v in summary(daemon_share).items()},
                        "die_event_to_trigger_event_s": {k: round(v, 3) for k, v in summary(ours).items()}})
        return figures
    finally:
        remove_containers(daemon)


def run_in_subprocess(daemon: Daemon, n: int, shared: bool, tls_buffer_kb: int | None = None) -> dict:
    """One row in a fresh process, so no row inherits the memory an earlier one left behind."""
    args = [sys.executable, __file__, str(daemon.state), str(daemon.port), str(n), "shared" if shared else "unshared"]
    env = {**os.environ, TLS_BUFFER_ENV: str(tls_buffer_kb)} if tls_buffer_kb else {k: v for k, v in os.environ.items() if k != TLS_BUFFER_ENV}
    done = subprocess.run(args, capture_output=True, text=True, check=False, env=env)
    if done.returncode:
        raise RuntimeError(f"P2 row n={n} shared={shared} failed: {done.stderr[-2000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "tls_read_buffer_kb": tls_buffer_kb or 256}


def _meets(row: dict) -> bool:
    return (row["rss_over_baseline_mb"] <= 150 and row["cpu_percent_of_one_core_waiting"] <= 5
            and row["exit_to_event_s"]["p99"] <= 1.0)


def run(daemon: Daemon, sizes: list[int], unshared_sizes: list[int]) -> Result:
    rows = []
    for n in sizes:
        rows.append(run_in_subprocess(daemon, n, shared=True))
        print(f"[p2] shared n={n}: {rows[-1]}", flush=True)
    # asyncio's 256 KiB read buffer per TLS connection is most of the memory: the documented setting
    rows.append(run_in_subprocess(daemon, sizes[-1], shared=True, tls_buffer_kb=TUNED_TLS_BUFFER_KB))
    print(f"[p2] shared n={sizes[-1]}, {TUNED_TLS_BUFFER_KB} KiB TLS buffers: {rows[-1]}", flush=True)
    for n in unshared_sizes:
        rows.append(run_in_subprocess(daemon, n, shared=False))
        print(f"[p2] one client per trigger n={n}: {rows[-1]}", flush=True)
    at_target = [r for r in rows if r["shared_client"] and r["n"] >= 1000]
    met = any(_meets(r) for r in at_target) if at_target else None
    return Result(
        name="P2 triggerer density",
        figures={"rows": rows},
        notes=[f"met at 1000 with {TLS_BUFFER_ENV}={r['tls_read_buffer_kb']}" for r in at_target if _meets(r)]
        + [f"missed at 1000 with {r['tls_read_buffer_kb']} KiB TLS buffers" for r in at_target if not _meets(r)],
        target="at 1000: <= 150 MB RSS over baseline, <= 5 % of one core waiting, p99 exit->event <= 1 s",
        met=met,
    )


if __name__ == "__main__":  # one row: python p2_density.py STATE PORT N shared|unshared
    state, port, count, mode = sys.argv[1:5]
    print(json.dumps(run_one(Daemon(Path(state), int(port)), int(count), mode == "shared")))

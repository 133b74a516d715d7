"""P3: log throughput and memory through the trigger's log path, against a raw aiodocker read.

A container writes N distinct lines of 100 bytes as fast as it can. Once it has exited, the
same log is read (a) by ContainerTrigger.run() with its logger writing to a file and (b) by a
raw aiodocker follow read writing to a file. Every line the trigger wrote is checked by
content: all N present, in order, none merged or split. RSS is sampled while the trigger reads.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from common import Daemon, PeakRSS, Result

from remote_docker.clients import make_async_client
from remote_docker.triggers import ContainerTrigger

LINE = 100  # bytes per line including the newline


def make_container(daemon: Daemon, lines: int) -> tuple[str, float]:
    client = daemon.client()
    script = (f"awk 'BEGIN {{ pad = sprintf(\"%{LINE - 12}s\", \"\"); gsub(/ /, \"x\", pad); "
              f"for (i = 1; i <= {lines}; i++) printf \"%010d %s\\n\", i, pad }}'")
    body = {"Image": "rd-test/busybox:latest", "Cmd": ["sh", "-c", script], "HostConfig": {"NetworkMode": "none"}}
    container_id = client.api.create_container_from_config(body)["Id"]
    started = time.monotonic()
    client.api.start(container_id)
    client.api.wait(container_id, timeout=3600)
    write_seconds = time.monotonic() - started
    client.close()
    return container_id, write_seconds


def trigger_read(daemon: Daemon, container_id: str, out: Path) -> tuple[float, PeakRSS]:
    """The trigger's lines rendered as JSON lines into a file, as the triggerer writes trigger logs."""
    import structlog

    hook = {"docker_url": daemon.url, **{f"tls_{k}": v for k, v in daemon.extras().items()}}
    with out.open("w") as handle:
        structlog.configure(
            processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso"),
                        structlog.processors.JSONRenderer()],
            logger_factory=structlog.WriteLoggerFactory(file=handle), cache_logger_on_first_use=False)
        trigger = ContainerTrigger(container_id, None, hook_params=hook)

        async def go() -> dict:
            async for event in trigger.run():
                return event.payload
            raise RuntimeError("no event")

        with PeakRSS() as sampler:
            started = time.monotonic()
            event = asyncio.run(go())
            seconds = time.monotonic() - started
    assert event["status"] == "exited", event
    return seconds, sampler


def raw_read(daemon: Daemon, container_id: str, out: Path) -> float:
    async def go() -> None:
        docker = make_async_client(daemon.config())
        try:
            container = docker.containers.container(container_id)
            with out.open("w") as handle:
                async for chunk in container.log(stdout=True, stderr=True, follow=True):
                    handle.write(chunk)
        finally:
            await docker.close()
            await docker.connector.close()

    started = time.monotonic()
    asyncio.run(go())
    return time.monotonic() - started


def check(out: Path, lines: int) -> dict:
    expected, bad = 1, 0
    with out.open() as handle:
        for raw in handle:
            record = json.loads(raw)
            if record.get("level") != "info":
                continue
            line = record["event"] + "\n"
            number, _, pad = line.rstrip("\n").partition(" ")
            if len(line) != LINE or not number.isdigit() or int(number) != expected or set(pad) != {"x"}:
                bad += 1
            expected += 1
    return {"lines_read": expected - 1, "lines_wrong": bad, "lines_expected": lines}


def run(daemon: Daemon, lines: int, workdir: Path) -> Result:
    container_id, write_seconds = make_container(daemon, lines)
    try:
        raw_seconds = raw_read(daemon, container_id, workdir / "raw.log")
        trigger_seconds, rss = trigger_read(daemon, container_id, workdir / "trigger.log")
        verdict = check(workdir / "trigger.log", lines)
    finally:
        client = daemon.client()
        client.api.remove_container(container_id, force=True)
        client.close()
    megabytes = lines * LINE / 1e6
    ratio = raw_seconds / trigger_seconds
    figures = {
        "lines": lines, "log_mb": round(megabytes, 1), "container_write_s": round(write_seconds, 2),
        "raw_aiodocker_s": round(raw_seconds, 2), "raw_mb_per_s": round(megabytes / raw_seconds, 1),
        "trigger_s": round(trigger_seconds, 2), "trigger_mb_per_s": round(megabytes / trigger_seconds, 1),
        "trigger_lines_per_s": round(lines / trigger_seconds),
        "trigger_vs_raw": round(ratio, 2), "rss_start_mb": round(rss.start_rss, 1), "rss_peak_mb": round(rss.peak, 1),
        "rss_growth_mb": round(rss.peak - rss.start_rss, 1),
        # "flat": no growth once the first 10 % of the read has warmed the allocator up
        "rss_growth_after_first_10pct_mb": round(rss.growth_after(0.1), 1), **verdict,
    }
    met = (ratio >= 0.5 and figures["rss_growth_after_first_10pct_mb"] <= 20 and verdict["lines_wrong"] == 0
           and verdict["lines_read"] == lines)
    print(f"[p3] {figures}", flush=True)
    return Result(name="P3 log throughput", figures=figures,
                  target=">= 50 % of raw throughput; memory flat (+-20 MB); no line lost, merged or split", met=met)

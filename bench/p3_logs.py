"""P3: log throughput and memory through the trigger's log path, against `docker logs -f`.

A container writes N distinct lines of 100 bytes as fast as it can. Once it has exited, the
same log is read (a) by ContainerTrigger.run() with Airflow's own trigger-runner logging (JSON
records written unbuffered, as a triggerer's runner sends them to its supervisor) into a file,
(b) by the docker CLI (`docker logs -f` over the same mutual TLS) into a file, and (c) by a raw
aiodocker follow read, for reference. Every line the trigger wrote is checked by content: all N
present, in order, none merged or split. RSS is sampled while the trigger reads.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

from common import Daemon, PeakRSS, Result

from remote_docker.engine.clients import make_async_client
from remote_docker.logs.follower import FLOOD_LINES, LINES_PER_RECORD
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
    """The trigger's lines as a triggerer's runner emits them: Airflow's processors, JSON, unbuffered."""
    from airflow.sdk.log import configure_logging, reset_logging

    with out.open("wb", buffering=0) as handle:
        reset_logging()
        configure_logging(json_output=True, output=handle, sending_to_supervisor=True)
        trigger = ContainerTrigger(container_id, None, hook_params=daemon.hook_params())

        async def go() -> dict:
            async for event in trigger.run():
                return event.payload
            raise RuntimeError("no event")

        with PeakRSS() as sampler:
            started = time.monotonic()
            event = asyncio.run(go())
            seconds = time.monotonic() - started
        reset_logging()
    assert event["status"] == "exited", event
    return seconds, sampler


def cli_read(daemon: Daemon, container_id: str, out: Path) -> float:
    """`docker logs -f` of the same container over the same mutual TLS."""
    import subprocess

    env = {"DOCKER_HOST": daemon.url, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(daemon.client_dir), "PATH": "/usr/bin:/bin"}
    started = time.monotonic()
    with out.open("wb") as handle:
        subprocess.run(["docker", "logs", "-f", container_id], stdout=handle, stderr=subprocess.STDOUT, env=env, check=True)
    return time.monotonic() - started


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
            if record.get("level") != "info" or record.get("logger") != "remote_docker.container":
                continue
            for text in record["event"].split("\n"):  # a flood shares records, a line each
                number, _, pad = text.partition(" ")
                if len(text) + 1 != LINE or not number.isdigit() or int(number) != expected or set(pad) != {"x"}:
                    bad += 1
                expected += 1
    return {"lines_read": expected - 1, "lines_wrong": bad, "lines_expected": lines}


REPEATS = 3  # this machine's timings vary by +-20 % from run to run: medians of interleaved reads


def run(daemon: Daemon, lines: int, workdir: Path) -> Result:
    container_id, write_seconds = make_container(daemon, lines)
    cli, trigger, verdicts, samplers = [], [], [], []
    try:
        raw_seconds = raw_read(daemon, container_id, workdir / "raw.log")
        for _ in range(REPEATS):
            cli.append(cli_read(daemon, container_id, workdir / "cli.log"))
            seconds, rss = trigger_read(daemon, container_id, workdir / "trigger.log")
            trigger.append(seconds)
            samplers.append(rss)
            verdicts.append(check(workdir / "trigger.log", lines))
    finally:
        client = daemon.client()
        client.api.remove_container(container_id, force=True)
        client.close()
    megabytes = lines * LINE / 1e6
    cli_s, trigger_s = statistics.median(cli), statistics.median(trigger)
    ratio = cli_s / trigger_s
    rss = samplers[-1]
    figures = {
        "lines": lines, "log_mb": round(megabytes, 1), "container_write_s": round(write_seconds, 2), "repeats": REPEATS,
        "docker_logs_f_s_median": round(cli_s, 2), "docker_logs_f_s_all": [round(x, 2) for x in cli],
        "docker_logs_f_mb_per_s": round(megabytes / cli_s, 1),
        "raw_aiodocker_s": round(raw_seconds, 2), "raw_mb_per_s": round(megabytes / raw_seconds, 1),
        "trigger_s_median": round(trigger_s, 2), "trigger_s_all": [round(x, 2) for x in trigger],
        "trigger_mb_per_s": round(megabytes / trigger_s, 1), "trigger_lines_per_s": round(lines / trigger_s),
        "trigger_vs_docker_logs_f": round(ratio, 2), "trigger_vs_raw_aiodocker": round(raw_seconds / trigger_s, 2),
        "rss_start_mb": round(rss.start_rss, 1), "rss_peak_mb": round(rss.peak, 1), "rss_growth_mb": round(rss.peak - rss.start_rss, 1),
        # "flat": no growth once the first 10 % of the read has warmed the allocator up
        "rss_growth_after_first_10pct_mb": round(max(r.growth_after(0.1) for r in samplers), 1),
        "lines_read": min(v["lines_read"] for v in verdicts), "lines_wrong": max(v["lines_wrong"] for v in verdicts),
        "lines_expected": lines,
    }
    met = (ratio >= 0.5 and figures["rss_growth_after_first_10pct_mb"] <= 20 and figures["lines_wrong"] == 0
           and figures["lines_read"] == lines)
    print(f"[p3] {figures}", flush=True)
    return Result(name="P3 log throughput", figures=figures,
                  target=">= 0.5 x the throughput of `docker logs -f` (medians); memory flat (+-20 MB); no line lost, merged or split",
                  met=met, notes=[f"more than {FLOOD_LINES} lines in one read of the stream share records ({LINES_PER_RECORD} "
                                  "lines at most each); fewer stay one line per record"])

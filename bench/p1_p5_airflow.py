"""P1 (slot release) and P5 (single-task latency) through a real scheduler + triggerer.

P1: N tasks each running a T-second container, [core] parallelism = W; once with
RemoteDockerOperator and once with the official DockerOperator (TLS to the same daemon).
P5: one short container task of each kind, its time split into phases from the task and
trigger logs (read over the REST log endpoint) and the container's own timestamps.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from urllib.parse import quote

from airflow_services import AirflowServices
from common import ROOT, Daemon, Result

DAGS = ROOT / "bench" / "dags"


def _ts(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _docker_ts(value: str) -> float:
    head, _, fraction = value.rstrip("Z").partition(".")
    return dt.datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc).timestamp() + float(f"0.{fraction or 0}")


def services_for(daemon: Daemon, home: Path, n: int, t: int, w: int) -> AirflowServices:
    return AirflowServices(
        airflow=Path(__import__("sys").executable).parent / "airflow", home=home, dags=DAGS,
        connection_json=daemon.connection_json(), parallelism=w,
        extra_env={"BENCH_N": str(n), "BENCH_T": str(t), "BENCH_DOCKER_URL": daemon.url,
                   "BENCH_CERTS": str(daemon.client_dir),
                   # requests would let these replace the official operator's CA (docker-py #2672)
                   "REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": ""},
    )


def tag_images(daemon: Daemon) -> None:
    client = daemon.client()
    for name in ("bench/p1-ours", "bench/p1-official"):
        client.api.tag("rd-test/busybox:latest", name, "1")
    client.close()


def run_dag(services: AirflowServices, daemon: Daemon, dag_id: str, image: str, timeout: float) -> dict:
    run_id = services.trigger(dag_id)
    started = time.monotonic()
    state = services.wait_run(dag_id, run_id, timeout=timeout)
    run = services.rest("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")
    client = daemon.client()
    containers = client.api.containers(all=True, filters={"ancestor": image})
    starts = sorted(_docker_ts(client.api.inspect_container(c["Id"])["State"]["StartedAt"]) for c in containers)
    for container in containers:
        client.api.remove_container(container["Id"], force=True)
    client.close()
    run_start = _ts(run["start_date"])
    return {"state": state, "makespan_s": round(_ts(run["end_date"]) - run_start, 1),
            "wall_s": round(time.monotonic() - started, 1), "containers": len(starts),
            "ramp_all_running_s": round(starts[-1] - run_start, 1) if starts else None,
            "first_container_s": round(starts[0] - run_start, 1) if starts else None}


def p1(daemon: Daemon, home: Path, n: int, t: int, w: int) -> Result:
    tag_images(daemon)
    services = services_for(daemon, home, n, t, w)
    services.start()
    try:
        ours = run_dag(services, daemon, "bench_p1_ours", "bench/p1-ours:1", timeout=n * t)
        official = run_dag(services, daemon, "bench_p1_official", "bench/p1-official:1", timeout=3 * n * t)
    finally:
        services.stop()
    speedup = official["makespan_s"] / ours["makespan_s"]
    ideal = n / w
    figures = {"n": n, "t_s": t, "parallelism": w, "ours": ours, "official": official, "speedup": round(speedup, 2),
               "ideal_speedup_n_over_w": ideal, "overhead_ours_s": round(ours["makespan_s"] - t, 1)}
    print(f"[p1] {figures}", flush=True)
    return Result(name="P1 slot release", figures=figures, target="speed-up >= 0.9 x N/W", met=speedup >= 0.9 * ideal)


def _log_items(services: AirflowServices, dag_id: str, run_id: str, task_id: str) -> list[dict]:
    path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/logs/1?full_content=true"
    return [item for item in services.rest("GET", path)["content"] if isinstance(item, dict) and item.get("timestamp")]


def _first(items: list[dict], text: str, after: float = 0.0) -> float | None:
    for item in items:
        stamp = _ts(item["timestamp"])
        if text in item.get("event", "") and stamp >= after:
            return stamp
    return None


def p5(daemon: Daemon, home: Path) -> Result:
    tag_images(daemon)
    services = services_for(daemon, home, 1, 1, 2)
    services.start()
    figures: dict = {}
    try:
        for flavour in ("ours", "official"):
            dag_id = f"bench_p5_{flavour}"
            services.trigger(dag_id)  # warm-up: first parse, image check
            time.sleep(0)
            runs = services.rest("GET", f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]
            services.wait_run(dag_id, runs[0]["dag_run_id"], timeout=120)
            run_id = services.trigger(dag_id)
            services.wait_run(dag_id, run_id, timeout=120)
            run = services.rest("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")
            ti = services.ti(dag_id, run_id, "one")
            items = _log_items(services, dag_id, run_id, "one")
            run_start, ti_end = _ts(run["start_date"]), _ts(ti["end_date"])
            row = {"run_start_to_end_s": round(ti_end - run_start, 2), "queued_to_worker_start_s": None}
            first_worker = _ts(items[0]["timestamp"]) if items else None
            if flavour == "ours":
                started = _first(items, "Started container")
                deferred = _first(items, "Pausing task as DEFERRED")
                picked = _first(items, "trigger ", after=deferred or 0)
                fired = _first(items, "Trigger fired event")
                resumed = _first(items, "Filling up the DagBag", after=fired or 0) or _first(items, "::group::Pre Execute", after=fired or 0)
                row.update({
                    "schedule_to_first_worker_log_s": round(first_worker - run_start, 2),
                    "worker_parse_pull_check_create_start_s": round(started - first_worker, 2),
                    "start_to_deferred_s": round(deferred - started, 2),
                    "deferred_to_trigger_pickup_s": round(picked - deferred, 2) if picked else None,
                    "trigger_pickup_to_event_s": round(fired - picked, 2) if picked and fired else None,
                    "event_to_resume_s": round(resumed - fired, 2) if resumed and fired else None,
                    "resume_to_done_s": round(ti_end - resumed, 2) if resumed else None,
                })
            else:
                row["schedule_to_first_worker_log_s"] = round(first_worker - run_start, 2)
                row["worker_total_s"] = round(ti_end - first_worker, 2)
            figures[flavour] = row
    finally:
        services.stop()
    print(f"[p5] {figures}", flush=True)
    return Result(name="P5 single-task latency", figures=figures, target="(breakdown; no target)",
                  notes=["ours: worker parse+image check+create+start, then Airflow's defer -> triggerer pickup and "
                         "event -> rescheduled resume; the resume is a second worker start (Airflow's cost)"])

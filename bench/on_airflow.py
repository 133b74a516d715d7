"""Benchmarks through a real scheduler + triggerer (LocalExecutor on SQLite; with ``bench/run --executor celery``
CeleryExecutor: a Redis broker, PostgreSQL, two Celery workers), ours against the official DockerOperator on the
same TLS daemon, in the same run.

P1 slot release: N tasks of T-second containers, [core] parallelism = W.
P5 single-task latency: one 1-second container task, run start to task success.
Short tasks: eight containers of 0 to 1 s at once, DAG run wall.
Burst: 200 immediate-exit tasks at the defaults: how many fail, and how long they all take.
"""

from __future__ import annotations

import datetime as dt
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from airflow_services import AirflowServices
from common import ROOT, Daemon, Result

DAGS = ROOT / "bench" / "dags"
REPEATS = 3
# bench/run --executor celery: the database and broker of the benchmark being run (``celery_backing``)
BACKING: dict[str, str] = {}


@contextmanager
def celery_backing() -> Iterator[None]:
    """While a benchmark runs on CeleryExecutor: a PostgreSQL and a Redis of its own, used by ``services_for``."""
    import broker
    import postgres

    work = Path(tempfile.mkdtemp(prefix="rd-bench-celery-"))
    work.chmod(0o755)  # PostgreSQL runs as its own user: every folder above its own must let it through
    try:
        BACKING.update(database_url=postgres.start(work / "postgres"), celery_broker_url=broker.start(work / "broker"))
        yield
    finally:
        BACKING.clear()
        broker.remove(work / "broker")
        postgres.remove(work / "postgres")
        shutil.rmtree(work, ignore_errors=True)


def _ts(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _docker_ts(value: str) -> float:
    head, _, fraction = value.rstrip("Z").partition(".")
    return dt.datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc).timestamp() + float(f"0.{fraction or 0}")


def services_for(daemon: Daemon, home: Path, parallelism: int, **env: str) -> AirflowServices:
    return AirflowServices(
        airflow=Path(sys.executable).parent / "airflow", home=home, dags=DAGS,
        connection_json=daemon.connection_json(), parallelism=parallelism, **BACKING,
        extra_env={"BENCH_DOCKER_URL": daemon.url, "BENCH_CERTS": str(daemon.client_dir),
                   # requests would let these replace the official operator's CA (docker-py #2672)
                   "REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": "",
                   # Airflow's own DAG-processor intervals: the tests' 5 s re-parse of the bench file costs
                   # ~0.3 of a core throughout, which on 2 cores slows every container start measured here
                   "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
                   "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "300", **env},
    )


def tag_images(daemon: Daemon) -> None:
    client = daemon.client()
    for name in ("bench/p1-ours", "bench/p1-official"):
        client.api.tag("rd-test/busybox:latest", name, "1")
    client.close()


def run_dag(services: AirflowServices, daemon: Daemon, dag_id: str, timeout: float, image: str | None = None) -> dict:
    """Trigger ``dag_id`` and wait; the run's makespan, task states and (with ``image``) container start times."""
    run_id = services.trigger(dag_id)
    state = services.wait_run(dag_id, run_id, timeout=timeout)
    run = services.rest("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")
    states = list(services.states(dag_id, run_id).values())
    row = {"state": state, "makespan_s": round(_ts(run["end_date"]) - _ts(run["start_date"]), 2), "start_date": run["start_date"],
           "tasks": len(states), "failed": sum(s != "success" for s in states), "run_id": run_id}
    if image:
        client = daemon.client()
        containers = client.api.containers(all=True, filters={"ancestor": image})
        starts = sorted(_docker_ts(client.api.inspect_container(c["Id"])["State"]["StartedAt"]) for c in containers)
        for container in containers:
            client.api.remove_container(container["Id"], force=True)
        client.close()
        run_start = _ts(run["start_date"])
        row.update(containers=len(starts), ramp_all_running_s=round(starts[-1] - run_start, 1) if starts else None,
                   first_container_s=round(starts[0] - run_start, 1) if starts else None)
    return row


def _repeated(services: AirflowServices, daemon: Daemon, dag_ids: list[str], timeout: float) -> dict[str, dict]:
    """Each DAG once to warm up (first parse, image check), then REPEATS times, interleaved."""
    for dag_id in dag_ids:
        run_dag(services, daemon, dag_id, timeout)
    rows: dict[str, list[dict]] = {dag_id: [] for dag_id in dag_ids}
    for _ in range(REPEATS):
        for dag_id in dag_ids:
            rows[dag_id].append(run_dag(services, daemon, dag_id, timeout))
    return {dag_id: {"makespan_s_median": statistics.median(r["makespan_s"] for r in found),
                     "makespan_s_all": [r["makespan_s"] for r in found], "failed": sum(r["failed"] for r in found)}
            for dag_id, found in rows.items()}


def p1(daemon: Daemon, home: Path, n: int, t: int, w: int) -> Result:
    tag_images(daemon)
    services = services_for(daemon, home, w, BENCH_N=str(n), BENCH_T=str(t))
    services.start()
    try:
        for warm_up in ("bench_p5_ours_from_trigger", "bench_p5_ours", "bench_p5_official"):  # first imports, first parse
            run_dag(services, daemon, warm_up, 120)
        from_trigger_runs = [run_dag(services, daemon, "bench_p1_ours_from_trigger", n * t, image="bench/p1-ours:1")
                             for _ in range(REPEATS)]
        # at defaults: the DAG's first run (no history: each worker follows its task 2 s), then its steady state
        default_first = run_dag(services, daemon, "bench_p1_ours", n * t, image="bench/p1-ours:1")
        default_runs = [run_dag(services, daemon, "bench_p1_ours", n * t, image="bench/p1-ours:1") for _ in range(REPEATS)]
        # Airflow's floor for that path: a worker starts each task and it defers at once (no container, none of ours)
        floor_runs = [run_dag(services, daemon, "bench_p1_airflow_floor", n * t) for _ in range(1 + REPEATS)][1:]
        official = run_dag(services, daemon, "bench_p1_official", 3 * n * t, image="bench/p1-official:1")
    finally:
        services.stop()
    from_trigger, default, floor = _median_run(from_trigger_runs), _median_run(default_runs), _median_run(floor_runs)
    speedup = official["makespan_s"] / from_trigger["makespan_s"]
    speedup_default = official["makespan_s"] / default["makespan_s"]
    figures = {"n": n, "t_s": t, "parallelism": w, "ours_start_from_trigger": from_trigger, "ours_default": default,
               "ours_default_first_run": default_first, "official": official, "speedup_start_from_trigger": round(speedup, 2),
               "speedup_default": round(speedup_default, 2),
               "speedup_default_first_run": round(official["makespan_s"] / default_first["makespan_s"], 2),
               "airflow_floor_worker_defers": floor,
               "speedup_airflow_floor_worker_defers": round(official["makespan_s"] / floor["makespan_s"], 2),
               "ideal_speedup_n_over_w": n / w}
    print(f"[p1] {figures}", flush=True)
    return Result(name="P1 slot release", figures=figures, met=speedup >= 0.9 * n / w and speedup_default >= 0.8 * n / w,
                  target=">= 9x the official operator (0.9 x N/W) on Airflow 3.3 with start_from_trigger=True, and >= 8x "
                         f"(0.8 x N/W) at defaults once the DAG has run (medians of {REPEATS}; each mode once warmed up)",
                  notes=["ours_start_from_trigger: started and ended in the triggerer, no worker (start_from_trigger=True)",
                         "ours_default: at defaults, the DAG's later runs: each task's last successful run was long, so "
                         "its worker defers at once and the trigger ends it",
                         "ours_default_first_run: at defaults, the DAG's first run: no history, each worker follows its "
                         "container 2 s (defer_after's default) before deferring",
                         "airflow_floor_worker_defers: Airflow alone on the defaults' path for a long task: a worker starts "
                         "each task, which defers at once to a T s timer that ends it in the triggerer (no container, "
                         "none of our code; bench_p1_airflow_floor): the best any worker-started task can do here"])


def _median_run(runs: list[dict]) -> dict:
    middle = sorted(runs, key=lambda r: r["makespan_s"])[len(runs) // 2]
    return {**middle, "makespan_s_all": [r["makespan_s"] for r in runs]}


def _three_ways(daemon: Daemon, home: Path, prefix: str, parallelism: int, timeout: float) -> dict:
    """``{prefix}_ours``, ``{prefix}_ours_from_trigger`` and ``{prefix}_official``, interleaved, with ratios."""
    tag_images(daemon)
    services = services_for(daemon, home, parallelism)
    services.start()
    try:
        rows = _repeated(services, daemon, [f"{prefix}_ours", f"{prefix}_ours_from_trigger", f"{prefix}_official"], timeout)
    finally:
        services.stop()
    official = rows[f"{prefix}_official"]["makespan_s_median"]
    ours, from_trigger = rows[f"{prefix}_ours"], rows[f"{prefix}_ours_from_trigger"]
    return {"ours_default": ours, "ours_start_from_trigger": from_trigger, "official": rows[f"{prefix}_official"],
            "repeats": REPEATS, "ratio_default_to_official": round(ours["makespan_s_median"] / official, 2),
            "ratio_start_from_trigger_to_official": round(from_trigger["makespan_s_median"] / official, 2)}


def p5(daemon: Daemon, home: Path) -> Result:
    figures = _three_ways(daemon, home, "bench_p5", 2, 120)
    print(f"[p5] {figures}", flush=True)
    return Result(name="P5 single-task latency", figures=figures, met=figures["ratio_default_to_official"] <= 1.2,
                  target="one 1 s container task, run start to success: ours (defaults) <= 1.2 x official (median of 3)",
                  notes=["start_from_trigger adds the triggerer's pickup and event loops (about 1 s each): the reason "
                         "it is opt-in"])


def short_tasks(daemon: Daemon, home: Path) -> Result:
    figures = _three_ways(daemon, home, "bench_short", 8, 180)
    print(f"[short] {figures}", flush=True)
    return Result(name="Short tasks", figures=figures, met=figures["ratio_default_to_official"] <= 1.1,
                  target="8 parallel tasks of 0-1 s, DAG run wall: ours (defaults) <= 1.1 x official (median of 3); "
                         "start_from_trigger reported beside it")


def burst(daemon: Daemon, home: Path, size: int = 200) -> Result:
    tag_images(daemon)
    services = services_for(daemon, home, 32, BENCH_BURST=str(size))  # Airflow's default parallelism
    services.start()
    try:
        row = run_dag(services, daemon, "bench_burst", 1800)
        client = daemon.client()
        left = client.api.containers(all=True, filters={"ancestor": "bench/p1-ours:1"})
        client.close()
    finally:
        services.stop()
    import airflow

    minor = ".".join(airflow.__version__.split(".")[:2])
    figures = {"tasks": row["tasks"], "failed": row["failed"], "makespan_s": row["makespan_s"], "containers_left": len(left),
               "airflow": airflow.__version__}
    print(f"[burst] {figures}", flush=True)
    # one result per Airflow minor (bench/results/burst-3.1.json ...): run it in each matrix venv (BENCHMARKS.md)
    return Result(name=f"Burst-{minor} of immediate exits, Airflow {minor}", figures=figures,
                  met=row["failed"] == 0 and row["tasks"] == size and not left,
                  target=f"{size} immediate-exit tasks, real scheduler + triggerer, defaults: 0 failed, 0 containers left")

"""The length sweep: ours at defaults against the official operator, same daemon, same run, real scheduler +
triggerer (LocalExecutor), per container length and kind of task. Each DAG's first run (the median of FIRST_RUNS, its
history removed in between) is reported apart from its steady state (the median of its REPEATS later runs), and
`airflow dags test` of the same DAGs beside them.

A task's time is from its DAG run's start to the task's end (its last try's, for the failing kind with a retry).
"""

from __future__ import annotations

import datetime as dt
import shutil
import statistics
import time
from pathlib import Path
from urllib.parse import quote

from common import Daemon, Result, images
from on_airflow import services_for, tag_images

KINDS = ("last_line", "decorated", "retrieve_output", "fails_with_a_retry", "skip_code")
FULL_LENGTHS = (0.5, 3.0, 8.0, 20.0, 60.0)
TARGETS = {"steady": 1.2, "first": 1.5, "dags_test": 1.2}
# later runs per DAG: Airflow's supervisor notices a task process's exit up to 5 s late (``[workers]
# min_heartbeat_interval``) when the process's sockets close before it can be reaped, which a skipped or failed task
# (reported at exit) meets in about one run of five with either operator (bench/ANALYSIS.md): a median of 3 flips on it
REPEATS = 5
# a DAG's first run, measured this often: its runs and our workers' history are removed in between (``_forget``)
FIRST_RUNS = 3


def _label(seconds: float) -> str:
    return f"{seconds:g}".replace(".", "_")


def _ts(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _task_times(services, dag_id: str, timeout: float) -> dict[str, float]:
    """Trigger ``dag_id``, wait, and return each task's seconds from the run's start to its end."""
    run_id = services.trigger(dag_id)
    services.wait_run(dag_id, run_id, timeout=timeout)
    path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"
    started = _ts(services.rest("GET", path)["start_date"])
    tis = services.rest("GET", f"{path}/taskInstances")["task_instances"]
    return {ti["task_id"]: round(_ts(ti["end_date"]) - started, 2) for ti in tis}


def _forget(services, home: Path, dag_ids: list[str]) -> None:
    """Make the DAGs' next run a first run again: their runs (Airflow's history of the tasks) deleted, and what our
    workers keep of earlier runs (``history``, under AIRFLOW_HOME: only this length's DAGs have run since the last)."""
    for dag_id in dag_ids:
        for found in services.rest("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]:
            services.rest("DELETE", f"/api/v2/dags/{dag_id}/dagRuns/{quote(found['dag_run_id'], safe='')}")
    shutil.rmtree(home / "remote-docker" / "history", ignore_errors=True)


def run(daemon: Daemon, home: Path, lengths: tuple[float, ...]) -> Result:
    tag_images(daemon)
    services = services_for(daemon, home, 6, SWEEP_LENGTHS=",".join(f"{x:g}" for x in lengths),
                            BENCH_PYTHON_IMAGE=images.PYTHON_IMAGE)
    services.start()
    cells: list[dict] = []
    dags_test: list[dict] = []
    try:
        services.wait_run("sweep_warm_triggerer", services.trigger("sweep_warm_triggerer"), timeout=120)
        for seconds in lengths:
            dag = {flavour: f"sweep_{_label(seconds)}s_{flavour}" for flavour in ("official", "ours")}
            timeout = 4 * seconds + 180
            firsts: dict[str, list[dict[str, float]]] = {"official": [], "ours": []}
            for attempt in range(FIRST_RUNS):  # interleaved: both see the same machine
                if attempt:
                    _forget(services, home, list(dag.values()))
                for flavour in ("official", "ours"):
                    firsts[flavour].append(_task_times(services, dag[flavour], timeout))
            runs: dict[str, list[dict[str, float]]] = {"official": [], "ours": []}
            for _ in range(REPEATS):
                for flavour in ("official", "ours"):
                    runs[flavour].append(_task_times(services, dag[flavour], timeout))
            for kind in KINDS:
                first = {flavour: statistics.median(r[kind] for r in firsts[flavour]) for flavour in firsts}
                steady = {flavour: statistics.median(r[kind] for r in runs[flavour]) for flavour in runs}
                cells.append({"seconds": seconds, "kind": kind, "official_first_s": first["official"],
                              "ours_first_s": first["ours"], "first_ratio": round(first["ours"] / first["official"], 2),
                              "official_steady_s": steady["official"], "ours_steady_s": steady["ours"],
                              "steady_ratio": round(steady["ours"] / steady["official"], 2),
                              "ours_first_all_s": [r[kind] for r in firsts["ours"]],
                              "official_first_all_s": [r[kind] for r in firsts["official"]],
                              "ours_steady_all_s": [r[kind] for r in runs["ours"]],
                              "official_steady_all_s": [r[kind] for r in runs["official"]]})
            walls = {}
            for flavour in ("official", "ours"):  # the whole DAG, its tasks one after the other, no executor
                began = time.monotonic()
                done = services.cli("dags", "test", dag[flavour], timeout=timeout * 3)
                walls[flavour] = round(time.monotonic() - began, 2)
                if done.returncode not in (0, 1):  # 1: the DAG run failed, as its failing task makes it
                    raise RuntimeError(f"dags test {dag[flavour]}: {done.stderr[-2000:]}")
            dags_test.append({"seconds": seconds, "official_s": walls["official"], "ours_s": walls["ours"],
                              "ratio": round(walls["ours"] / walls["official"], 2)})
    finally:
        services.stop()
    worst = {"steady": max(c["steady_ratio"] for c in cells), "first": max(c["first_ratio"] for c in cells),
             "dags_test": max(d["ratio"] for d in dags_test)}
    figures = {"lengths_s": list(lengths), "kinds": list(KINDS), "repeats": REPEATS, "first_runs": FIRST_RUNS,
               "worst": worst, "cells": cells, "dags_test": dags_test}
    print(f"[sweep] worst {worst}", flush=True)
    met = all(worst[key] <= TARGETS[key] for key in TARGETS) if tuple(lengths) == FULL_LENGTHS else None
    return Result(name="Sweep of task lengths", figures=figures, met=met,
                  target=f"ours at defaults <= {TARGETS['steady']}x the official in every steady-state cell and under "
                         f"`dags test`, <= {TARGETS['first']}x on a DAG's first run; lengths {list(FULL_LENGTHS)} s x "
                         f"{', '.join(KINDS)} (medians of {FIRST_RUNS} first runs and of {REPEATS} later runs)",
                  notes=["a task's time: from its DAG run's start to the task's end (its last try's)",
                         "before the first cell, one deferred task of ours warms the triggerer process (Airflow's "
                         "in-process Execution API, built at a trigger's first call, and our engine layer's import)",
                         "dags_test: the whole DAG under `airflow dags test` (its tasks one after the other)"])

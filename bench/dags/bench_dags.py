"""Benchmark DAGs of ours only: the burst and P6.

The DAGs that compare ours with the official operator are in files of one flavour each (p1_*.py, latency_*.py), as
a user's DAG file holds one operator's tasks: a task's worker parses its DAG's file at every start, so a shared file
would make each flavour pay the other's imports (and this file's 200 burst tasks: 0.5-0.7 s a start here)."""

from __future__ import annotations

import os

from airflow.sdk import DAG
from p1_common import START

from remote_docker.operators import RemoteDockerOperator

# A burst of immediate exits, at the defaults
BURST = int(os.environ.get("BENCH_BURST", "200"))

with DAG("bench_burst", schedule=None, start_date=START, catchup=False):
    for i in range(BURST):
        RemoteDockerOperator(task_id=f"b{i:03d}", image="bench/p1-ours:1", command=["echo", f"exit-{i}"],
                             network_mode="none", auto_remove="force")

# P6: a pool of three daemons, max_containers=10 each, started in the triggerer (no worker slot)
P6_N, P6_T = int(os.environ.get("BENCH_P6_N", "60")), int(os.environ.get("BENCH_P6_T", "10"))
P6 = {"image": "bench/p1-ours:1", "network_mode": "none", "remote_docker_conn_id": "rd_bench_pool", "auto_remove": "never",
      "start_from_trigger": True, "poll_interval": 1, "daemon_lost_timeout": 30,
      "command": ["sh", "-c", f"echo start; sleep {P6_T}; echo done"]}

with DAG("bench_p6", schedule=None, start_date=START, catchup=False, max_active_tasks=256):
    for i in range(P6_N):
        RemoteDockerOperator(task_id=f"p{i:02d}", **P6)

with DAG("bench_p6_one", schedule=None, start_date=START, catchup=False):
    RemoteDockerOperator(task_id="one", **P6)

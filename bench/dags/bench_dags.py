"""Benchmark DAGs: the same container work through RemoteDockerOperator and the official DockerOperator.

P1's DAGs are in files of their own (p1_*.py): a task's worker parses its DAG's file at every start, and this
file, with the burst's 200 tasks, takes 0.5-0.7 s to parse here, which would be counted 20 times per slot."""

from __future__ import annotations

import os

from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import DAG
from p1_common import START, TLS, URL

from remote_docker.operators import RemoteDockerOperator

ONE_SECOND = ["sh", "-c", "sleep 1; echo hi"]

with DAG("bench_p5_ours", schedule=None, start_date=START, catchup=False):
    RemoteDockerOperator(task_id="one", image="bench/p1-ours:1", command=ONE_SECOND, network_mode="none",
                         auto_remove="force")

with DAG("bench_p5_ours_from_trigger", schedule=None, start_date=START, catchup=False):
    RemoteDockerOperator(task_id="one", image="bench/p1-ours:1", command=ONE_SECOND, network_mode="none",
                         auto_remove="force", start_from_trigger=True)

with DAG("bench_p5_official", schedule=None, start_date=START, catchup=False):
    DockerOperator(task_id="one", image="bench/p1-official:1", command=ONE_SECOND, network_mode="none",
                   docker_url=URL, tls_verify=True, mount_tmp_dir=False, auto_remove="force", **TLS)

# Short tasks: 8 containers of 0 to 1 s, all at once
SHORT = [["sh", "-c", f"sleep {i / 7:.2f}; echo done-{i}"] for i in range(8)]

with DAG("bench_short_ours", schedule=None, start_date=START, catchup=False):
    for i, command in enumerate(SHORT):
        RemoteDockerOperator(task_id=f"s{i}", image="bench/p1-ours:1", command=command, network_mode="none",
                             auto_remove="force")

with DAG("bench_short_ours_from_trigger", schedule=None, start_date=START, catchup=False):
    for i, command in enumerate(SHORT):
        RemoteDockerOperator(task_id=f"s{i}", image="bench/p1-ours:1", command=command, network_mode="none",
                             auto_remove="force", start_from_trigger=True)

with DAG("bench_short_official", schedule=None, start_date=START, catchup=False):
    for i, command in enumerate(SHORT):
        DockerOperator(task_id=f"s{i}", image="bench/p1-official:1", command=command, network_mode="none",
                       docker_url=URL, tls_verify=True, mount_tmp_dir=False, auto_remove="force", **TLS)

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

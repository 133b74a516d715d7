"""P1 at defaults: a worker starts each task and follows it (from the task's history: not at all once it was long);
the trigger ends it."""

from __future__ import annotations

from airflow.sdk import DAG
from p1_common import SLEEP, START, N

from remote_docker.operators import RemoteDockerOperator

with DAG("bench_p1_ours", schedule=None, start_date=START, catchup=False):
    for i in range(N):
        RemoteDockerOperator(task_id=f"c{i:02d}", image="bench/p1-ours:1", command=SLEEP, network_mode="none",
                             auto_remove="never")

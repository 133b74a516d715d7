"""P1 started in the triggerer: no worker at all (Airflow >= 3.3)."""

from __future__ import annotations

from airflow.sdk import DAG
from p1_common import SLEEP, START, N

from remote_docker.operators import RemoteDockerOperator

with DAG("bench_p1_ours_from_trigger", schedule=None, start_date=START, catchup=False):
    for i in range(N):
        RemoteDockerOperator(task_id=f"c{i:02d}", image="bench/p1-ours:1", command=SLEEP, network_mode="none",
                             auto_remove="never", start_from_trigger=True)

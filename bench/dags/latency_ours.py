"""P5 and short tasks, ours (at defaults and with start_from_trigger): a file of one flavour (p1_common.py says why)."""

from __future__ import annotations

from airflow.sdk import DAG
from p1_common import ONE_SECOND, SHORT, START

from remote_docker.operators import RemoteDockerOperator

with DAG("bench_p5_ours", schedule=None, start_date=START, catchup=False):
    RemoteDockerOperator(task_id="one", image="bench/p1-ours:1", command=ONE_SECOND, network_mode="none",
                         auto_remove="force")

with DAG("bench_p5_ours_from_trigger", schedule=None, start_date=START, catchup=False):
    RemoteDockerOperator(task_id="one", image="bench/p1-ours:1", command=ONE_SECOND, network_mode="none",
                         auto_remove="force", start_from_trigger=True)

with DAG("bench_short_ours", schedule=None, start_date=START, catchup=False):
    for i, command in enumerate(SHORT):
        RemoteDockerOperator(task_id=f"s{i}", image="bench/p1-ours:1", command=command, network_mode="none",
                             auto_remove="force")

with DAG("bench_short_ours_from_trigger", schedule=None, start_date=START, catchup=False):
    for i, command in enumerate(SHORT):
        RemoteDockerOperator(task_id=f"s{i}", image="bench/p1-ours:1", command=command, network_mode="none",
                             auto_remove="force", start_from_trigger=True)

"""P5 and short tasks, the official DockerOperator: a file of one flavour (p1_common.py says why)."""

from __future__ import annotations

from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import DAG
from p1_common import ONE_SECOND, SHORT, START, TLS, URL

with DAG("bench_p5_official", schedule=None, start_date=START, catchup=False):
    DockerOperator(task_id="one", image="bench/p1-official:1", command=ONE_SECOND, network_mode="none",
                   docker_url=URL, tls_verify=True, mount_tmp_dir=False, auto_remove="force", **TLS)

with DAG("bench_short_official", schedule=None, start_date=START, catchup=False):
    for i, command in enumerate(SHORT):
        DockerOperator(task_id=f"s{i}", image="bench/p1-official:1", command=command, network_mode="none",
                       docker_url=URL, tls_verify=True, mount_tmp_dir=False, auto_remove="force", **TLS)

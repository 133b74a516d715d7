"""P1 with the official DockerOperator: each worker holds its slot while its container runs."""

from __future__ import annotations

from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import DAG
from p1_common import SLEEP, START, TLS, URL, N

with DAG("bench_p1_official", schedule=None, start_date=START, catchup=False):
    for i in range(N):
        DockerOperator(task_id=f"c{i:02d}", image="bench/p1-official:1", command=SLEEP, network_mode="none",
                       docker_url=URL, tls_verify=True, mount_tmp_dir=False, auto_remove="never", **TLS)

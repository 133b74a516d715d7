"""Benchmark DAGs: the same container work through RemoteDockerOperator and the official DockerOperator."""

from __future__ import annotations

import datetime as dt
import os

from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import DAG

from remote_docker.operators import RemoteDockerOperator

N = int(os.environ.get("BENCH_N", "20"))
T = int(os.environ.get("BENCH_T", "20"))
URL = os.environ.get("BENCH_DOCKER_URL", "tcp://127.0.0.1:2376")
CERTS = os.environ.get("BENCH_CERTS", "/nonexistent")
TLS = {"tls_ca_cert": f"{CERTS}/ca.pem", "tls_client_cert": f"{CERTS}/cert.pem", "tls_client_key": f"{CERTS}/key.pem"}
START = dt.datetime(2026, 1, 1)
SLEEP = ["sh", "-c", f"echo start; sleep {T}; echo done"]

with DAG("bench_p1_ours", schedule=None, start_date=START, catchup=False):
    for i in range(N):
        RemoteDockerOperator(task_id=f"c{i:02d}", image="bench/p1-ours:1", command=SLEEP, network_mode="none",
                             auto_remove="never")

with DAG("bench_p1_official", schedule=None, start_date=START, catchup=False):
    for i in range(N):
        DockerOperator(task_id=f"c{i:02d}", image="bench/p1-official:1", command=SLEEP, network_mode="none",
                       docker_url=URL, tls_verify=True, mount_tmp_dir=False, auto_remove="never", **TLS)

with DAG("bench_p5_ours", schedule=None, start_date=START, catchup=False):
    RemoteDockerOperator(task_id="one", image="bench/p1-ours:1", command=["echo", "hi"], network_mode="none",
                         auto_remove="force")

with DAG("bench_p5_official", schedule=None, start_date=START, catchup=False):
    DockerOperator(task_id="one", image="bench/p1-official:1", command=["echo", "hi"], network_mode="none",
                   docker_url=URL, tls_verify=True, mount_tmp_dir=False, auto_remove="force", **TLS)

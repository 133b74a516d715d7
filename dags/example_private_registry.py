"""Pulling from a private registry: the credentials live in an Airflow `docker` connection
(`docker_conn_id`, as with the official DockerOperator); the daemon connection stays separate."""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG

from remote_docker.operators import RemoteDockerOperator

# e.g. AIRFLOW_CONN_PRIVATE_REGISTRY='{"conn_type": "docker", "host": "registry.example.com", "login": "robot", "password": "..."}'
IMAGE = os.environ.get("EXAMPLE_PRIVATE_IMAGE", "registry.example.com/team/busybox:1")

with DAG("example_private_registry", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False,
         tags=["remote-docker", "example"]):
    RemoteDockerOperator(
        task_id="private_image",
        image=IMAGE,
        docker_conn_id="private_registry",
        pull="always",  # re-pull each run; "missing" (default) pulls only when absent
        command=["echo", "pulled with registry credentials"],
        network_mode="none",
        auto_remove="success",
    )

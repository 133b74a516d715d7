"""The one deferral scripts/matrix runs through a real scheduler + triggerer on every Airflow it supports."""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG, task

from remote_docker.operators import RemoteDockerOperator

IMAGE = os.environ.get("REMOTE_DOCKER_TEST_IMAGE", "rd-test/busybox:latest")

with DAG("rd_matrix", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False):
    deferred = RemoteDockerOperator(
        task_id="deferred", image=IMAGE, network_mode="none", defer_after=0, auto_remove="success",
        command=["sh", "-c", "echo streamed-by-the-triggerer; sleep 3; echo the-result"])

    @task
    def read_back(value: str) -> str:
        assert value == "the-result", repr(value)
        return value

    read_back(deferred.output)

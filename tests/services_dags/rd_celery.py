"""DAGs for tests/services/test_celery.py: the executor-sensitive paths at the defaults, on CeleryExecutor and
LocalExecutor alike."""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG

from remote_docker.operators import RemoteDockerOperator

IMAGE = os.environ.get("REMOTE_DOCKER_TEST_IMAGE", "rd-test/busybox:latest")
START = dt.datetime(2026, 1, 1)
BURST = int(os.environ.get("REMOTE_DOCKER_TEST_BURST", "40"))

# immediate exits at the defaults: each ends inside its worker's window
with DAG("rd_executor_burst", schedule=None, start_date=START, catchup=False):
    for i in range(BURST):
        RemoteDockerOperator(task_id=f"b{i:03d}", image=IMAGE, command=["echo", f"exit-{i}"], network_mode="none",
                             auto_remove="force")

# the worker defers at once, and the container's end resumes the task on a worker (a pickle is decoded only there):
# the path where the executor's stale "success" of the deferring try meets the resumed task (min_deferred_seconds)
with DAG("rd_executor_resume", schedule=None, start_date=START, catchup=False):
    for i in range(6):
        RemoteDockerOperator(task_id=f"r{i}", image=IMAGE, network_mode="none", defer_after=0, auto_remove="force",
                             command=["sh", "-c", f"sleep 1; printf 'S\"resumed-{i}\"\\np0\\n.' > /tmp/out.pickle"],
                             retrieve_output=True, retrieve_output_path="/tmp/out.pickle")

"""DAGs for ``bench/callpath.py``: one task each, at defaults."""

import os
from datetime import datetime

from airflow.sdk import DAG

from remote_docker.operators import RemoteDockerOperator

IMAGE = os.environ.get("REMOTE_DOCKER_TEST_IMAGE", "rd-test/busybox:latest")

for name, command in (("short", "echo done"), ("long", "sleep 6; echo done")):
    with DAG(f"callpath_{name}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
        RemoteDockerOperator(task_id="task", image=IMAGE, command=["sh", "-c", command], network_mode="none")

"""DAGs for tests/services/test_pool_ha.py: a pool of three daemons under two triggerers, on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

from airflow.sdk import DAG

from remote_docker.operators import RemoteDockerOperator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services_dags"))  # the worker-crash test operator
from pause_after_start import PauseAfterStartOnFirstTry

IMAGE = os.environ.get("REMOTE_DOCKER_TEST_IMAGE", "rd-test/busybox:latest")
START = dt.datetime(2026, 1, 1)


def ticking(task_id: str, seconds: int, **kwargs) -> RemoteDockerOperator:
    """Prints line1..lineN a second apart, then done-<task>: every line must reach the task's log."""
    script = f"i=1; while [ $i -le {seconds} ]; do echo line$i; i=$((i+1)); sleep 1; done; echo done-{task_id}"
    return RemoteDockerOperator(task_id=task_id, image=IMAGE, network_mode="none", command=["sh", "-c", script],
                                remote_docker_conn_id="rd_pool", defer_after=0, auto_remove="never", **kwargs)


with DAG("rd_ha_triggerers", schedule=None, start_date=START, catchup=False, max_active_tasks=64):
    for i in range(12):
        ticking(f"t{i:02d}", 40)

with DAG("rd_ha_daemon_loss", schedule=None, start_date=START, catchup=False, max_active_tasks=64):
    for i in range(9):
        ticking(f"long{i}", 60, retries=0)

with DAG("rd_ha_new_tasks", schedule=None, start_date=START, catchup=False, max_active_tasks=64):
    for i in range(6):
        RemoteDockerOperator(task_id=f"new{i}", image=IMAGE, network_mode="none", command=["echo", f"placed-{i}"],
                             remote_docker_conn_id="rd_pool", auto_remove="never")

with DAG("rd_ha_handover", schedule=None, start_date=START, catchup=False, max_active_tasks=64):
    for i in range(6):
        ticking(f"p{i}", 30, retries=0)

with DAG("rd_ha_worker_kill", schedule=None, start_date=START, catchup=False,
         default_args={"retries": 1, "retry_delay": dt.timedelta(seconds=1)}):
    PauseAfterStartOnFirstTry(task_id="reattach", image=IMAGE, network_mode="none", remote_docker_conn_id="rd_pool",
                              command=["sh", "-c", "echo container-up; sleep 20; echo finished-once"],
                              auto_remove="never")

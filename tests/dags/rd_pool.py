"""Tasks on a pool of daemons (tests/daemon/test_pool.py): spread, pinned, by label, and waiting for room."""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG

from remote_docker.operators import RemoteDockerOperator

IMAGE = os.environ.get("REMOTE_DOCKER_TEST_IMAGE", "rd-test/busybox:latest")
START = dt.datetime(2026, 1, 1)


def sh(task_id: str, script: str, **kwargs) -> RemoteDockerOperator:
    kwargs.setdefault("remote_docker_conn_id", "rd_pool")
    return RemoteDockerOperator(task_id=task_id, image=IMAGE, network_mode="none", command=["sh", "-c", script],
                                auto_remove="never", **kwargs)


with DAG("rd_pool", schedule=None, start_date=START, catchup=False):
    for i in range(9):
        sh(f"spread{i}", f"echo spread-{i}")
    sh("pinned", "echo pinned", daemon="d2")
    sh("by_label", "echo on-a-gpu-daemon", daemon_labels={"gpu": "true"})
    sh("deferred", "sleep 3; echo deferred-on-a-pool", defer_after=0)
    sh("no_such_label", "true", daemon_labels={"gpu": "false"})

with DAG("rd_pool_full", schedule=None, start_date=START, catchup=False):
    # every daemon of rd_pool_full holds one container already, and may hold one: the task waits for room
    sh("waits", "echo got-room", remote_docker_conn_id="rd_pool_full", poll_interval=1)

with DAG("rd_pool_down", schedule=None, start_date=START, catchup=False):
    sh("skips_the_dead", "echo placed-past-a-dead-daemon", remote_docker_conn_id="rd_pool_down")
    sh("none_reachable", "true", remote_docker_conn_id="rd_pool_dead")

with DAG("rd_pool_routed", schedule=None, start_date=START, catchup=False):
    # no daemon of their own: the routing file (an Airflow cluster policy) decides
    sh("routed_by_file", "echo routed")
    sh("told_by_the_dag", "echo pinned-here", daemon="d0")

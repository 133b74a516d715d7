"""Task instances for tests/daemon/test_build_prune.py to judge containers by, and the prune operator itself."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, task

from remote_docker.prune import RemoteDockerPruneOperator

START = dt.datetime(2026, 1, 1)

with DAG("rd_prune_states", schedule=None, start_date=START, catchup=False):
    @task
    def finished() -> None:
        """Its container, still running, is an orphan."""

    @task
    def alive() -> None:
        """The test sets it running again: its container must stay."""

    finished()
    alive()

with DAG("rd_prune_op", schedule=None, start_date=START, catchup=False):
    RemoteDockerPruneOperator(task_id="prune", remote_docker_conn_id="rd_prune_pool", older_than=dt.timedelta(seconds=1),
                              orphan_min_age=dt.timedelta(0))

"""The main example: a container on a remote Docker daemon over mutual TLS, deferred while it runs.

`count` asks to start in the triggerer: on Airflow >= 3.3 the triggerer starts its container,
streams its output into this task's log and, when it exits 0, ends the task with its last line as
the XCom; no worker slot is used at all. On older Airflow a worker starts it, follows it for
`defer_after` seconds, then frees its slot while the triggerer streams. `use_result` starts on a
worker (the default) and, being short, finishes there without deferring.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from remote_docker.operators import RemoteDockerOperator

with DAG(
    "example_remote_docker",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    tags=["remote-docker", "example"],
    doc_md=__doc__,
):
    count = RemoteDockerOperator(
        task_id="count",
        image="busybox:latest",
        remote_docker_conn_id="remote_docker_default",
        command=["sh", "-c", "for i in 1 2 3 4 5; do echo \"step $i of 5\"; sleep 1; done; echo 'warming up' >&2; echo 42"],
        network_mode="none",  # this example needs no network
        auto_remove="success",
        start_from_trigger=True,  # no worker at all (Airflow >= 3.3); a worker starts it on older releases
    )
    # The XCom of `count` is its last stdout line ("42"); stderr never becomes the XCom.
    RemoteDockerOperator(
        task_id="use_result",
        image="busybox:latest",
        command="echo 'count said {{ ti.xcom_pull(task_ids=\"count\") }}'",
        environment={"RUN_ID": "{{ run_id }}"},
        network_mode="none",
        auto_remove="success",
    ).set_upstream(count)

"""Results beyond the last log line: a JSON file read out of the container, all stdout lines,
inputs copied in without bind mounts, and exit codes that fail or skip a task."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from remote_docker.operators import RemoteDockerOperator

with DAG("example_outputs", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False,
         tags=["remote-docker", "example"], default_args={"network_mode": "none", "auto_remove": "success"}):
    # retrieve_output: the file is copied out with the Engine API and decoded on the worker
    RemoteDockerOperator(
        task_id="json_result",
        image="busybox:latest",
        command=["sh", "-c", "echo '{\"rows\": 3, \"status\": \"ok\"}' > /tmp/result.json"],
        retrieve_output=True,
        retrieve_output_path="/tmp/result.json",
        output_format="json",
    )
    # xcom_all: every stdout line, stderr excluded
    RemoteDockerOperator(task_id="all_lines", image="busybox:latest", xcom_all=True,
                         command=["sh", "-c", "echo alpha; echo noise >&2; echo beta"])
    # files: inputs reach a remote daemon through put_archive, no bind mount needed
    RemoteDockerOperator(
        task_id="files_in",
        image="busybox:latest",
        files={"/input/config.ini": "[job]\nname = example\n", "/input/data.csv": b"id,value\n1,10\n2,20\n"},
        command=["sh", "-c", "cat /input/config.ini; tail -n +2 /input/data.csv | wc -l"],
    )
    # exit codes: 3 fails the task (with the last lines in the error), 99 skips it
    RemoteDockerOperator(task_id="fails", image="busybox:latest", retries=0,
                         command=["sh", "-c", "echo 'about to fail' >&2; exit 3"])
    RemoteDockerOperator(task_id="skipped", image="busybox:latest", skip_on_exit_code=99,
                         command=["sh", "-c", "echo 'nothing to do today'; exit 99"])

"""The length sweep, the official DockerOperator and @task.docker (sweep_common.py)."""

from __future__ import annotations

from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import DAG, task
from sweep_common import DAEMON, DAG_ARGS, LENGTHS, PYTHON, dag_id, operator_kinds

for seconds in LENGTHS:
    with DAG(dag_id(seconds, "official"), **DAG_ARGS):
        operator_kinds(DockerOperator, seconds)

        # the decorator must be written out: Airflow strips that very line from the source it ships
        @task.docker(image=PYTHON, **DAEMON)
        def decorated(seconds: float) -> dict:
            import time

            time.sleep(seconds)
            return {"slept": seconds}

        decorated(seconds)

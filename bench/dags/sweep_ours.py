"""The length sweep, ours at defaults: RemoteDockerOperator and @task.remote_docker (sweep_common.py)."""

from __future__ import annotations

from airflow.sdk import DAG, task
from sweep_common import BUSYBOX, DAEMON, DAG_ARGS, LENGTHS, PYTHON, START, dag_id, operator_kinds

from remote_docker.operators import RemoteDockerOperator

# A fresh triggerer builds Airflow's in-process Execution API at its first trigger's first call (~3-5 s here,
# BENCHMARKS.md P5) and imports our engine layer once: one-time costs of the triggerer process, paid once before the
# sweep by one deferred task of ours, not by whichever cell defers first (a 3 s one; 0.5 s tasks never defer).
with DAG("sweep_warm_triggerer", schedule=None, start_date=START, catchup=False):
    RemoteDockerOperator(task_id="deferred", image=BUSYBOX, command=["sh", "-c", "sleep 1; echo done"], defer_after=0,
                         **DAEMON)

for seconds in LENGTHS:
    with DAG(dag_id(seconds, "ours"), **DAG_ARGS):
        operator_kinds(RemoteDockerOperator, seconds)

        # the decorator must be written out: Airflow strips that very line from the source it ships
        @task.remote_docker(image=PYTHON, **DAEMON)
        def decorated(seconds: float) -> dict:
            import time

            time.sleep(seconds)
            return {"slept": seconds}

        decorated(seconds)

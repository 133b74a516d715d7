"""The length sweep (bench/sweep.py): per container length, one DAG of five kinds of task with the official
DockerOperator / @task.docker and one with ours, the import being the only difference. Lengths come from
SWEEP_LENGTHS (seconds, comma separated)."""

from __future__ import annotations

import datetime as dt
import os

from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import DAG, task

from remote_docker.operators import RemoteDockerOperator

LENGTHS = [float(x) for x in os.environ.get("SWEEP_LENGTHS", "3").split(",") if x]
URL = os.environ.get("BENCH_DOCKER_URL", "tcp://127.0.0.1:2376")
CERTS = os.environ.get("BENCH_CERTS", "/nonexistent")
DAEMON = {"docker_url": URL, "tls_ca_cert": f"{CERTS}/ca.pem", "tls_client_cert": f"{CERTS}/cert.pem",
          "tls_client_key": f"{CERTS}/key.pem", "mount_tmp_dir": False, "network_mode": "none"}
BUSYBOX, PYTHON = "bench/p1-ours:1", os.environ.get("BENCH_PYTHON_IMAGE", "rd-test/python:3.11")
START = dt.datetime(2026, 1, 1)


# A fresh triggerer builds Airflow's in-process Execution API at its first trigger's first call (~3-5 s here,
# BENCHMARKS.md P5) and imports our engine layer once: one-time costs of the triggerer process, paid once before the
# sweep by one deferred task of ours, not by whichever cell defers first (a 3 s one; 0.5 s tasks never defer).
with DAG("sweep_warm_triggerer", schedule=None, start_date=START, catchup=False):
    RemoteDockerOperator(task_id="deferred", image=BUSYBOX, command=["sh", "-c", "sleep 1; echo done"], defer_after=0,
                         **DAEMON)


def label(seconds: float) -> str:
    return f"{seconds:g}".replace(".", "_")


for seconds in LENGTHS:
    for flavour, Operator in (("official", DockerOperator), ("ours", RemoteDockerOperator)):
        with DAG(f"sweep_{label(seconds)}s_{flavour}", schedule=None, start_date=START, catchup=False,
                 default_args={"retry_delay": dt.timedelta(seconds=0)}):
            Operator(task_id="last_line", image=BUSYBOX, command=["sh", "-c", f"sleep {seconds}; echo done"], **DAEMON)
            Operator(task_id="retrieve_output", image=PYTHON, retrieve_output=True, retrieve_output_path="/tmp/out.pickle",
                     command=["python3", "-c", f"import pickle, time; time.sleep({seconds}); "
                              "pickle.dump({'n': 1}, open('/tmp/out.pickle', 'wb'))"], **DAEMON)
            Operator(task_id="fails_with_a_retry", image=BUSYBOX, retries=1, command=["sh", "-c", f"sleep {seconds}; exit 3"],
                     **DAEMON)
            Operator(task_id="skip_code", image=BUSYBOX, skip_on_exit_code=7, command=["sh", "-c", f"sleep {seconds}; exit 7"],
                     **DAEMON)

            # the decorator must be written out: Airflow strips that very line from the source it ships
            if flavour == "official":
                @task.docker(image=PYTHON, **DAEMON)
                def decorated(seconds: float) -> dict:
                    import time

                    time.sleep(seconds)
                    return {"slept": seconds}
            else:
                @task.remote_docker(image=PYTHON, **DAEMON)
                def decorated(seconds: float) -> dict:
                    import time

                    time.sleep(seconds)
                    return {"slept": seconds}
            decorated(seconds)

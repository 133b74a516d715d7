"""Settings and tasks shared by the length sweep's DAG files (bench/sweep.py; not a DAG file): per container length,
one DAG of five kinds of task with the official DockerOperator / @task.docker (sweep_official.py) and one with ours
(sweep_ours.py), the import being the only difference. One file per flavour, as a user's DAG file holds one
operator's tasks (p1_common.py). Lengths come from SWEEP_LENGTHS (seconds, comma separated)."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

LENGTHS = [float(x) for x in os.environ.get("SWEEP_LENGTHS", "3").split(",") if x]
URL = os.environ.get("BENCH_DOCKER_URL", "tcp://127.0.0.1:2376")
CERTS = os.environ.get("BENCH_CERTS", "/nonexistent")
DAEMON = {"docker_url": URL, "tls_ca_cert": f"{CERTS}/ca.pem", "tls_client_cert": f"{CERTS}/cert.pem",
          "tls_client_key": f"{CERTS}/key.pem", "mount_tmp_dir": False, "network_mode": "none"}
BUSYBOX, PYTHON = "bench/p1-ours:1", os.environ.get("BENCH_PYTHON_IMAGE", "rd-test/python:3.11")
START = dt.datetime(2026, 1, 1)
DAG_ARGS = {"schedule": None, "start_date": START, "catchup": False, "default_args": {"retry_delay": dt.timedelta(seconds=0)}}


def dag_id(seconds: float, flavour: str) -> str:
    return f"sweep_{seconds:g}s_{flavour}".replace(".", "_")


def operator_kinds(Operator: Any, seconds: float) -> None:
    """The four kinds that are operators (the fifth, a decorated task, is written out in each flavour's file)."""
    Operator(task_id="last_line", image=BUSYBOX, command=["sh", "-c", f"sleep {seconds}; echo done"], **DAEMON)
    Operator(task_id="retrieve_output", image=PYTHON, retrieve_output=True, retrieve_output_path="/tmp/out.pickle",
             command=["python3", "-c", f"import pickle, time; time.sleep({seconds}); "
                      "pickle.dump({'n': 1}, open('/tmp/out.pickle', 'wb'))"], **DAEMON)
    Operator(task_id="fails_with_a_retry", image=BUSYBOX, retries=1, command=["sh", "-c", f"sleep {seconds}; exit 3"],
             **DAEMON)
    Operator(task_id="skip_code", image=BUSYBOX, skip_on_exit_code=7, command=["sh", "-c", f"sleep {seconds}; exit 7"],
             **DAEMON)

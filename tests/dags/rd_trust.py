"""Tasks whose containers strangers imitate: tests/daemon/test_trust.py starts the imitations before the run.

Each task fails its first try and succeeds on its second, so the second try looks for an earlier try's
container to reattach to; it must adopt none of the strangers', and its result is its own.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG

from remote_docker.operators import RemoteDockerOperator

IMAGE = os.environ.get("REMOTE_DOCKER_TEST_IMAGE", "rd-test/busybox:latest")
PYTHON = os.environ.get("REMOTE_DOCKER_TEST_PYTHON_IMAGE", "rd-test/python:3.11")
# the first try fails after a few seconds: time for the test to see the run's id and imitate its containers
FAIL_FIRST = "if [ {{ ti.try_number }} = 1 ]; then echo first-try-fails; sleep 6; exit 3; fi; "

with DAG("rd_trust", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False,
         default_args={"retries": 1, "retry_delay": dt.timedelta(0)}):
    RemoteDockerOperator(task_id="last_line", image=IMAGE, network_mode="none",
                         command=["sh", "-c", FAIL_FIRST + "echo own-result-{{ ti.try_number }}"])
    RemoteDockerOperator(
        task_id="pickled", image=PYTHON, network_mode="none", retrieve_output=True,
        retrieve_output_path="/tmp/result.pickle",
        command=["sh", "-c", FAIL_FIRST + "python3 -c \"import pickle; pickle.dump('own-pickle', open('/tmp/result.pickle', 'wb'))\""])

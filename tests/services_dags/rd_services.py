"""DAGs for tests/services/test_services.py (real scheduler + triggerer)."""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG
from pause_after_start import PauseAfterStartOnFirstTry

from remote_docker.operators import RemoteDockerOperator

IMAGE = os.environ.get("REMOTE_DOCKER_TEST_IMAGE", "rd-test/busybox:latest")
# from the environment, as a real secret would come from a secrets backend: never in the DAG source (stored in the DB)
SECRET = os.environ.get("REMOTE_DOCKER_TEST_SECRET", "unset")
START = dt.datetime(2026, 1, 1)


def sh(task_id: str, script: str, operator=RemoteDockerOperator, **kwargs) -> RemoteDockerOperator:
    return operator(task_id=task_id, image=IMAGE, network_mode="none", command=["sh", "-c", script], **kwargs)


with DAG("rd_slots", schedule=None, start_date=START, catchup=False):
    for name in ("first", "second"):
        sh(name, f"echo {name}-started; sleep 15; echo {name}-done", auto_remove="never")

with DAG("rd_mark_failed", schedule=None, start_date=START, catchup=False):
    sh("long", "trap 'echo got-sigterm; exit 143' TERM; echo running; while true; do echo tick; sleep 1; done",
       stop_timeout=5, auto_remove="never")

with DAG("rd_timeout", schedule=None, start_date=START, catchup=False):
    sh("slow", "echo slow-started; sleep 120", execution_timeout=dt.timedelta(seconds=10), auto_remove="never")

with DAG("rd_worker_kill", schedule=None, start_date=START, catchup=False,
         default_args={"retries": 1, "retry_delay": dt.timedelta(seconds=1)}):
    sh("reattach", "echo container-up; sleep 20; echo finished-once", operator=PauseAfterStartOnFirstTry,
       auto_remove="never")

REGISTRY = os.environ.get("REMOTE_DOCKER_TEST_REGISTRY", "127.0.0.1:5000")

with DAG("rd_masked", schedule=None, start_date=START, catchup=False):
    # the secret in stdout, stderr, the last line and a failure's tail; a registry password in a pull
    sh("masked", "echo secret=$TOKEN; echo err-secret=$TOKEN >&2; sleep 6; echo done", private_environment={"TOKEN": SECRET},
       auto_remove="force")
    # failing on a worker (the callback waits for its exception) and, on Airflow >= 3.3.1, from the triggerer
    sh("masked_fails", "echo secret=$TOKEN; echo err-secret=$TOKEN >&2; sleep 6; echo last=$TOKEN; exit 3",
       private_environment={"TOKEN": SECRET}, auto_remove="force", on_failure_callback=lambda context: None)
    sh("masked_fails_here", "echo secret=$TOKEN; sleep 6; echo last=$TOKEN; exit 3",
       private_environment={"TOKEN": SECRET}, auto_remove="force")
    # a 16 KiB log entry (the daemon's partial line) ending inside the secret, the worker deferring before the rest
    sh("straddles", "head -c 16376 /dev/zero | tr '\\0' x; printf '%.8s' \"$TOKEN\"; sleep 5; echo \"${TOKEN#????????}\"; echo done",
       private_environment={"TOKEN": SECRET}, defer_after=1, auto_remove="force")
    RemoteDockerOperator(task_id="private_pull", image=f"{REGISTRY}/rd/busybox:1", docker_conn_id="rd_registry", pull="always",
                         network_mode="none", command=["sh", "-c", "echo pulled; sleep 6; echo done"], auto_remove="force")

for action in ("success", "clear"):
    with DAG(f"rd_mark_{action}", schedule=None, start_date=START, catchup=False):
        # The first try loops until stopped; a try started by "clear" finishes at once.
        sh("loops", "trap 'echo got-sigterm; exit 143' TERM; echo running; "
           "if [ \"$TRY\" = 1 ]; then while true; do echo tick; sleep 1; done; fi; echo later-try",
           environment={"TRY": "{{ ti.try_number }}"}, stop_timeout=5, auto_remove="never")

with DAG("rd_triggerer_restart", schedule=None, start_date=START, catchup=False):
    # long enough to outlive a triggerer's shutdown, which waits up to 10 s for its triggers
    sh("survives", "i=1; while [ $i -le 40 ]; do echo tick$i; i=$((i+1)); sleep 1; done; echo all-done",
       auto_remove="never")

"""DAGs for tests/services/test_fast_path.py: where each task starts and ends, and what a downstream task reads."""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG, task

from remote_docker.operators import RemoteDockerOperator

IMAGE = os.environ.get("REMOTE_DOCKER_TEST_IMAGE", "rd-test/busybox:latest")
HANGING_REGISTRY = os.environ.get("REMOTE_DOCKER_TEST_HANGING_REGISTRY", "127.0.0.1:9")
START = dt.datetime(2026, 1, 1)
# every shape of value a last line / all lines can give, pushed by each kind of task
SCRIPT = "echo first; echo 'plain-string'"


def sh(task_id: str, script: str, **kwargs) -> RemoteDockerOperator:
    """Started in the triggerer unless told otherwise."""
    kwargs.setdefault("start_from_trigger", True)
    return RemoteDockerOperator(task_id=task_id, image=IMAGE, network_mode="none", command=["sh", "-c", script], **kwargs)


with DAG("rd_fast", schedule=None, start_date=START, catchup=False, params={"word": "rendered"}):
    pushed = [
        sh("in_triggerer", SCRIPT, auto_remove="success"),  # starts and ends in the triggerer
        sh("in_triggerer_all", SCRIPT, xcom_all=True),
        sh("in_triggerer_number", "echo 42"),
        sh("deferred_from_worker", SCRIPT, start_from_trigger=False, defer_after=0),  # ends in the triggerer
        sh("on_worker", SCRIPT, start_from_trigger=False),  # ends inside the worker's window
        sh("on_worker_all", SCRIPT, start_from_trigger=False, xcom_all=True),
        sh("on_worker_number", "echo 42", start_from_trigger=False),
        sh("in_triggerer_silent", "echo only-stderr >&2"),  # no stdout line: no XCom, as from a worker
        sh("on_worker_silent", "echo only-stderr >&2", start_from_trigger=False),
        sh("in_triggerer_fails", "echo doomed; exit 3", retries=0),  # a failure ends where it is followed too
        sh("templated_in_triggerer", "echo {{ params.word }}-$RUN", environment={"RUN": "{{ run_id }}"}),
    ]
    # a skip code ends the task as skipped where it is followed, unless a skip callback needs a worker
    skipping = [
        sh("in_triggerer_skips", "echo skipping; exit 7", skip_on_exit_code=7, auto_remove="force"),
        sh("deferred_skips", "echo skipping; exit 7", start_from_trigger=False, defer_after=0, skip_on_exit_code=[7]),
        sh("skips_with_callback", "echo skipping; exit 7", start_from_trigger=False, defer_after=0,
           skip_on_exit_code=[7], on_skipped_callback=lambda context: print("skip callback ran")),
    ]
    # a failure with a retry left goes up for retry from the triggerer; a failure callback needs a worker
    failing = [
        sh("fails_twice", "echo doomed; exit 4", start_from_trigger=False, defer_after=0, retries=1,
           retry_delay=dt.timedelta(seconds=1)),
        sh("fails_with_callback", "echo doomed; exit 4", start_from_trigger=False, defer_after=0, retries=0,
           on_failure_callback=lambda context: print("failure callback saw", type(context["exception"]).__name__)),
    ]
    mapped = RemoteDockerOperator.partial(task_id="mapped", image=IMAGE, network_mode="none", start_from_trigger=True).expand(
        command=[["sh", "-c", "echo map-a"], ["sh", "-c", "echo map-b"]])

    @task(trigger_rule="all_done")
    def read_back(ti=None) -> dict:
        """What a downstream task pulls from each, with its Python type."""
        names = [t.task_id for t in pushed if t.task_id != "in_triggerer_fails"]
        values = {name: ti.xcom_pull(task_ids=name) for name in names}
        values["mapped"] = list(ti.xcom_pull(task_ids="mapped"))
        return {name: [type(value).__name__, value] for name, value in values.items()}

    [*pushed, *skipping, *failing, mapped] >> read_back()


with DAG("rd_fast_kill_during_start", schedule=None, start_date=START, catchup=False):
    # the image's pull never answers: the user acts before any container exists
    RemoteDockerOperator(task_id="never_starts", image=f"{HANGING_REGISTRY}/rd/hangs:1", pull="always",
                         network_mode="none", command=["sh", "-c", "echo never"], start_from_trigger=True)

with DAG("rd_fast_triggerer_dies", schedule=None, start_date=START, catchup=False):
    sh("survives_start", "echo up; for i in 1 2 3 4 5 6 7 8; do echo tick$i; sleep 1; done; echo done-once")

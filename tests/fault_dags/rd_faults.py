"""DAGs for tests/services/test_service_faults.py: faults injected while containers run deferred.

Every container writes each line it prints to /tmp/out.txt too, so a test can compare the
task log with what the container itself says it wrote.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG

from remote_docker.operators import RemoteDockerOperator

IMAGE = os.environ.get("REMOTE_DOCKER_TEST_IMAGE", "rd-test/busybox:latest")
START = dt.datetime(2026, 1, 1)
HANDOVER_TASKS = 20
LOAD_TASKS = int(os.environ.get("REMOTE_DOCKER_LOAD_TASKS", "200"))


def numbered_lines(prefix: str, count: int, every: float = 0.5, then: str = "") -> str:
    """Shell: print ``<prefix>-line-1..count`` (also to /tmp/out.txt), one every ``every`` s; SIGTERM ends it with 143."""
    return (
        "trap 'echo got-sigterm; exit 143' TERM; "
        f"i=1; while [ $i -le {count} ]; do echo {prefix}-line-$i | tee -a /tmp/out.txt; sleep {every}; i=$((i+1)); done; "
        f"{then}"
    )


with DAG("rd_handover", schedule=None, start_date=START, catchup=False, max_active_tasks=64):
    for n in range(HANDOVER_TASKS):
        RemoteDockerOperator(
            task_id=f"h{n:02d}", image=IMAGE, network_mode="none", auto_remove="never",
            command=["sh", "-c", numbered_lines(f"h{n:02d}", 80, then=f"echo result-{n:02d} | tee -a /tmp/out.txt")],
        )

for flavour, conn_id in (("live", "rd_live"), ("plain", "rd_plain")):
    with DAG(f"rd_restart_{flavour}", schedule=None, start_date=START, catchup=False):
        for n in range(3):
            # try 1 runs long enough for the daemon to be restarted under it; a retry finishes at once
            RemoteDockerOperator(
                task_id=f"{flavour}{n}", image=IMAGE, network_mode="none", auto_remove="never",
                remote_docker_conn_id=conn_id, retries=1, retry_delay=dt.timedelta(seconds=1),
                environment={"TRY": "{{ ti.try_number }}"},
                command=["sh", "-c", f'if [ "$TRY" = 1 ]; then {numbered_lines(f"{flavour}{n}", 60)} fi; '
                                     f"echo result-{flavour}{n}"],
            )


GO_FILE = "/tmp/go"


with DAG("rd_removed", schedule=None, start_date=START, catchup=False):
    RemoteDockerOperator(task_id="victim", image=IMAGE, network_mode="none", auto_remove="never",
                         command=["sh", "-c", "echo waiting-to-be-removed; sleep 300"])


def load_case(i: int) -> dict:
    """Task ``i`` of the load DAG: a mix of durations, exit codes and outputs. Each container waits
    for the test to drop ``GO_FILE`` into it, so all of them are deferred at once first."""
    seconds = 1 + (i * 7) % 19  # 1..19 s after the go
    wait = f"while [ ! -f {GO_FILE} ]; do sleep 0.5; done; "
    kind = i % 10
    if kind == 0:
        return {"command": ["sh", "-c", f"{wait}sleep {seconds}; echo failing-{i}; exit 3"]}
    if kind == 1:
        return {"command": ["sh", "-c", f"{wait}sleep {seconds}; echo skipping-{i}; exit 7"]}
    if kind == 2:
        return {"command": ["sh", "-c", f"{wait}sleep {seconds}; echo '{{\"i\": {i}, \"square\": {i * i}}}' > /tmp/result.json"],
                "retrieve_output": True, "retrieve_output_path": "/tmp/result.json", "output_format": "json"}
    return {"command": ["sh", "-c", f"echo start-{i}; {wait}sleep {seconds}; echo out-{i}"]}


def expected_load_outcome(i: int) -> tuple[str, object]:
    """The state and XCom task ``i`` of the load DAG must end with."""
    kind = i % 10
    if kind == 0:
        return "failed", None
    if kind == 1:
        return "skipped", None
    if kind == 2:
        return "success", {"i": i, "square": i * i}
    return "success", f"out-{i}"


with DAG("rd_load", schedule=None, start_date=START, catchup=False, max_active_tasks=LOAD_TASKS):
    RemoteDockerOperator.partial(
        task_id="load", image=IMAGE, network_mode="none", auto_remove="force", skip_on_exit_code=7,
    ).expand_kwargs([load_case(i) for i in range(LOAD_TASKS)])

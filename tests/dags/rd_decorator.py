"""@task.remote_docker behaviours; tests/airflow/test_decorator.py checks each task."""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG, task

from remote_docker.lifecycle.spec import ContainerSpec

PYTHON = os.environ.get("REMOTE_DOCKER_TEST_PYTHON_IMAGE", "rd-test/python:3.11")
CLOUDPICKLE = os.environ.get("REMOTE_DOCKER_TEST_CLOUDPICKLE_IMAGE", "rd-test/python-cloudpickle:3.11")
BUSYBOX = os.environ.get("REMOTE_DOCKER_TEST_IMAGE", "rd-test/busybox:latest")
COMMON = {"network_mode": "none", "auto_remove": "force"}


with DAG("rd_decorator", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False):

    @task.remote_docker(image=PYTHON, **COMMON)
    def transform(rows: list[dict], factor: int = 2) -> dict:
        import sys

        total = sum(row["value"] for row in rows) * factor
        print(f"rows={len(rows)} python={sys.version_info[:2]}")
        return {"total": total, "rows": len(rows), "tags": {"a", "b"}}

    @task.remote_docker(image=PYTHON, multiple_outputs=True, **COMMON)
    def split() -> dict:
        return {"left": 1, "right": [2, 3]}

    @task.remote_docker(image=PYTHON, **COMMON)
    def double(x: int) -> int:
        return x * 2

    @task.remote_docker(image=PYTHON, **COMMON)
    def big_argument(blob: str) -> int:
        return len(blob)

    @task.remote_docker(image=PYTHON, **COMMON)
    def raises() -> None:
        def inner():
            raise ValueError("broken on purpose")

        inner()

    @task.remote_docker(image=PYTHON, **COMMON)
    def streams() -> str:
        import sys
        import time

        for i in range(3):
            print(f"progress {i}", flush=True)
            time.sleep(0.2)
        print("to stderr", file=sys.stderr)
        return "streamed"

    @task.remote_docker(image=PYTHON, serializer="json", **COMMON)
    def as_json(values: list) -> dict:
        return {"sum": sum(values)}

    @task.remote_docker(image=CLOUDPICKLE, serializer="cloudpickle", **COMMON)
    def with_cloudpickle(function, x: int) -> int:
        return function(x)  # the lambda argument only travels with cloudpickle

    @task.remote_docker(image=PYTHON, serializer="cloudpickle", **COMMON)
    def cloudpickle_missing() -> int:
        return 1

    @task.remote_docker(image=BUSYBOX, **COMMON)
    def no_python() -> int:
        return 1

    @task.remote_docker(image=PYTHON, **COMMON)
    def unserializable_result():
        import threading

        return threading.Lock()

    @task.remote_docker(image=PYTHON, user="65534", **COMMON)
    def as_nobody() -> int:
        import os

        return os.getuid()

    @task.remote_docker(image=PYTHON, **COMMON)
    def unreadable_argument(value) -> str:
        return "never"

    @task.remote_docker(image=PYTHON, serializer="json", **COMMON)
    def templated(greeting: str) -> str:
        return greeting.upper()

    transform([{"value": 1}, {"value": 2}, {"value": 3}], factor=10)
    split()
    double.expand(x=[1, 2, 3, 4, 5])
    big_argument("x" * (10 * 1024 * 1024))
    raises()
    streams()
    as_json([1, 2, 3])
    with_cloudpickle(lambda y: y * 3 + 1, 5)
    cloudpickle_missing()
    no_python()
    unserializable_result()
    as_nobody()
    templated("{{ run_id }}")
    # remote_docker is importable on the worker, not in the image: the container can't unpickle it
    unreadable_argument(ContainerSpec(image="x"))

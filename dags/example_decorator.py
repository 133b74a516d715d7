"""@task.remote_docker: Python functions run in containers on the remote daemon, mapped over inputs."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, task

with DAG("example_decorator", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False,
         tags=["remote-docker", "example"]):

    @task.remote_docker(image="python:3.11-slim", network_mode="none", auto_remove="success")
    def make_batches(n: int) -> list[list[int]]:
        return [list(range(i * 10, i * 10 + 10)) for i in range(n)]

    @task.remote_docker(image="python:3.11-slim", network_mode="none", auto_remove="success")
    def total(batch: list[int]) -> int:
        import statistics  # imports belong inside the function: only its source travels

        print(f"batch of {len(batch)}, mean {statistics.mean(batch)}")
        return sum(batch)

    @task.remote_docker(image="python:3.11-slim", network_mode="none", auto_remove="success", multiple_outputs=True)
    def summarize(totals: list[int]) -> dict:
        return {"grand_total": sum(totals), "batches": len(totals)}

    summarize(total.expand(batch=make_batches(4)))

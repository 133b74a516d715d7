"""Nightly clean-up of every daemon of the connection (a pool's included): exited containers of ours older
than a day, orphans (running containers whose task instance has finished), dangling images, build cache.
A container without remote-docker's labels is never touched. The report per daemon is the XCom;
`remote-docker prune --dry-run` shows the same from a shell."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from remote_docker.prune import RemoteDockerPruneOperator

with DAG("example_nightly_prune", schedule="@daily", start_date=dt.datetime(2026, 1, 1), catchup=False,
         tags=["remote-docker", "example", "maintenance"]):
    RemoteDockerPruneOperator(
        task_id="prune",
        older_than=dt.timedelta(hours=24),
        unused_images_older_than=dt.timedelta(days=14),  # opt-in: images no container uses, created 14+ days ago
    )

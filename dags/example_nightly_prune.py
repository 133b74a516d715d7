"""Nightly clean-up of every daemon of the connection (a pool's included): this Airflow's exited containers
older than a day and its orphans (running containers whose task instance has finished). Containers of
another deployment, or without remote-docker's proof, are never touched. Images and the build cache are
the whole daemon's, whoever made them: their clean-up is asked for by name (daemon_wide_...). The report
per daemon is the XCom; `remote-docker prune --dry-run` shows the same from a shell."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from remote_docker.prune import RemoteDockerPruneOperator

with DAG("example_nightly_prune", schedule="@daily", start_date=dt.datetime(2026, 1, 1), catchup=False,
         tags=["remote-docker", "example", "maintenance"]):
    RemoteDockerPruneOperator(
        task_id="prune",
        older_than=dt.timedelta(hours=24),
        daemon_wide_dangling_images=True,  # every dangling image on the daemon, whoever made it
        daemon_wide_unused_images_older_than=dt.timedelta(days=14),  # images no container uses, 14+ days old
    )

"""Pulling with expiring registry credentials, without a cron task that rewrites a connection.

`credential_helper` runs Docker's own `docker-credential-<name> get` on the worker for each pull, as the
docker CLI does, so any helper works: ecr-login, gcr, pass, osxkeychain... With the amazon provider
installed (`pip install 'airflow-provider-remote-docker[amazon]'`), `aws_conn_id` fetches ECR tokens
itself and keeps them until shortly before they expire. A refused pull fetches fresh ones once."""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG

from remote_docker.operators import RemoteDockerOperator

IMAGE = os.environ.get("EXAMPLE_PRIVATE_IMAGE", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/busybox:1")
HELPER = os.environ.get("EXAMPLE_CREDENTIAL_HELPER", "ecr-login")  # docker-credential-ecr-login on the workers

with DAG("example_credential_helper", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False,
         tags=["remote-docker", "example"]):
    RemoteDockerOperator(task_id="with_a_helper", image=IMAGE, credential_helper=HELPER, pull="always",
                         command=["echo", "pulled with a credential helper"], network_mode="none", auto_remove="success")

"""Build an image on the remote daemon, push it to your registry, then run it: no local Docker needed.

The build context here is inline; a folder on the workers works too (`context="/opt/airflow/jobs/report"`,
its .dockerignore honoured). The image id is the build's XCom."""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG

from remote_docker.build import RemoteDockerBuildOperator
from remote_docker.operators import RemoteDockerOperator

REGISTRY = os.environ.get("EXAMPLE_REGISTRY", "registry.example.com")
BASE = os.environ.get("EXAMPLE_BASE_IMAGE", "busybox:latest")
IMAGE = f"{REGISTRY}/team/report:{{{{ ds_nodash }}}}"

with DAG("example_build_then_run", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False,
         tags=["remote-docker", "example"]):
    build = RemoteDockerBuildOperator(
        task_id="build",
        context={"Dockerfile": f"FROM {BASE}\nCOPY report.sh /report.sh\nCMD [\"sh\", \"/report.sh\"]\n",
                 "report.sh": "echo \"report for $(date +%F)\"\necho done\n"},
        tag=IMAGE,
        push=True,
        docker_conn_id="private_registry",  # or credential_helper="ecr-login", or aws_conn_id=...
        network_mode="none",
    )
    run = RemoteDockerOperator(task_id="run", image=IMAGE, pull="always", docker_conn_id="private_registry",
                               network_mode="none", auto_remove="success")
    build >> run

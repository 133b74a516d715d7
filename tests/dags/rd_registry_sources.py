"""Pulls with credentials from Docker credential helpers and from ECR (tests/daemon/test_registry_sources.py).

One `airflow dags test` process runs them in order, so its credential cache carries from task to task:
the helper's password rotates between two pulls, and the second pull starts with the stale one."""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG, task

from remote_docker.operators import RemoteDockerOperator

REGISTRY = os.environ.get("REMOTE_DOCKER_TEST_REGISTRY", "127.0.0.1:5000")
IMAGE = f"{REGISTRY}/rd/busybox:1"


def pull(task_id: str, **kwargs) -> RemoteDockerOperator:
    return RemoteDockerOperator(task_id=task_id, image=kwargs.pop("image", IMAGE), pull="always", network_mode="none",
                                command=["echo", f"ran-{task_id}"], auto_remove="force", **kwargs)


@task
def rotate() -> None:
    """The registry's password changes, and the helper now answers with the new one."""
    import bcrypt

    new = os.environ["RD_ROTATED_PASSWORD"]
    users = {"robot": new, "AWS": os.environ["RD_ECR_PASSWORD"]}
    htpasswd = os.environ["RD_REGISTRY_HTPASSWD"]
    with open(f"{htpasswd}.new", "wb") as out:
        out.write(b"".join(f"{u}:".encode() + bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=5)) + b"\n"
                           for u, p in users.items()))
    os.replace(f"{htpasswd}.new", htpasswd)
    with open(os.environ["RD_HELPER_SECRET_FILE"], "w") as out:
        out.write(new)


with DAG("rd_registry_sources", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False):
    first = pull("helper_pull", credential_helper="rdtest")
    after = pull("helper_after_rotation", credential_helper="rdtest")
    via_extra = pull("helper_via_connection_extra", docker_conn_id="helper_conn")
    first >> rotate() >> after >> via_extra
    ecr = pull("ecr_pull", aws_conn_id="rd_ecr")
    ecr >> pull("ecr_cached", aws_conn_id="rd_ecr")
    via_extra >> ecr
    pull("helper_without_credentials", credential_helper="rdnone")
    pull("helper_not_installed", credential_helper="not-installed-here")
    pull("ecr_other_registry", aws_conn_id="rd_ecr_elsewhere")

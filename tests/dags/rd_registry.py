"""Pulls from a private registry with docker_conn_id credentials (tests/daemon/test_registry.py)."""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG

from remote_docker.build import RemoteDockerBuildOperator
from remote_docker.operators import RemoteDockerOperator

REGISTRY = os.environ.get("REMOTE_DOCKER_TEST_REGISTRY", "127.0.0.1:5000")
IMAGE = f"{REGISTRY}/rd/busybox:1"
# a registry the docker connection's login is not for: whatever a template points at, it gets no credentials
FOREIGN = os.environ.get("REMOTE_DOCKER_TEST_FOREIGN_REGISTRY", "127.0.0.1:5001")

with DAG("rd_registry", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False,
         params={"image": f"{FOREIGN}/team/collector:1", "tag": f"{FOREIGN}/team/collector:pushed"}):
    pulled = RemoteDockerOperator(task_id="pull_private", image=IMAGE, docker_conn_id="test_registry",
                                  network_mode="none", command="echo pulled-and-ran", auto_remove="force")
    forced = RemoteDockerOperator(task_id="force_pull", image=IMAGE, docker_conn_id="test_registry", force_pull=True,
                                  network_mode="none", command="echo forced", auto_remove="force")
    pulled >> forced
    RemoteDockerOperator(task_id="bad_password", image=f"{REGISTRY}/rd/busybox:1", docker_conn_id="bad_registry",
                         pull="always", network_mode="none", command="true")
    RemoteDockerOperator(task_id="unknown_image", image=f"{REGISTRY}/rd/not-pushed:1", docker_conn_id="test_registry",
                         network_mode="none", command="true")
    RemoteDockerOperator(task_id="foreign_image", image="{{ params.image }}", docker_conn_id="test_registry",
                         network_mode="none", command="true")
    RemoteDockerBuildOperator(task_id="foreign_push", context={"Dockerfile": "FROM rd-test/busybox:latest\n"},
                              tag=["{{ params.tag }}"], push=True, docker_conn_id="test_registry")

"""Builds on the remote daemon (tests/daemon/test_build_prune.py): from a mapping and from a folder, pushed to a
private registry and run from there; a failing step and a missing Dockerfile."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from airflow.sdk import DAG

from remote_docker.build import RemoteDockerBuildOperator
from remote_docker.operators import RemoteDockerOperator

REGISTRY = os.environ.get("REMOTE_DOCKER_TEST_REGISTRY", "127.0.0.1:5000")
BASE = os.environ.get("REMOTE_DOCKER_TEST_IMAGE", "rd-test/busybox:latest")
FOLDER = Path(__file__).parent / "data" / "build_ctx"

with DAG("rd_build", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False):
    built = RemoteDockerBuildOperator(
        task_id="from_mapping", tag=[f"{REGISTRY}/rd/built:1", f"{REGISTRY}/rd/built:latest"], push=True,
        docker_conn_id="test_registry", network_mode="none", build_args={"GREETING": "hello-{{ ds_nodash }}"},
        labels={"team": "data"},
        context={"Dockerfile": f"FROM {BASE}\nARG GREETING\nRUN echo \"$GREETING\" > /greeting\nCMD [\"cat\", \"/greeting\"]\n"})
    run_it = RemoteDockerOperator(task_id="run_the_pushed_image", image=f"{REGISTRY}/rd/built:1", pull="always",
                                  docker_conn_id="test_registry", network_mode="none", auto_remove="force")
    built >> run_it
    RemoteDockerBuildOperator(task_id="from_folder", context=str(FOLDER), tag="rd-test/from-folder:1", network_mode="none")
    RemoteDockerBuildOperator(task_id="failing_step", tag="rd-test/never:1", network_mode="none",
                              context={"Dockerfile": f"FROM {BASE}\nRUN echo about-to-fail && exit 3\n"})
    RemoteDockerBuildOperator(task_id="no_dockerfile", tag="rd-test/never:2", context={"app.py": "print(1)\n"})

"""Image pulls with registry credentials from an Airflow `docker` connection, against a real registry."""

from __future__ import annotations

import pytest
from conftest import AirflowEnv, Daemon, DagRunResult, Registry
from test_operator_dag import error_line


@pytest.fixture(scope="module")
def run(airflow_env: AirflowEnv, registry: Registry, daemon: Daemon) -> DagRunResult:
    client = daemon.client()
    for image in (f"{registry.host}/rd/busybox:1",):  # another test may have pulled it already
        if client.api.images(name=image):
            client.api.remove_image(image, force=True)
    client.close()
    return airflow_env.dags_test("rd_registry", extra_env={
        "REMOTE_DOCKER_TEST_REGISTRY": registry.host,
        "AIRFLOW_CONN_TEST_REGISTRY": registry.connection_json(),
        "AIRFLOW_CONN_BAD_REGISTRY": registry.connection_json(password="wrong-password"),
    })


def test_private_pull_with_progress_summary(run: DagRunResult, registry: Registry) -> None:
    task = run["pull_private"]
    assert task.state == "success" and task.xcom == "pulled-and-ran"
    text = task.text()
    assert f"Pulling {registry.host}/rd/busybox:1 from {registry.host}" in text
    assert "Pull complete" in text
    assert "Downloading" not in text, "byte-level progress is summarised, not logged"
    assert "registry-Pass-1" not in run.stdout


def test_force_pull_pulls_a_present_image(run: DagRunResult, registry: Registry) -> None:
    task = run["force_pull"]
    assert task.state == "success" and task.xcom == "forced"
    assert f"Pulling {registry.host}/rd/busybox:1" in task.text()


def test_bad_registry_password_names_the_registry(run: DagRunResult, registry: Registry) -> None:
    assert run["bad_password"].state == "failed"
    message = error_line(run, "bad_password")
    assert message.startswith(f"pulling {registry.host}/rd/busybox:1 from {registry.host} failed: ")
    assert message.endswith("the registry refused the credentials from docker_conn_id 'bad_registry', fetched twice; "
                            "check the login and password of connection 'bad_registry'")
    assert "refused the credentials from docker_conn_id 'bad_registry'; fetching fresh ones" in run["bad_password"].text()
    assert "wrong-password" not in run.stdout


def test_unknown_image_names_the_registry(run: DagRunResult, registry: Registry) -> None:
    assert run["unknown_image"].state == "failed"
    message = error_line(run, "unknown_image")
    assert message.startswith(f"pulling {registry.host}/rd/not-pushed:1 from {registry.host} failed: ")
    assert "not-pushed" in message

"""Image pulls with registry credentials from an Airflow `docker` connection, against a real registry."""

from __future__ import annotations

import base64
import http.server
import threading
from collections.abc import Iterator

import pytest
from conftest import ENGINE_KIND, AirflowEnv, Daemon, DagRunResult, Registry
from helpers import error_line


class Collector(http.server.BaseHTTPRequestHandler):
    """A registry that asks every client for a password and keeps every Authorization header it is sent."""

    seen: list[str] = []

    def _challenge(self) -> None:
        self.seen.append(self.headers.get("Authorization") or "")
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="collector"')
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _challenge

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def foreign() -> Iterator[tuple[str, list[str]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", Collector.seen
    server.shutdown()


@pytest.fixture(scope="module")
def run(airflow_env: AirflowEnv, registry: Registry, daemon: Daemon, foreign: tuple[str, list[str]]) -> DagRunResult:
    client = daemon.client()
    for image in (f"{registry.host}/rd/busybox:1",):  # another test may have pulled it already
        if client.api.images(name=image):
            client.api.remove_image(image, force=True)
    client.close()
    return airflow_env.dags_test("rd_registry", extra_env={
        "REMOTE_DOCKER_TEST_REGISTRY": registry.host,
        "REMOTE_DOCKER_TEST_FOREIGN_REGISTRY": foreign[0],
        "AIRFLOW_CONN_TEST_REGISTRY": registry.connection_json(),
        "AIRFLOW_CONN_BAD_REGISTRY": registry.connection_json(password="wrong-password"),
    })


def test_private_pull_with_progress_summary(run: DagRunResult, registry: Registry) -> None:
    task = run["pull_private"]
    assert task.state == "success" and task.xcom == "pulled-and-ran"
    text = task.text()
    assert f"Pulling {registry.host}/rd/busybox:1 from {registry.host}" in text
    assert ("Download complete" if ENGINE_KIND == "podman" else "Pull complete") in text  # a layer is in place
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


def test_a_templated_image_or_tag_on_another_registry_gets_no_credentials(run: DagRunResult, registry: Registry,
                                                                         foreign: tuple[str, list[str]]) -> None:
    host, seen = foreign
    assert run["foreign_image"].state == "failed" and run["foreign_push"].state == "failed"
    assert seen, "the daemon did ask the other registry"
    secret = base64.b64encode(f"{registry.user}:{registry.password}".encode()).decode()
    assert not any(secret in header or registry.password in header for header in seen), seen
    for task_id in ("foreign_image", "foreign_push"):
        assert (f"Not sending the credentials of docker_conn_id 'test_registry' to {host}: they are for {registry.host} "
                "(the connection's host)") in run[task_id].text()

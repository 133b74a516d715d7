"""Credentials from Docker credential helpers and from ECR, against a real registry (Debian's
docker-registry on 127.0.0.1 with TLS and htpasswd).

The ECR path talks to a local stand-in for the AWS API's GetAuthorizationToken only (clearly a
stand-in: a small HTTP server here); the registry it names is the real local one. The helpers are
real executables on the worker's PATH speaking Docker's credential-helper protocol."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import AirflowEnv, Daemon, DagRunResult, Registry
from helpers import error_line

ROTATED = "rotated-Pass-2"


class EcrStandIn(http.server.ThreadingHTTPServer):
    """Answers ecr:GetAuthorizationToken (AWS JSON 1.1) with the registry's AWS user; counts the calls."""

    def __init__(self, endpoint: str, password: str) -> None:
        self.endpoint, self.password, self.calls = endpoint, password, 0
        super().__init__(("127.0.0.1", 0), _EcrHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _EcrHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        server: EcrStandIn = self.server  # type: ignore[assignment]
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        assert self.headers.get("X-Amz-Target", "").endswith("GetAuthorizationToken"), self.headers
        server.calls += 1
        token = base64.b64encode(f"AWS:{server.password}".encode()).decode()
        body = json.dumps({"authorizationData": [{"authorizationToken": token, "expiresAt": time.time() + 12 * 3600,
                                                  "proxyEndpoint": server.endpoint}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def stand_ins(registry: Registry) -> Iterator[dict[str, EcrStandIn]]:
    found = {"here": EcrStandIn(f"https://{registry.host}", registry.ecr_password),
             "elsewhere": EcrStandIn("https://210987654321.dkr.ecr.eu-west-1.amazonaws.com", "unused")}
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in found.values()]
    for thread in threads:
        thread.start()
    yield found
    for server in found.values():
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def helpers(tmp_path_factory, registry: Registry) -> Path:
    """docker-credential-rdtest answers with the password in a file (and notes each call);
    docker-credential-rdnone has none, as a helper whose user never logged in."""
    folder = tmp_path_factory.mktemp("helpers")
    (folder / "secret").write_text(registry.password)
    (folder / "docker-credential-rdtest").write_text(f"""#!/usr/bin/python3
import json, sys
host = sys.stdin.read().strip()
with open({str(folder / 'calls')!r}, "a") as calls:
    calls.write(host + "\\n")
print(json.dumps({{"ServerURL": host, "Username": "robot", "Secret": open({str(folder / 'secret')!r}).read().strip()}}))
""")
    (folder / "docker-credential-rdnone").write_text("#!/bin/sh\necho 'credentials not found in native keychain'\nexit 1\n")
    for name in ("docker-credential-rdtest", "docker-credential-rdnone"):
        (folder / name).chmod(0o755)
    return folder


@pytest.fixture(scope="module")
def run(airflow_env: AirflowEnv, registry: Registry, daemon: Daemon, helpers: Path, stand_ins) -> Iterator[DagRunResult]:
    client = daemon.client()
    if client.api.images(name=f"{registry.host}/rd/busybox:1"):
        client.api.remove_image(f"{registry.host}/rd/busybox:1", force=True)
    client.close()
    aws = {"aws_access_key_id": "stand-in", "aws_secret_access_key": "stand-in", "region_name": "us-east-1"}
    try:
        yield airflow_env.dags_test("rd_registry_sources", extra_env={
            "PATH": f"{helpers}:{airflow_env.env['PATH']}",
            "REMOTE_DOCKER_TEST_REGISTRY": registry.host,
            "RD_ROTATED_PASSWORD": ROTATED, "RD_ECR_PASSWORD": registry.ecr_password,
            "RD_REGISTRY_HTPASSWD": str(registry.root / "htpasswd"), "RD_HELPER_SECRET_FILE": str(helpers / "secret"),
            "AIRFLOW_CONN_HELPER_CONN": json.dumps({"conn_type": "docker", "host": registry.host,
                                                    "extra": {"credential_helper": "rdtest"}}),
            "AIRFLOW_CONN_RD_ECR": json.dumps({"conn_type": "aws", "extra": {**aws, "endpoint_url": stand_ins["here"].url}}),
            "AIRFLOW_CONN_RD_ECR_ELSEWHERE": json.dumps({"conn_type": "aws",
                                                         "extra": {**aws, "endpoint_url": stand_ins["elsewhere"].url}}),
        })
    finally:
        registry.set_passwords(registry.password)  # as the other suites expect it


def test_a_credential_helper_pulls_as_the_docker_cli_would(run: DagRunResult, registry: Registry, helpers: Path) -> None:
    task = run["helper_pull"]
    assert task.state == "success" and task.xcom == "ran-helper_pull", task.text()[-3000:]
    assert f"Pulling {registry.host}/rd/busybox:1 from {registry.host} (credentials: credential helper " \
           "docker-credential-rdtest)" in task.text()
    assert (helpers / "calls").read_text().splitlines()[0] == registry.host, "the registry host went in on stdin"


def test_a_rotated_password_refreshes_the_stale_cache_once(run: DagRunResult, helpers: Path) -> None:
    task = run["helper_after_rotation"]
    assert task.state == "success", task.text()[-3000:]
    assert "refused the credentials from credential helper docker-credential-rdtest; fetching fresh ones" in task.text()
    via_extra = run["helper_via_connection_extra"]
    assert via_extra.state == "success" and "credential helper docker-credential-rdtest" in via_extra.text()
    # first pull, then the refresh after the rotation; the third pull used the fresh cached answer
    assert len((helpers / "calls").read_text().splitlines()) == 2


def test_ecr_tokens_come_from_the_amazon_provider_and_are_kept_until_they_expire(run: DagRunResult, stand_ins) -> None:
    for task_id in ("ecr_pull", "ecr_cached"):
        task = run[task_id]
        assert task.state == "success" and task.xcom == f"ran-{task_id}", task.text()[-3000:]
        assert "(credentials: ECR through aws_conn_id 'rd_ecr')" in task.text()
    assert stand_ins["here"].calls == 1, "the second pull reused the token"


def test_each_credential_failure_is_one_line_naming_the_registry_and_the_source(run: DagRunResult, registry: Registry) -> None:
    assert error_line(run, "helper_without_credentials") == (
        f"credential helper docker-credential-rdnone has no credentials for {registry.host} (exit code 1); log in with it "
        f"first, or run `echo {registry.host} | docker-credential-rdnone get` on this worker to see why")
    assert "keychain" not in error_line(run, "helper_without_credentials"), "what the helper printed stays out"
    assert error_line(run, "helper_not_installed") == (
        "credential helper docker-credential-not-installed-here is not on this worker's PATH; install it there or fix "
        "credential_helper")
    assert error_line(run, "ecr_other_registry") == (
        "ECR through aws_conn_id 'rd_ecr_elsewhere' issued tokens for https://210987654321.dkr.ecr.eu-west-1.amazonaws.com, "
        f"not for {registry.host}; check the image's registry and the AWS account")


def test_no_credential_reaches_a_log(run: DagRunResult, registry: Registry) -> None:
    for secret in (registry.password, ROTATED, registry.ecr_password):
        assert secret not in run.stdout


def test_a_pull_the_daemon_could_not_send_says_so_and_not_credentials() -> None:
    from remote_docker.daemon.registry import Source, pull_hint

    unreachable = ('Get "https://registry-1.docker.io/v2/": proxyconnect tcp: dial tcp 127.0.0.1:9: connect: '
                   "connection refused")
    assert pull_hint(unreachable, "docker.io", None, False).startswith(
        "the daemon can't reach docker.io (its own network, DNS or proxy settings), so the image must already be on it")
    missing = "manifest for busybox:nope not found: manifest unknown"
    assert pull_hint(missing, "docker.io", None, False) == \
        "check the image name, or set docker_conn_id / credential_helper for a private registry"
    source = Source(docker_conn_id="reg")
    assert pull_hint("unauthorized: authentication required", "r:5000", source, True).startswith(
        "the registry refused the credentials from docker_conn_id 'reg', fetched twice")

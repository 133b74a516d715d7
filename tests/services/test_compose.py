"""docker-compose.yaml: resolves, refers only to files that exist, never mounts a Docker socket,
and its connection names exactly the files the `certs` service writes."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml
from conftest import ROOT

from remote_docker.daemon import certs

LONG_RUNNING = ("postgres", "docker", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")


@pytest.fixture(scope="module")
def compose() -> dict:
    binary = shutil.which("docker-compose")
    if not binary:
        pytest.fail("docker-compose is not installed; run `apt-get install -y docker-compose`")
    env = {**os.environ, "AIRFLOW_JWT_SECRET": "test-secret", "AIRFLOW_FERNET_KEY": "test-key"}
    done = subprocess.run([binary, "-f", str(ROOT / "docker-compose.yaml"), "config"], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def binds(service: dict) -> list[tuple[Path, str]]:
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                found.append((Path(volume["source"]), volume["target"]))
        else:
            source, target = volume.split(":")[:2]
            if source.startswith(("/", ".")):
                found.append((Path(source), target))
    return found


def test_services_and_order(compose: dict) -> None:
    services = compose["services"]
    assert {*LONG_RUNNING, "certs", "airflow-init"} <= set(services)
    for name in LONG_RUNNING:
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        depends = services[name]["depends_on"]
        assert depends["certs"]["condition"] == "service_completed_successfully"
        assert depends["docker"]["condition"] == "service_healthy"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["airflow-init"]["condition"] == "service_completed_successfully"
        assert services[name]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert services["docker"]["depends_on"]["certs"]["condition"] == "service_completed_successfully"
    assert services["docker"]["image"].split(":")[0] == "docker" and "dind" in services["docker"]["image"]


def test_no_docker_socket_anywhere(compose: dict) -> None:
    text = (ROOT / "docker-compose.yaml").read_text()
    assert "docker.sock" not in "\n".join(line for line in text.splitlines() if not line.strip().startswith(("#", "test:")))
    for name, service in compose["services"].items():
        for source, _ in binds(service):
            assert not str(source).endswith(".sock"), f"{name} mounts a socket"


def test_referenced_files_exist(compose: dict) -> None:
    for name, service in compose["services"].items():
        if "build" in service:
            context = Path(service["build"]["context"])
            assert (context / service["build"].get("dockerfile", "Dockerfile")).exists(), name
        for source, _ in binds(service):
            # certs/ is filled by the `certs` service at start; everything else must be in the repo
            if ROOT / "certs" in (source, *source.parents):
                continue
            assert source.exists(), f"{name} mounts {source}, which does not exist"
    assert (ROOT / ".env.example").exists()


def test_no_log_server_ports_published(compose: dict) -> None:
    published = {str(p.get("published") if isinstance(p, dict) else p).split(":")[0]
                 for s in compose["services"].values() for p in s.get("ports", [])}
    assert published == {"8080"}


def test_connection_files_are_what_the_certs_service_writes(compose: dict, tmp_path: Path) -> None:
    services = compose["services"]
    # run the certs service's own command (its --out mapped onto a temporary folder)
    command = " ".join(services["certs"]["command"])
    generate = shlex.split(command.split("&&")[0])
    out_in_container = generate[generate.index("--out") + 1]
    (certs_host, certs_target), = [(s, t) for s, t in binds(services["certs"]) if t == out_in_container]
    sans = [generate[i + 1] for i, word in enumerate(generate) if word == "--san"]
    certs.generate(tmp_path, sans=sans)

    def host_path(service: dict, container_path: str) -> Path:
        for source, target in binds(service):
            if PurePosixPath(container_path).is_relative_to(target):
                relative = PurePosixPath(container_path).relative_to(target)
                return tmp_path / Path(source).relative_to(certs_host) / relative
        raise AssertionError(f"{container_path} is not mounted")

    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-triggerer"):
        connection = json.loads(services[name]["environment"]["AIRFLOW_CONN_REMOTE_DOCKER_DEFAULT"])
        assert connection["host"] == "tcp://docker:2376"
        for key in ("ca_cert", "client_cert", "client_private_key"):
            assert host_path(services[name], connection["extra"][key]).exists(), (name, key)
    # the daemon gets its own certificate and the CA certificate, never the CA key
    dind = services["docker"]
    assert dind["environment"]["DOCKER_TLS_CERTDIR"] == "/certs"
    mounted = {str(Path(s).relative_to(certs_host)) for s, _ in binds(dind) if certs_host in Path(s).parents}
    assert mounted == {"server", "ca/cert.pem"}
    for source, target in binds(dind):
        if certs_host in source.parents:
            assert (tmp_path / source.relative_to(certs_host)).exists() and target.startswith("/certs/")
    assert "docker" in certs.san_strings(certs._read_cert(tmp_path / "server" / "cert.pem"))
    assert certs_target == "/certs"


@pytest.mark.parametrize("empty", ["AIRFLOW_JWT_SECRET", "AIRFLOW_FERNET_KEY"])
def test_compose_refuses_to_start_without_either_secret(empty: str) -> None:
    """.env.example leaves both empty: a stack copied from it without filling them in does not start."""
    env = {**os.environ, "AIRFLOW_JWT_SECRET": "test-secret", "AIRFLOW_FERNET_KEY": "test-key", empty: ""}
    done = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yaml"), "config"], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode != 0 and f"set {empty} in .env" in done.stderr, done.stderr
    example = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert example["AIRFLOW_JWT_SECRET"] == "" and example["AIRFLOW_FERNET_KEY"] == ""


def test_task_logs_are_shared_by_every_airflow_service(compose: dict) -> None:
    for name, service in compose["services"].items():
        if name.startswith("airflow-"):
            assert (ROOT / "logs", "/opt/airflow/logs") in [(Path(s).resolve(), t) for s, t in binds(service)], name

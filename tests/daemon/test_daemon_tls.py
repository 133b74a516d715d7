"""Both clients against the real mutual-TLS daemon: success, and one clear line per failure."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from conftest import BUSYBOX_IMAGE, VENV_BIN, Daemon, run_cli

from remote_docker.daemon import certs
from remote_docker.daemon.connection import DaemonConfigError
from remote_docker.daemon.errors import DaemonError
from remote_docker.engine import versions
from remote_docker.engine.clients import (
    TLS_BUFFER_ENV,
    shared_client_count,
    small_tls_buffers,
    stream_tls_buffer_bytes,
    tls_read_buffer_bytes,
)
from remote_docker.hook import RemoteDockerHook


def hook_for(daemon: Daemon, url: str | None = None, **overrides) -> RemoteDockerHook:
    """A hook with no Airflow connection: everything from docker_url and tls_* overrides."""
    files = {"tls_ca_cert": str(daemon.client_dir / "ca.pem"), "tls_client_cert": str(daemon.client_dir / "cert.pem"),
             "tls_client_key": str(daemon.client_dir / "key.pem")}
    files.update(overrides)
    return RemoteDockerHook(remote_docker_conn_id=None, docker_url=url or daemon.url,
                            **{k: v for k, v in files.items() if v is not None})


def ping(hook: RemoteDockerHook, mode: str) -> dict:
    return hook.ping() if mode == "sync" else asyncio.run(hook.aping())


MODES = ["sync", "async"]


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("other-pki")
    certs.generate(out)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_ping_over_mutual_tls(daemon: Daemon, mode: str, monkeypatch) -> None:
    # requests would let these replace our CA (docker-py #2672); the pinned adapter ignores them.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    version = ping(hook_for(daemon), mode)
    assert version["ApiVersion"] and version["Os"] == "linux"


@pytest.mark.parametrize("mode", MODES)
def test_tls_hostname_override(daemon: Daemon, mode: str) -> None:
    # The URL says 127.0.0.1; the certificate is checked against the name "docker" instead.
    assert ping(hook_for(daemon, tls_hostname="docker"), mode)["Version"]


@pytest.mark.parametrize("mode", MODES)
def test_unknown_ca(daemon: Daemon, other_pki: Path, mode: str) -> None:
    with pytest.raises(DaemonError) as info:
        ping(hook_for(daemon, tls_ca_cert=str(other_pki / "client" / "ca.pem")), mode)
    assert str(info.value).startswith(f"connecting https://127.0.0.1:{daemon.port}: the daemon's server certificate is not signed by")
    assert "use the ca.pem of the CA that issued" in str(info.value)


@pytest.mark.parametrize("mode", MODES)
def test_hostname_mismatch(daemon: Daemon, mode: str) -> None:
    with pytest.raises(DaemonError, match=r"server certificate does not name 'elsewhere.example'; .* --san elsewhere.example"):
        ping(hook_for(daemon, tls_hostname="elsewhere.example"), mode)


@pytest.mark.parametrize("mode", MODES)
def test_client_certificate_from_another_ca(daemon: Daemon, other_pki: Path, mode: str) -> None:
    hook = hook_for(daemon, tls_client_cert=str(other_pki / "client" / "cert.pem"),
                    tls_client_key=str(other_pki / "client" / "key.pem"))
    with pytest.raises(DaemonError, match=r"rejected our client certificate; use a client certificate issued by the daemon's CA"):
        ping(hook, mode)


@pytest.mark.parametrize("mode", MODES)
def test_missing_client_certificate(daemon: Daemon, mode: str) -> None:
    # Only possible with verification explicitly off; the daemon still demands a client certificate.
    hook = RemoteDockerHook(remote_docker_conn_id=None, docker_url=daemon.url, tls_verify=False)
    with pytest.raises(DaemonError, match="the daemon requires a client certificate and none is configured; set client_cert"):
        ping(hook, mode)


@pytest.mark.parametrize("mode", MODES)
def test_plain_http_to_tls_port(daemon: Daemon, mode: str) -> None:
    hook = RemoteDockerHook(remote_docker_conn_id=None, docker_url=f"http://127.0.0.1:{daemon.port}")
    hook.overrides["tls"] = False
    with pytest.raises(DaemonError, match=r"that port speaks TLS; use tcp:// or https:// with ca_cert"):
        ping(hook, mode)


@pytest.fixture
def plain_http_server() -> Iterator[int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


@pytest.mark.parametrize("mode", MODES)
def test_tls_to_plain_http_port(daemon: Daemon, plain_http_server: int, mode: str) -> None:
    with pytest.raises(DaemonError, match=r"answered in plain HTTP, not TLS; point at its TLS port"):
        ping(hook_for(daemon, url=f"tcp://127.0.0.1:{plain_http_server}"), mode)


@pytest.mark.parametrize("mode", MODES)
def test_unreachable(daemon: Daemon, mode: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DaemonError) as info:
        ping(hook_for(daemon, url=f"tcp://127.0.0.1:{port}"), mode)
    assert str(info.value) == f"connecting https://127.0.0.1:{port}: connection refused; is dockerd listening there (check host and port)?"


def test_missing_connection_id() -> None:
    with pytest.raises(DaemonConfigError) as info:
        _ = RemoteDockerHook(remote_docker_conn_id="no_such_conn").config
    assert str(info.value) == ("connection 'no_such_conn' does not exist; create it (UI, `airflow connections add`, "
                               "or AIRFLOW_CONN_NO_SUCH_CONN)")


def test_connection_from_environment_uri_and_json(daemon: Daemon, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_RD_JSON", daemon.connection_json())
    from urllib.parse import quote
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in daemon.extras().items())
    monkeypatch.setenv("AIRFLOW_CONN_RD_URI", f"remote-docker://127.0.0.1:{daemon.port}?{query}")
    for conn_id in ("rd_json", "rd_uri"):
        ok, message = RemoteDockerHook(conn_id).test_connection()
        assert ok, message
        assert re.match(r"Connected to (Docker|Podman) \S+, Engine API [\d.]+-[\d.]+ at https://127\.0\.0\.1:\d+, "
                        r"speaking API [\d.]+$", message), message


def test_inline_pem_connection(daemon: Daemon, monkeypatch) -> None:
    inline = {k: Path(v).read_text() for k, v in daemon.extras().items()}
    monkeypatch.setenv("AIRFLOW_CONN_RD_INLINE", json.dumps({"conn_type": "remote_docker", "host": daemon.url, "extra": inline}))
    assert RemoteDockerHook("rd_inline").ping()["Version"]


def test_async_clients_are_shared_per_loop(daemon: Daemon) -> None:
    async def scenario() -> tuple[int, int, bool]:
        first, second = hook_for(daemon), hook_for(daemon)
        async with first.engine() as a, second.engine() as b:
            during = shared_client_count()
            same = a.docker is b.docker
            await asyncio.gather(*(a.version() for _ in range(20)))
        return during, shared_client_count(), same

    during, after, same = asyncio.run(scenario())
    assert (during, after, same) == (1, 0, True)


def test_follow_streams_get_a_small_tls_read_buffer_and_nothing_else_does(daemon: Daemon, monkeypatch) -> None:
    """asyncio's 256 KiB per TLS connection is most of what following a log costs: ours are small from the
    start (freeing a big one later would not give the memory back), other connections keep the default."""
    import asyncio.sslproto

    monkeypatch.setenv(TLS_BUFFER_ENV, "48")
    default = asyncio.sslproto.SSLProtocol.max_size
    client = daemon.client()
    container = client.api.create_container_from_config(
        {"Image": BUSYBOX_IMAGE, "Cmd": ["sh", "-c", "echo one; sleep 3; echo two"], "HostConfig": {"NetworkMode": "none"}})["Id"]
    client.api.start(container)

    asyncio.run(hook_for(daemon).aping())  # the daemon's version known: no request before the one measured

    async def follow(small: bool) -> tuple[int, bytes]:
        async with hook_for(daemon).engine() as engine:
            url = f"{engine.docker.docker_host}/v{await engine.api_version()}/containers/{container}/logs"
            with small_tls_buffers(stream_tls_buffer_bytes()) if small else contextlib.nullcontext():
                async with engine.docker.session.get(url, params={"follow": "1", "stdout": "1"}) as response:
                    size = len(response.connection.transport._ssl_protocol._ssl_buffer)
                    body = await response.read()  # TLS works through the small buffer
        return size, body

    async def both() -> list[tuple[int, bytes]]:
        return await asyncio.gather(follow(small=True), follow(small=False))  # a task (and context) each

    try:
        (small, body), (other, _) = asyncio.run(both())
    finally:
        client.api.remove_container(container, force=True)
        client.close()
    assert small == 48 * 1024 and other == default == asyncio.sslproto.SSLProtocol.max_size
    assert body.endswith(b"two\n") and b"one\n" in body


@pytest.mark.parametrize("value", ["8", "1000", "lots", "-64"])
def test_tls_read_buffer_setting_bad_values(value: str) -> None:
    with pytest.raises(ValueError, match=rf"{TLS_BUFFER_ENV}='{value}' is not valid; use a whole number of KiB from 16 to 256"):
        tls_read_buffer_bytes(value)
    assert tls_read_buffer_bytes(None) is None and tls_read_buffer_bytes("64") == 65536


def test_doctor(daemon: Daemon, docker_client: docker.DockerClient) -> None:
    env = {"AIRFLOW_CONN_REMOTE_DOCKER_DEFAULT": daemon.connection_json()}
    result = run_cli("doctor", env=env)
    assert result.returncode == 0, result.stderr
    report = dict(line.split(": ", 1) for line in result.stdout.strip().splitlines())
    assert report["daemon"] == f"https://127.0.0.1:{daemon.port}"
    assert report["tls"] == "mutual TLS, server certificate verified"
    assert report["tls peer"].startswith("CN=server (SANs localhost, 127.0.0.1")
    own = docker_client.version(api_version=False)
    spoken = min(versions.NEWEST, own["ApiVersion"], key=versions.key)
    assert report["api version"] == (f"{spoken} (negotiated; the daemon speaks {own['MinAPIVersion']}-{own['ApiVersion']}, "
                                     f"remote-docker {versions.OLDEST}-{versions.NEWEST})")
    assert report["engine"].endswith(own["Version"])
    pinned = run_cli("doctor", env={"AIRFLOW_CONN_REMOTE_DOCKER_DEFAULT": daemon.connection_json(api_version=spoken)})
    assert f"api version: {spoken} (set by api_version;" in pinned.stdout, pinned.stderr
    assert "client certificate expires" in report


def test_doctor_reads_a_connection_from_the_environment_without_importing_airflow(daemon: Daemon, tmp_path: Path) -> None:
    """Airflow's import is most of a second-long `doctor`: a JSON `AIRFLOW_CONN_...` is read as Airflow reads it, with
    the same report; a secrets backend Airflow would ask first sends it through Airflow again."""
    probe = ("import sys\nfrom remote_docker import cli\ncode = cli.main(['doctor'])\n"
             "print('airflow imported:', 'airflow' in sys.modules)\nsys.exit(code)")
    env = {"AIRFLOW_CONN_REMOTE_DOCKER_DEFAULT": daemon.connection_json(), "AIRFLOW_HOME": str(tmp_path)}
    fast = subprocess.run([str(VENV_BIN / "python"), "-c", probe], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    assert fast.returncode == 0, fast.stderr
    assert fast.stdout.strip().splitlines()[-1] == "airflow imported: False"
    assert f"daemon: https://127.0.0.1:{daemon.port}" in fast.stdout and "tls: mutual TLS, server certificate verified" in fast.stdout
    (tmp_path / "airflow.cfg").write_text("[secrets]\nbackend = airflow.secrets.local_filesystem.LocalFilesystemBackend\n")
    asked = subprocess.run([str(VENV_BIN / "python"), "-c", probe], capture_output=True, text=True, timeout=120,
                           env={**os.environ, **env})
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.strip().splitlines()[-1] == "airflow imported: True"


def test_doctor_failure_is_one_line(daemon: Daemon, other_pki: Path) -> None:
    env = {"AIRFLOW_CONN_REMOTE_DOCKER_DEFAULT": daemon.connection_json(ca_cert=str(other_pki / "ca" / "cert.pem"))}
    result = run_cli("doctor", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("remote-docker doctor: connecting https://127.0.0.1:")
    missing = run_cli("doctor", "--conn-id", "nope")
    assert missing.returncode == 2
    assert missing.stderr.strip().endswith("connection 'nope' does not exist; create it (UI, `airflow connections add`, or AIRFLOW_CONN_NOPE)")


def test_doctor_finds_a_connection_made_in_airflows_database(daemon: Daemon, airflow_env) -> None:
    """Made with `airflow connections add` (as the UI makes them): the CLI finds it as a task does."""
    added = airflow_env.run("connections", "add", "rd_made_in_db", "--conn-json", daemon.connection_json())
    assert added.returncode == 0, added.stderr
    found = run_cli("doctor", "--conn-id", "rd_made_in_db", env={"AIRFLOW_HOME": airflow_env.env["AIRFLOW_HOME"]})
    assert found.returncode == 0, found.stderr
    assert f"daemon: https://127.0.0.1:{daemon.port}" in found.stdout
    assert "RFC3986" not in found.stderr + found.stdout
    broken = run_cli("doctor", "--conn-id", "rd_broken", env={"AIRFLOW_CONN_RD_BROKEN": '{"conn_type": "remote_docker", '})
    assert broken.returncode == 2
    assert broken.stderr.strip().startswith("remote-docker doctor: AIRFLOW_CONN_RD_BROKEN does not parse as a connection "
                                            "(JSONDecodeError:")

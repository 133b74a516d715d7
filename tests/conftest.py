"""Shared fixtures: a real Docker daemon over mutual TLS, locally built images, an Airflow home.

Nothing here mocks Docker or Airflow. A test that needs the daemon fails (never skips) when
the daemon can't be started, in CI and locally alike.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

ROOT = Path(__file__).resolve().parents[1]
# Airflow reads its home at import: give the test process a private one, never ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="rd-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
sys.path.insert(0, str(ROOT / "scripts"))
import tls_dockerd  # noqa: E402

from remote_docker.connection import DaemonConfig, build_config  # noqa: E402
from remote_docker.hook import make_sync_client  # noqa: E402

BUSYBOX_IMAGE = "rd-test/busybox:latest"
VENV_BIN = Path(sys.executable).parent


@dataclass
class Daemon:
    state: Path
    port: int

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def certs(self) -> Path:
        return self.state / "certs"

    @property
    def client_dir(self) -> Path:
        return self.certs / "client"

    def extras(self, **more) -> dict:
        return {
            "ca_cert": str(self.client_dir / "ca.pem"),
            "client_cert": str(self.client_dir / "cert.pem"),
            "client_key": str(self.client_dir / "key.pem"),
            **more,
        }

    def config(self, **more) -> DaemonConfig:
        return build_config(host=self.url, extras=self.extras(**more), source="test daemon")

    def connection_json(self, **more) -> str:
        return json.dumps({"conn_type": "remote_docker", "host": self.url, "extra": self.extras(**more)})

    def client(self) -> docker.DockerClient:
        return make_sync_client(self.config())


def _busybox_tar() -> bytes:
    """A rootfs of busybox-static with its applets linked (skipping the `busybox` name itself)."""
    busybox = shutil.which("busybox")
    if not busybox:
        pytest.fail("busybox is not installed; run `apt-get install -y busybox-static`")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder in ("bin", "tmp", "etc", "work"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in applets:
            if applet == "busybox":
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    return buffer.getvalue()


def build_busybox_image(client: docker.DockerClient) -> None:
    client.api.import_image_from_data(_busybox_tar(), repository="rd-test/busybox", tag="latest",
                                      changes=["ENV PATH=/bin", "WORKDIR /work"])


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    """A dockerd requiring mutual TLS on 127.0.0.1, with the busybox test image built."""
    reuse = os.environ.get("REMOTE_DOCKER_TEST_STATE")
    state = Path(reuse) if reuse else Path(tempfile.mkdtemp(prefix="rd-"))
    try:
        if reuse and (state / "dockerd.ownpid").exists():
            port = int((state / "dockerd.port").read_text())
        else:
            environment = tls_dockerd.start(state, None)
            port = int(environment["DOCKER_HOST"].rsplit(":", 1)[1])
    except SystemExit as err:  # the harness reports start failures with SystemExit
        pytest.fail(f"could not start the test Docker daemon: {err}")
    found = Daemon(state=state, port=port)
    client = found.client()
    if not client.api.images(name=BUSYBOX_IMAGE):
        build_busybox_image(client)
    yield found
    client.close()
    if not reuse:
        tls_dockerd.stop(state)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def docker_client(daemon: Daemon) -> Iterator[docker.DockerClient]:
    client = daemon.client()
    yield client
    client.close()


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the installed `remote-docker` console script."""
    return subprocess.run([str(VENV_BIN / "remote-docker"), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)

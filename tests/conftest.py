"""Shared fixtures: a real Docker daemon over mutual TLS, locally built images, an Airflow home.

Nothing here mocks Docker or Airflow. A test that needs the daemon fails (never skips) when
the daemon can't be started, in CI and locally alike.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

ROOT = Path(__file__).resolve().parents[1]
# Airflow reads its home at import: give the test process a private one, never ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="rd-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
sys.path.insert(0, str(ROOT / "scripts"))
import engines  # noqa: E402
import images  # noqa: E402
import tls_dockerd  # noqa: E402
from airflow_services import AirflowServices  # noqa: E402

from remote_docker.daemon import ownership  # noqa: E402
from remote_docker.daemon.ownership import Deployment  # noqa: E402

ENGINE = engines.chosen()  # REMOTE_DOCKER_ENGINE: every daemon the tests start is this engine (scripts/engines.py)
ENGINE_KIND = engines.ENGINES[ENGINE].kind
BUSYBOX_IMAGE = images.BUSYBOX_IMAGE
PYTHON_IMAGE = images.PYTHON_IMAGE
CLOUDPICKLE_IMAGE = images.CLOUDPICKLE_IMAGE
IMAGE_PYTHON = images.IMAGE_PYTHON
VENV_BIN = Path(sys.executable).parent


Daemon = tls_dockerd.RunningDaemon


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    """A dockerd requiring mutual TLS on 127.0.0.1, with the test images built."""
    reuse = os.environ.get("REMOTE_DOCKER_TEST_STATE")
    state = Path(reuse) if reuse else Path(tempfile.mkdtemp(prefix="rd-"))
    try:
        if reuse and (state / "dockerd.ownpid").exists():
            port = int((state / "dockerd.port").read_text())
        else:
            environment = engines.start(None, state, None)
            port = int(environment["DOCKER_HOST"].rsplit(":", 1)[1])
    except SystemExit as err:  # the harness reports start failures with SystemExit
        pytest.fail(f"could not start the test Docker daemon: {err}")
    found = Daemon(state=state, port=port)
    client = found.client()
    images.build(client)
    yield found
    client.close()
    if not reuse:
        tls_dockerd.remove(state)


@dataclass
class Pool:
    """Three TLS daemons on loopback sharing one CA, so one client certificate reaches all of them."""

    daemons: list[Daemon]

    def extras(self) -> dict:
        return self.daemons[0].extras()

    def connection_json(self, **member_settings: dict) -> str:
        """A pool connection: ``extra.daemons`` named d0, d1, d2; ``member_settings``: per name, e.g.
        ``d0={"max_containers": 2}``; without any, a comma-separated host list."""
        if not member_settings:
            return json.dumps({"conn_type": "remote_docker", "host": ",".join(d.url for d in self.daemons),
                               "extra": self.extras()})
        daemons = [{"url": d.url, "name": f"d{i}", **member_settings.get(f"d{i}", {})} for i, d in enumerate(self.daemons)]
        return json.dumps({"conn_type": "remote_docker", "host": "", "extra": {**self.extras(), "daemons": daemons}})

    def stop(self, index: int) -> None:
        tls_dockerd.stop(self.daemons[index].state)

    def start(self, index: int) -> None:
        engines.start(None, self.daemons[index].state, self.daemons[index].port)


@pytest.fixture(scope="session")
def pool(daemon: Daemon) -> Iterator[Pool]:
    """The session's daemon and two more, each with its own port, data and certificates from the same CA."""
    more: list[Daemon] = []
    try:
        for _ in range(2):
            state = Path(tempfile.mkdtemp(prefix="rd-pool-"))
            environment = engines.start(None, state, None, ca_from=daemon.state)
            more.append(Daemon(state=state, port=int(environment["DOCKER_HOST"].rsplit(":", 1)[1])))
            client = more[-1].client()
            images.build(client, python=False)
            client.close()
        yield Pool([daemon, *more])
    finally:
        for extra in more:
            tls_dockerd.remove(extra.state)


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server of its own (Debian's, in a temp dir, on 127.0.0.1): the metadata DB production runs."""
    import postgres as harness

    state = Path(tempfile.mkdtemp(prefix="rd-pg-"))
    try:
        yield harness.start(state)
    except SystemExit as err:
        pytest.fail(f"could not start PostgreSQL: {err}")
    finally:
        harness.remove(state)


@pytest.fixture
def docker_client(daemon: Daemon) -> Iterator[docker.DockerClient]:
    client = daemon.client()
    yield client
    client.close()


# What differs between engines shows in these (docs/engines.md): `scripts/test-engines` runs them on the
# Docker 29 stand-in and on Podman (the whole suite runs on the default engine); a module, or one test of one
ENGINE_SENSITIVE = {
    "test_operator_dag", "test_decorator", "test_build_prune", "test_faults", "test_outages", "test_pool",
    "test_trust", "test_daemon_tls", "test_registry", "test_examples", "test_deferral", "test_fast_path",
    "test_service_faults.py::test_triggerer_sigkill_with_20_deferred_tasks",
}
# CI's quick form of them on each other engine (`scripts/test-engines --quick`): a task's whole life, the
# decorator, logs under faults (the cut stream), outages and kills, build and prune. Trust, TLS, pools, registries
# and the examples repeat those engine paths and run in the full form (docs/engines.md, last runs)
ENGINE_QUICK = {"test_operator_dag", "test_decorator", "test_build_prune", "test_faults", "test_outages"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by what it needs, so `-m "not airflow"` or `-m "not slow"` gives a quick loop, and the
    engine-sensitive ones (`-m engines`)."""
    for item in items:
        module = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
        if module.removesuffix(".py") in ENGINE_SENSITIVE or f"{module}::{item.name}" in ENGINE_SENSITIVE:
            item.add_marker(pytest.mark.engines)
        # the operator DAG's [window] run follows on the worker with the same watch and engine calls the [deferred]
        # run's trigger makes: the quick form runs [deferred] only
        if module.removesuffix(".py") in ENGINE_QUICK and "[window" not in item.nodeid:
            item.add_marker(pytest.mark.engines_quick)
        used = set(getattr(item, "fixturenames", ()))
        if used & {"daemon", "docker_client", "registry", "airflow_env", "services", "pool"}:
            item.add_marker(pytest.mark.daemon)
        if used & {"airflow_env", "services"}:
            item.add_marker(pytest.mark.airflow)
        if used & {"postgres"}:
            item.add_marker(pytest.mark.slow)
        if "services" in used:
            item.add_marker(pytest.mark.slow)  # a real scheduler, dag-processor, api-server and triggerer


# REMOTE_DOCKER_TEST_EXECUTOR=celery runs every services test on CeleryExecutor (the official compose file's: a
# Redis broker, PostgreSQL, two Celery workers) instead of LocalExecutor; tests/services/test_celery.py always does
EXECUTOR = os.environ.get("REMOTE_DOCKER_TEST_EXECUTOR", "local").lower()
if EXECUTOR not in ("local", "celery"):
    raise SystemExit(f"REMOTE_DOCKER_TEST_EXECUTOR={EXECUTOR!r}: use 'local' or 'celery'")


@contextmanager
def running_services(daemon: Daemon, home: Path, dags: Path, *, parallelism: int = 1,
                     extra_env: dict[str, str] | None = None, database_url: str | None = None,
                     celery: bool | None = None) -> Iterator[AirflowServices]:
    """Real api-server, scheduler, dag-processor and triggerer against ``daemon``: LocalExecutor on PostgreSQL at
    ``database_url`` (see ``postgres``), else SQLite; or, with ``celery`` (default: REMOTE_DOCKER_TEST_EXECUTOR),
    CeleryExecutor with a Redis broker, two Celery workers and PostgreSQL (one of its own if none is given)."""
    import broker
    import postgres as database

    celery = EXECUTOR == "celery" if celery is None else celery
    own = Path(tempfile.mkdtemp(prefix="rd-celery-")) if celery else None
    if own is not None:
        own.chmod(0o755)  # PostgreSQL runs as its own user: it must get through to its folder
    try:
        if own is not None:
            database_url = database_url or database.start(own / "postgres")
        found = AirflowServices(
            airflow=VENV_BIN / "airflow", home=home, dags=dags, connection_json=daemon.connection_json(),
            parallelism=parallelism, database_url=database_url,
            celery_broker_url=broker.start(own / "broker") if own is not None else None,
            extra_env={"REMOTE_DOCKER_TEST_IMAGE": BUSYBOX_IMAGE, **(extra_env or {})})
        try:
            found.start()
            yield found
        finally:
            found.stop()
    except SystemExit as err:  # the harness could not start PostgreSQL or Redis
        pytest.fail(f"could not start the services' database or broker: {err}")
    finally:
        if own is not None:
            broker.remove(own / "broker")
            database.remove(own / "postgres")
            shutil.rmtree(own, ignore_errors=True)


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the installed `remote-docker` console script."""
    return subprocess.run([str(VENV_BIN / "remote-docker"), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


# --------------------------------------------------------------------------- real Airflow

DAGS = ROOT / "tests" / "dags"
_LOG_LINE = re.compile(r"^\S+Z \[(?P<level>\w+)\s*\] (?P<event>.*)$")
_TRIGGER_LOGGER = " [remote_docker.container]"


@dataclass
class TaskResult:
    state: str | None
    xcom: Any
    log: list[str]  # every console line of the task (worker and inline trigger)
    output: list[tuple[str, str]]  # container lines as (level, text), in order

    def stdout(self) -> list[str]:
        return [text for level, text in self.output if level == "info"]

    def stderr(self) -> list[str]:
        return [text for level, text in self.output if level == "warning"]

    def text(self) -> str:
        return "\n".join(self.log)


@dataclass
class DagRunResult:
    dag_id: str
    run_id: str
    returncode: int
    stdout: str
    tasks: dict[str, TaskResult]

    def __getitem__(self, task_id: str) -> TaskResult:
        return self.tasks[task_id]


@dataclass
class AirflowEnv:
    home: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 600, extra_env: dict | None = None,
            merged: bool = False) -> subprocess.CompletedProcess:
        """``merged``: stderr interleaved into stdout, in the order written (Airflow 3.1 logs some of a
        task's lines to each)."""
        return subprocess.run([str(VENV_BIN / "airflow"), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT if merged else subprocess.PIPE, text=True,
                              env={**self.env, **(extra_env or {})}, timeout=timeout)

    def deployment(self) -> Deployment:
        """This Airflow's deployment (``ownership``): the Variable its first task made, or one made here if none did."""
        found = self.run("variables", "get", ownership.SECRET_VARIABLE)
        if found.returncode != 0:
            done = self.run("variables", "set", ownership.SECRET_VARIABLE, secrets.token_hex(32))
            assert done.returncode == 0, done.stderr
            return self.deployment()
        return Deployment(found.stdout.strip().encode())

    def dags_test(self, dag_id: str, conf: dict | None = None, timeout: float = 900,
                  extra_env: dict | None = None) -> DagRunResult:
        args = ["dags", "test", dag_id]
        if conf:
            args += ["--conf", json.dumps(conf)]
        done = self.run(*args, timeout=timeout, extra_env=extra_env, merged=True)
        output = done.stdout
        with sqlite3.connect(self.home / "airflow.db") as db:
            run_id = db.execute("select run_id from dag_run where dag_id=? order by id desc limit 1", (dag_id,)).fetchone()[0]
            states = dict(db.execute("select task_id, state from task_instance where dag_id=? and run_id=? and map_index=-1",
                                     (dag_id, run_id)).fetchall())
            xcoms = {task: xcom_value(value) for task, value in db.execute(
                "select task_id, value from xcom where dag_id=? and run_id=? and key='return_value' and map_index=-1",
                (dag_id, run_id)).fetchall()}
        sections = _split_by_task(output, dag_id)
        tasks = {}
        for task_id, state in states.items():
            lines = sections.get(task_id, [])
            tasks[task_id] = TaskResult(state=state, xcom=xcoms.get(task_id), log=lines, output=_container_lines(lines))
        return DagRunResult(dag_id, run_id, done.returncode, output, tasks)


def xcom_value(stored: Any) -> Any:
    """XCom values are JSON in the metadata DB; SQLite hands numbers back already decoded."""
    return json.loads(stored) if isinstance(stored, (str, bytes)) else stored


def _split_by_task(output: str, dag_id: str) -> dict[str, list[str]]:
    """`dags test` runs tasks one at a time: cut its console output into per-task sections."""
    sections: dict[str, list[str]] = {}
    current = None
    start = re.compile(rf"\[DAG TEST\] running task <TaskInstance: {re.escape(dag_id)}\.(\S+) ")
    for line in output.splitlines():
        if found := start.search(line):
            current = found.group(1)
        if current:
            sections.setdefault(current, []).append(line)
        if current and f"[DAG TEST] end task task_id={current} " in line:
            current = None
    return sections


def _container_lines(lines: list[str]) -> list[tuple[str, str]]:
    found = []
    for line in lines:
        if _TRIGGER_LOGGER not in line:
            continue
        match = _LOG_LINE.match(line[: line.rindex(_TRIGGER_LOGGER)])
        if match and match.group("level") in ("info", "warning"):
            found.append((match.group("level"), match.group("event").rstrip(" ")))
    return found


def closed_port() -> int:
    """A loopback port with nothing listening."""
    return tls_dockerd.free_port()


@pytest.fixture(scope="session")
def airflow_env(daemon: Daemon, tmp_path_factory) -> AirflowEnv:
    """An Airflow home with its own SQLite DB (never shared with a real triggerer: `dags test`
    leaves trigger rows behind) and the daemon as `remote_docker_default`."""
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
        "AIRFLOW_CONN_REMOTE_DOCKER_DEFAULT": daemon.connection_json(),
        "REMOTE_DOCKER_TEST_IMAGE": BUSYBOX_IMAGE,
        # `dags test` runs triggers inline: the scheduler race the delay guards against can't happen
        "REMOTE_DOCKER_MIN_DEFERRED_SECONDS": "0",
        "REMOTE_DOCKER_TEST_URL": daemon.url,
        "REMOTE_DOCKER_TEST_CERTS": str(daemon.client_dir),
        "AIRFLOW_CONN_RD_UNREACHABLE": json.dumps({"conn_type": "remote_docker", "host": f"tcp://127.0.0.1:{closed_port()}",
                                                   "extra": daemon.extras()}),
        "PYTHONPATH": str(DAGS),
    }
    found = AirflowEnv(home=home, env=env)
    migrated = found.run("db", "migrate")
    if migrated.returncode != 0:
        pytest.fail(f"airflow db migrate failed: {migrated.stderr[-2000:]}")
    return found


def containers_of(client: docker.DockerClient, dag_id: str, run_id: str, task_id: str) -> list[dict]:
    labels = [f"io.remote-docker.dag_id={dag_id}", f"io.remote-docker.run_id={run_id}", f"io.remote-docker.task_id={task_id}"]
    return client.api.containers(all=True, filters={"label": labels})


# --------------------------------------------------------------------------- a private registry


@dataclass
class Registry:
    port: int
    user: str
    password: str
    root: Path | None = None
    ecr_password: str = "ecr-Token-7"  # the AWS user's, which the ECR stand-in hands out

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_passwords(self, password: str) -> None:
        """Rewrite htpasswd (the registry reloads it when it changes): ``user`` gets ``password``."""
        write_htpasswd(self.root / "htpasswd", {self.user: password, "AWS": self.ecr_password})
        self.password = password

    def connection_json(self, password: str | None = None) -> str:
        return json.dumps({"conn_type": "docker", "host": self.host, "login": self.user,
                           "password": self.password if password is None else password})


def write_htpasswd(path: Path, users: dict[str, str]) -> None:
    import bcrypt

    lines = b"".join(name.encode() + b":" + bcrypt.hashpw(secret.encode(), bcrypt.gensalt(rounds=5)) + b"\n"
                     for name, secret in users.items())
    path.with_suffix(".new").write_bytes(lines)
    path.with_suffix(".new").replace(path)


@pytest.fixture(scope="session")
def registry(daemon: Daemon, tmp_path_factory) -> Iterator[Registry]:
    """Debian's docker-registry on 127.0.0.1 with htpasswd auth, holding rd/busybox:1.

    dockerd treats 127.0.0.0/8 registries as insecure (plain HTTP), so auth is real here but
    registry certificate verification can't be exercised on loopback."""
    from remote_docker.daemon import certs

    binary = shutil.which("docker-registry")
    if not binary:
        pytest.fail("docker-registry is not installed; run `apt-get install -y docker-registry`")
    root = tmp_path_factory.mktemp("registry")
    user, password = "robot", "registry-Pass-1"
    certs.generate(root / "tls", sans=["127.0.0.1", "localhost"], with_client=False)
    port = tls_dockerd.free_port()
    (root / "config.yml").write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"  tls:\n    certificate: {root / 'tls' / 'server' / 'cert.pem'}\n    key: {root / 'tls' / 'server' / 'key.pem'}\n"
        f"auth:\n  htpasswd:\n    realm: test\n    path: {root / 'htpasswd'}\n"
    )
    write_htpasswd(root / "htpasswd", {user: password, "AWS": Registry.ecr_password})
    log = open(root / "registry.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                pytest.fail(f"docker-registry exited: {(root / 'registry.log').read_text()[-2000:]}")
            time.sleep(0.1)
        found = Registry(port=port, user=user, password=password, root=root)
        client = daemon.client()
        repository = f"{found.host}/rd/busybox"
        # its own layer (busybox plus a marker), so pulling it really downloads something
        client.api.import_image_from_data(images.busybox_tar(marker=b"registry image\n"), repository=repository, tag="1",
                                          changes=["ENV PATH=/bin"])
        auth = {"username": user, "password": password, "serveraddress": found.host}
        for item in client.api.push(repository, tag="1", stream=True, decode=True, auth_config=auth):
            if "error" in item:
                pytest.fail(f"could not push the test image: {item['error']}")
        client.api.remove_image(f"{repository}:1")  # the operator must pull it
        client.close()
        yield found
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()

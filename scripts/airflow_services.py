"""Real Airflow 3 services on this machine: api-server, scheduler, dag-processor, triggerer.

LocalExecutor on SQLite or PostgreSQL, or CeleryExecutor (the official compose file's: a Redis broker, the
result backend in PostgreSQL, two Celery workers); everything on 127.0.0.1, log servers off. Used where deferral,
slot release, user actions and restarts are the point. Only processes started here are
ever signalled, by PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

COMPONENTS = {
    "api-server": ["api-server", "--host", "127.0.0.1", "--port", "{port}"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
}
EXTRA_COMPONENTS = {"triggerer-2": COMPONENTS["triggerer"]}  # a second triggerer, for HA
# CeleryExecutor's two workers, sharing [core] parallelism between them (both on this machine: their task logs
# land in AIRFLOW_HOME/logs, where the api-server reads them)
CELERY_WORKERS = {
    f"celery-worker-{n}": ["celery", "worker", "--skip-serve-logs", "--celery-hostname", f"w{n}@127.0.0.1",
                           "--concurrency", "{concurrency}", "--without-gossip", "--without-mingle"]
    for n in (1, 2)
}


_T = TypeVar("_T")


def wait_until(check: Callable[[], _T], timeout: float, what: str | Callable[[], str], every: float = 0.3) -> _T:
    """Poll ``check()`` until it returns something truthy and return that; after ``timeout`` seconds raise
    TimeoutError naming ``what`` (text, or a function giving it at that moment). A 404 from the REST API
    (a run, task or log that does not exist yet) and a call that times out count as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if found := check():
                return found
        except urllib.error.HTTPError as err:
            if err.code != 404:
                raise
        except (TimeoutError, urllib.error.URLError) as err:  # a busy api-server: ask again until the deadline
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{what() if callable(what) else what}: not within {timeout:g}s ({err})") from None
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what() if callable(what) else what}: not within {timeout:g}s")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SQLITE_SETTINGS = "remote_docker_test_sqlite"  # a module the harness writes into AIRFLOW_HOME/config


@dataclass
class AirflowServices:
    airflow: Path  # the `airflow` executable
    home: Path
    dags: Path
    connection_json: str
    parallelism: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    database_url: str | None = None  # SQLAlchemy URL (PostgreSQL for HA); None: SQLite in the home
    # the demo's choices: the connection made in the metadata database (the UI and the CLIs see it) instead of
    # AIRFLOW_CONN_REMOTE_DOCKER_DEFAULT, new DAGs paused (only what is run gets unpaused), airflow.cfg written
    connection_in_database: bool = False
    paused_at_creation: bool = False
    celery_broker_url: str | None = None  # CeleryExecutor with this broker (``broker.py``); needs database_url
    _token: str | None = field(default=None, repr=False)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if self.celery_broker_url else "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": str(self.paused_at_creation),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API_AUTH__JWT_SECRET": "remote-docker-test-secret-0123456789abcdef",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",  # the executor notices a freed slot sooner
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
            **({} if self.connection_in_database else {"AIRFLOW_CONN_REMOTE_DOCKER_DEFAULT": self.connection_json}),
            **({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url} if self.database_url else
               {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{SQLITE_SETTINGS}.CONNECT_ARGS"}),
            **(self.celery_env if self.celery_broker_url else {}),
            **self.extra_env,
        }

    @property
    def celery_env(self) -> dict[str, str]:
        if not self.database_url:
            raise ValueError("CeleryExecutor needs PostgreSQL: pass database_url as well as celery_broker_url")
        return {
            "AIRFLOW__CELERY__BROKER_URL": str(self.celery_broker_url),
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{self.database_url}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.concurrency_per_worker),
        }

    @property
    def concurrency_per_worker(self) -> int:
        return -(-self.parallelism // len(CELERY_WORKERS))

    @property
    def components(self) -> tuple[str, ...]:
        """What ``start`` starts: Airflow's four services, and the Celery workers under CeleryExecutor."""
        return (*COMPONENTS, *(CELERY_WORKERS if self.celery_broker_url else ()))

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.airflow), *args], capture_output=True, text=True, env=self.env, timeout=timeout)

    # ------------------------------------------------------------------ lifecycle

    def start(self, components: tuple[str, ...] | None = None) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if not self.database_url:
            # SQLite's default 5 s busy timeout is shorter than the write locks the DAG processor and the
            # scheduler hold while a fresh home fills up on 2 cores (Airflow 3.2.2 on Python 3.12: the first
            # POST /dagRuns failed with "database is locked"); AIRFLOW_HOME/config is on every component's path
            (self.home / "config").mkdir(exist_ok=True)
            (self.home / "config" / f"{SQLITE_SETTINGS}.py").write_text("CONNECT_ARGS = {'timeout': 30}\n")
        if self.connection_in_database:
            self.write_config()
        migrated = self.cli("db", "migrate", timeout=300)
        if migrated.returncode:
            raise RuntimeError(f"airflow db migrate failed: {migrated.stderr[-2000:]}")
        if self.connection_in_database:
            self.cli("connections", "delete", "remote_docker_default")  # a restarted demo may have new certificates
            added = self.cli("connections", "add", "remote_docker_default", "--conn-json", self.connection_json)
            if added.returncode:
                raise RuntimeError(f"airflow connections add failed: {added.stderr[-2000:]}")
        for name in components or self.components:
            self.start_component(name)
        self._wait_api()

    def write_config(self) -> Path:
        """AIRFLOW_HOME/airflow.cfg holding the settings the services run with, so `airflow ...` with only
        AIRFLOW_HOME set sees the same DAGs folder, database and options (not a generated default config)."""
        sections: dict[str, list[str]] = {}
        for name, value in self.env.items():
            if name.startswith("AIRFLOW__") and name.count("__") >= 2:
                section, key = name.removeprefix("AIRFLOW__").split("__", 1)
                sections.setdefault(section.lower(), []).append(f"{key.lower()} = {value.replace('%', '%%')}")
        path = self.home / "airflow.cfg"
        path.write_text("".join(f"[{section}]\n" + "\n".join(lines) + "\n\n" for section, lines in sections.items()))
        return path

    def start_component(self, name: str) -> None:
        args = [a.replace("{port}", str(self.port)).replace("{concurrency}", str(self.concurrency_per_worker))
                for a in {**COMPONENTS, **EXTRA_COMPONENTS, **CELERY_WORKERS}[name]]
        log = open(self.home / f"{name}.out", "ab")  # noqa: SIM115 - lives as long as the process
        self.procs[name] = subprocess.Popen([str(self.airflow), *args], stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env, start_new_session=True)

    def stop_component(self, name: str, sig: int = signal.SIGTERM, wait: float = 30) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        # each component leads its own session: signal its group (its workers), never anything else
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        for name in list(self.procs):
            self.stop_component(name)

    def _wait_api(self, timeout: float = 90) -> None:
        def healthy() -> bool:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited early: {self.output(name)[-3000:]}")
            try:
                self.rest("GET", "/api/v2/monitor/health")
                return True
            except (urllib.error.URLError, ConnectionError, OSError):
                return False

        wait_until(healthy, timeout, lambda: f"api-server healthy ({self.output('api-server')[-2000:]})", every=0.5)

    def output(self, name: str) -> str:
        path = self.home / f"{name}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    # ------------------------------------------------------------------ REST and state

    def rest(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        """A call to the REST API as an admin (the simple auth manager hands every caller an admin token;
        Airflow 3.3 also takes calls without one, 3.1 does not)."""
        if path.startswith("/api/") and self._token is None:
            self._token = self.rest("GET", "/auth/token")["access_token"]
        headers = {"Content-Type": "application/json"}
        if self._token and path.startswith("/api/"):
            headers["Authorization"] = f"Bearer {self._token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method, headers=headers)
        for attempt in (1, 2, 3):
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    payload = response.read()
                return json.loads(payload) if payload else None
            except TimeoutError:
                # Reads are repeated: the api-server can wait on a busy SQLite database for a while.
                if method != "GET" or attempt == 3:
                    raise
        return None

    def wait_parsed(self, dag_id: str, timeout: float = 120) -> None:
        wait_until(lambda: self.rest("GET", f"/api/v2/dags/{dag_id}"), timeout,
                   lambda: f"DAG {dag_id} parsed ({self.output('dag-processor')[-2000:]})", every=1)

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        """A new run of the DAG. It names its own run id, so a call that timed out while the api-server waited on a
        busy database (SQLite on two cores) is repeated safely: a second POST of the same id answers 409."""
        self.wait_parsed(dag_id)
        run_id = f"manual__{uuid.uuid4().hex[:12]}"
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}}
        for attempt in (1, 2, 3):
            try:
                self.rest("POST", f"/api/v2/dags/{dag_id}/dagRuns", body, timeout=60)
                return run_id
            except urllib.error.HTTPError as error:
                if error.code != 409 or attempt == 1:
                    raise
                return run_id  # an earlier attempt that timed out did create it
            except TimeoutError:
                if attempt == 3:
                    raise
        return run_id

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows from the metadata database, SQLite or PostgreSQL (``?`` placeholders either way)."""
        if not self.database_url:
            with sqlite3.connect(self.home / "airflow.db", timeout=30) as db:
                return db.execute(sql, params).fetchall()
        import psycopg2
        from sqlalchemy.engine import make_url

        where = make_url(self.database_url)
        with psycopg2.connect(host=where.host, port=where.port, user=where.username, dbname=where.database) as db, \
                db.cursor() as cursor:
            cursor.execute(sql.replace("?", "%s"), params)
            return cursor.fetchall()

    def states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return dict(self.query("select task_id, state from task_instance where dag_id=? and run_id=?", (dag_id, run_id)))

    def ti(self, dag_id: str, run_id: str, task_id: str) -> dict:
        return self.rest("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.rest("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 180) -> str:
        return wait_until(lambda: (state := self.run_state(dag_id, run_id)) in ("success", "failed") and state,
                          timeout, lambda: f"{dag_id} {run_id} finished (tasks: {self.states(dag_id, run_id)})", every=0.5)

    def wait_task(self, dag_id: str, run_id: str, task_id: str, states: tuple[str, ...], timeout: float = 120) -> str:
        return wait_until(lambda: (state := self.states(dag_id, run_id).get(task_id)) in states and state,
                          timeout, lambda: f"{task_id} in {states} (is {self.states(dag_id, run_id).get(task_id)})")

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> None:
        self.rest("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", {"new_state": state})

    def task_log_entries(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> list:
        """The merged task + trigger log entries (dicts with timestamp, event, ...), as the UI gets them."""
        from urllib.parse import quote

        path = (f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/logs/{try_number}"
                f"?full_content=true&map_index={map_index}")
        return self.rest("GET", path)["content"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The merged task + trigger log as text, one entry (and its error details) per line."""
        lines = []
        for item in self.task_log_entries(dag_id, run_id, task_id, try_number):
            if not isinstance(item, dict):
                lines.append(str(item))
                continue
            lines.append(item.get("event", ""))
            lines += [f"{d.get('exc_type')}: {d.get('exc_value')}" for d in item.get("error_detail") or [] if isinstance(d, dict)]
        return "\n".join(lines)

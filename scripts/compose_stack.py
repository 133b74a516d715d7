"""docker-compose.yaml brought up end to end on this machine, as a user runs it, and the example DAG run through it.

    ./scripts/compose-stack          up, run example_remote_docker, down (volumes included)
    ./scripts/compose-stack --keep   leave the stack running (`--down` stops it later)

What differs from a user's run, and why: no registry is reachable, so the images the file names are stand-ins
built here (scripts/compose_images.py); this machine allows traffic to loopback only, so a test-only override
(written next to the copy of the file, never in the repository) puts every service on the host's network,
each on its own loopback port, instead of a compose network, and the copy drops the UI's published port
(Compose v1 refuses one with host networking). Nothing else is changed: the same compose file,
the same `certs` service making the certificates, the same TLS dind, Debian's docker-compose (Compose v1).
The outer daemon is a private TLS dockerd like the tests' (no bridge, no iptables), Docker 28.5 (OUTER_ENGINE).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import compose_images  # noqa: E402
import engines  # noqa: E402
import images  # noqa: E402
import tls_dockerd  # noqa: E402
from airflow_services import free_port, wait_until  # noqa: E402

STATE = ROOT / ".state" / "compose"
# dind needs `privileged: true`. This machine's capability bounding set lacks CAP_SYS_RESOURCE: Docker 20.10
# grants every capability it knows to a privileged container and fails ("unable to apply caps"); newer Docker
# grants those the host has, so the outer daemon is Debian sid's Docker (scripts/engines.py)
OUTER_ENGINE = "docker-28.5"
PROJECT = "rdcompose"
DAG_ID = "example_remote_docker"
AIRFLOW_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")


def say(message: str) -> None:
    print(f"[compose] {message}", flush=True)


def override(ports: dict[str, int]) -> str:
    """The loopback override: host networking and one loopback port per listener; nothing else."""
    closed_proxy = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
                    "NO_PROXY": "127.0.0.1,localhost,::1"}
    connection = {"conn_type": "remote_docker", "host": f"tcp://localhost:{ports['dind']}",
                  "extra": {"ca_cert": "/opt/airflow/certs/client/ca.pem", "client_cert": "/opt/airflow/certs/client/cert.pem",
                            "client_private_key": "/opt/airflow/certs/client/key.pem"}}
    airflow_env = {
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{ports['api']}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://airflow:airflow@127.0.0.1:{ports['postgres']}/airflow",
        "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(ports["api"]),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports["worker_logs"]),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(ports["trigger_logs"]),
        "AIRFLOW_CONN_REMOTE_DOCKER_DEFAULT": json.dumps(connection), **closed_proxy,
    }
    services: dict[str, dict] = {
        "postgres": {"network_mode": "host",
                     "command": ["-c", "listen_addresses=127.0.0.1", "-c", f"port={ports['postgres']}"],
                     "healthcheck": {"test": ["CMD", "pg_isready", "-h", "127.0.0.1", "-p", str(ports["postgres"]), "-U", "airflow"]}},
        "certs": {"network_mode": "host"},
        "docker": {"network_mode": "host", "command": ["--bridge=none", "--iptables=false"],
                   "environment": {"DIND_TLS_ADDRESS": f"127.0.0.1:{ports['dind']}", **closed_proxy}},
    }
    for name in AIRFLOW_SERVICES:
        services[name] = {"network_mode": "host", "environment": airflow_env}
    services["airflow-apiserver"]["healthcheck"] = {
        "test": ["CMD", "curl", "--fail", "--noproxy", "*", f"http://127.0.0.1:{ports['api']}/api/v2/version"]}
    header = ("# Test-only (scripts/compose_stack.py): this machine allows traffic to loopback only, so every service\n"
              "# runs on the host's network, each listener on its own loopback port, instead of a compose network.\n")
    return header + json.dumps({"version": "2.4", "services": services}, indent=2) + "\n"


class Stack:
    def __init__(self) -> None:
        self.daemon_state = STATE / "daemon"
        self.project = STATE / "project"
        self.ports_file = STATE / "ports.json"

    def daemon_running(self) -> bool:
        own = self.daemon_state / "dockerd.ownpid"
        return own.exists() and tls_dockerd.alive(int(own.read_text()))

    @property
    def daemon(self) -> tls_dockerd.RunningDaemon:
        return tls_dockerd.RunningDaemon(self.daemon_state, int((self.daemon_state / "dockerd.port").read_text()))

    def compose(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        # requests would let a machine-wide REQUESTS_CA_BUNDLE replace the daemon's CA (docker-py #2672)
        env = {**os.environ, **tls_dockerd.env_for(self.daemon_state, self.daemon.port), "REQUESTS_CA_BUNDLE": "",
               "CURL_CA_BUNDLE": ""}
        command = ["docker-compose", "-p", PROJECT, "-f", "docker-compose.yaml", "-f", "docker-compose.loopback.yaml", *args]
        done = subprocess.run(command, cwd=self.project, env=env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode:
            raise SystemExit(f"docker-compose {' '.join(args)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        return done

    def up(self) -> dict[str, int]:
        STATE.mkdir(parents=True, exist_ok=True)
        if not self.daemon_running():
            say(f"starting the outer daemon, {OUTER_ENGINE} (mutual TLS on loopback, no bridge, no iptables)")
            engines.start(OUTER_ENGINE, self.daemon_state)
        client = self.daemon.client()
        say("building stand-ins for the images the compose file names (no registry is reachable): "
            f"{compose_images.AIRFLOW_IMAGE}, {compose_images.POSTGRES_IMAGE}, {compose_images.DIND_IMAGE}")
        compose_images.build(client)
        client.close()
        ports = {name: free_port() for name in ("api", "postgres", "dind", "worker_logs", "trigger_logs")}
        self.ports_file.write_text(json.dumps(ports))
        self._write_project(ports)
        say(f"docker-compose up -d in {self.project} (Compose v1 {self.compose('version', '--short').stdout.strip()})")
        before = self._networks()
        self.compose("up", "-d", "--no-build")
        if self._networks() != before:
            raise SystemExit(f"compose made a network ({sorted(self._networks() - before)}); the override should prevent it")
        return ports

    def _write_project(self, ports: dict[str, int]) -> None:
        if self.project.exists():
            shutil.rmtree(self.project)
        self.project.mkdir(parents=True)
        # Compose v1 refuses published ports with host networking and an override can't remove a list entry:
        # the copy loses the UI's `ports:` (meaningless on the host network), and nothing else
        original = (ROOT / "docker-compose.yaml").read_text()
        published = '    ports:\n      - "8080:8080"\n'
        if published not in original:
            raise SystemExit("docker-compose.yaml no longer publishes 8080 as this script expects; update compose_stack.py")
        (self.project / "docker-compose.yaml").write_text(original.replace(published, ""))
        shutil.copytree(ROOT / "dags", self.project / "dags", ignore=shutil.ignore_patterns("__pycache__"))
        # what a user writes into .env from .env.example: both secrets, freshly made
        fernet = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        example = (ROOT / ".env.example").read_text()
        (self.project / ".env").write_text(example.replace("AIRFLOW_JWT_SECRET=\n", f"AIRFLOW_JWT_SECRET={secrets.token_urlsafe(48)}\n")
                                           .replace("AIRFLOW_FERNET_KEY=\n", f"AIRFLOW_FERNET_KEY={fernet}\n"))
        for folder in ("logs", "certs"):
            (self.project / folder).mkdir()
        os.chown(self.project / "logs", 50000, 0)
        (self.project / "docker-compose.loopback.yaml").write_text(override(ports))

    def _networks(self) -> set[str]:
        client = self.daemon.client()
        try:
            return {network["Name"] for network in client.api.networks()}
        finally:
            client.close()

    def wait_healthy(self, timeout: float = 300) -> None:
        def states() -> dict[str, str]:
            client = self.daemon.client()
            try:
                found = client.api.containers(all=True, filters={"label": f"com.docker.compose.project={PROJECT}"})
                return {c["Labels"]["com.docker.compose.service"]: c["Status"] for c in found}
            finally:
                client.close()

        def ready() -> bool:
            now = states()
            return all("healthy" in now.get(name, "") and "unhealthy" not in now.get(name, "")
                       for name in ("postgres", "docker", "airflow-apiserver"))

        wait_until(ready, timeout, lambda: f"the stack healthy: {states()}", every=2)

    def load_images_into_dind(self, ports: dict[str, int]) -> None:
        """The example's busybox, into the dind daemon over its TLS port with the client certificate `certs` made."""
        import docker

        os.environ["REQUESTS_CA_BUNDLE"] = os.environ["CURL_CA_BUNDLE"] = ""  # docker-py #2672, as above
        certs = self.project / "certs" / "client"
        tls = docker.tls.TLSConfig(client_cert=(str(certs / "cert.pem"), str(certs / "key.pem")), ca_cert=str(certs / "ca.pem"),
                                   verify=True)
        client = docker.DockerClient(base_url=f"https://localhost:{ports['dind']}", tls=tls, version="auto")
        try:
            say(f"dind answers over mutual TLS: Docker {client.version()['Version']}; loading busybox:latest into it")
            images.build(client, python=False)
        finally:
            client.close()

    def admin_token(self, ports: dict[str, int]) -> str:
        """The simple auth manager's generated admin password, read as the compose file's comment tells a user."""
        generated = self.compose("exec", "-T", "airflow-apiserver", "cat",
                                 "/opt/airflow/simple_auth_manager_passwords.json.generated").stdout
        password = json.loads(generated)["admin"]
        answer = self.rest(ports, "POST", "/auth/token", {"username": "admin", "password": password}, token=None)
        return answer["access_token"]

    def rest(self, ports: dict[str, int], method: str, path: str, body=None, *, token: str | None) -> dict:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        request = urllib.request.Request(f"http://127.0.0.1:{ports['api']}{path}", method=method, headers=headers,
                                         data=json.dumps(body).encode() if body is not None else None)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=30) as response:
            payload = response.read()
        return json.loads(payload) if payload else {}

    def run_example(self, ports: dict[str, int]) -> str:
        token = self.admin_token(ports)
        wait_until(lambda: self._dag(ports, token), 180, f"{DAG_ID} parsed by the dag-processor", every=2)
        self.rest(ports, "PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False}, token=token)
        run = self.rest(ports, "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None}, token=token)
        run_id = run["dag_run_id"]
        say(f"triggered {DAG_ID} ({run_id})")
        base = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}"
        state = wait_until(lambda: (s := self.rest(ports, "GET", base, token=token)["state"]) in ("success", "failed") and s,
                           300, f"the run of {DAG_ID} to finish", every=2)
        for ti in self.rest(ports, "GET", f"{base}/taskInstances", token=token)["task_instances"]:
            say(f"  {ti['task_id']:<12} {ti['state']}")
        log = self.rest(ports, "GET", f"{base}/taskInstances/count/logs/1", token=token)
        lines = [entry.get("event", "") for entry in log.get("content", []) if isinstance(entry, dict)]
        say("the count task's log, from the API server (the logs volume):")
        for line in lines:
            if line:
                print(f"    {line}")
        xcom = self.rest(ports, "GET", f"{base}/taskInstances/count/xcomEntries/return_value", token=token)
        say(f"run {state.upper()}; XCom of count: {xcom.get('value')!r}")
        if state != "success" or "42" not in str(xcom.get("value")):
            raise SystemExit(f"the example did not succeed through the compose stack ({state})")
        return state

    def _dag(self, ports: dict[str, int], token: str) -> bool:
        try:
            return bool(self.rest(ports, "GET", f"/api/v2/dags/{DAG_ID}", token=token))
        except urllib.error.HTTPError:
            return False

    def down(self) -> None:
        if self.project.exists() and self.daemon_running():
            self.compose("down", "-v", "--remove-orphans", check=False)
            say("docker-compose down -v")
        tls_dockerd.remove(self.daemon_state)
        shutil.rmtree(STATE, ignore_errors=True)
        say("stopped the outer dockerd and removed its state")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    parser.add_argument("--down", action="store_true", help="stop a stack left running")
    args = parser.parse_args()
    stack = Stack()
    if args.down:
        stack.down()
        return 0
    started = time.monotonic()
    try:
        ports = stack.up()
        stack.wait_healthy()
        say("postgres, dind and the API server are healthy")
        stack.load_images_into_dind(ports)
        stack.run_example(ports)
        say(f"the compose stack ran the example end to end in {time.monotonic() - started:.0f}s")
    except BaseException:
        if stack.project.exists():
            print(stack.compose("logs", "--tail", "40", check=False).stdout[-6000:], flush=True)
        raise
    finally:
        if not args.keep:
            stack.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())

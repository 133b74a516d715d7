"""The main job, end to end on this machine: a mutual-TLS Docker daemon, Airflow 3 with a
triggerer, and the example DAG running its containers while deferred.

    ./scripts/demo          start everything, run example_remote_docker, leave it running
    ./scripts/demo --ci     the same, then stop everything (what CI runs)
    ./scripts/demo stop     stop what an earlier ./scripts/demo started
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STATE = ROOT / ".state"
sys.path.insert(0, str(HERE))

import images  # noqa: E402
import tls_dockerd  # noqa: E402
from airflow_services import AirflowServices, free_port  # noqa: E402

PIDS = STATE / "demo-pids.json"
DEMO_ENV = STATE / "demo.env"
DAG_ID = "example_remote_docker"


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def start_daemon() -> tuple[int, Path]:
    state = STATE / "dockerd"
    if (state / "dockerd.ownpid").exists():
        pid = int((state / "dockerd.ownpid").read_text())
        try:
            os.kill(pid, 0)
            port = int((state / "dockerd.port").read_text())
            say(f"reusing the mutual-TLS dockerd on 127.0.0.1:{port} (pid {pid})")
            return port, state
        except ProcessLookupError:
            (state / "dockerd.ownpid").unlink()
    say("generating certificates (remote-docker generate-certs) and starting dockerd with --tlsverify")
    environment = tls_dockerd.start(state, None)
    port = int(environment["DOCKER_HOST"].rsplit(":", 1)[1])
    say(f"dockerd listens on tcp://127.0.0.1:{port}, client certificates in {state / 'certs' / 'client'}")
    return port, state


def build_images(daemon: tls_dockerd.RunningDaemon) -> None:
    say("building local stand-in images busybox:latest and python:3.11-slim (no registry is reachable)")
    client = daemon.client()
    images.build(client)
    client.close()


def watch(services: AirflowServices, run_id: str, timeout: float = 180) -> str:
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task_id, state in sorted(services.states(DAG_ID, run_id).items()):
            if state and seen.get(task_id) != state:
                seen[task_id] = state
                say(f"  {task_id:<12} {state.upper()}")
        state = services.run_state(DAG_ID, run_id)
        if state in ("success", "failed"):
            return state
        time.sleep(0.3)
    raise SystemExit(f"the run did not finish within {timeout}s; see {services.home}/*.out")


def demo(ci: bool) -> int:
    STATE.mkdir(exist_ok=True)
    if PIDS.exists():
        stop()
    port, state = start_daemon()
    daemon = tls_dockerd.RunningDaemon(state, port)
    build_images(daemon)
    api_port = 8080 if _port_free(8080) else free_port()
    services = AirflowServices(
        airflow=Path(sys.executable).parent / "airflow", home=STATE / "airflow", dags=ROOT / "dags",
        connection_json=daemon.connection_json(), parallelism=2, port=api_port,
        connection_in_database=True, paused_at_creation=True,
    )
    say(f"starting Airflow 3 (LocalExecutor, SQLite): api-server, scheduler, dag-processor, triggerer in {services.home}")
    services.start()
    PIDS.write_text(json.dumps({name: proc.pid for name, proc in services.procs.items()}))
    write_handles(services, daemon)
    try:
        services.wait_parsed(DAG_ID)
        services.rest("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})  # the others stay paused
        run_id = services.trigger(DAG_ID)
        say(f"triggered {DAG_ID} ({run_id}); task states as they change:")
        final = watch(services, run_id)
        say(f"run finished: {final.upper()}")
        say("the count task's log (worker and triggerer lines merged, from the REST log endpoint):")
        for line in services.task_log(DAG_ID, run_id, "count").splitlines():
            if line and not line.startswith(("::", "/")):
                print(f"    {line}")
        xcom = services.rest("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/count/xcomEntries/return_value")
        say(f"XCom of count: {xcom.get('value')!r}")
        if final != "success":
            return 1
        if ci:
            check_handles(services, daemon)
    finally:
        if ci:
            stop()
    if not ci:
        say_handles(services)
    return 0


def write_handles(services: AirflowServices, daemon: tls_dockerd.RunningDaemon) -> None:
    """DEMO_ENV: what a shell needs to use the demo with `airflow`, `remote-docker` and `docker`."""
    lines = [f"export AIRFLOW_HOME={services.home}", f"export PATH={ROOT / '.venv' / 'bin'}:$PATH",
             *(f"export {name}={value}" for name, value in tls_dockerd.env_for(daemon.state, daemon.port).items())]
    DEMO_ENV.write_text("\n".join(lines) + "\n")


def check_handles(services: AirflowServices, daemon: tls_dockerd.RunningDaemon) -> None:
    """What say_handles promises, tried as a user would: a shell with only DEMO_ENV finds the connection and the
    demo's DAGs, and only the DAG that ran is unpaused."""
    import subprocess

    shell = f". {DEMO_ENV} && remote-docker doctor && airflow dags list -o plain"
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=300,
                          env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")})
    if done.returncode or f"daemon: https://127.0.0.1:{daemon.port}" not in done.stdout or DAG_ID not in done.stdout:
        raise SystemExit(f"the demo's handles do not work from a shell:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    if "tutorial" in done.stdout:
        raise SystemExit("airflow.cfg loads Airflow's example DAGs; the demo's config should not")
    unpaused = [dag["dag_id"] for dag in services.rest("GET", "/api/v2/dags?paused=false")["dags"]]
    if unpaused != [DAG_ID]:
        raise SystemExit(f"only {DAG_ID} should be unpaused, found {unpaused}")
    say(f"handles checked: a shell with only {DEMO_ENV.name} reaches the daemon and the DAGs; only {DAG_ID} unpaused")


def say_handles(services: AirflowServices) -> None:
    say(f"UI: http://127.0.0.1:{services.port}  (no login: the simple auth manager makes every user admin here)")
    say(f"DAGs folder: {services.dags}  (drop a DAG file there; the dag-processor picks it up within seconds)")
    say("connection: remote_docker_default, in Airflow's database (Admin > Connections); new DAGs start paused")
    say(f"images on the daemon: {', '.join(images.STAND_INS.values())}  (stand-ins built here: no registry is reachable)")
    say(f"CLIs: source {DEMO_ENV}, then e.g. `remote-docker doctor`, `airflow dags list`, `docker ps -a`")
    say("stop everything: ./scripts/demo stop")


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def stop() -> int:
    if PIDS.exists():
        for name, pid in json.loads(PIDS.read_text()).items():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"airflow" not in cmdline:  # the PID was reused by something else: leave it
                continue
            os.killpg(pid, signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)
            else:
                os.killpg(pid, signal.SIGKILL)
            say(f"stopped {name} (pid {pid})")
        PIDS.unlink()
    tls_dockerd.stop(STATE / "dockerd")
    # its runtime state lives on tmpfs; certificates, images and Airflow's home stay for the next start
    shutil.rmtree(tls_dockerd.exec_root(STATE / "dockerd"), ignore_errors=True)
    say("stopped dockerd")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", nargs="?", choices=("run", "stop"), default="run")
    parser.add_argument("--ci", action="store_true", help="stop everything after the run")
    args = parser.parse_args()
    return stop() if args.action == "stop" else demo(args.ci)


if __name__ == "__main__":
    sys.exit(main())

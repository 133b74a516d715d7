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
    )
    say(f"starting Airflow 3 (LocalExecutor, SQLite): api-server, scheduler, dag-processor, triggerer in {services.home}")
    services.start()
    PIDS.write_text(json.dumps({name: proc.pid for name, proc in services.procs.items()}))
    try:
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
    finally:
        if ci:
            stop()
    if not ci:
        say(f"UI: http://127.0.0.1:{api_port}  (every user is admin in this demo: simple auth manager)")
        say(f"daemon env for the docker CLI: source {state / 'env'}")
        say("stop everything: ./scripts/demo stop")
    return 0


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

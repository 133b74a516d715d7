#!/usr/bin/env python3
"""Start or stop a local Docker daemon that requires mutual TLS, for tests, CI and the demo.

    python scripts/tls_dockerd.py start STATE_DIR [--port N]   # prints the env to use it
    python scripts/tls_dockerd.py stop STATE_DIR
    python scripts/tls_dockerd.py remove STATE_DIR             # stop, then delete its state and exec-root

The daemon gets its own data-root, pidfile and unix socket under STATE_DIR and its exec-root on a
tmpfs (/dev/shm, where this machine has no tmpfs /run: a production daemon's /run/docker and
/run/containerd are tmpfs, its /var/lib/docker a disk, as here); it listens
on tcp://127.0.0.1:PORT with --tlsverify and certificates from `remote-docker generate-certs`,
has no bridge and no iptables rules, and an HTTP(S) proxy on a closed loopback port so no
pull can leave the machine. Only the process this script started is ever stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

READY_TIMEOUT = 30.0
TMPFS = Path("/dev/shm")
TMPFS_NEEDED = 256 * 1024 * 1024  # ~20 KB per container (bundle config, shim state); a container's 64 MB /dev/shm is too small


@dataclass
class RunningDaemon:
    """A daemon this script started: where it listens and the client material to reach it."""

    state: Path
    port: int

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def client_dir(self) -> Path:
        return self.state / "certs" / "client"

    def extras(self, **more) -> dict:
        return {"ca_cert": str(self.client_dir / "ca.pem"), "client_cert": str(self.client_dir / "cert.pem"),
                "client_private_key": str(self.client_dir / "key.pem"), **more}

    def hook_params(self, url: str | None = None) -> dict:
        """The operator / hook override arguments that reach this daemon (at ``url``, e.g. through a proxy)."""
        from remote_docker.daemon.connection import CONNECTION_OVERRIDES

        argument = {extra: name for name, extra in CONNECTION_OVERRIDES.items()}  # the official operator's names
        return {"docker_url": url or self.url, **{argument[key]: value for key, value in self.extras().items()}}

    def connection_json(self, **more) -> str:
        import json

        return json.dumps({"conn_type": "remote_docker", "host": self.url, "extra": self.extras(**more)})

    def config(self, **more):
        from remote_docker.daemon.connection import build_config

        return build_config(host=self.url, extras=self.extras(**more), source="test daemon")

    def client(self):
        from remote_docker.engine.docker_py import make_sync_client

        return make_sync_client(self.config())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def env_for(state: Path, port: int) -> dict[str, str]:
    return {
        "DOCKER_HOST": f"tcp://127.0.0.1:{port}",
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": str(state / "certs" / "client"),
    }


def exec_root(state: Path) -> Path:
    """Where the daemon at ``state`` keeps its runtime state (shim sockets, runc state, netns mounts).

    On a host with systemd that is /run, a tmpfs: each container start writes there, and on this
    machine's disk those writes cost ~0.2 s per 20 starts (bench/ANALYSIS.md). Chosen at the first
    start and kept in STATE_DIR, so a live-restore restart finds its running containers again.
    """
    recorded = state / "dockerd.execroot"
    if recorded.exists():
        return Path(recorded.read_text())
    if TMPFS.is_dir() and os.access(TMPFS, os.W_OK) and shutil.disk_usage(TMPFS).free >= TMPFS_NEEDED:
        return TMPFS / f"rd-dockerd-{hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:12]}"
    return state / "exec"


def _generate_certs(state: Path, ca_from: Path | None = None) -> None:
    """Server and client certificates under STATE/certs; with ``ca_from`` (another daemon's state) from
    that daemon's CA, so one client certificate reaches both (a pool sharing TLS material)."""
    from remote_docker.daemon import certs

    if ca_from is not None and not (state / "certs" / "ca").exists():
        shutil.copytree(ca_from / "certs" / "ca", state / "certs" / "ca")
    certs.generate(state / "certs", sans=["localhost", "127.0.0.1", "::1", "docker"])


def _wait_ready(state: Path, proc: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    sock_path = state / "docker.sock"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (state / "dockerd.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"dockerd exited with {proc.returncode}; its log ends with:\n{log}")
        if sock_path.exists():
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
        time.sleep(0.05)
    raise SystemExit(f"dockerd did not listen on 127.0.0.1:{port} within {READY_TIMEOUT}s; see {state}/dockerd.log")


def start(state: Path, port: int | None, live_restore: bool = False, ca_from: Path | None = None, *,
          dockerd: str | None = None, extra_env: dict[str, str] | None = None,
          path_prefix: list[str] | None = None) -> dict[str, str]:
    """Start a dockerd (the machine's, or ``dockerd`` with ``path_prefix`` first on its PATH so it finds its
    own containerd; scripts/engines.py) with ``extra_env`` added to its environment."""
    dockerd = dockerd or shutil.which("dockerd")
    if not dockerd:
        raise SystemExit("dockerd is not installed; run `apt-get install -y docker.io` (Debian) first")
    state.mkdir(parents=True, exist_ok=True)
    pidfile = state / "dockerd.pid"
    if pidfile.exists():
        stop(state)
    port = port or free_port()
    _generate_certs(state, ca_from)
    server = state / "certs" / "server"
    root = exec_root(state)
    (state / "dockerd.execroot").write_text(str(root))
    args = [
        dockerd,
        "--data-root", str(state / "data"),
        "--exec-root", str(root),
        "--pidfile", str(pidfile),
        "-H", f"unix://{state / 'docker.sock'}",
        "-H", f"tcp://127.0.0.1:{port}",
        "--tlsverify",
        "--tlscacert", str(server / "ca.pem"),
        "--tlscert", str(server / "cert.pem"),
        "--tlskey", str(server / "key.pem"),
        "--bridge=none",
        "--iptables=false",
        "--ip6tables=false" if _supports(dockerd, "--ip6tables") else "--ipv6=false",
    ]
    if live_restore:
        args.append("--live-restore")
    env = {
        **os.environ,
        **(extra_env or {}),
        "PATH": os.pathsep.join([*(path_prefix or []), os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")]),
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost,::1",
    }
    with open(state / "dockerd.log", "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    (state / "dockerd.port").write_text(str(port))
    (state / "dockerd.ownpid").write_text(str(proc.pid))
    _wait_ready(state, proc, port)
    environment = env_for(state, port)
    (state / "env").write_text("".join(f"export {k}={v}\n" for k, v in environment.items()))
    return environment


def _supports(dockerd: str, flag: str) -> bool:
    out = subprocess.run([dockerd, "--help"], capture_output=True, text=True).stdout
    return flag in out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(state: Path, timeout: float = 20.0) -> None:
    if (state / "podman").is_dir():  # an engine of scripts/engines.py that is not a dockerd
        import podman_service

        podman_service.stop(state, timeout)
        return
    own = state / "dockerd.ownpid"
    if not own.exists():
        return
    pid = int(own.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        own.unlink(missing_ok=True)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.05)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
    own.unlink(missing_ok=True)


def remove(state: Path) -> None:
    """Stop the daemon and delete everything it had: STATE_DIR and its exec-root."""
    stop(state)
    shutil.rmtree(exec_root(state), ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("start", "stop", "remove"))
    parser.add_argument("state", type=Path)
    parser.add_argument("--port", type=int)
    parser.add_argument("--live-restore", action="store_true")
    args = parser.parse_args()
    if args.action == "start":
        environment = start(args.state.resolve(), args.port, args.live_restore)
        for key, value in environment.items():
            print(f"export {key}={value}")
    elif args.action == "remove":
        remove(args.state.resolve())
    else:
        stop(args.state.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())

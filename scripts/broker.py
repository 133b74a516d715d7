"""A Redis server of our own as the Celery broker for tests and benchmarks: Debian's, in a temp dir, on 127.0.0.1
(``start(state)`` gives its URL, ``remove(state)`` stops it and deletes the folder).

Debian's ``redis-tools`` package holds the server binary (``redis-check-rdb``; Redis picks its role from the
name it is started under), without ``redis-server``'s init script that would start a system-wide server on
6379. Ours listens on 127.0.0.1 only, on a free port, keeps nothing on disk and is stopped by the PID it wrote.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

READY_TIMEOUT = 30.0
SERVER_BINARY = "/usr/bin/redis-check-rdb"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def url(state: Path) -> str:
    return f"redis://127.0.0.1:{int((state / 'port').read_text())}/0"


def start(state: Path) -> str:
    if not os.access(SERVER_BINARY, os.X_OK):
        raise SystemExit("Redis is not installed; run `apt-get install -y redis-tools` (Debian) first")
    state.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    (state / "port").write_text(str(port))
    log = open(state / "redis.log", "ab")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(state), "--save", "",
         "--appendonly", "no", "--protected-mode", "yes"],
        executable=SERVER_BINARY, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    (state / "pid").write_text(str(server.pid))
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"Redis exited: {(state / 'redis.log').read_text(errors='replace')[-1000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return url(state)
        except OSError:
            pass
        time.sleep(0.1)
    stop(state)
    raise SystemExit(f"Redis did not answer on 127.0.0.1:{port} within {READY_TIMEOUT:g}s")


def stop(state: Path) -> None:
    """Stop the server this state folder's ``start`` began, by its PID; nothing else."""
    pid_file = state / "pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink()
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:  # our child: reap it
                break
        except ChildProcessError:  # started by another process: poll until it is gone
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink()


def remove(state: Path) -> None:
    stop(state)
    shutil.rmtree(state, ignore_errors=True)


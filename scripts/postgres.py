#!/usr/bin/env python3
"""A PostgreSQL server of our own for tests and benchmarks: Debian's postgresql, in a temp dir, on 127.0.0.1.

    python scripts/postgres.py start STATE_DIR     # prints the SQLAlchemy URL
    python scripts/postgres.py stop STATE_DIR

The cluster lives in STATE_DIR (owned by the ``postgres`` user, which PostgreSQL needs when we are
root: its parent folders must let that user through, as /tmp does), listens on 127.0.0.1 only on a free port with its socket in STATE_DIR, and trusts local
connections (a throwaway test database). Only the server this script started is ever stopped.
"""

from __future__ import annotations

import argparse
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

READY_TIMEOUT = 60.0


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise SystemExit("PostgreSQL is not installed; run `apt-get install -y postgresql` (Debian) first")
    return found[-1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """PostgreSQL refuses to run as root: drop to the postgres user when we are root."""
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    return subprocess.run(args, capture_output=True, text=True, **kwargs)


def url(state: Path) -> str:
    port = int((state / "port").read_text())
    return f"postgresql+psycopg2://airflow@127.0.0.1:{port}/airflow"


def start(state: Path) -> str:
    data = state / "data"
    state.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(state, owner.pw_uid, owner.pw_gid)
    if not data.exists():
        done = _as_postgres([_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        if done.returncode:
            raise SystemExit(f"initdb failed: {done.stderr[-2000:]}")
    port = _free_port()
    (state / "port").write_text(str(port))
    options = f"-h 127.0.0.1 -p {port} -k {state} -c max_connections=300 -c fsync=off -c synchronous_commit=off"
    done = _as_postgres([_bin("pg_ctl"), "-D", str(data), "-l", str(state / "postgres.log"), "-o", options, "-w",
                         "-t", str(int(READY_TIMEOUT)), "start"])
    if done.returncode:
        log = (state / "postgres.log").read_text(errors="replace")[-2000:] if (state / "postgres.log").exists() else ""
        raise SystemExit(f"PostgreSQL did not start: {done.stderr[-1000:]} {log}")
    deadline = time.monotonic() + READY_TIMEOUT
    psql = [_bin("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-c"]
    while _as_postgres([*psql, "select 1"]).returncode and time.monotonic() < deadline:
        time.sleep(0.2)
    for statement in ("CREATE ROLE airflow LOGIN", "CREATE DATABASE airflow OWNER airflow"):
        done = _as_postgres([*psql, statement])
        if done.returncode and "already exists" not in done.stderr:
            raise SystemExit(f"{statement} failed: {done.stderr[-1000:]}")
    return url(state)


def stop(state: Path) -> None:
    data = state / "data"
    if (data / "postmaster.pid").exists():
        _as_postgres([_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])


def remove(state: Path) -> None:
    stop(state)
    shutil.rmtree(state, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("state", type=Path)
    args = parser.parse_args()
    if args.action == "start":
        print(start(args.state.resolve()))
    else:
        stop(args.state.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())

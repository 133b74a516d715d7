"""Settings shared by P1's DAG files and latency_*.py (not a DAG file): one file per flavour, as a user's DAG file
holds one operator's tasks, so each worker start parses only its own DAG's file and imports only its operator."""

from __future__ import annotations

import datetime as dt
import os

N = int(os.environ.get("BENCH_N", "20"))
T = int(os.environ.get("BENCH_T", "20"))
URL = os.environ.get("BENCH_DOCKER_URL", "tcp://127.0.0.1:2376")
CERTS = os.environ.get("BENCH_CERTS", "/nonexistent")
TLS = {"tls_ca_cert": f"{CERTS}/ca.pem", "tls_client_cert": f"{CERTS}/cert.pem", "tls_client_key": f"{CERTS}/key.pem"}
START = dt.datetime(2026, 1, 1)
SLEEP = ["sh", "-c", f"echo start; sleep {T}; echo done"]

# P5 and short tasks (latency_*.py): one 1 s container; eight containers of 0 to 1 s, all at once
ONE_SECOND = ["sh", "-c", "sleep 1; echo hi"]
SHORT = [["sh", "-c", f"sleep {i / 7:.2f}; echo done-{i}"] for i in range(8)]

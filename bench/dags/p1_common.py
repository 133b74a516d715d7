"""Settings shared by P1's DAG files (not a DAG file): one file per flavour, as a user's DAG file holds one
operator's tasks, so each worker start parses only its own DAG."""

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

"""Shared benchmark plumbing: a private TLS daemon, images, timing and result records."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "scripts"))

import engines  # noqa: E402
import images  # noqa: E402
import tls_dockerd  # noqa: E402

Daemon = tls_dockerd.RunningDaemon


def start_daemon() -> Daemon:
    """The engine REMOTE_DOCKER_ENGINE names (scripts/engines.py; default the machine's Docker 20.10)."""
    state = Path(tempfile.mkdtemp(prefix="rd-bench-"))
    environment = engines.start(None, state, None)
    daemon = Daemon(state, int(environment["DOCKER_HOST"].rsplit(":", 1)[1]))
    client = daemon.client()
    images.build(client)
    client.close()
    return daemon


def engine_of(daemon: Daemon) -> str:
    """'docker-29 (Docker 28.5.2+dfsg3, API 1.44-1.51)': which engine a figure was measured on."""
    client = daemon.client()
    try:
        found = client.version(api_version=False)
    finally:
        client.close()
    return f"{engines.chosen(daemon.state)} ({found.get('Version')}, API {found.get('MinAPIVersion')}-{found.get('ApiVersion')})"


def stop_daemon(daemon: Daemon) -> None:
    tls_dockerd.remove(daemon.state)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "max": max(values) if values else float("nan"),
            "mean": statistics.fmean(values) if values else float("nan")}


def rss_mb(pid: int | None = None) -> float:
    return psutil.Process(pid or os.getpid()).memory_info().rss / 1e6


class PeakRSS(threading.Thread):
    """Samples this process's RSS in the background; ``peak`` and ``start`` in MB."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = self.start_rss = rss_mb()
        self.samples: list[tuple[float, float]] = []  # (monotonic time, MB)
        self._running = True

    def run(self) -> None:
        while self._running:
            now = rss_mb()
            self.peak = max(self.peak, now)
            self.samples.append((time.monotonic(), now))
            time.sleep(0.02)

    def growth_after(self, fraction: float) -> float:
        """Peak minus the RSS once ``fraction`` of the sampled time had passed: growth after warm-up."""
        if not self.samples:
            return 0.0
        first, last = self.samples[0][0], self.samples[-1][0]
        cutoff = first + (last - first) * fraction
        at_cutoff = next(mb for t, mb in self.samples if t >= cutoff)
        return max(mb for t, mb in self.samples if t >= cutoff) - at_cutoff

    def __enter__(self) -> PeakRSS:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._running = False
        self.join()


def machine() -> dict[str, Any]:
    import aiodocker
    import airflow
    import docker

    client_versions = {"airflow": airflow.__version__, "aiodocker": aiodocker.__version__, "docker-py": docker.__version__}
    try:
        from importlib.metadata import version

        client_versions["apache-airflow-providers-docker"] = version("apache-airflow-providers-docker")
    except Exception:
        pass
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        **client_versions,
    }


@dataclass
class Result:
    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    target: str = ""
    met: bool | None = None
    notes: list[str] = field(default_factory=list)

    def save(self, engine: str = engines.DEFAULT_ENGINE, executor: str = "local") -> Path:
        """bench/results/p5.json; on another engine than the default p5@docker-29.json, on CeleryExecutor
        p5+celery.json, beside it."""
        RESULTS.mkdir(parents=True, exist_ok=True)
        key = self.name.split()[0].lower()
        key += "" if engine == engines.DEFAULT_ENGINE else f"@{engine}"
        key += "" if executor == "local" else f"+{executor}"
        path = RESULTS / f"{key}.json"
        path.write_text(json.dumps(self.__dict__, indent=2, default=str))
        return path

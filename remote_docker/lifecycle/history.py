"""How a task's container last ran on this worker: ``follow_for`` decides from it without asking Airflow.

A task whose container ended while this worker followed it leaves its run time here; one that deferred leaves
``DEFERRED`` (its length is only known to Airflow then). Asking Airflow for the previous run is an Execution
API call, which parallel short tasks on a small worker feel (BENCHMARKS.md, short tasks): it is made only when
this worker has no short run of the task on record. One small file per task under ``AIRFLOW_HOME/remote-docker``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Final, Literal

DEFERRED: Final = "deferred"


def worker_folder() -> Path | None:
    """``AIRFLOW_HOME/remote-docker``: what a worker keeps for its later tasks (None without Airflow's config)."""
    try:
        from airflow.configuration import AIRFLOW_HOME
    except Exception:  # no Airflow configuration to go by: nothing kept
        return None
    return Path(AIRFLOW_HOME) / "remote-docker"


def _path(dag_id: str, task_id: str) -> Path | None:
    folder = worker_folder()
    key = hashlib.sha256(f"{dag_id}\0{task_id}".encode()).hexdigest()[:24]
    return folder / "history" / key if folder else None


def last(dag_id: str, task_id: str) -> float | Literal["deferred"] | None:
    """The seconds its container ran when it last ended here, ``DEFERRED``, or None (no record)."""
    path = _path(dag_id, task_id)
    try:
        text = path.read_text().strip() if path else ""
    except OSError:
        return None
    if text == DEFERRED:
        return DEFERRED
    try:
        return float(text)
    except ValueError:
        return None


def remember(dag_id: str, task_id: str, ran: float | Literal["deferred"]) -> None:
    """Keep how the container ran this time (seconds, or ``DEFERRED``); a worker that can't write keeps nothing."""
    path = _path(dag_id, task_id)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}")
        partial.write_text(ran if ran == DEFERRED else f"{ran:.3f}")
        os.replace(partial, path)  # whole or not at all, for a task of the same name reading it meanwhile
    except OSError:
        pass

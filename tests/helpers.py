"""Helpers the test modules share (the harness itself is conftest.py and scripts/)."""

from __future__ import annotations

import struct
import time

from conftest import Daemon, DagRunResult

from remote_docker.lifecycle.spec import task_labels


def error_line(run: DagRunResult, task_id: str) -> str:
    """The exception line the task failed with (one line, no traceback soup in the message)."""
    for line in run[task_id].log:
        # Airflow 3.1 raises AirflowException / AirflowFailException from airflow.exceptions, 3.2+ from airflow.sdk
        if line.startswith(("airflow.sdk.exceptions.", "airflow.exceptions.", "remote_docker.")) and ": " in line:
            return line.split(": ", 1)[1]
    raise AssertionError(f"no error line for {task_id}:\n" + run[task_id].text()[-3000:])


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


class Records:
    """A logger that keeps what it is given: (level, event)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def info(self, event: str) -> None:
        self.records.append(("info", event))

    def warning(self, event: str) -> None:
        self.records.append(("warning", event))


def entries(*lines: tuple[int, str], start: int = 0) -> bytes:
    return b"".join(frame(stream, b"2026-01-02T03:04:05.%09dZ %s\n" % (start + i, text.encode()))
                    for i, (stream, text) in enumerate(lines))


def labels_for(task: str, try_number: int = 1) -> dict[str, str]:
    return task_labels("placement_test", task, f"run-{time.time_ns()}", -1, try_number)


def occupy(daemon: Daemon, count: int, state: str = "running") -> list[str]:
    """Containers of ours that hold a slot on ``daemon`` (running, or created and never started)."""
    client = daemon.client()
    ids = []
    for i in range(count):
        body = {"Image": "rd-test/busybox:latest", "Cmd": ["sleep", "300"], "HostConfig": {"NetworkMode": "none"},
                "Labels": labels_for(f"occupant{i}")}
        ids.append(client.api.create_container_from_config(body)["Id"])
        if state == "running":
            client.api.start(ids[-1])
    client.close()
    return ids


def clear(daemon: Daemon, ids: list[str]) -> None:
    client = daemon.client()
    for container_id in ids:
        client.api.remove_container(container_id, force=True)
    client.close()

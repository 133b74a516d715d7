"""The event between trigger and operator is a contract between versions (Airflow stores it)."""

from __future__ import annotations

import pytest

from remote_docker.events import EVENT_VERSION, WatchEnd
from remote_docker.logs import LogSummary

# Exactly what a ContainerTrigger of release 0.1 (before events.py) fired for a failed container.
VERSION_1_PAYLOAD = {
    "status": "exited", "container_id": "c0ffee" * 10 + "abcd", "exit_code": 3, "oom_killed": False, "error": None,
    "finished_at": "2026-11-22T00:00:01.5Z", "kill_signal": "15", "ended_while_unreachable": None,
    "last_stdout_line": None, "last_line_in_event": False, "tail": [["stdout", "before"], ["stderr", "oops"]],
    "lines": {"stdout": 1, "stderr": 1},
}


def test_a_version_1_payload_still_decodes() -> None:
    end = WatchEnd.from_payload(VERSION_1_PAYLOAD)
    assert end.version == 1
    assert (end.status, end.exit_code, end.kill_signal, end.finished_at) == ("exited", 3, "15", "2026-11-22T00:00:01.5Z")
    assert end.log == LogSummary(last_stdout_line=None, last_line_in_event=False,
                                 tail=[["stdout", "before"], ["stderr", "oops"]], lines={"stdout": 1, "stderr": 1})
    assert end.retryable and end.daemon is None, "fields added later take their defaults"


def test_round_trip_and_version() -> None:
    end = WatchEnd("timeout", "abc", log=LogSummary("last", True, [["stdout", "last"]], {"stdout": 1, "stderr": 0}),
                   killed=True, daemon="https://127.0.0.1:2376")
    payload = end.to_payload()
    assert payload["version"] == EVENT_VERSION and payload["last_stdout_line"] == "last"
    assert WatchEnd.from_payload(payload) == end


def test_keys_of_a_newer_version_are_ignored() -> None:
    end = WatchEnd.from_payload({**VERSION_1_PAYLOAD, "version": EVENT_VERSION + 1, "placement": {"pool": "gpu"}})
    assert end.exit_code == 3


@pytest.mark.parametrize("payload", [None, "success", {"container_id": "x"}])
def test_not_an_event(payload) -> None:
    with pytest.raises(ValueError, match="not a remote-docker watch event"):
        WatchEnd.from_payload(payload)


def test_how_long_the_container_ran_comes_from_the_daemons_times() -> None:
    end = WatchEnd("exited", "c1", exit_code=3, started_at="2026-01-02T03:04:05.500000000Z",
                   finished_at="2026-01-02T03:04:08.750000000Z")
    assert end.ran_seconds() == 3.25
    assert WatchEnd.from_payload(end.to_payload()).ran_seconds() == 3.25
    # an event of an older release has no start; a container that never finished has Docker's zero time
    assert WatchEnd.from_payload({"status": "exited", "container_id": "c1", "finished_at": end.finished_at}).ran_seconds() is None
    assert WatchEnd("exited", "c1", started_at=end.started_at, finished_at="0001-01-01T00:00:00Z").ran_seconds() is None

"""Every payload that persists or crosses a process is a contract between versions (Airflow stores each)."""

from __future__ import annotations

import pytest

from remote_docker.lifecycle.payloads import (
    EVENT_VERSION,
    Checkpoint,
    ContainerRecord,
    Ending,
    LogHandover,
    LogSummary,
    RoomFound,
    StartRequest,
    WatchEnd,
)

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


# ---------------------------------------------------------------------- the other payloads, as earlier releases wrote them


def test_a_room_event_of_before_versions_reads() -> None:
    assert RoomFound.from_payload({"room": "d1"}) == RoomFound(room="d1", version=1)
    assert RoomFound.from_payload({"room": None, "timeout": True}).timeout
    assert RoomFound.from_payload(None) == RoomFound(), "no event at all: neither room nor a timeout"
    assert RoomFound.from_payload(RoomFound(room="d2").to_payload()).room == "d2"


def test_a_start_request_of_version_1_names_the_daemon_pin() -> None:
    old = {"spec": {"tty": False}, "pull": "never", "missing_executable": "m", "pin": "gpu1", "daemon_labels": None,
           "execution_timeout": 30.0}
    request = StartRequest.from_payload(old)
    assert (request.daemon, request.daemon_labels, request.pull, request.version) == ("gpu1", {}, "never", 1)
    assert request.to_payload()["version"] == 2, "written in this release's version"
    assert StartRequest.from_payload(request.to_payload()) == StartRequest(
        spec={"tty": False}, pull="never", missing_executable="m", daemon="gpu1", execution_timeout=30.0)
    with pytest.raises(ValueError, match="not a remote-docker start request"):
        StartRequest.from_payload("gpu1")


def test_a_log_handover_of_before_versions_reads_and_round_trips() -> None:
    old = {"since": "2026-01-02T03:04:05.000000001Z", "recent": [["2026-01-02T03:04:05.000000001Z", 1, 1]],
           "lines": {"stdout": 3, "stderr": 0}, "partial": {"1": "par"}}
    handed = LogHandover.from_payload(old)
    assert handed.cursor == {"since": old["since"], "recent": old["recent"]} and handed.partial == {"1": "par"}
    assert handed.received is None and handed.sealed_partial is None
    payload = handed.to_payload()
    assert "sealed_partial" not in payload and "received" not in payload, "absent stays absent, as before"
    assert LogHandover.from_payload({**payload, "from_a_newer_release": 1}) == handed
    assert LogHandover.from_payload(None) == LogHandover()


def test_a_checkpoint_of_before_versions_reads_and_anything_else_is_none() -> None:
    worker = Checkpoint.from_payload({"container_id": "c1", "by": "worker"})
    assert (worker.container_id, worker.by, worker.cursor) == ("c1", "worker", None)
    trigger = Checkpoint.from_payload({"container_id": "c1", "by": "trigger", "cursor": {"since": None, "recent": []},
                                       "lines": {"stdout": 2}})
    assert trigger.lines == {"stdout": 2} and trigger.received is None
    assert Checkpoint.from_payload(trigger.to_payload()) == trigger
    assert Checkpoint.from_payload("garbage") is None and Checkpoint.from_payload(None) is None


def test_a_container_record_of_before_versions_reads() -> None:
    record = ContainerRecord.from_payload({"container_id": "c1", "phase": "deferred", "daemon": "d0"})
    assert record == ContainerRecord("c1", "deferred", "d0")
    assert ContainerRecord.from_payload(record.to_payload()) == record
    assert ContainerRecord.from_payload([1, 2]) is None


def test_an_ending_of_before_versions_reads() -> None:
    assert Ending.from_payload({"xcom": "all", "remove": True, "tty": False}) == Ending("all", True, False, version=1)
    assert Ending.from_payload({"xcom": "all"}).skip_on_exit_code == [], "version 1 had no skip: a worker skips"
    assert Ending.from_payload(None) is None
    assert Ending.from_payload(Ending(None).to_payload()).xcom is None

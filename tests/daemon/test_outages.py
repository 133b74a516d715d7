"""What stopped a container: a kill from outside ends it only if the exit says so.

A signal a program handles and lives on (USR1, a HUP reload) is not "killed from outside",
and does not hold the event back while the daemon is watched for a shutdown.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
from conftest import BUSYBOX_IMAGE, ENGINE_KIND, Daemon

from remote_docker.lifecycle.outages import (
    KILL_LOGGED_WITHIN,
    SHUTDOWN_WATCH_SECONDS,
    kill_events_until,
    stopping_signal,
)
from remote_docker.triggers import ContainerTrigger

T0 = 1_790_000_000.0


def kill(signal: str | None, at: float) -> dict:
    """A kill event; ``signal`` None: as Podman reports it, naming no signal."""
    attributes = {} if signal is None else {"signal": signal}
    return {"Action": "kill", "Actor": {"Attributes": attributes}, "time": int(at), "timeNano": int(at * 1e9)}


def state(exit_code: int, finished: float) -> dict:
    stamp = dt.datetime.fromtimestamp(finished, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    return {"ExitCode": exit_code, "FinishedAt": stamp}


@pytest.mark.parametrize(
    ("kills", "exit_code", "finished", "expected"),
    [
        ([kill("10", T0)], 3, T0 + 2, None),  # USR1 handled; the program failed on its own later
        ([kill("1", T0)], 1, T0 + 5, None),  # a HUP reload, then a crash
        ([kill("1", T0)], 129, T0 + 0.1, "SIGHUP"),  # the HUP itself killed it
        ([kill("15", T0)], 143, T0 + 0.1, "SIGTERM"),  # docker stop, default handler
        ([kill("15", T0)], 1, T0 + 3, "SIGTERM"),  # docker stop, handled by exiting within the grace
        ([kill("15", T0), kill("9", T0 + 10)], 137, T0 + 10.05, "SIGKILL"),  # grace ran out
        ([kill("15", T0 - 100)], 1, T0, None),  # a stop request long before: not why it ended now
        ([kill("SIGTERM", T0)], 143, T0 + 0.1, "SIGTERM"),  # names as well as numbers
        ([kill("USR2", T0)], 140, T0 + 0.1, "SIGUSR2"),
        ([], 137, T0, None),
        # Podman: no signal in the event; the exit code names it, or a kill just before the end was a stop
        ([kill(None, T0)], 137, T0 + 0.1, "SIGKILL"),
        ([kill(None, T0)], 143, T0 + 0.1, "SIGTERM"),
        ([kill(None, T0)], 1, T0 + 3, None),  # no signal named and the exit code names none: not judged
        ([kill(None, T0 - 100)], 137, T0, None),  # long before the end: not why it ended
    ],
)
def test_stopping_signal(kills: list[dict], exit_code: int, finished: float, expected: str | None) -> None:
    assert stopping_signal(state(exit_code, finished), kills) == expected


@pytest.mark.parametrize(("ago", "expected_after_exit"), [
    (0.02, KILL_LOGGED_WITHIN),  # asked at once: the engine's margin, a wait of at most that
    (0.5, 0.5),  # asked later: up to now, no wait (an ``until`` ahead of the daemon's clock holds the answer back)
    (5.0, 1.0),  # long after: the second stopping_signal looks at
])
def test_the_kill_lookup_never_waits_for_the_future(ago: float, expected_after_exit: float) -> None:
    assert kill_events_until(T0, T0 + ago) == pytest.approx(T0 + expected_after_exit)


def watch(daemon: Daemon, script: str, action) -> tuple[dict, float]:
    """Run ``script`` in a container watched by the real trigger; ``action(client, id)`` runs after 1 s.
    Returns the event and the seconds from the container's exit to the event."""
    client = daemon.client()
    body = {"Image": BUSYBOX_IMAGE, "Cmd": ["sh", "-c", script], "HostConfig": {"NetworkMode": "none"}}
    container_id = client.api.create_container_from_config(body)["Id"]
    params = daemon.hook_params()

    async def scenario() -> dict:
        client.api.start(container_id)
        asyncio.get_running_loop().call_later(1.0, action, client, container_id)
        async for event in ContainerTrigger(container_id, None, hook_params=params).run():
            return event.payload
        raise AssertionError("no event")

    try:
        event = asyncio.run(scenario())
        fired = time.time()
        finished = client.api.inspect_container(container_id)["State"]["FinishedAt"]
        head, _, fraction = finished.rstrip("Z").partition(".")
        exited = dt.datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc).timestamp() + float(f"0.{fraction}")
        return event, fired - exited
    finally:
        client.api.remove_container(container_id, force=True)
        client.close()


@pytest.mark.daemon
def test_a_handled_signal_is_not_a_kill_and_does_not_hold_the_event(daemon: Daemon) -> None:
    script = "trap 'echo reloaded' USR1; echo ready; i=0; while [ $i -lt 25 ]; do sleep 0.1; i=$((i+1)); done; exit 3"
    event, delay = watch(daemon, script, lambda client, cid: client.api.kill(cid, signal="SIGUSR1"))
    assert event["exit_code"] == 3 and event["kill_signal"] is None
    assert "reloaded" in [text for _, text in event["tail"]]
    # the daemon-shutdown watch would hold the event SHUTDOWN_WATCH_SECONDS; without it the event follows the exit
    assert delay < SHUTDOWN_WATCH_SECONDS / 2, f"event {delay:.1f}s after the exit"


@pytest.mark.daemon
@pytest.mark.slow
def test_docker_stop_is_named(daemon: Daemon) -> None:
    # PID 1 has no default signal handlers: the script installs one, as a real entrypoint would
    script = "trap 'exit 143' TERM; echo ready; while true; do sleep 0.1; done"
    event, _ = watch(daemon, script, lambda client, cid: client.api.stop(cid, timeout=5))
    # Podman's stop leaves no kill event (docs/engines.md); the failure then says "killed by" the exit's signal
    assert event["exit_code"] == 143 and event["kill_signal"] == (None if ENGINE_KIND == "podman" else "SIGTERM")


@pytest.mark.daemon
def test_a_kill_from_outside_is_found_on_every_engine(daemon: Daemon) -> None:
    # `docker kill` leaves a kill event on every engine (Podman's names no signal: the exit code does, docs/engines.md);
    # an engine refusing the lookup's nanosecond `until` would leave the kill unnamed
    script = "trap 'exit 143' TERM; echo ready; while true; do sleep 0.1; done"
    event, _ = watch(daemon, script, lambda client, cid: client.api.kill(cid, signal="SIGTERM"))
    assert event["exit_code"] == 143 and event["kill_signal"] == "SIGTERM"

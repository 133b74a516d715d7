"""Deferral with the real services: slot release, user actions, timeouts, worker death, masking."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator

import docker
import pytest
from airflow_services import AirflowServices, wait_until
from conftest import ROOT, Daemon, Registry, containers_of, running_services

SECRET = "s3rvice-Secret-77"


@pytest.fixture(scope="module")
def services(daemon: Daemon, registry: Registry, tmp_path_factory) -> Iterator[AirflowServices]:
    home = tmp_path_factory.mktemp("services-home")
    with running_services(daemon, home, ROOT / "tests" / "services_dags", extra_env={
        "REMOTE_DOCKER_TEST_MARKERS": str(home), "REMOTE_DOCKER_TEST_REGISTRY": registry.host,
        "REMOTE_DOCKER_TEST_SECRET": SECRET, "AIRFLOW_CONN_RD_REGISTRY": registry.connection_json(),
    }) as found:
        yield found


def running_containers(client: docker.DockerClient, dag_id: str, run_id: str, task_id: str) -> list[dict]:
    return [c for c in containers_of(client, dag_id, run_id, task_id) if c["State"] == "running"]


def wait_for_log_line(services: AirflowServices, dag_id: str, run_id: str, task_id: str, text: str, timeout: float = 60) -> None:
    wait_until(lambda: text in services.task_log(dag_id, run_id, task_id).splitlines(), timeout,
               f"{text!r} in the log of {task_id}")


def wait_for_triggerer_streaming(services: AirflowServices, dag_id: str, run_id: str, task_id: str, text: str) -> None:
    """Until the triggerer itself logged a container line containing ``text`` (its own sibling log file).

    A user action reaches the trigger's on_kill only once the triggerer runs it; the worker follows the
    container for defer_after first, so a line in the merged log alone does not say the trigger runs.
    """
    folder = services.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"

    def streamed() -> bool:
        return any(text in path.read_text(errors="replace") for path in folder.glob("attempt=1.log.trigger.*"))

    wait_until(streamed, 60, f"the triggerer streaming {task_id}'s output ({text!r} in its trigger log)", every=0.2)


def test_worker_slot_is_free_while_containers_run(services: AirflowServices, docker_client: docker.DockerClient) -> None:
    """parallelism=1, two 15 s containers: both deferred at once, and the containers overlap."""
    run_id = services.trigger("rd_slots")
    wait_until(lambda: list(services.states("rd_slots", run_id).values()).count("deferred") == 2, 60,
               "both tasks deferred together", every=0.2)
    assert services.wait_run("rd_slots", run_id, timeout=60) == "success"
    # one slot, and yet both containers ran at the same time: the slot was free while they ran
    (first,), (second,) = (containers_of(docker_client, "rd_slots", run_id, t) for t in ("first", "second"))
    spans = [docker_client.api.inspect_container(c["Id"])["State"] for c in (first, second)]
    assert max(s["StartedAt"] for s in spans) < min(s["FinishedAt"] for s in spans), "the containers overlapped"
    log = services.task_log("rd_slots", run_id, "first")
    assert "first-started" in log and "first-done" in log, log[-2000:]


def test_mark_failed_while_deferred_stops_the_container(services: AirflowServices, docker_client: docker.DockerClient) -> None:
    run_id = services.trigger("rd_mark_failed")
    services.wait_task("rd_mark_failed", run_id, "long", ("deferred",))
    # on_kill reaches running triggers only: act once the triggerer streams the container's output
    wait_for_triggerer_streaming(services, "rd_mark_failed", run_id, "long", "tick")
    assert running_containers(docker_client, "rd_mark_failed", run_id, "long")
    services.set_task_state("rd_mark_failed", run_id, "long", "failed")
    wait_until(lambda: not running_containers(docker_client, "rd_mark_failed", run_id, "long"), 30,
               "the container stopped after mark-failed", every=0.2)
    (container,) = containers_of(docker_client, "rd_mark_failed", run_id, "long")
    state = docker_client.api.inspect_container(container["Id"])["State"]
    assert state["ExitCode"] == 143, "stopped with SIGTERM within the grace period, not killed"
    assert services.states("rd_mark_failed", run_id)["long"] == "failed"


@pytest.mark.parametrize("action", ["success", "clear"])
def test_mark_success_or_clear_while_deferred_stops_the_container(
    services: AirflowServices, docker_client: docker.DockerClient, action: str
) -> None:
    dag_id = f"rd_mark_{action}"
    run_id = services.trigger(dag_id)
    services.wait_task(dag_id, run_id, "loops", ("deferred",))
    wait_for_triggerer_streaming(services, dag_id, run_id, "loops", "tick")
    (first,) = running_containers(docker_client, dag_id, run_id, "loops")
    if action == "success":
        services.set_task_state(dag_id, run_id, "loops", "success")
    else:
        services.rest("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances",
                      {"dry_run": False, "dag_run_id": run_id, "task_ids": ["loops"], "only_failed": False})
    wait_until(lambda: not docker_client.api.inspect_container(first["Id"])["State"]["Running"], 30,
               f"the container stopped after {action}", every=0.2)
    assert docker_client.api.inspect_container(first["Id"])["State"]["ExitCode"] == 143
    if action == "clear":
        # the cleared task runs again in a fresh container of its own
        services.wait_task(dag_id, run_id, "loops", ("success",), timeout=90)
        tries = sorted(c["Labels"]["io.remote-docker.try_number"] for c in containers_of(docker_client, dag_id, run_id, "loops"))
        assert tries == ["1", "2"]
    else:
        assert services.states(dag_id, run_id)["loops"] == "success"


def test_triggerer_restart_does_not_stop_the_container(services: AirflowServices, docker_client: docker.DockerClient) -> None:
    run_id = services.trigger("rd_triggerer_restart")
    wait_for_triggerer_streaming(services, "rd_triggerer_restart", run_id, "survives", "tick")
    (container,) = containers_of(docker_client, "rd_triggerer_restart", run_id, "survives")
    try:
        services.stop_component("triggerer")  # SIGTERM: a shutdown, not a user action (it waits for its triggers)
        assert docker_client.api.inspect_container(container["Id"])["State"]["Running"], \
            "a triggerer shutdown stopped the container"
    finally:
        services.start_component("triggerer")  # the other tests of this module need it, whatever happened here
    assert services.wait_run("rd_triggerer_restart", run_id, timeout=90) == "success"
    log = services.task_log("rd_triggerer_restart", run_id, "survives")
    for i in range(1, 41):
        assert f"tick{i}" in log.splitlines()
    assert "all-done" in log.splitlines()
    assert docker_client.api.inspect_container(container["Id"])["State"]["ExitCode"] == 0


def test_execution_timeout_while_deferred(services: AirflowServices, docker_client: docker.DockerClient) -> None:
    run_id = services.trigger("rd_timeout")
    services.wait_task("rd_timeout", run_id, "slow", ("deferred",))
    assert services.wait_run("rd_timeout", run_id, timeout=90) == "failed"
    (container,) = containers_of(docker_client, "rd_timeout", run_id, "slow")
    state = docker_client.api.inspect_container(container["Id"])["State"]
    assert not state["Running"] and state["ExitCode"] == 137
    log = services.task_log("rd_timeout", run_id, "slow")
    assert "slow-started" in log and "execution_timeout (0:00:10) reached" in log


def test_worker_killed_after_start_reattaches(services: AirflowServices, docker_client: docker.DockerClient) -> None:
    run_id = services.trigger("rd_worker_kill")
    marker = services.home / "reattach.pid"
    wait_until(marker.exists, 60, "try 1 started its container", every=0.2)
    assert len(running_containers(docker_client, "rd_worker_kill", run_id, "reattach")) == 1
    os.kill(int(marker.read_text()), signal.SIGKILL)  # the task process our scheduler's worker started
    assert services.wait_run("rd_worker_kill", run_id, timeout=150) == "success"
    containers = containers_of(docker_client, "rd_worker_kill", run_id, "reattach")
    assert len(containers) == 1, "exactly one container ran for the task instance"
    assert containers[0]["Labels"]["io.remote-docker.try_number"] == "1"
    ti = services.ti("rd_worker_kill", run_id, "reattach")
    assert ti["try_number"] == 2
    log = services.task_log("rd_worker_kill", run_id, "reattach", try_number=2)
    assert "Reattaching to container" in log and "finished-once" in log


def test_secrets_never_in_logs_trigger_kwargs_events_or_the_database(services: AirflowServices, registry: Registry) -> None:
    """private_environment values and a registry password: masked in task and trigger logs, absent from
    trigger kwargs (even decrypted), trigger events, rendered fields, XComs and error messages."""
    from cryptography.fernet import Fernet

    secrets = [SECRET.encode(), registry.password.encode()]
    run_id = services.trigger("rd_masked")
    fernet = Fernet(re.search(r"^fernet_key = (\S+)$", (services.home / "airflow.cfg").read_text(), re.M).group(1))
    kwargs_seen = 0

    def finished_checking_kwargs() -> bool:
        nonlocal kwargs_seen
        rows = services.query("select cast(kwargs as text) from trigger")
        for (stored,) in rows:
            kwargs_seen += 1
            # Airflow 3.3 stores them as plain JSON (encrypted only if the client encrypts): check both ways
            decrypted = stored.encode() if stored.startswith("{") else fernet.decrypt(stored.encode())
            assert not any(secret in stored.encode() or secret in decrypted for secret in secrets), decrypted
        return services.run_state("rd_masked", run_id) in ("success", "failed")

    wait_until(finished_checking_kwargs, 180, "rd_masked finished")
    assert kwargs_seen, "never saw a trigger row while the tasks were deferred"
    assert services.states("rd_masked", run_id) == {"masked": "success", "masked_fails": "failed", "straddles": "success",
                                                     "private_pull": "success", "masked_fails_here": "failed"}
    straddled = services.task_log("rd_masked", run_id, "straddles")
    # the line begun on the worker went to the triggerer sealed and was logged there whole, redacted
    assert "Deferring while container" in straddled and "x***" in straddled and SECRET[:8] not in straddled, straddled[-600:]
    log = services.task_log("rd_masked", run_id, "masked")
    assert "secret=***" in log and "err-secret=***" in log, log[-2000:]
    for task_id in ("masked_fails", "masked_fails_here"):  # on a worker; from the triggerer on 3.3.1+
        failed = services.task_log("rd_masked", run_id, task_id)
        assert "exited with code 3" in failed and "[stdout] last=***" in failed, failed[-2000:]
    # what the UI shows under the one-line reason: Airflow's own frames and the operator's entry, as the official's
    frames = [frame for entry in services.task_log_entries("rd_masked", run_id, "masked_fails") if isinstance(entry, dict)
              for detail in entry.get("error_detail") or [] for frame in detail["frames"]]
    ours = [frame["name"] for frame in frames if "remote_docker" in frame["filename"] or "asyncio" in frame["filename"]]
    assert frames and ours == ["execute_complete", "_run"], frames
    assert "pulled" in services.task_log("rd_masked", run_id, "private_pull")
    files = [p for p in services.home.rglob("*") if p.is_file()]
    leaked = [str(p) for p in files if any(secret in p.read_bytes() for secret in secrets)]
    # the database (trigger kwargs, event payloads kept as next_kwargs, rendered fields, XComs) and every log
    assert leaked == []


def test_an_inline_client_private_key_is_masked_by_the_connections_api(services: AirflowServices, daemon: Daemon) -> None:
    """The key pasted as PEM, at the top and in a pool member: ``***`` in what the API (and the form, which shows
    what the API gives) returns. Under its old name, ``client_key``, Airflow would show it."""
    key = (daemon.client_dir / "key.pem").read_text()
    extra = {"ca_cert": str(daemon.client_dir / "ca.pem"), "client_cert": str(daemon.client_dir / "cert.pem"),
             "client_private_key": key, "daemons": [{"url": daemon.url, "client_private_key": key}]}
    body = {"connection_id": "rd_inline_key", "conn_type": "remote_docker", "host": "", "extra": json.dumps(extra)}
    services.rest("POST", "/api/v2/connections", body)
    try:
        for shown in (services.rest("GET", "/api/v2/connections/rd_inline_key"),
                      services.rest("GET", "/api/v2/connections?connection_id_pattern=rd_inline_key")):
            text = json.dumps(shown)
            assert "PRIVATE KEY" not in text and key.splitlines()[1] not in text, text[:500]
        returned = json.loads(services.rest("GET", "/api/v2/connections/rd_inline_key")["extra"])
        assert returned["client_private_key"] == "***" and returned["daemons"][0]["client_private_key"] == "***"
        assert returned["ca_cert"] == extra["ca_cert"], "only the key is hidden"
    finally:
        services.rest("DELETE", "/api/v2/connections/rd_inline_key")

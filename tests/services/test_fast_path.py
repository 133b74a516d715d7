"""Where a task starts and ends (real scheduler + triggerer): in the triggerer with no worker at all,
on a worker within its window, or deferred; and what a downstream task reads back from each.

Also the two faults a start in the triggerer adds: the triggerer killed while it starts a
container (exactly one container, adopted by the next triggerer), and a user ending the task
before any container exists (none is ever created).
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Iterator

import docker
import pytest
from airflow_services import AirflowServices, wait_until
from conftest import ROOT, Daemon, containers_of, running_services

from remote_docker import compat


@pytest.fixture(scope="module")
def hanging_registry() -> Iterator[str]:
    """A loopback 'registry' that accepts connections and never answers: a pull through it hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(5)
    for connection in held:
        connection.close()
    server.close()


@pytest.fixture(scope="module")
def services(daemon: Daemon, hanging_registry: str, tmp_path_factory) -> Iterator[AirflowServices]:
    with running_services(daemon, tmp_path_factory.mktemp("fast-home"), ROOT / "tests" / "services_dags", parallelism=4,
                          extra_env={"REMOTE_DOCKER_TEST_HANGING_REGISTRY": hanging_registry,
                                     "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "6"}) as found:
        yield found


def ti_rows(services: AirflowServices, dag_id: str, run_id: str) -> dict[tuple[str, int], tuple[str, str]]:
    rows = services.query("select task_id, map_index, state, hostname from task_instance where dag_id=? and run_id=?",
                          (dag_id, run_id))
    return {(task_id, map_index): (state, hostname or "") for task_id, map_index, state, hostname in rows}


def test_tasks_start_and_end_where_nothing_needs_a_worker(services: AirflowServices, docker_client: docker.DockerClient) -> None:
    run_id = services.trigger("rd_fast")
    assert services.wait_run("rd_fast", run_id, timeout=300) == "success"
    rows = ti_rows(services, "rd_fast", run_id)
    no_worker = {task for (task, _), (_, host) in rows.items() if not host}
    fails_here = {"in_triggerer_fails"} if compat.FAIL_IN_TRIGGERER else set()  # 3.3.0: a failure resumes on a worker
    assert no_worker == {"in_triggerer", "in_triggerer_all", "in_triggerer_number", "in_triggerer_silent",
                         "templated_in_triggerer", "in_triggerer_skips", *fails_here}, rows
    assert rows[("in_triggerer_fails", -1)][0] == "failed"
    assert {state for state, _ in rows.values()} == {"success", "failed", "skipped"}
    skipped = {task for (task, _), (state, _) in rows.items() if state == "skipped"}
    assert skipped == {"in_triggerer_skips", "deferred_skips", "skips_with_callback"}, rows
    # a skip ends where the container was followed: no worker starts again for it, unless a callback needs one
    for task_id in ("in_triggerer_skips", "deferred_skips"):
        log = services.task_log("rd_fast", run_id, task_id)
        assert "exited with code 7, listed in skip_on_exit_code: the task is skipped here, without a worker" in log
    with_callback = services.task_log("rd_fast", run_id, "skips_with_callback")
    assert "the task is skipped here" not in with_callback and "skip callback ran" in with_callback
    assert not containers_of(docker_client, "rd_fast", run_id, "in_triggerer_skips"), "auto_remove='force' removed it"
    assert len(containers_of(docker_client, "rd_fast", run_id, "deferred_skips")) == 1

    # a downstream task reads exactly what a worker push gives, whoever pushed it
    read = services.rest("GET", f"/api/v2/dags/rd_fast/dagRuns/{run_id}/taskInstances/read_back/xcomEntries/return_value")["value"]
    assert read["in_triggerer"] == read["on_worker"] == read["deferred_from_worker"] == ["str", "plain-string"]
    assert read["in_triggerer_all"] == read["on_worker_all"] == ["list", ["first", "plain-string"]]
    assert read["in_triggerer_number"] == read["on_worker_number"] == ["str", "42"]
    assert read["templated_in_triggerer"] == ["str", f"rendered-{run_id}"], "templates rendered in the triggerer"
    assert read["mapped"] == ["list", ["map-a", "map-b"]]
    # no stdout line: nothing pushed, where the task ended or not (a worker pushes nothing for None)
    assert read["in_triggerer_silent"] == read["on_worker_silent"] == ["NoneType", None]
    for silent in ("in_triggerer_silent", "on_worker_silent"):
        entries = services.rest("GET", f"/api/v2/dags/rd_fast/dagRuns/{run_id}/taskInstances/{silent}/xcomEntries")
        assert [entry["key"] for entry in entries["xcom_entries"]] == [], (silent, entries)

    deferred = services.task_log("rd_fast", run_id, "deferred_from_worker")
    assert "Deferring while container" in deferred and "the task ends here, without a worker" in deferred
    on_worker = services.task_log("rd_fast", run_id, "on_worker")
    assert "Deferring while container" not in on_worker and "plain-string" in on_worker
    assert "Starting on a worker, not in the triggerer" not in on_worker  # not asked for: no note
    failed = services.task_log("rd_fast", run_id, "in_triggerer_fails")
    assert "doomed" in failed and "exited with code 3" in failed
    # a failure with a retry left: try 1 fails from the triggerer and goes up for retry; try 2 fails for good
    assert services.ti("rd_fast", run_id, "fails_twice")["try_number"] == 2
    for try_number in (1, 2):
        log = services.task_log("rd_fast", run_id, "fails_twice", try_number=try_number)
        assert "exited with code 4" in log, log
        if compat.FAIL_IN_TRIGGERER:
            assert "the task fails here, without a worker; its retries apply" in log, log
    # a failure callback gets the exception a worker raises
    with_callback = services.task_log("rd_fast", run_id, "fails_with_callback")
    assert "failure callback saw ContainerFailedException" in with_callback and "fails here" not in with_callback
    assert not containers_of(docker_client, "rd_fast", run_id, "in_triggerer"), "auto_remove='success' removed it"
    assert len(containers_of(docker_client, "rd_fast", run_id, "in_triggerer_all")) == 1


def test_triggerer_killed_while_starting_leaves_exactly_one_container(services: AirflowServices,
                                                                      docker_client: docker.DockerClient) -> None:
    dag_id, task_id = "rd_fast_triggerer_dies", "survives_start"
    run_id = services.trigger(dag_id)
    wait_until(lambda: containers_of(docker_client, dag_id, run_id, task_id), 120, "the triggerer created the container",
               every=0.05)
    services.stop_component("triggerer", sig=signal.SIGKILL)
    services.start_component("triggerer")
    assert services.wait_run(dag_id, run_id, timeout=180) == "success"
    (container,) = containers_of(docker_client, dag_id, run_id, task_id)
    assert docker_client.api.inspect_container(container["Id"])["State"]["ExitCode"] == 0
    assert ti_rows(services, dag_id, run_id)[(task_id, -1)][1] == "", "no worker ran it"
    log = services.task_log(dag_id, run_id, task_id)
    assert "done-once" in log and "Continuing with container" in log, log[-3000:]


def test_user_ends_the_task_before_any_container_exists(services: AirflowServices, docker_client: docker.DockerClient) -> None:
    dag_id, task_id = "rd_fast_kill_during_start", "never_starts"
    run_id = services.trigger(dag_id)
    wait_until(lambda: "Pulling " in services.task_log(dag_id, run_id, task_id), 90, "the triggerer pulling the image")
    services.set_task_state(dag_id, run_id, task_id, "failed")
    wait_until(lambda: "Trigger cancelled by user action" in services.output("triggerer")
               or "cancelled by user action" in services.task_log(dag_id, run_id, task_id), 60, "the trigger cancelled")
    assert services.states(dag_id, run_id)[task_id] == "failed"
    assert not containers_of(docker_client, dag_id, run_id, task_id), "a container was created after the user ended the task"

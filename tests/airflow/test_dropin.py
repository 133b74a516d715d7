"""Switching from the official operator by changing the import: its own examples, and the behaviours a user's
DAGs rely on, run with both operators on the test daemon (tests/dropin_dags/rd_dropin.py, one definition built
twice); the same state and XCom on both, but for the deliberate differences docs/migrating.md names.
"""

from __future__ import annotations

import json

import docker
import pytest
from conftest import BUSYBOX_IMAGE, CLOUDPICKLE_IMAGE, PYTHON_IMAGE, ROOT, AirflowEnv, Daemon, DagRunResult, closed_port

PAIRS = ("docker_test", "docker_sample_copy_data", "docker_taskflow", "dropin")
CLOCK = {"print_date"}  # the example's `date`: equal in kind, never in value


@pytest.fixture(scope="module")
def dropin(airflow_env: AirflowEnv, daemon: Daemon, tmp_path_factory) -> dict:
    out, data = tmp_path_factory.mktemp("dropin-out"), tmp_path_factory.mktemp("dropin-data")
    for flavour in ("official", "ours"):
        for folder in ("in", "out"):
            (data / flavour / folder).mkdir(parents=True)
        (data / flavour / "in" / "report.csv").write_text(f"moved by the {flavour} operator\n")
    env = {"AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "tests" / "dropin_dags"), "DROPIN_OUT": str(out),
           "DROPIN_DATA": str(data), "DROPIN_CLOSED_URL": f"tcp://127.0.0.1:{closed_port()}",
           "REMOTE_DOCKER_TEST_IMAGE": BUSYBOX_IMAGE, "REMOTE_DOCKER_TEST_PYTHON_IMAGE": PYTHON_IMAGE,
           "REMOTE_DOCKER_TEST_CLOUDPICKLE_IMAGE": CLOUDPICKLE_IMAGE,
           # docker-py lets these replace the CA the official operator is given (docker-py #2672)
           "REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": ""}
    runs = {(pair, flavour): airflow_env.dags_test(f"{pair}_{flavour}", extra_env=env)
            for pair in PAIRS for flavour in ("official", "ours")}
    return {"runs": runs, "out": out, "data": data}


def run_of(dropin: dict, pair: str, flavour: str) -> DagRunResult:
    return dropin["runs"][(pair, flavour)]


def seen(dropin: dict, pair: str, flavour: str, task_id: str) -> dict:
    return json.loads((dropin["out"] / f"{pair}_{flavour}.{task_id}.json").read_text())


# Where the official operator fails and ours does not (docs/migrating.md): docker-py 7 refuses the official
# copy-data example's api_version="1.19"; ours negotiates a version the daemon speaks instead
OURS_RUNS_IT = {("docker_sample_copy_data", "move_data"): "API versions below 1.24 are no longer supported",
                ("docker_sample_copy_data", "print"): None}


@pytest.mark.parametrize("pair", PAIRS)
def test_each_task_ends_in_the_same_state_with_the_same_xcom(dropin: dict, pair: str) -> None:
    official, ours = run_of(dropin, pair, "official"), run_of(dropin, pair, "ours")
    for (where, task_id), why in OURS_RUNS_IT.items():
        if where == pair:
            assert official[task_id].state in ("failed", "upstream_failed") and ours[task_id].state == "success"
            assert why is None or why in official[task_id].text()
            official.tasks[task_id] = ours.tasks[task_id]  # the rest compares as usual
    assert {t: official[t].state for t in official.tasks} == {t: ours[t].state for t in ours.tasks}, ours.stdout[-4000:]
    assert {t: official[t].xcom for t in official.tasks if t not in CLOCK} == \
        {t: ours[t].xcom for t in ours.tasks if t not in CLOCK}


def test_the_official_examples_do_what_they_say(dropin: dict) -> None:
    copy = run_of(dropin, "docker_sample_copy_data", "ours")
    assert copy["move_data"].xcom == "/your/output_dir/path/report.csv"
    assert copy["print"].xcom == "moved by the ours operator"
    assert (dropin["data"] / "ours" / "out" / "report.csv").exists()
    for flavour in ("official", "ours"):
        assert run_of(dropin, "docker_test", flavour)["docker_op_tester"].state == "success"
        taskflow = run_of(dropin, "docker_taskflow", flavour)
        assert taskflow["transform"].xcom == {"total_order_value": 1236.7}
        assert "Total order value is: 1236.70" in taskflow["load"].text()


def test_the_behaviours_a_switching_user_relies_on(dropin: dict) -> None:
    ours = run_of(dropin, "dropin", "ours")
    assert ours["strip"].xcom == "x" and ours["blank_last"].xcom == ""
    assert ours["xcom_all"].xcom == ["a", "b"] and ours["xcom_all_empty"].xcom is None
    assert ours["environment"].xcom == "{'n': 1}|[1, 2]|True|unset"
    assert ours["skipped"].state == "skipped" and ours["url_list"].xcom == "reached"
    assert ours["no_output_path"].state == "success" and ours["no_output_path"].xcom is None
    assert ours["with_dill"].xcom == 6 and ours["default_serializer"].xcom == "DROP-IN"


def test_failures_raise_the_official_exception_with_the_last_lines(dropin: dict) -> None:
    for flavour in ("official", "ours"):
        failure = seen(dropin, "dropin", flavour, "fails")
        assert "DockerContainerFailedException" in failure["classes"], failure
        assert any("before-failure" in line for line in failure["logs"]), failure


def test_a_result_that_is_not_a_pickle_is_retried_like_any_failure(dropin: dict, airflow_env: AirflowEnv) -> None:
    import sqlite3

    for flavour in ("official", "ours"):
        with sqlite3.connect(airflow_env.home / "airflow.db") as db:
            try_number = db.execute("select try_number from task_instance where dag_id=? and task_id='bad_pickle' "
                                    "order by start_date desc limit 1", (f"dropin_{flavour}",)).fetchone()[0]
        assert try_number == 2, f"{flavour}: the retry ran"


def test_execution_timeout_stops_with_a_grace_so_a_trap_runs(dropin: dict, docker_client: docker.DockerClient) -> None:
    trapping = [c for c in docker_client.containers.list(all=True, filters={"ancestor": BUSYBOX_IMAGE})
                if c.attrs["Config"]["Cmd"][-1].startswith("trap 'echo cleaned-up")]
    ours = run_of(dropin, "dropin", "ours").run_id
    by_flavour = {"ours": [c for c in trapping if c.labels.get("io.remote-docker.run_id") == ours],
                  "official": [c for c in trapping if "io.remote-docker.run_id" not in c.labels]}
    for flavour, (container,) in by_flavour.items():
        assert run_of(dropin, "dropin", flavour)["timeout_trap"].state == "failed"
        assert b"cleaned-up" in container.logs(), f"{flavour}: SIGTERM first, so the container's trap ran"
        assert container.attrs["State"]["ExitCode"] == 143


def test_a_fixed_container_name_on_a_retry(dropin: dict, docker_client: docker.DockerClient) -> None:
    """Deliberately different: the official fails the retry on the name; ours renames the earlier try's
    container (kept for inspection) and runs the retry."""
    official, ours = run_of(dropin, "dropin", "official"), run_of(dropin, "dropin", "ours")
    assert official["fixed_name"].state == ours["fixed_name"].state == "failed"
    assert "try-2" in ours["fixed_name"].text() and "try-2" not in official["fixed_name"].text()
    kept = docker_client.containers.get("rd-dropin-ours-fixed-try1")
    assert b"try-1" in kept.logs()
    for name in ("rd-dropin-ours-fixed", "rd-dropin-ours-fixed-try1", "rd-dropin-official-fixed"):
        docker_client.containers.get(name).remove(force=True)


def test_what_a_callback_or_subclass_touches_of_the_operator(dropin: dict) -> None:
    official, ours = (seen(dropin, "dropin", flavour, "surface") for flavour in ("official", "ours"))
    assert official == ours == {"format_command": ["echo", "a b"], "hook": True, "env_file": {"A": "1", "B": "two"},
                                "cli_api": True, "container_id": True}

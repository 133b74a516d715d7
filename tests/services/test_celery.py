"""The executor-sensitive paths at the defaults on CeleryExecutor, the official compose file's executor (a Redis
broker, the result backend in PostgreSQL, two Celery workers), and on LocalExecutor beside it.

What differs between them is when the executor's report of a try reaches the scheduler: Celery's comes through its
result backend, polled at the scheduler's heartbeat. A task that defers from its worker and resumes on a worker
meets that report of its deferring try (a stale "success"); the defaults hold the resume back
(``min_deferred_seconds``) so that the scheduler handles the report while the task is still deferred, where it
writes nothing. The scheduler's own log line for the report shows the state it met.

The whole service suite runs on CeleryExecutor with ``REMOTE_DOCKER_TEST_EXECUTOR=celery`` (docs/development.md).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator

import docker
import pytest
from airflow_services import AirflowServices
from conftest import ROOT, Daemon, containers_of, running_services

BURST = 40  # REMOTE_DOCKER_TEST_BURST in rd_celery.py; bench/run --only burst --executor celery runs 200


@pytest.fixture(scope="module", params=["celery", "local"])
def services(request: pytest.FixtureRequest, daemon: Daemon, postgres: str, tmp_path_factory) -> Iterator[AirflowServices]:
    celery = request.param == "celery"
    with running_services(daemon, tmp_path_factory.mktemp(f"{request.param}-home"), ROOT / "tests" / "services_dags",
                          parallelism=4, database_url=None if celery else postgres, celery=celery,
                          extra_env={"REMOTE_DOCKER_TEST_BURST": str(BURST)}) as found:
        yield found


def xcoms(services: AirflowServices, dag_id: str, run_id: str) -> dict[str, object]:
    rows = services.query("select task_id, cast(value as text) from xcom where dag_id=? and run_id=? and key='return_value'",
                          (dag_id, run_id))
    return {task_id: json.loads(value) for task_id, value in rows}


def state_mismatches(services: AirflowServices, dag_id: str) -> list[tuple]:
    """The scheduler's record of an executor report that failed a task it met queued or running."""
    return services.query("select task_id, extra from log where event='state mismatch' and dag_id=?", (dag_id,))


def test_executor_runs_what_it_was_asked(services: AirflowServices) -> None:
    executor = services.env["AIRFLOW__CORE__EXECUTOR"]
    assert executor == ("CeleryExecutor" if services.celery_broker_url else "LocalExecutor")
    if services.celery_broker_url:  # the tasks ran on Celery's two workers, not in the scheduler
        assert {"celery-worker-1", "celery-worker-2"} <= set(services.procs)


def test_a_burst_of_immediate_exits_fails_nothing(services: AirflowServices, docker_client: docker.DockerClient) -> None:
    run_id = services.trigger("rd_executor_burst")
    assert services.wait_run("rd_executor_burst", run_id, timeout=600) == "success", services.states("rd_executor_burst", run_id)
    states = services.states("rd_executor_burst", run_id)
    assert len(states) == BURST and set(states.values()) == {"success"}, states
    assert xcoms(services, "rd_executor_burst", run_id) == {f"b{i:03d}": f"exit-{i}" for i in range(BURST)}
    assert not state_mismatches(services, "rd_executor_burst")
    left = [task for task in states if containers_of(docker_client, "rd_executor_burst", run_id, task)]
    assert not left, f"containers left behind by {left}"
    if services.celery_broker_url:  # both workers took tasks
        workers_used = {name for name in ("celery-worker-1", "celery-worker-2")
                        if "rd_executor_burst" in services.output(name)}
        assert workers_used == {"celery-worker-1", "celery-worker-2"}, workers_used


def test_a_resumed_task_outlasts_the_executors_stale_report(services: AirflowServices) -> None:
    run_id = services.trigger("rd_executor_resume")
    assert services.wait_run("rd_executor_resume", run_id, timeout=300) == "success", services.states("rd_executor_resume", run_id)
    tasks = [f"r{i}" for i in range(6)]
    assert xcoms(services, "rd_executor_resume", run_id) == {task: f"resumed-{task[1:]}" for task in tasks}
    tries = dict(services.query("select task_id, try_number from task_instance where dag_id=? and run_id=?",
                                ("rd_executor_resume", run_id)))
    assert tries == dict.fromkeys(tasks, 1), tries  # no task was failed and retried
    assert not state_mismatches(services, "rd_executor_resume")
    # every deferring try's "success" reached the scheduler while its task was still deferred
    report = re.compile(rf"^(\S+) .*TaskInstance Finished: dag_id=rd_executor_resume, task_id=(r\d), "
                        rf"run_id={re.escape(run_id)}, .*? state=(\w+), executor=.*?, executor_state=(\w+), try_number=1,",
                        re.M)
    met: dict[str, dict[tuple[str, str], float]] = {}
    for found in report.finditer(services.output("scheduler")):
        met.setdefault(found[2], {})[(found[3], found[4])] = _timestamp(found[1])
    assert all(("deferred", "success") in met.get(task, {}) for task in tasks), met
    lags = []
    for task in tasks:  # the worker deferred it, and a worker decoded the pickle after the resume
        entries = services.task_log_entries("rd_executor_resume", run_id, task)
        deferred = [_timestamp(e["timestamp"]) for e in entries
                    if isinstance(e, dict) and str(e.get("event", "")).startswith("Deferring while container")]
        assert deferred, entries[-10:]
        lags.append(met[task][("deferred", "success")] - deferred[0])
    # how long the stale report took, against the guard it must stay within (not a target: the run's figures)
    print(f"{services.env['AIRFLOW__CORE__EXECUTOR']}: stale report handled {min(lags):.2f}-{max(lags):.2f} s "
          "after the deferral")


def _timestamp(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

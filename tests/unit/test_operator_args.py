"""Operator arguments checked when the DAG is parsed: one line naming the argument and the choices."""

from __future__ import annotations

import inspect
import logging
import warnings

import pytest

from remote_docker.operators import RemoteDockerOperator


def make(**kwargs) -> RemoteDockerOperator:
    return RemoteDockerOperator(task_id="t", image="busybox", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"auto_remove": "always"}, "auto_remove='always' is not valid; use one of 'never', 'success', 'force'"),
        ({"auto_remove": True}, "auto_remove=True is not valid"),
        ({"pull": "sometimes"}, "pull='sometimes' is not valid; use one of 'missing', 'always', 'never'"),
        ({"output_format": "yaml"}, "output_format='yaml' is not valid; use one of 'pickle', 'json'"),
        ({"port_bindings": {80: 8080}, "network_mode": "host"}, "port_bindings can't be used with network_mode='host'"),
        ({"max_output_bytes": 0}, "max_output_bytes=0 must be positive"),
    ],
)
def test_invalid_choices(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        make(**kwargs)
    assert str(info.value) == message or str(info.value).startswith(message)


def test_force_pull_means_always() -> None:
    assert make(force_pull=True).pull == "always"
    assert make().pull == "missing"


def test_official_only_arguments_are_accepted_and_named_not_warned_about_at_parse() -> None:
    """Said in the task's own log when it runs (tests/airflow/test_operator_dag.py), not in every task's log of the file."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        operator = make(mount_tmp_dir=True, tmp_dir="/tmp/airflow", tls_ssl_version="TLSv1_2")
    assert operator.mount_tmp_dir is True and not caught
    assert operator.ignored_arguments == ["mount_tmp_dir", "tmp_dir", "tls_ssl_version"]
    assert make().ignored_arguments == []


def test_skip_on_exit_code_forms() -> None:
    assert make(skip_on_exit_code=3).skip_on_exit_code == (3,)
    assert make(skip_on_exit_code=[1, 2]).skip_on_exit_code == [1, 2]
    assert make().skip_on_exit_code == ()


def official_parameters(cls) -> dict[str, inspect.Parameter]:
    return {name: p for name, p in inspect.signature(cls.__init__).parameters.items() if name not in ("self", "kwargs")}


def test_every_official_parameter_is_accepted() -> None:
    """Switching is changing the import: DockerOperator's own arguments, at its own defaults, construct ours."""
    from airflow.providers.docker.operators.docker import DockerOperator

    official = official_parameters(DockerOperator)
    assert set(official) <= set(official_parameters(RemoteDockerOperator)), set(official) - set(official_parameters(RemoteDockerOperator))
    defaults = {name: p.default for name, p in official.items() if p.default is not inspect.Parameter.empty}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mount_tmp_dir=True (its default) is accepted with a warning
        operator = RemoteDockerOperator(task_id="t", image="busybox", **defaults)
    assert operator.plan().spec.create_body({})["Image"] == "busybox"


def test_template_fields_match_the_official_operator() -> None:
    from airflow.providers.docker.operators.docker import DockerOperator

    assert set(RemoteDockerOperator.template_fields) >= set(DockerOperator.template_fields)
    assert set(RemoteDockerOperator.template_ext) == set(DockerOperator.template_ext)
    assert "private_environment" not in RemoteDockerOperator.template_fields


def test_every_official_decorator_parameter_is_accepted() -> None:
    from airflow.providers.docker.decorators.docker import _DockerDecoratedOperator

    from remote_docker.decorators import _RemoteDockerDecoratedOperator

    assert set(official_parameters(_DockerDecoratedOperator)) <= set(official_parameters(_RemoteDockerDecoratedOperator))


def test_hook_params_reach_the_trigger_unchanged() -> None:
    operator = make(docker_url="tcp://d:2376", tls_ca_cert="/c/ca.pem", tls_hostname="docker", timeout=5)
    assert operator.hook_params == {"docker_url": "tcp://d:2376", "tls_ca_cert": "/c/ca.pem", "tls_hostname": "docker", "timeout": 5}


def test_min_deferred_seconds_default_and_environment(monkeypatch) -> None:
    monkeypatch.delenv("REMOTE_DOCKER_MIN_DEFERRED_SECONDS", raising=False)
    assert make().min_deferred_seconds == 10.0
    monkeypatch.setenv("REMOTE_DOCKER_MIN_DEFERRED_SECONDS", "0")
    assert make().min_deferred_seconds == 0.0
    assert make(min_deferred_seconds=3).min_deferred_seconds == 3


OPT_IN = {"start_from_trigger": True}


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({}, "start_from_trigger is not set"),
        (OPT_IN, None),
        ({**OPT_IN, "deferrable": False}, "deferrable=False"),
        ({**OPT_IN, "private_environment": {"TOKEN": "x"}}, "private_environment values would be stored in the serialized DAG"),
        ({**OPT_IN, "docker_conn_id": "registry"}, "registry credentials are fetched on a worker only"),
        ({**OPT_IN, "files": {"/in/a.txt": "a"}}, "files= are copied in from a worker"),
        ({**OPT_IN, "pool": "docker_hosts"}, "its pool and concurrency limits are enforced only when a worker starts it"),
        ({**OPT_IN, "max_active_tis_per_dag": 2}, "its pool and concurrency limits are enforced only when a worker starts it"),
        ({**OPT_IN, "command": "echo {{ ti.xcom_pull(task_ids='up') }}"},
         "its templates pull XComs, which this Airflow's triggerer can't serve (see compat.py)"),
        ({**OPT_IN, "on_execute_callback": print}, "on_execute_callback runs on a worker"),
    ],
)
def test_why_a_task_starts_on_a_worker(kwargs: dict, reason: str | None) -> None:
    from remote_docker import compat

    if kwargs and not compat.START_IN_TRIGGERER:
        reason = "Airflow < 3.3 can't start tasks in the triggerer"
    operator = make(**kwargs)
    assert operator.plan().worker_start_reason == reason
    assert operator.start_from_trigger is (reason is None)
    assert (operator.start_trigger_args is None) is (reason is not None)
    assert RemoteDockerOperator.start_from_trigger is False and RemoteDockerOperator.start_trigger_args is None


def test_an_xcomarg_argument_starts_on_a_worker() -> None:
    from airflow.sdk import DAG

    from remote_docker import compat

    with DAG("d", schedule=None):
        upstream = RemoteDockerOperator(task_id="up", image="busybox")
        operator = RemoteDockerOperator(task_id="down", image="busybox", command=upstream.output, start_from_trigger=True)
    if compat.START_IN_TRIGGERER:
        assert operator.plan().worker_start_reason == "an argument is not plain data (an XComArg or an object); it is resolved on a worker"


def test_a_decorated_function_starts_on_a_worker() -> None:
    from airflow.sdk import DAG, task

    from remote_docker import compat

    with DAG("d", schedule=None):
        @task.remote_docker(image="python:3", start_from_trigger=True)
        def f() -> int:
            return 1

        operator = f().operator
    expected = ("a @task.remote_docker function and its arguments are copied in from a worker" if compat.START_IN_TRIGGERER
                else "Airflow < 3.3 can't start tasks in the triggerer")
    assert operator.plan().worker_start_reason == expected and operator.start_from_trigger is False


class History:
    """A task instance as far as ``TaskPlan.follow_for`` asks it: its previous run's duration in a state."""

    map_index = -1

    def __init__(self, duration: float | None, state: str = "success") -> None:
        self.duration, self.state, self.asked = duration, state, []
        self.dag_id, self.task_id = "rd_history_test", f"never-run-{id(self)}"  # no record on this machine

    def get_previous_ti(self, state: str, map_index: int):
        self.asked.append(state)
        found = self.duration is not None and state == self.state
        return type("Previous", (), {"duration": self.duration})() if found else None


@pytest.mark.parametrize(("kwargs", "previous", "followed"), [
    ({}, None, 2.0),                           # no history: the default window
    ({"retrieve_output": True, "retrieve_output_path": "/o"}, None, 12.0),  # resumes on a worker: as long as the guard
    ({}, 3.4, 6.8),                            # always short: followed like the official, deferred if twice as long
    ({}, 0.2, 2.0),                            # never less than the default window
    ({}, 25.0, 0.0),                           # ends in the triggerer and took long: defer at once
    ({"retrieve_output": True, "retrieve_output_path": "/o"}, 25.0, 50.0),  # resumes on a worker: long only past 60 s
    ({"retrieve_output": True, "retrieve_output_path": "/o"}, 75.0, 0.0),
    ({"defer_after": 5}, 300.0, 5.0),          # what the DAG says wins
])
def test_how_long_the_worker_follows_before_deferring(kwargs: dict, previous: float | None, followed: float) -> None:
    from remote_docker import compat

    operator = make(min_deferred_seconds=10, **kwargs)
    # before 3.3 nothing ends in the triggerer and Airflow tells no earlier run: the default window, for every task
    expected = followed if compat.PREVIOUS_TASK_INSTANCE or "defer_after" in kwargs else 2.0
    if compat.PREVIOUS_TASK_INSTANCE and not compat.END_IN_TRIGGERER and not kwargs and previous == 25.0:
        expected = 50.0  # nothing ends in the triggerer there: resuming on a worker is the rule
    assert operator.plan().follow_for(History(previous), logging.getLogger("test")) == expected


def test_a_task_with_a_skip_code_learns_its_length_from_its_skipped_runs_too() -> None:
    from remote_docker import compat

    if not (compat.PREVIOUS_TASK_INSTANCE and compat.END_IN_TRIGGERER):
        return  # nothing asked of Airflow, or a skip resumes on a worker: the default window
    skipped_before = History(3.0, state="skipped")
    assert make(skip_on_exit_code=7).plan().follow_for(skipped_before, logging.getLogger("test")) == 6.0
    assert skipped_before.asked == ["success", "skipped"]
    without_skips = History(3.0, state="skipped")
    assert make().plan().follow_for(without_skips, logging.getLogger("test")) == 2.0, "no skip code: success only"
    assert without_skips.asked == ["success"]


def test_a_short_run_this_worker_saw_decides_without_asking_airflow(monkeypatch, tmp_path) -> None:
    from remote_docker.lifecycle import history

    monkeypatch.setattr(history, "_path", lambda dag_id, task_id: tmp_path / f"{dag_id}.{task_id}")

    class NotToBeAsked(History):
        def get_previous_ti(self, state: str, map_index: int):
            raise AssertionError("asked Airflow although this worker saw the last run")

    ti = NotToBeAsked(None)
    history.remember(ti.dag_id, ti.task_id, 1.5)
    assert history.last(ti.dag_id, ti.task_id) == 1.5
    assert make(min_deferred_seconds=10).plan().follow_for(ti, logging.getLogger("test")) == 3.0  # followed twice as long as it ran
    history.remember(ti.dag_id, ti.task_id, history.DEFERRED)  # it deferred last time: its length is Airflow's to say
    asked = History(25.0)
    asked.dag_id, asked.task_id = ti.dag_id, ti.task_id

    # Airflow says it took 25 s (3.3: defer at once, it ends in the triggerer); where Airflow can't say, it outlasted
    # what this worker followed: defer at once too
    assert make(min_deferred_seconds=10).plan().follow_for(asked, logging.getLogger("test")) == 0.0
    (tmp_path / f"{ti.dag_id}.{ti.task_id}").write_text("garbage")
    assert history.last(ti.dag_id, ti.task_id) is None

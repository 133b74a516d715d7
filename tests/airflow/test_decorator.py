"""@task.remote_docker under real `airflow dags test` with a locally built Python image."""

from __future__ import annotations

import platform
import sqlite3
import sys

import pytest
from conftest import CLOUDPICKLE_IMAGE, IMAGE_PYTHON, PYTHON_IMAGE, ROOT, AirflowEnv, DagRunResult, xcom_value
from helpers import error_line

from remote_docker.decorators import remote_docker_task


@pytest.fixture(scope="module")
def run(airflow_env: AirflowEnv) -> DagRunResult:
    return airflow_env.dags_test("rd_decorator", extra_env={
        "REMOTE_DOCKER_TEST_PYTHON_IMAGE": PYTHON_IMAGE, "REMOTE_DOCKER_TEST_CLOUDPICKLE_IMAGE": CLOUDPICKLE_IMAGE})


def mapped_xcoms(airflow_env: AirflowEnv, run: DagRunResult, task_id: str) -> dict[int, object]:
    with sqlite3.connect(airflow_env.home / "airflow.db") as db:
        rows = db.execute("select map_index, value from xcom where dag_id=? and run_id=? and task_id=? and key='return_value'",
                          (run.dag_id, run.run_id, task_id)).fetchall()
    return {index: xcom_value(value) for index, value in rows}


def xcom(airflow_env: AirflowEnv, run: DagRunResult, task_id: str, key: str) -> object:
    with sqlite3.connect(airflow_env.home / "airflow.db") as db:
        (value,) = db.execute("select value from xcom where dag_id=? and run_id=? and task_id=? and key=?",
                              (run.dag_id, run.run_id, task_id, key)).fetchone()
    return xcom_value(value)


def test_return_value_of_several_types(run: DagRunResult) -> None:
    task = run["transform"]
    assert task.state == "success"
    # the set survives pickle; XCom's JSON serialization then stores it as Airflow does
    assert task.xcom["total"] == 60 and task.xcom["rows"] == 3
    assert task.stdout() == ["rows=3 python=(3, 11)"]


def test_multiple_outputs(run: DagRunResult, airflow_env: AirflowEnv) -> None:
    assert run["split"].state == "success"
    assert xcom(airflow_env, run, "split", "left") == 1
    assert xcom(airflow_env, run, "split", "right") == [2, 3]


def test_mapping_over_five_inputs(run: DagRunResult, airflow_env: AirflowEnv) -> None:
    assert mapped_xcoms(airflow_env, run, "double") == {0: 2, 1: 4, 2: 6, 3: 8, 4: 10}


def test_ten_megabyte_argument(run: DagRunResult) -> None:
    assert run["big_argument"].state == "success"
    assert run["big_argument"].xcom == 10 * 1024 * 1024


def test_exception_fails_with_the_remote_traceback(run: DagRunResult) -> None:
    task = run["raises"]
    assert task.state == "failed"
    stderr = task.stderr()
    assert stderr[0] == "Traceback (most recent call last):"
    assert any('in raises' in line for line in stderr) and any("in inner" in line for line in stderr)
    assert stderr[-1] == "ValueError: broken on purpose"
    assert "exited with code 1" in error_line(run, "raises")
    # the frames name the DAG file's own lines, as a reader of the DAG file counts them
    dag_file = (ROOT / "tests" / "dags" / "rd_decorator.py").read_text().splitlines()
    raise_line = next(i for i, line in enumerate(dag_file, 1) if 'raise ValueError("broken on purpose")' in line)
    assert any(f'File "rd_decorator.py", line {raise_line}, in inner' in line for line in stderr), stderr


def test_print_streams_live(run: DagRunResult) -> None:
    task = run["streams"]
    assert task.stdout() == ["progress 0", "progress 1", "progress 2"]
    assert task.stderr() == ["to stderr"]
    assert task.xcom == "streamed"


def test_json_serializer(run: DagRunResult) -> None:
    assert run["as_json"].xcom == {"sum": 6}


def test_cloudpickle_serializer(run: DagRunResult) -> None:
    if sys.version_info[:2] == IMAGE_PYTHON:
        assert run["with_cloudpickle"].state == "success"
        assert run["with_cloudpickle"].xcom == 16
    else:  # cloudpickle's bytecode runs only on the Python minor that wrote it: refused before loading
        assert run["with_cloudpickle"].state == "failed"
        minor = f"{sys.version_info[0]}.{sys.version_info[1]}"
        assert error_line(run, "with_cloudpickle") == (
            f"the container's Python 3.11.2 can't run what cloudpickle wrote on the worker's Python "
            f"{platform.python_version()} (it needs the same Python minor on both sides); "
            f"use an image with Python {minor}, or serializer='pickle'")


def test_cloudpickle_missing_in_image(run: DagRunResult) -> None:
    assert run["cloudpickle_missing"].state == "failed"
    assert error_line(run, "cloudpickle_missing") == (
        "the container's Python 3.11.2 can't import cloudpickle; install it in the image or use serializer='pickle'")


def test_arguments_the_container_cannot_read(run: DagRunResult) -> None:
    # the same path as a pickle from a newer Python: the container fails to load the arguments
    assert run["unreadable_argument"].state == "failed"
    message = error_line(run, "unreadable_argument")
    assert message.startswith("the container's Python 3.11.2 can't read the arguments written with pickle by the worker's Python")
    assert message.endswith("use an image with a matching Python, or serializer='json'")


def test_image_without_python(run: DagRunResult) -> None:
    assert run["no_python"].state == "failed"
    message = error_line(run, "no_python")
    assert "rd-test/busybox:latest has no 'python3'" in message
    assert message.endswith("use an image with Python, or set python_command to its interpreter")


def test_unserializable_result(run: DagRunResult) -> None:
    assert run["unserializable_result"].state == "failed"
    assert error_line(run, "unserializable_result").startswith(
        "the return value of unserializable_result (lock) can't be serialized with pickle (TypeError:")


def test_runs_as_another_user(run: DagRunResult) -> None:
    assert run["as_nobody"].xcom == 65534


def test_templated_arguments(run: DagRunResult) -> None:
    assert run["templated"].xcom == run.run_id.upper()


def test_not_a_plain_function_is_refused_at_parse_time() -> None:
    with pytest.raises(TypeError, match="not a lambda; define it with def"):
        remote_docker_task(lambda: 1, image="x")()
    factor = 3

    def closure() -> int:
        return factor

    with pytest.raises(TypeError, match="closure uses factor from its enclosing function, which can't travel"):
        remote_docker_task(closure, image="x")()


def test_unknown_serializer() -> None:
    def plain() -> int:
        return 1

    with pytest.raises(ValueError, match="serializer='yaml' is not valid; use one of 'pickle', 'cloudpickle', 'dill', 'json'"):
        remote_docker_task(plain, image="x", serializer="yaml")()

"""Operator arguments checked when the DAG is parsed: one line naming the argument and the choices."""

from __future__ import annotations

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
        ({"retrieve_output": True}, "retrieve_output=True needs retrieve_output_path"),
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


def test_official_only_arguments_are_accepted_with_a_warning() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        operator = make(mount_tmp_dir=True, tmp_dir="/tmp/airflow", tls_ssl_version="TLSv1_2")
    assert operator.mount_tmp_dir is True
    assert any("a remote daemon can't see the worker's folders" in str(w.message) for w in caught)


def test_skip_on_exit_code_forms() -> None:
    assert make(skip_on_exit_code=3).skip_on_exit_code == (3,)
    assert make(skip_on_exit_code=[1, 2]).skip_on_exit_code == [1, 2]
    assert make().skip_on_exit_code == ()


def test_template_fields_match_the_official_operator() -> None:
    assert set(RemoteDockerOperator.template_fields) >= {"image", "command", "environment", "env_file", "container_name", "mounts"}
    assert "private_environment" not in RemoteDockerOperator.template_fields
    assert set(RemoteDockerOperator.template_ext) == {".sh", ".bash", ".env"}


def test_hook_params_reach_the_trigger_unchanged() -> None:
    operator = make(docker_url="tcp://d:2376", tls_ca_cert="/c/ca.pem", tls_hostname="docker", timeout=5)
    assert operator.hook_params == {"docker_url": "tcp://d:2376", "tls_ca_cert": "/c/ca.pem", "tls_hostname": "docker", "timeout": 5}


def test_min_deferred_seconds_default_and_environment(monkeypatch) -> None:
    monkeypatch.delenv("REMOTE_DOCKER_MIN_DEFERRED_SECONDS", raising=False)
    assert make().min_deferred_seconds == 10.0
    monkeypatch.setenv("REMOTE_DOCKER_MIN_DEFERRED_SECONDS", "0")
    assert make().min_deferred_seconds == 0.0
    assert make(min_deferred_seconds=3).min_deferred_seconds == 3

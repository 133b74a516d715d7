"""RemoteDockerOperator under real `airflow dags test` against the real mutual-TLS daemon.

tests/dags/rd_behaviour.py runs twice and each test checks one of its tasks in both runs: once as
tasks run by default (most of these containers end inside the worker's ``defer_after`` window and
never defer), once with ``defer_after=0`` so every task defers and the trigger (run inline by
`dags test`) does the watching."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import docker
import pytest
from conftest import AirflowEnv, Daemon, DagRunResult, containers_of
from helpers import error_line

SECRET = "pr1vate-Value-42"


@pytest.fixture(scope="module", params=["window", "deferred"])
def run(request, airflow_env: AirflowEnv) -> DagRunResult:
    extra = {"REMOTE_DOCKER_DEFER_AFTER": "0"} if request.param == "deferred" else {}
    result = airflow_env.dags_test("rd_behaviour", extra_env=extra)
    assert result.tasks, result.stdout[-3000:]
    deferred = {task_id for task_id, task in result.tasks.items() if "[DAG TEST] running trigger in line" in task.text()}
    if request.param == "deferred":
        assert deferred >= {"interleaved", "fails", "files", "private_env"}, deferred
    else:
        assert not deferred & {"interleaved", "fails", "files", "private_env"}, deferred
    return result


def test_interleaved_stdout_stderr(run: DagRunResult) -> None:
    task = run["interleaved"]
    assert task.state == "success"
    assert task.stdout() == [f"out{i}" for i in range(1, 11)] + ["last-out"]
    assert task.stderr() == [f"err{i}" for i in range(1, 11)] + ["last-err"]
    assert task.xcom == "last-out", "stderr never becomes the XCom value"


def test_xcom_all_is_stdout_only(run: DagRunResult) -> None:
    assert run["xcom_all"].xcom == ["a", "c"]


def test_do_xcom_push_false(run: DagRunResult) -> None:
    assert run["no_xcom"].state == "success"
    assert run["no_xcom"].xcom is None
    assert run["no_xcom"].stdout() == ["hidden"]


def test_one_megabyte_line(run: DagRunResult) -> None:
    task = run["big_line"]
    assert task.stdout() == ["x" * 1_000_000, "small"]
    assert task.xcom == "small"


def test_last_line_too_big_for_the_event_is_reread(run: DagRunResult) -> None:
    task = run["big_last_line"]
    assert task.state == "success"
    assert task.xcom == "y" * 1_500_000


def test_lines_split_across_frames_and_unterminated_tail(run: DagRunResult) -> None:
    task = run["split_frames"]
    assert task.stdout() == ["abcdef", "tail-without-newline"]
    assert task.xcom == "tail-without-newline"


def test_invalid_utf8_is_replaced_not_dropped(run: DagRunResult) -> None:
    assert run["non_utf8"].stdout() == ["bad \ufffd\ufffd bytes", "ok \u00e9"]


def test_failing_exit_code(run: DagRunResult) -> None:
    assert run["fails"].state == "failed"
    message = error_line(run, "fails")
    assert "exited with code 3; last lines of output:" in message
    text = run["fails"].text()
    assert "[stdout] before-failure" in text and "[stderr] oops" in text


def test_skip_on_exit_code(run: DagRunResult) -> None:
    assert run["skipped"].state == "skipped"
    assert run["skipped"].stdout() == ["skipping"]


def test_oom_killed(run: DagRunResult) -> None:
    assert run["oom"].state == "failed"
    assert "exited with code 137, OOMKilled: it ran out of memory (raise mem_limit)" in error_line(run, "oom")


def test_auto_remove_modes(run: DagRunResult, docker_client: docker.DockerClient) -> None:
    def left(task_id: str) -> int:
        return len(containers_of(docker_client, "rd_behaviour", run.run_id, task_id))

    assert run["remove_never"].state == "success" and left("remove_never") == 1
    assert run["remove_success_ok"].state == "success" and left("remove_success_ok") == 0
    assert run["remove_success_failed"].state == "failed" and left("remove_success_failed") == 1, \
        "'success' keeps a failed container for debugging"
    assert run["remove_force_failed"].state == "failed" and left("remove_force_failed") == 0
    # every force/success-removed task left nothing; never-removed ones left exactly their own
    assert left("interleaved") == 0 and left("fails") == 0


def test_pickle_output_via_files(run: DagRunResult) -> None:
    assert run["pickle_output"].state == "success"
    assert run["pickle_output"].xcom == {"answer": 42, "items": [1, 2, 3]}


def test_json_output(run: DagRunResult) -> None:
    assert run["json_output"].xcom == {"rows": [1, 2], "ok": True}


def test_output_missing_is_none_with_warning(run: DagRunResult) -> None:
    assert run["output_missing"].state == "success"
    assert run["output_missing"].xcom is None
    assert "retrieve_output_path /tmp/nothing-here does not exist in the container; the result is None" in run["output_missing"].text()


def test_output_corrupt(run: DagRunResult) -> None:
    assert run["output_corrupt"].state == "failed"
    assert error_line(run, "output_corrupt").startswith(
        "retrieve_output_path /tmp/out.pkl is not a valid pickle (UnpicklingError:")


def test_output_over_max_bytes(run: DagRunResult) -> None:
    assert run["output_too_big"].state == "failed"
    assert error_line(run, "output_too_big") == (
        "retrieve_output_path /tmp/out.bin is 3,000 bytes, over max_output_bytes=1,000; "
        "raise max_output_bytes or write a smaller result")


def test_files_text_bytes_and_folder(run: DagRunResult) -> None:
    task = run["files"]
    assert task.state == "success"
    assert task.stdout()[:4] == ["text-content", "bytes-content", "dir-file-a", "dir-file-b"]
    assert task.stdout()[4].startswith("-rw-r--r--")


def test_private_environment_reaches_the_container_but_no_log_or_rendered_field(run: DagRunResult, airflow_env: AirflowEnv) -> None:
    # `dags test` never turns Airflow's log masking on (only `tasks run` and `triggerer` do): the lines
    # are redacted by remote-docker itself, deferred or not. The real services: test_services.py.
    task = run["private_env"]
    assert task.state == "success"
    assert task.stdout() == ["secret=***", "public=visible"] and task.stderr() == ["err-***"]
    assert run["private_env_sync"].stdout() == ["secret=***"] and run["private_env_sync"].stderr() == ["err-***"]
    assert SECRET not in run.stdout, "the value is nowhere on the console"
    with sqlite3.connect(airflow_env.home / "airflow.db") as db:
        rendered = db.execute("select rendered_fields from rendered_task_instance_fields where task_id='private_env'").fetchall()
    assert rendered and SECRET not in str(rendered)
    assert SECRET not in str(task.xcom)


def test_templated_fields_and_env_file_template(run: DagRunResult) -> None:
    task = run["templated"]
    assert task.state == "success"
    words = task.xcom.split()
    assert words[0] == "hello" and words[1] == run.run_id
    assert words[2].endswith("-from-env-file") and words[2][:8].isdigit()


def test_command_list_literal(run: DagRunResult) -> None:
    assert run["list_literal"].xcom == "from-a-list-literal"


def test_not_deferrable_same_semantics(run: DagRunResult) -> None:
    task = run["not_deferrable"]
    assert task.state == "success" and task.xcom == "sync-last"
    assert task.stdout() == ["sync-1", "sync-last"] and task.stderr() == ["sync-err"]
    assert "[DAG TEST] running trigger in line" not in task.text(), "it must not have deferred"
    assert run["not_deferrable_fails"].state == "failed"
    assert "exited with code 5" in error_line(run, "not_deferrable_fails")


def test_cpus_is_a_real_quota(run: DagRunResult) -> None:
    # cgroup v1: cfs_quota_us 50000 for a 100000 period; cgroup v2: "50000 100000"
    assert run["cpu_quota"].xcom == "50000"


def test_execution_timeout_kills_the_container(run: DagRunResult, docker_client: docker.DockerClient) -> None:
    task = run["timeout"]
    assert task.state == "failed"
    assert error_line(run, "timeout").startswith("execution_timeout (0:00:04) reached; container ")
    assert task.stdout() == ["started"]
    assert containers_of(docker_client, "rd_behaviour", run.run_id, "timeout") == []


def test_pull_never_with_missing_image(run: DagRunResult, daemon: Daemon) -> None:
    assert run["pull_never_missing"].state == "failed"
    assert error_line(run, "pull_never_missing") == (
        f"image rd-test/not-here:1 is not on the daemon at https://127.0.0.1:{daemon.port} and pull='never'; "
        "load or pull it there first, or use pull='missing'")


def test_inline_client_key_refused_when_deferring(run: DagRunResult) -> None:
    """Airflow 3.3 keeps trigger kwargs unencrypted, so a PEM key override would be stored in clear."""
    assert run["inline_key"].state == "failed"
    assert error_line(run, "inline_key").startswith("tls_client_key is PEM text: a deferred task would store it in clear")
    assert "not-a-real-key" not in run.stdout


def test_bad_mount_source(run: DagRunResult) -> None:
    assert run["bad_mount"].state == "failed"
    message = error_line(run, "bad_mount")
    assert "a mount source does not exist on the daemon's host" in message
    assert "/definitely/not/on/daemon/host" in message and "use a named volume or files= instead" in message


def test_environment_values_arrive_as_the_official_operator_sends_them(run: DagRunResult) -> None:
    assert run["env_values"].xcom == "{'nested': 1}|[1, 2]|True|unset"


def test_env_file_string(run: DagRunResult) -> None:
    assert run["env_file_vars"].xcom == "1-two words"


def test_working_dir_user_hostname(run: DagRunResult) -> None:
    assert run["working_dir_user"].xcom == ["/tmp", "65534", "rd-host"]


def test_labels_merged_with_task_labels(run: DagRunResult, docker_client: docker.DockerClient) -> None:
    (container,) = containers_of(docker_client, "rd_behaviour", run.run_id, "labels")
    labels = container["Labels"]
    assert labels["team"] == "data"
    assert labels["io.remote-docker.task_id"] == "labels" and labels["io.remote-docker.try_number"] == "1"
    assert labels["io.remote-docker.map_index"] == "-1"


def test_only_the_worker_side_unpickles() -> None:
    """The triggerer never unpickles: only the worker's output decoding calls pickle.loads."""
    import remote_docker

    package = Path(remote_docker.__file__).parent
    unpicklers = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                        if re.search(r"pickle\.loads?\(", p.read_text()))
    assert unpicklers == ["lifecycle/output.py"]
    for module in ("triggers.py", "capacity.py", "logs/follower.py", "logs/stream.py"):
        assert "pickle" not in (package / module).read_text(), module


def test_container_lines_are_marked_and_their_control_characters_shown_escaped(run: DagRunResult) -> None:
    task = run["imitates_us"]
    assert task.stdout() == ["Container 0123456789ab exited 0: the task ends here, without a worker.",
                             "red \\x1b[31mALERT\\x1b[0m, over\\x0dwritten, nul \\x00 end"]
    imitation = next(line for line in task.log if "Container 0123456789ab exited 0" in line)
    assert imitation.rstrip().endswith("stream=stdout"), "a container's line says where it came from"
    assert "\x1b" not in task.text() and "\x00" not in task.text()


def test_an_explicit_verification_opt_out_is_said_once_in_the_task_log(run: DagRunResult) -> None:
    task = run["names_unchecked"]
    assert task.state == "success" and task.xcom == "connected"
    said = [line for line in task.log if "with tls_hostname=False: the daemon's certificate is checked against the CA" in line]
    assert len(said) == 1, said
    assert not any("tls_hostname=False" in line for line in run["interleaved"].log), "only where it was asked for"
    ignored = [line for line in task.log if "names_unchecked: mount_tmp_dir ignored: a remote daemon can't see" in line]
    assert len(ignored) == 1, "the official operator's mount_tmp_dir is named once, in its own task's log"
    assert not any("mount_tmp_dir" in line for line in run["interleaved"].log)

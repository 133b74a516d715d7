"""The example DAGs in dags/: each under `airflow dags test`, and end to end through the real
services (as ./scripts/demo runs them) with states, merged logs and XComs read over REST."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from airflow_services import AirflowServices, wait_until
from conftest import ROOT, AirflowEnv, Daemon, DagRunResult, Registry, running_services

from remote_docker import compat

EXAMPLES = {"AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags")}


def dags_test(airflow_env: AirflowEnv, dag_id: str, **env: str) -> DagRunResult:
    return airflow_env.dags_test(dag_id, extra_env={**EXAMPLES, **env})


def test_example_remote_docker(airflow_env: AirflowEnv) -> None:
    run = dags_test(airflow_env, "example_remote_docker")
    assert run["count"].state == "success"
    assert run["count"].stdout() == [f"step {i} of 5" for i in range(1, 6)] + ["42"]
    assert run["count"].stderr() == ["warming up"]
    assert run["count"].xcom == "42"
    assert run["use_result"].xcom == "count said 42"


def test_example_outputs(airflow_env: AirflowEnv) -> None:
    run = dags_test(airflow_env, "example_outputs")
    assert run["json_result"].xcom == {"rows": 3, "status": "ok"}
    assert run["all_lines"].xcom == ["alpha", "beta"]
    assert run["files_in"].stdout() == ["[job]", "name = example", "2"]
    assert run["fails"].state == "failed"
    assert run["skipped"].state == "skipped"


def test_example_decorator(airflow_env: AirflowEnv) -> None:
    run = dags_test(airflow_env, "example_decorator")
    assert run["make_batches"].state == "success"
    assert run["summarize"].state == "success"
    assert run["summarize"].xcom == {"grand_total": sum(range(40)), "batches": 4}


def test_example_private_registry(airflow_env: AirflowEnv, registry: Registry) -> None:
    run = dags_test(airflow_env, "example_private_registry", EXAMPLE_PRIVATE_IMAGE=f"{registry.host}/rd/busybox:1",
                    AIRFLOW_CONN_PRIVATE_REGISTRY=registry.connection_json())
    assert run["private_image"].state == "success"
    assert run["private_image"].xcom == "pulled with registry credentials"


def test_example_build_then_run(airflow_env: AirflowEnv, registry: Registry) -> None:
    run = dags_test(airflow_env, "example_build_then_run", EXAMPLE_REGISTRY=registry.host,
                    EXAMPLE_BASE_IMAGE="rd-test/busybox:latest", AIRFLOW_CONN_PRIVATE_REGISTRY=registry.connection_json())
    assert run["build"].state == "success" and run["build"].xcom.startswith("sha256:")
    assert run["run"].state == "success" and run["run"].xcom == "done" and run["run"].stdout()[0].startswith("report for ")


def test_example_credential_helper(airflow_env: AirflowEnv, registry: Registry, tmp_path) -> None:
    helper = tmp_path / "docker-credential-example"
    helper.write_text(f"#!/bin/sh\nread host\necho '{{\"ServerURL\": \"'$host'\", \"Username\": \"{registry.user}\", "
                      f"\"Secret\": \"{registry.password}\"}}'\n")
    helper.chmod(0o755)
    run = dags_test(airflow_env, "example_credential_helper", EXAMPLE_PRIVATE_IMAGE=f"{registry.host}/rd/busybox:1",
                    EXAMPLE_CREDENTIAL_HELPER="example", PATH=f"{tmp_path}:{airflow_env.env['PATH']}")
    assert run["with_a_helper"].state == "success" and run["with_a_helper"].xcom == "pulled with a credential helper"


def test_example_nightly_prune(airflow_env: AirflowEnv) -> None:
    run = dags_test(airflow_env, "example_nightly_prune")
    assert run["prune"].state == "success"
    (report,) = run["prune"].xcom
    assert report["error"] is None and report["daemon"].startswith("127.0.0.1:")


@pytest.fixture(scope="module")
def services(daemon: Daemon, tmp_path_factory) -> Iterator[AirflowServices]:
    with running_services(daemon, tmp_path_factory.mktemp("examples-home"), ROOT / "dags", parallelism=2) as found:
        yield found


def test_examples_end_to_end(services: AirflowServices) -> None:
    main_run = services.trigger("example_remote_docker")
    mapped_run = services.trigger("example_decorator")
    seen = set()

    def finished() -> bool:
        seen.add(services.states("example_remote_docker", main_run).get("count"))
        return services.run_state("example_remote_docker", main_run) in ("success", "failed")

    wait_until(finished, 180, "example_remote_docker finished", every=0.1)
    assert "deferred" in seen, f"count never showed as deferred: {seen}"
    assert services.wait_run("example_remote_docker", main_run) == "success"
    log = services.task_log("example_remote_docker", main_run, "count").splitlines()
    if compat.START_IN_TRIGGERER:
        assert "Container" in log[-3] and log[-3].endswith("exited 0: the task ends here, without a worker."), log[-5:]
    else:
        assert "Deferring while container" in "\n".join(log)
    used = services.task_log("example_remote_docker", main_run, "use_result")
    assert "count said 42" in used and "Deferring while container" not in used, "short: done within defer_after"
    assert [line for line in log if line.startswith("step ")] == [f"step {i} of 5" for i in range(1, 6)]
    xcom = services.rest("GET", f"/api/v2/dags/example_remote_docker/dagRuns/{main_run}/taskInstances/count/xcomEntries/return_value")
    assert xcom["value"] == "42"
    assert services.wait_run("example_decorator", mapped_run, timeout=240) == "success"
    summary = services.rest("GET", f"/api/v2/dags/example_decorator/dagRuns/{mapped_run}/taskInstances/summarize/xcomEntries/grand_total")
    assert summary["value"] == sum(range(40))

"""One deferral through a real scheduler + triggerer: what scripts/matrix runs on every supported Airflow.

The task defers at once; the triggerer streams the container's output and waits for its exit; the
task ends there (3.3) or on a worker (3.1, 3.2: after the stale-event guard); a downstream task
reads the last line exactly as a worker push gives it; the container is removed.
"""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest
from airflow_services import AirflowServices
from conftest import ROOT, Daemon, containers_of, running_services

from remote_docker import compat


@pytest.fixture(scope="module")
def services(daemon: Daemon, tmp_path_factory) -> Iterator[AirflowServices]:
    with running_services(daemon, tmp_path_factory.mktemp("matrix-home"), ROOT / "tests" / "matrix_dags",
                          parallelism=2) as found:
        yield found


def test_a_deferred_task_streams_ends_and_hands_its_result_on(services: AirflowServices,
                                                                docker_client: docker.DockerClient) -> None:
    run_id = services.trigger("rd_matrix")
    services.wait_task("rd_matrix", run_id, "deferred", ("deferred",), timeout=120)
    assert services.wait_run("rd_matrix", run_id, timeout=180) == "success", services.states("rd_matrix", run_id)
    log = services.task_log("rd_matrix", run_id, "deferred")
    assert "streamed-by-the-triggerer" in log and "the-result" in log, log[-3000:]
    ended_here = "the task ends here, without a worker" in log
    assert ended_here == compat.END_IN_TRIGGERER, log[-3000:]
    assert services.rest("GET", f"/api/v2/dags/rd_matrix/dagRuns/{run_id}/taskInstances/read_back/xcomEntries/"
                                "return_value")["value"] == "the-result"
    assert not containers_of(docker_client, "rd_matrix", run_id, "deferred"), "auto_remove='success' removed it"

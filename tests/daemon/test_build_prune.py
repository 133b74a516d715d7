"""Images on remote daemons: builds (context from a mapping or a folder, the build log in the task
log, a failed step's own error line, push to a real registry, the image id as XCom) and clean-up
(exited and orphaned containers of ours, dangling images, build cache; never a container without
our labels; on every daemon of a pool; dry runs)."""

from __future__ import annotations

import json
import re
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import engines
import pytest
import tls_dockerd
from conftest import ENGINE_KIND, AirflowEnv, Daemon, DagRunResult, Registry, run_cli
from helpers import error_line
from images import busybox_tar

from remote_docker.daemon.ownership import DEPLOYMENT_LABEL, PROOF_LABEL, Deployment


@pytest.fixture(scope="module")
def build_run(airflow_env: AirflowEnv, registry: Registry) -> DagRunResult:
    return airflow_env.dags_test("rd_build", extra_env={"REMOTE_DOCKER_TEST_REGISTRY": registry.host,
                                                         "AIRFLOW_CONN_TEST_REGISTRY": registry.connection_json()})


def test_a_build_streams_its_log_pushes_and_the_pushed_image_runs(build_run: DagRunResult, daemon: Daemon,
                                                                 registry: Registry) -> None:
    task = build_run["from_mapping"]
    assert task.state == "success", task.text()[-3000:]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", task.xcom), task.xcom
    text = task.text()
    # the build's own log, line by line (buildah writes its steps as "STEP 1/5: ...")
    assert ("STEP 1/5: FROM rd-test/busybox:latest" if ENGINE_KIND == "podman" else "Step 1/5 : FROM rd-test/busybox:latest") in text
    assert f"Pushing {registry.host}/rd/built:1" in text and f"Pushing {registry.host}/rd/built:latest" in text
    client = daemon.client()
    image = client.api.inspect_image(f"{registry.host}/rd/built:latest")
    client.close()
    labels = dict(image["Config"]["Labels"])
    labels.pop("io.buildah.version", None)  # Podman's builder labels what it builds
    assert image["Id"] == task.xcom and labels == {"team": "data"}
    ran = build_run["run_the_pushed_image"]
    assert ran.state == "success" and re.fullmatch(r"hello-\d{8}", ran.xcom), "pulled back from the registry, templated"


def test_a_folder_context_leaves_out_what_its_dockerignore_names(build_run: DagRunResult) -> None:
    task = build_run["from_folder"]
    assert task.state == "success" and "context-is-right" in task.text(), task.text()[-3000:]


def test_a_failed_step_fails_with_the_builds_own_line_and_a_missing_dockerfile_is_named(build_run: DagRunResult,
                                                                                       daemon: Daemon) -> None:
    assert build_run["failing_step"].state == "failed"
    assert "about-to-fail" in build_run["failing_step"].text()
    message = error_line(build_run, "failing_step")
    # the engine's own words for the failed step (Podman builds with buildah)
    own = (r'building at STEP "RUN echo about-to-fail && exit 3": while running runtime: exit status 3'
           if ENGINE_KIND == "podman" else r"The command '/bin/sh -c echo about-to-fail && exit 3' returned a non-zero code: 3")
    assert re.match(rf"building rd-test/never:1 on https://127\.0\.0\.1:\d+ failed: {re.escape(own)}$", message), message
    assert error_line(build_run, "no_dockerfile") == "the build context has no Dockerfile; add it or set dockerfile= to " \
                                                     "the right path"


# --------------------------------------------------------------------------- clean-up


@pytest.fixture(scope="module")
def pair(daemon: Daemon) -> Iterator[list[Daemon]]:
    """Two daemons of their own (prune is daemon-wide for images and cache): a pool, for this module only."""
    found = []
    try:
        for _ in range(2):
            state = Path(tempfile.mkdtemp(prefix="rd-prune-"))
            environment = engines.start(None, state, None, ca_from=daemon.state)
            found.append(Daemon(state=state, port=int(environment["DOCKER_HOST"].rsplit(":", 1)[1])))
            client = found[-1].client()
            client.api.import_image_from_data(busybox_tar(), repository="rd-test/busybox", tag="latest",
                                              changes=["ENV PATH=/bin"])
            client.close()
        yield found
    finally:
        for one in found:
            tls_dockerd.remove(one.state)


def labels(dag_id: str, run_id: str, task_id: str) -> dict[str, str]:
    return {"io.remote-docker.dag_id": dag_id, "io.remote-docker.run_id": run_id, "io.remote-docker.task_id": task_id,
            "io.remote-docker.map_index": "-1", "io.remote-docker.try_number": "1"}


def make(daemon: Daemon, name: str, command: list[str], container_labels: dict | None = None) -> str:
    client = daemon.client()
    container_id = client.api.create_container_from_config(
        {"Image": "rd-test/busybox:latest", "Cmd": command, "Labels": container_labels or {},
         "HostConfig": {"NetworkMode": "none"}}, name=name)["Id"]
    client.api.start(container_id)
    client.close()
    return container_id


def exists(daemon: Daemon, container_id: str) -> dict | None:
    client = daemon.client()
    try:
        return client.api.inspect_container(container_id)["State"]
    except Exception:
        return None
    finally:
        client.close()


@pytest.fixture(scope="module")
def scene(airflow_env: AirflowEnv, pair: list[Daemon]) -> dict:
    """Task instances Airflow knows (one finished, one set running) and containers of every kind on the pair."""
    done = airflow_env.dags_test("rd_prune_states")
    with sqlite3.connect(airflow_env.home / "airflow.db") as db:
        db.execute("update task_instance set state='running' where dag_id='rd_prune_states' and task_id='alive'")
    run_id = done.run_id
    a, b = pair
    ours = airflow_env.deployment()
    theirs = Deployment(b"another Airflow's secret")  # same DAGs, same run ids, its own deployment
    finished, alive = labels("rd_prune_states", run_id, "finished"), labels("rd_prune_states", run_id, "alive")
    forged = {**finished, DEPLOYMENT_LABEL: ours.fingerprint, PROOF_LABEL: "0" * 32}  # everything public, copied
    found = {
        "ours_exited_a": (a, make(a, "ours-exited-a", ["true"], ours.stamp(finished))),
        "ours_exited_b": (b, make(b, "ours-exited-b", ["true"], ours.stamp(finished))),
        "foreign_exited": (a, make(a, "foreign-exited", ["true"])),
        "foreign_running": (a, make(a, "foreign-running", ["sleep", "300"])),
        "orphan": (b, make(b, "orphan", ["sleep", "300"], ours.stamp(finished))),
        "alive": (a, make(a, "alive", ["sleep", "300"], ours.stamp(alive))),
        "unknown_task": (b, make(b, "unknown", ["sleep", "300"], ours.stamp(labels("another_airflows_dag", "r", "t")))),
        "theirs_exited": (a, make(a, "theirs-exited", ["true"], theirs.stamp(finished))),
        "theirs_running": (b, make(b, "theirs-running", ["sleep", "300"], theirs.stamp(finished))),
        "forged_exited": (a, make(a, "forged-exited", ["true"], forged)),
        "forged_running": (b, make(b, "forged-running", ["sleep", "300"], forged)),
        "labels_only": (a, make(a, "labels-only", ["sleep", "300"], finished)),  # a stranger's copy of the task labels
    }
    client = a.client()  # an image whose tag moves on: the first one dangles
    for marker in (b"one\n", b"two\n"):
        client.api.import_image_from_data(busybox_tar(marker=marker), repository="rd-test/moving", tag="1")
    client.close()
    time.sleep(1.5)  # every container exited or settled, and older than --older-than 1s
    pool = json.dumps({"conn_type": "remote_docker", "host": f"{a.url},{b.url}", "extra": a.extras()})
    return {"containers": found, "env": {**airflow_env.env, "AIRFLOW_CONN_RD_PRUNE_POOL": pool}, "run_id": run_id}


def prune(scene: dict, *args: str):
    return run_cli("prune", "--conn-id", "rd_prune_pool", "--older-than", "1s", "--orphan-min-age", "0s", *args,
                   env=scene["env"], timeout=300)


def test_a_dry_run_reports_what_would_go_and_removes_nothing(scene: dict) -> None:
    done = prune(scene, "--dry-run", "--daemon-wide-dangling-images")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"127\.0\.0\.1:\d+: would remove 1 exited container\(s\), 0 orphan\(s\), 1 image\(s\) "
                     r"\(daemon-wide\);.*; left alone 1 container\(s\) claiming this deployment without its proof", out), out
    assert re.search(r"127\.0\.0\.1:\d+: would remove 1 exited container\(s\), 1 orphan\(s\), 0 image\(s\) "
                     r"\(daemon-wide\);.*; left alone 1 container\(s\)", out), out
    assert "orphan: orphan (rd_prune_states.finished of" in out and "task instance success" in out
    assert "left alone: forged-exited (rd_prune_states.finished" in out and "left alone: forged-running" in out
    assert all(exists(daemon, cid) for daemon, cid in scene["containers"].values())
    without = prune(scene, "--dry-run")
    assert " 0 image(s) (daemon-wide)" in without.stdout and " 1 image(s)" not in without.stdout, "images only when asked"


def test_prune_removes_ours_stops_orphans_and_never_touches_the_rest(scene: dict, pair: list[Daemon]) -> None:
    done = prune(scene, "--daemon-wide-dangling-images", "--daemon-wide-build-cache")
    assert done.returncode == 0, done.stderr + done.stdout
    states = {name: exists(daemon, cid) for name, (daemon, cid) in scene["containers"].items()}
    assert states["ours_exited_a"] is None and states["ours_exited_b"] is None, "exited containers of ours, on both daemons"
    assert states["orphan"] is None, "its task instance finished: stopped and removed"
    assert states["foreign_exited"] is not None and states["foreign_running"]["Running"], "no labels of ours: untouched"
    assert states["alive"]["Running"], "its task instance is running"
    assert states["unknown_task"]["Running"], "a task instance this Airflow doesn't know is left alone"
    assert states["theirs_exited"] is not None and states["theirs_running"]["Running"], "another deployment's: untouched"
    assert states["forged_exited"] is not None and states["forged_running"]["Running"], "labels copied, no proof: untouched"
    assert states["labels_only"]["Running"], "the task's labels alone prove nothing"
    client = pair[0].client()
    dangling = client.api.images(filters={"dangling": True})
    client.close()
    assert dangling == [] and re.search(r"reclaimed \d+\.\d MB from images", done.stdout), done.stdout
    assert len(done.stdout.strip().splitlines()) >= 2


def test_bad_durations_are_one_line(scene: dict) -> None:
    done = run_cli("prune", "--conn-id", "rd_prune_pool", "--older-than", "a while", env=scene["env"])
    assert done.returncode == 2
    assert done.stderr.strip() == ("remote-docker prune: --older-than 'a while' is not a duration; use a number and a "
                                   "unit: 90s, 30m, 24h, 7d or 2w")


def test_the_prune_operator_asks_airflow_through_the_task_sdk(airflow_env: AirflowEnv, scene: dict, pair: list[Daemon]) -> None:
    a, _ = pair
    extra = make(a, "ours-exited-again", ["true"], airflow_env.deployment().stamp(labels("rd_prune_states", scene["run_id"], "finished")))
    time.sleep(1.5)
    run = airflow_env.dags_test("rd_prune_op", extra_env={"AIRFLOW_CONN_RD_PRUNE_POOL": scene["env"]["AIRFLOW_CONN_RD_PRUNE_POOL"]})
    task = run["prune"]
    assert task.state == "success", task.text()[-3000:]
    assert [len(report["containers"]) for report in task.xcom] == [1, 0] and exists(a, extra) is None
    assert exists(a, scene["containers"]["alive"][1])["Running"]

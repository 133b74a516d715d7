"""Only what this deployment made is ours: strangers' containers imitating a task are never adopted or
read, and another deployment's never seen (real daemon, real Airflow; the findings of a security review).

Each imitation runs before the task's second try looks for an earlier try's container: a stranger's copy
of the task labels (try 1 and a later try 9, with this deployment's public fingerprint and a made-up
proof), a container another deployment made for the same DAG and run id, and the task labels alone.
Each would return its own "result" (a last line, a pickle that runs a command on unpickling).
"""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
from pathlib import Path

import docker
import pytest
from conftest import BUSYBOX_IMAGE, PYTHON_IMAGE, AirflowEnv, Daemon

from remote_docker.daemon.ownership import DEPLOYMENT_LABEL, PROOF_LABEL, Deployment
from remote_docker.hook import RemoteDockerHook
from remote_docker.lifecycle import start
from remote_docker.lifecycle.launch import try_of
from remote_docker.lifecycle.payloads import ContainerRecord
from remote_docker.lifecycle.spec import task_labels

TASKS = {"last_line": BUSYBOX_IMAGE, "pickled": PYTHON_IMAGE}


class Evil:
    """Unpickling runs a command: what a stranger's result file can do on a worker that trusts it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def imitate(client: docker.DockerClient, image: str, labels: dict[str, str], line: str, pickle_bytes: bytes) -> str:
    """A running container with ``labels`` that prints ``line`` and holds ``pickle_bytes`` where the task's result goes."""
    script = f"echo {line}; sleep 300"
    container_id = client.api.create_container_from_config(
        {"Image": image, "Cmd": ["sh", "-c", script], "Labels": labels, "HostConfig": {"NetworkMode": "none"}})["Id"]
    import io
    import tarfile

    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo("tmp/result.pickle")
        info.size = len(pickle_bytes)
        tar.addfile(info, io.BytesIO(pickle_bytes))
    client.api.put_archive(container_id, "/", archive.getvalue())
    client.api.start(container_id)
    return container_id


def strangers(ours: Deployment, task_id: str, run_id: str) -> dict[str, dict[str, str]]:
    """Every imitation of ``task_id`` of the run, by what it is."""
    theirs = Deployment(b"another Airflow with the same DAGs")
    first = task_labels("rd_trust", task_id, run_id, -1, 1)
    ninth = task_labels("rd_trust", task_id, run_id, -1, 9)
    forged = {DEPLOYMENT_LABEL: ours.fingerprint, PROOF_LABEL: "f" * 32}
    return {"forged-try-1": {**first, **forged}, "forged-try-9": {**ninth, **forged},
            "another-deployment": theirs.stamp(first), "labels-only": first}


@pytest.fixture(scope="module")
def trust_run(airflow_env: AirflowEnv, daemon: Daemon, tmp_path_factory) -> dict:
    docker_client = daemon.client()
    marker = tmp_path_factory.mktemp("trust") / "unpickled-a-strangers-file"
    ours = airflow_env.deployment()
    made: dict[tuple[str, str], str] = {}

    def imitate_while_the_first_try_runs() -> None:
        """The run's id shows on its first try's containers; the strangers start before the second try."""
        pending = dict(TASKS)
        deadline = time.monotonic() + 120
        while pending and time.monotonic() < deadline:
            for task_id, image in list(pending.items()):
                found = docker_client.api.containers(all=True, filters={"label": [
                    "io.remote-docker.dag_id=rd_trust", f"io.remote-docker.task_id={task_id}"]})
                if found:
                    run_id = found[0]["Labels"]["io.remote-docker.run_id"]
                    for what, labels in strangers(ours, task_id, run_id).items():
                        made[(task_id, what)] = imitate(docker_client, image, labels, f"STRANGER-{what}",
                                                        pickle.dumps(Evil(marker)))
                    del pending[task_id]
            time.sleep(0.1)

    imitating = threading.Thread(target=imitate_while_the_first_try_runs)
    imitating.start()
    try:
        run = airflow_env.dags_test("rd_trust")
        imitating.join()
        states = {key: docker_client.api.inspect_container(cid)["State"] for key, cid in made.items()}
    finally:
        for cid in made.values():
            docker_client.api.remove_container(cid, force=True)
        docker_client.close()
    return {"run": run, "marker": marker, "states": states}


def test_the_second_try_adopts_no_strangers_container_and_returns_its_own_result(trust_run: dict) -> None:
    run = trust_run["run"]
    assert len(trust_run["states"]) == 8, "every imitation started before the second tries"
    assert run["last_line"].state == "success" and run["last_line"].xcom == "own-result-2", run["last_line"].text()[-3000:]
    assert run["pickled"].state == "success" and run["pickled"].xcom == "own-pickle", run["pickled"].text()[-3000:]
    assert not trust_run["marker"].exists(), "a stranger's pickle was unpickled on the worker"
    assert all(state["Running"] for state in trust_run["states"].values()), "strangers' containers are left alone"
    assert "STRANGER" not in run.stdout


def test_each_imitation_is_named_in_one_line_of_the_task_log(trust_run: dict) -> None:
    text = trust_run["run"]["last_line"].text()
    named = [line for line in text.splitlines() if "carries this task's labels but not this deployment's proof" in line]
    # the second try names the imitations of earlier tries' containers: try 9's is of no earlier try, but it
    # still carries this task's labels, so it is named too
    assert len(named) == 4, "\n".join(named)
    assert sum("another deployment's" in line for line in named) == 3  # two forged and the other deployment's
    assert sum("not made by remote-docker" in line for line in named) == 1


def test_a_later_try_of_our_own_is_never_adopted_and_the_recorded_container_wins(daemon: Daemon,
                                                                                docker_client: docker.DockerClient) -> None:
    ours = Deployment(b"this deployment")
    identity = task_labels("rd_trust_unit", "t", "r", -1, 3)

    def ours_running(try_number: int) -> str:
        labels = ours.stamp(task_labels("rd_trust_unit", "t", "r", -1, try_number))
        return imitate(docker_client, BUSYBOX_IMAGE, labels, "ours", b"")

    later, first, second = ours_running(4), ours_running(1), ours_running(2)
    logged: list[str] = []

    class Log:
        def info(self, message, *args):
            logged.append(message % args)

        warning = info

    async def found(record: dict | None) -> str | None:
        async with RemoteDockerHook(None, **daemon.hook_params()).engine() as engine:
            return await start.find_running(engine, identity, ours, ContainerRecord.from_payload(record), 1, Log())

    try:
        assert asyncio.run(found(None)) == second, "the newest earlier try's, never try 4's"
        assert asyncio.run(found({"container_id": first, "phase": "started"})) == first, "the recorded one"
        assert try_of(docker_client.api.inspect_container(later)["Config"]["Labels"]) == 4
    finally:
        for cid in (later, first, second):
            docker_client.api.remove_container(cid, force=True)


def test_a_worker_keeps_the_secret_only_in_a_file_of_its_own_and_not_for_long(tmp_path) -> None:
    from remote_docker.daemon.ownership import WORKER_CACHE_SECONDS, _from_worker_cache, _to_worker_cache

    path = tmp_path / "home" / "remote-docker" / "deployment-secret-x"
    _to_worker_cache(path, b"s3cret")
    assert _from_worker_cache(path) == b"s3cret"
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert _from_worker_cache(path, now=path.stat().st_mtime + WORKER_CACHE_SECONDS + 1) is None  # stale: asked again
    path.chmod(0o644)
    assert _from_worker_cache(path) is None  # others could read or have written it: not trusted
    assert _from_worker_cache(tmp_path / "missing") is None and _from_worker_cache(None) is None

"""Airflow's own HA on what production runs: PostgreSQL, two triggerers sharing the load, a pool of three
TLS daemons on loopback. One triggerer SIGKILLed mid-run; one daemon stopped while tasks run on it."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow_services import AirflowServices, wait_until
from conftest import ROOT, Daemon, Pool, containers_of, running_services
from helpers import clear, occupy

from remote_docker import compat
from remote_docker.lifecycle.checkpoints import LAG as CHECKPOINT_LAG

CAPACITY = 8  # per triggerer: twelve triggers can't all go to one of them
SECONDS = 40  # each container of rd_ha_triggerers prints line1..line40, a second apart
CHECKPOINT_INTERVAL = 5.0  # the trigger's default


@pytest.fixture(scope="module")
def services(daemon: Daemon, pool: Pool, postgres: str, tmp_path_factory) -> Iterator[AirflowServices]:
    home = tmp_path_factory.mktemp("ha-home")
    with running_services(daemon, home, ROOT / "tests" / "ha_dags", parallelism=16,
                          database_url=postgres, extra_env={
                              "AIRFLOW_CONN_RD_POOL": pool.connection_json(),
                              "AIRFLOW__TRIGGERER__CAPACITY": str(CAPACITY),
                              # a dead triggerer's triggers are taken over after this many seconds without a heartbeat
                              "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
                              "REMOTE_DOCKER_TEST_MARKERS": str(home),  # where a paused try 1 writes its PID
                          }) as found:
        (JOBS["triggerer"],) = wait_until(lambda: triggerer_jobs(found), 60, "the first triggerer's job row")
        start_triggerer(found, "triggerer-2")
        yield found


JOBS: dict[str, int] = {}  # component name -> the job id of its running triggerer


def triggerer_jobs(services: AirflowServices) -> list[int]:
    """Triggerer job ids in state running (a SIGKILLed one's row stays so), oldest first."""
    rows = services.query("select id from job where job_type = ? and state = ? order by id", ("TriggererJob", "running"))
    return [row[0] for row in rows]


def start_triggerer(services: AirflowServices, name: str) -> None:
    """Start a triggerer component and note its job id."""
    before = set(triggerer_jobs(services))
    services.start_component(name)
    JOBS[name] = wait_until(lambda: min(set(triggerer_jobs(services)) - before, default=None), 60, f"{name}'s job row")


def assignments(services: AirflowServices, dag_id: str, run_id: str) -> dict[str, int | None]:
    """task id -> the triggerer job running its trigger."""
    rows = services.query("select ti.task_id, t.triggerer_id from task_instance ti join trigger t on ti.trigger_id = t.id "
                          "where ti.dag_id = ? and ti.run_id = ?", (dag_id, run_id))
    return dict(rows)


def homes(pool: Pool, dag_id: str, run_id: str, task_id: str) -> list[int]:
    """Which daemons of the pool hold a container of the task."""
    found = []
    for index, daemon in enumerate(pool.daemons):
        client = daemon.client()
        found += [index] * len(containers_of(client, dag_id, run_id, task_id))
        client.close()
    return found


def trigger_log(services: AirflowServices, dag_id: str, run_id: str, task_id: str, job: int) -> Path:
    """The log one triggerer job wrote for a task's trigger."""
    return services.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}" / f"attempt=1.log.trigger.{job}.log"


def busier(shared: dict[str, int]) -> tuple[str, int, int]:
    """(component, its job, the other's job) for the triggerer holding more of ``shared``'s triggers."""
    first, second = JOBS["triggerer"], JOBS["triggerer-2"]
    counts = list(shared.values())
    return ("triggerer", first, second) if counts.count(first) >= counts.count(second) else ("triggerer-2", second, first)


def remove_run(pool: Pool, dag_id: str, run_id: str) -> None:
    """The run's containers, gone from every daemon: later tests count what occupies the pool."""
    for daemon in pool.daemons:
        client = daemon.client()
        for container in client.api.containers(all=True, filters={"label": [f"io.remote-docker.dag_id={dag_id}",
                                                                             f"io.remote-docker.run_id={run_id}"]}):
            client.api.remove_container(container["Id"], force=True)
        client.close()


def test_two_triggerers_share_the_load_and_one_killed_loses_nothing(services: AirflowServices, pool: Pool) -> None:
    dag_id = "rd_ha_triggerers"
    tasks = [f"t{i:02d}" for i in range(12)]
    run_id = services.trigger(dag_id)

    def streaming(task: str, job: int) -> bool:  # that triggerer's own log for the task holds container lines
        path = trigger_log(services, dag_id, run_id, task, job)
        return path.exists() and '"event":"line' in path.read_text(errors="replace")

    def settled() -> dict[str, int] | None:
        """Every trigger assigned and streaming where it is assigned (a busy triggerer may hand some over early)."""
        now = assignments(services, dag_id, run_id)
        ready = len(now) == 12 and all(job and streaming(task, job) for task, job in now.items())
        return now if ready else None

    shared = wait_until(settled, 150, lambda: f"all twelve triggers assigned and streaming ({assignments(services, dag_id, run_id)})")
    per_triggerer = {job: list(shared.values()).count(job) for job in JOBS.values()}
    assert all(count >= 12 - CAPACITY for count in per_triggerer.values()), per_triggerer
    victim, victim_job, _ = busier(shared)
    moved = [task for task, job in shared.items() if job == victim_job]
    time.sleep(CHECKPOINT_INTERVAL + CHECKPOINT_LAG + 1)  # each of its triggers has saved a checkpoint
    services.stop_component(victim, sig=signal.SIGKILL)
    try:
        assert services.wait_run(dag_id, run_id, timeout=240) == "success", services.states(dag_id, run_id)
    finally:
        start_triggerer(services, victim)
    for task in tasks:
        assert len(homes(pool, dag_id, run_id, task)) == 1, f"{task}: exactly one container, wherever it ran"
        lines = services.task_log(dag_id, run_id, task).splitlines()
        missing = [n for n in range(1, SECONDS + 1) if f"line{n}" not in lines]
        assert not missing and f"done-{task}" in lines, f"{task} lost lines {missing}"
    if compat.TRIGGER_XCOMS:  # the survivor resumed each moved trigger at its checkpoint and said so
        marked = [t for t in moved if "a new triggerer resumes this log at its checkpoint" in services.task_log(dag_id, run_id, t)]
        assert marked == moved, (moved, marked)
    spread = {index for task in tasks for index in homes(pool, dag_id, run_id, task)}
    assert spread == {0, 1, 2}, "the pool's three daemons all took containers"
    remove_run(pool, dag_id, run_id)


def test_a_paused_triggerer_hands_over_without_stopping_a_container(services: AirflowServices, pool: Pool) -> None:
    """A triggerer whose heartbeat lapses (here: its process paused) loses its triggers to the other; when
    it wakes, 3.3 calls on_kill for each (apache/airflow#73454). Nothing may stop: the task is still deferred."""
    dag_id = "rd_ha_handover"
    tasks = [f"p{i}" for i in range(6)]
    run_id = services.trigger(dag_id)
    wait_until(lambda: all(assignments(services, dag_id, run_id).get(t) for t in tasks), 120, "all six triggers assigned")
    shared = assignments(services, dag_id, run_id)
    victim, victim_job, survivor_job = busier(shared)
    moved = [task for task, job in shared.items() if job == victim_job]
    pid = services.procs[victim].pid  # the supervisor only: its trigger runner goes on, unheard
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: all(assignments(services, dag_id, run_id).get(t) == survivor_job for t in moved), 60,
                   lambda: f"the survivor holding {moved} ({assignments(services, dag_id, run_id)})")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert services.wait_run(dag_id, run_id, timeout=180) == "success", services.states(dag_id, run_id)
    for task in tasks:
        assert len(homes(pool, dag_id, run_id, task)) == 1, f"{task}: exactly one container"
        lines = services.task_log(dag_id, run_id, task).splitlines()
        assert f"done-{task}" in lines and "line30" in lines, f"{task}: its container ran to the end"
    if compat.ON_KILL_ON_HANDOVER:  # the woken triggerer was told to kill each moved trigger, and did not stop it
        said = [t for t in moved if "moved to another triggerer" in
                trigger_log(services, dag_id, run_id, t, victim_job).read_text(errors="replace")]
        assert said == moved, (moved, said)
    remove_run(pool, dag_id, run_id)


def test_a_stopped_daemon_fails_its_tasks_clearly_and_new_tasks_go_elsewhere(services: AirflowServices, pool: Pool) -> None:
    dag_id = "rd_ha_daemon_loss"
    run_id = services.trigger(dag_id)
    tasks = [f"long{i}" for i in range(9)]
    wait_until(lambda: all(len(homes(pool, dag_id, run_id, t)) == 1 for t in tasks), 120, "every container started")
    on_d2 = [t for t in tasks if homes(pool, dag_id, run_id, t) == [2]]
    assert on_d2, "a spread of nine puts some on the third daemon"
    wait_until(lambda: list(services.states(dag_id, run_id).values()).count("deferred") == 9, 120, "all nine deferred")
    pool.stop(2)
    try:
        new_run = services.trigger("rd_ha_new_tasks")
        assert services.wait_run("rd_ha_new_tasks", new_run, timeout=180) == "success", services.states("rd_ha_new_tasks", new_run)
    finally:
        pool.start(2)
    for i in range(6):
        assert homes(pool, "rd_ha_new_tasks", new_run, f"new{i}") in ([0], [1]), f"new{i}: placed past the stopped daemon"
    remove_run(pool, "rd_ha_new_tasks", new_run)
    assert services.wait_run(dag_id, run_id, timeout=240) == "failed"
    states = services.states(dag_id, run_id)
    assert {t for t, s in states.items() if s == "failed"} == set(on_d2), states
    for task in on_d2:
        log = services.task_log(dag_id, run_id, task)
        assert re.search(r"stopped with code \d+ while the daemon at https://127\.0\.0\.1:\d+ was unreachable", log), log[-2000:]
    remove_run(pool, dag_id, run_id)


def test_a_worker_killed_after_start_reattaches_on_whichever_daemon_holds_the_container(services: AirflowServices,
                                                                                       pool: Pool) -> None:
    """Try 1 starts its container on the idle third daemon (the other two are busier) and its worker is killed.
    By then the other two are idle, so try 2's own placement would pick one of them: it must search the whole
    pool, find try 1's container on d2 and reattach there, with no second container anywhere."""
    dag_id = "rd_ha_worker_kill"
    marker = services.home / "reattach.pid"
    busy = {index: occupy(pool.daemons[index], 2) for index in (0, 1)}
    try:
        run_id = services.trigger(dag_id)
        wait_until(marker.exists, 90, "try 1 started its container", every=0.2)
        assert homes(pool, dag_id, run_id, "reattach") == [2], "least-busy put try 1 on the idle daemon"
    finally:
        for index, ids in busy.items():
            clear(pool.daemons[index], ids)
    os.kill(int(marker.read_text()), signal.SIGKILL)  # the task process our scheduler's worker started
    assert services.wait_run(dag_id, run_id, timeout=180) == "success", services.states(dag_id, run_id)
    assert homes(pool, dag_id, run_id, "reattach") == [2], "exactly one container, still where try 1 put it"
    client = pool.daemons[2].client()
    (container,) = containers_of(client, dag_id, run_id, "reattach")
    client.close()
    assert container["Labels"]["io.remote-docker.try_number"] == "1"
    assert services.ti(dag_id, run_id, "reattach")["try_number"] == 2
    log = services.task_log(dag_id, run_id, "reattach", try_number=2)
    assert f"Reattaching to container {container['Id'][:12]}" in log and "finished-once" in log, log[-2000:]
    remove_run(pool, dag_id, run_id)

"""Several daemons behind one connection: how a connection names them (every bad input one line),
placement (least busy, burst spread, max_containers, pins, labels, daemons that don't answer), and the
operator on a pool of three real TLS daemons under `airflow dags test`."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
from conftest import AirflowEnv, Pool, closed_port, containers_of, run_cli
from helpers import clear, labels_for, occupy

from remote_docker.daemon import certs
from remote_docker.daemon.connection import DaemonConfigError
from remote_docker.daemon.ownership import Deployment
from remote_docker.hook import RemoteDockerHook
from remote_docker.lifecycle import start
from remote_docker.lifecycle.launch import Launch
from remote_docker.lifecycle.spec import TRY_LABEL, ContainerSpec
from remote_docker.pool import placement
from remote_docker.pool.members import build_pool

# --------------------------------------------------------------------------- naming the daemons (no daemon)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("pool-certs")
    certs.generate(out, sans=["127.0.0.1", "localhost"])
    return {"ca_cert": str(out / "client" / "ca.pem"), "client_cert": str(out / "client" / "cert.pem"),
            "client_private_key": str(out / "client" / "key.pem")}


def test_a_host_list_is_a_pool_sharing_the_connections_tls(tls_files) -> None:
    pool = build_pool(host="tcp://127.0.0.1:2376, tcp://127.0.0.1:2377,localhost", port=None, extras=tls_files, source="c")
    assert [m.name for m in pool.members] == ["127.0.0.1:2376", "127.0.0.1:2377", "localhost:2376"]
    assert {m.config.tls.cert_pem for m in pool.members} == {pool.members[0].config.tls.cert_pem}
    assert pool.member("127.0.0.1:2377") is pool.members[1] and pool.member("https://localhost:2376") is pool.members[2]


def test_extra_daemons_carry_names_labels_limits_and_their_own_tls(tls_files, tmp_path: Path) -> None:
    certs.generate(tmp_path, sans=["127.0.0.1"])  # another CA: this member brings its own material
    other = tmp_path / "client"
    pool = build_pool(host="", port=None, source="c", extras={**tls_files, "daemons": [
        {"url": "tcp://127.0.0.1:2376", "name": "big", "max_containers": 10},
        {"url": "tcp://127.0.0.1:2377", "labels": {"gpu": "true"}, "ca_cert": str(other / "ca.pem"),
         "client_cert": str(other / "cert.pem"), "client_private_key": str(other / "key.pem")}]})
    big, gpu = pool.members
    assert (big.name, big.max_containers, dict(big.labels)) == ("big", 10, {})
    assert (gpu.name, gpu.max_containers, dict(gpu.labels)) == ("127.0.0.1:2377", None, {"gpu": "true"})
    assert gpu.config.tls.cert_pem != big.config.tls.cert_pem
    assert pool.matching(daemon_labels={"gpu": "true"}) == [gpu] and pool.matching(daemon="big") == [big]


@pytest.mark.parametrize(("extras", "host", "message"), [
    ({"daemons": "tcp://a:2376"}, "", r"extra daemons must be a list of \{\"url\": \.\.\.\} objects"),
    ({"daemons": []}, "", r"extra daemons must be a list"),
    ({"daemons": [{"name": "x"}]}, "", r"connection 'c' needs a url, e\.g\. \{\"url\": \"tcp://docker2:2376\"\}"),
    ({"daemons": [{"url": "tcp://a:1", "weight": 2}]}, "", r"has unknown key weight; allowed: ca_cert, "),
    ({"daemons": [{"url": "tcp://a:1", "labels": ["gpu"]}]}, "", r"labels must be an object like \{\"gpu\": \"true\"\}"),
    ({"daemons": [{"url": "tcp://a:1", "max_containers": 0}]}, "", r"max_containers is 0; give a whole number of 1 or more"),
    ({"daemons": [{"url": "tcp://a:1", "max_containers": "ten"}]}, "", r"max_containers is 'ten'"),
    ({"daemons": [{"url": "tcp://a:1", "max_containers": True}]}, "", r"max_containers is True"),
    ({"daemons": [{"url": "tcp://a:1", "name": "x"}, {"url": "tcp://b:1", "name": "x"}]}, "", r"names daemon x twice"),
    ({"daemons": [{"url": "tcp://a:1"}]}, "tcp://a:1,tcp://b:1", r"names daemons both in host and in extra\.daemons"),
    ({"daemons": [{"url": "tcp://a:1"}, {"url": "ftp://b:1"}]}, "", r"connection 'c' daemon ftp://b:1 has URL scheme 'ftp'"),
])
def test_every_bad_pool_setting_is_one_line_naming_it(tls_files, extras: dict, host: str, message: str) -> None:
    with pytest.raises(DaemonConfigError, match=message) as caught:
        build_pool(host=host, port=None, extras={**tls_files, **extras}, source="connection 'c'")
    assert "\n" not in str(caught.value)


def test_a_pin_or_labels_no_daemon_has_name_the_choices(tls_files) -> None:
    pool = build_pool(host="", port=None, source="connection 'c'", extras={**tls_files, "daemons": [
        {"url": "tcp://a:1", "name": "d0"}, {"url": "tcp://b:1", "name": "d1", "labels": {"gpu": "true"}}]})
    with pytest.raises(DaemonConfigError, match=r"^connection 'c' has no daemon 'd9'; its daemons are d0, d1$"):
        pool.matching(daemon="d9")
    with pytest.raises(DaemonConfigError, match=r"no daemon of connection 'c' carries daemon_labels \{'gpu': 'false'\} "
                                                r"\(d0: no labels; d1: \{'gpu': 'true'\}\)"):
        pool.matching(daemon_labels={"gpu": "false"})


def test_a_hook_on_a_pool_must_be_told_which_daemon(tls_files) -> None:
    hook = RemoteDockerHook(None)
    hook.__dict__["pool"] = build_pool(host="tcp://a:1,tcp://b:1", port=None, extras=tls_files, source="connection 'c'")
    with pytest.raises(DaemonConfigError, match=r"connection 'c' names 2 daemons \(a:1, b:1\); say which one with daemon="):
        _ = hook.config
    hook.daemon = "b:1"
    assert hook.config.url == "https://b:1"


def test_a_start_the_daemon_itself_failed_is_tried_elsewhere_but_a_task_error_is_not() -> None:
    """The daemon's own words, seen on this machine: a dockerd stopping mid-start (P6), and a task's mistakes."""
    from remote_docker.lifecycle.launch import LaunchError

    url = "starting the container on https://127.0.0.1:54319"
    stopping = [LaunchError(f"{url}: transport is closing: unavailable", 500),
                LaunchError(f"{url}: failed to update store for object type *libnetwork.endpoint: open : no such file "
                            "or directory", 500)]
    own = [LaunchError(f"{url}: unable to find user nouser: no matching entries in passwd file", 500),
           LaunchError(f'{url}: failed to create shim task: OCI runtime create failed: exec: "/nonexistent"', 400),
           LaunchError("the image x has no such executable (...); check command and entrypoint")]
    assert [e.daemon_fault for e in stopping + own] == [True, True, False, False, False]

    def never(member):  # a daemon fault needs no probe of the daemon
        raise AssertionError("probed")

    assert all(asyncio.run(start.failed_here(None, never, err)) for err in stopping)


# --------------------------------------------------------------------------- placement on real daemons


def pool_of(pool_daemons: Pool, **settings: dict):
    extra = json.loads(pool_daemons.connection_json(**settings))
    return build_pool(host=extra["host"], port=None, extras=extra["extra"], source="connection 'test_pool'")


@pytest.fixture(autouse=True)
def fresh_placement_memory():
    placement.forget()
    yield
    placement.forget()


def occupied(pool: Pool) -> list[int]:
    """Containers of ours holding a slot on each daemon now (what other tests left running counts too)."""
    async def count() -> list[int]:
        members = pool_of(pool).members
        hook = RemoteDockerHook(None)
        found = []
        for member in members:
            async with hook.engine(member) as engine:
                found.append(len(await placement.occupying(engine)))
        return found

    return asyncio.run(count())


def test_least_busy_wins_and_created_containers_count(pool: Pool) -> None:
    members = pool_of(pool)
    before = occupied(pool)
    top = max(before)
    extra = [top + 2 - before[0], top + 1 - before[1]]  # d0 two above the busiest, d1 one above, d2 as it is
    busy = occupy(pool.daemons[0], extra[0]) + occupy(pool.daemons[1], extra[1], state="created")
    try:
        chosen = asyncio.run(placement.place(members, placement.task_key(labels_for("t"))))
        if before[2] < top + 1:
            assert chosen.member is members.members[2], chosen.describe()
        assert chosen.loads == {m.name: n for m, n in zip(members.members, (top + 2, top + 1, before[2]), strict=True)}
    finally:
        clear(pool.daemons[0], busy[:extra[0]])
        clear(pool.daemons[1], busy[extra[0]:])


def test_a_burst_placed_in_the_same_second_spreads(pool: Pool) -> None:
    """Tasks placed together see the same counts (cached for a second): the hash of each task breaks the tie."""
    members = pool_of(pool)
    before = occupied(pool)
    levelled = [occupy(d, max(before) - n) for d, n in zip(pool.daemons, before, strict=True)]  # equal loads

    async def burst() -> list[str]:
        return [(await placement.place(members, placement.task_key(labels_for(f"b{i}")))).member.name for i in range(60)]

    try:
        landed = asyncio.run(burst())
    finally:
        for daemon, ids in zip(pool.daemons, levelled, strict=True):
            clear(daemon, ids)
    per_daemon = {name: landed.count(name) for name in {m.name for m in members.members}}
    assert all(count >= 10 for count in per_daemon.values()), per_daemon


def test_max_containers_is_a_hard_limit_and_a_full_pool_says_so(pool: Pool) -> None:
    before = occupied(pool)  # the limit is one more than what each holds now
    members = pool_of(pool, **{f"d{i}": {"max_containers": before[i] + 1} for i in range(3)})
    busy = [occupy(d, 1) for d in pool.daemons[:2]]
    try:
        chosen = asyncio.run(placement.place(members, placement.task_key(labels_for("t"))))
        assert chosen.member.name == "d2"
        placement.forget()
        busy.append(occupy(pool.daemons[2], 1))
        waiting = asyncio.run(placement.place(members, placement.task_key(labels_for("t"))))
        assert waiting.member is None
        assert waiting.skipped == {f"d{i}": f"full ({before[i] + 1}/{before[i] + 1})" for i in range(3)}
    finally:
        for daemon, ids in zip(pool.daemons, busy, strict=False):
            clear(daemon, ids)


def test_a_slot_placed_here_stays_taken_until_its_container_shows_in_a_listing(pool: Pool) -> None:
    """A listing fetched while the placed container is still being created does not free its slot: the
    reservation holds until the start says the container exists (or gave up), and a listing taken after
    that counts the container itself."""
    held = occupied(pool)[0]
    members = pool_of(pool, d0={"max_containers": held + 1})

    async def scenario() -> list[str | None]:
        first = await placement.place(members, "t1", daemon="d0")
        placement.invalidate(first.member)  # a fresh listing, which can't show the container yet
        during = await placement.place(members, "t2", daemon="d0")
        first.reservation.release()  # its start failed: nothing was made
        after_release = await placement.place(members, "t3", daemon="d0")
        after_release.reservation.created()  # its container exists now (made below, before the next listing)
        return [first.member and first.member.name, during.member and during.member.name,
                after_release.member and after_release.member.name]

    made: list[str] = []
    try:
        assert asyncio.run(scenario()) == ["d0", None, "d0"]
        made = occupy(pool.daemons[0], 1)
        placement.invalidate(members.members[0])
        assert asyncio.run(placement.place(members, "t4", daemon="d0")).member is None  # the listing counts it now
    finally:
        clear(pool.daemons[0], made)


def test_a_task_waiting_for_room_looks_again_as_soon_as_a_container_ends_here(pool: Pool) -> None:
    members = pool_of(pool)
    member = members.members[1]

    async def scenario() -> tuple[float, bool]:
        await placement.listing(member)
        waiter = asyncio.create_task(placement.room_or_timeout(30))
        await asyncio.sleep(0.05)
        began = time.monotonic()
        placement.room_freed(member.url)
        await waiter
        return time.monotonic() - began, member.url in placement._health.listings

    waited, still_cached = asyncio.run(scenario())
    assert waited < 1 and not still_cached  # woken at once, and the next count asks the daemon afresh


def test_an_end_while_a_waiter_was_counting_is_not_lost() -> None:
    """The end came after the waiter took its mark and before it went to sleep: it does not sleep at all,
    and a second report of the same container wakes nobody."""
    async def scenario() -> tuple[float, float]:
        mark = placement.room_mark()
        placement.room_freed("https://127.0.0.1:1", "c1")  # while the waiter was still counting
        began = time.monotonic()
        await placement.room_or_timeout(30, since=mark)
        missed = time.monotonic() - began
        mark = placement.room_mark()
        placement.room_freed("https://127.0.0.1:1", "c1")  # the trigger says again what its watch said
        began = time.monotonic()
        await placement.room_or_timeout(0.3, since=mark)
        return missed, time.monotonic() - began

    missed, repeated = asyncio.run(scenario())
    assert missed < 0.1 and repeated >= 0.3


def test_a_container_seen_stopping_here_frees_its_slot_before_the_daemon_lists_it_stopped(pool: Pool) -> None:
    """The daemon lists a container as running until it has cleaned up after it, a second or more under
    load; the watch said it stopped, so the count and the limit check leave it out from that moment."""
    held = occupied(pool)[0]
    counting = pool_of(pool, d0={"max_containers": held + 2})
    limiting = pool_of(pool, d0={"max_containers": held + 1})
    member = counting.members[0]
    running = occupy(pool.daemons[0], 1)  # still running: stands for one the daemon has not caught up with
    newcomer = occupy(pool.daemons[0], 1, state="created")  # made after it

    async def over(members) -> bool:
        async with RemoteDockerHook(None).engine(members.members[0]) as engine:
            return await placement.over_capacity(engine, members.members[0], newcomer[0])

    async def scenario() -> list:
        seen = [(await placement.place(counting, "t1", daemon="d0", hold=False)).member, await over(limiting)]
        placement.room_freed(member.url, running[0])
        return [*seen, (await placement.place(counting, "t2", daemon="d0", hold=False)).member, await over(limiting)]

    try:
        full, over_before, freed, over_after = asyncio.run(scenario())
    finally:
        clear(pool.daemons[0], running + newcomer)
    assert (full, over_before) == (None, True)
    assert freed is member and over_after is False  # the cached listing still says running: no new call


def test_the_watch_tells_the_waiters_when_its_container_stops_or_is_removed(pool: Pool) -> None:
    """on_exit (the waiters' room_freed in a trigger) is called once: when the daemon says the container
    stopped, and when someone else removed it."""
    import logging

    from remote_docker.lifecycle.watch import ContainerWatch
    from remote_docker.logs.follower import LogFollower

    client = pool.daemons[0].client()
    body = {"Image": "rd-test/busybox:latest", "HostConfig": {"NetworkMode": "none"}, "Labels": labels_for("watched")}
    exits = client.api.create_container_from_config({**body, "Cmd": ["sh", "-c", "echo bye; sleep 1"]})["Id"]
    removed = client.api.create_container_from_config({**body, "Cmd": ["sleep", "300"]})["Id"]
    for container_id in (exits, removed):
        client.api.start(container_id)
    log = logging.getLogger("test.watch")

    async def watch(container_id: str) -> tuple[str, int]:
        told: list[float] = []
        async with RemoteDockerHook(None).engine(pool_of(pool).members[0]) as engine:
            follower = LogFollower(log)
            watcher = ContainerWatch(engine, container_id, follower, log=log, poll_interval=0.2,
                                     on_exit=lambda: told.append(time.monotonic()))
            if container_id == removed:
                asyncio.get_running_loop().call_later(1.0, client.api.remove_container, removed, True, False, True)
            end = await watcher.until_end()
        return end.status, len(told)

    try:
        assert asyncio.run(watch(exits)) == ("exited", 1)
        assert asyncio.run(watch(removed)) == ("gone", 1)
    finally:
        clear(pool.daemons[0], [c for c in (exits, removed) if client.api.containers(all=True, filters={"id": c})])
        client.close()


def test_the_youngest_container_beyond_the_limit_gives_way(pool: Pool) -> None:
    """Two placements that saw room at once both create: the later one (by creation time) steps back."""
    held = occupied(pool)[0]
    members = pool_of(pool, d0={"max_containers": held + 2})
    first = occupy(pool.daemons[0], 2, state="created")
    late = occupy(pool.daemons[0], 1, state="created")

    async def check() -> list[bool]:
        async with RemoteDockerHook(None).engine(members.members[0]) as engine:
            return [await placement.over_capacity(engine, members.members[0], c) for c in first + late]

    try:
        assert asyncio.run(check()) == [False, False, True]
    finally:
        clear(pool.daemons[0], first + late)


def test_a_daemon_that_does_not_answer_is_skipped_remembered_and_named(pool: Pool) -> None:
    dead = f"tcp://127.0.0.1:{closed_port()}"
    extra = {**pool.extras(), "daemons": [{"url": dead, "name": "dead"}, {"url": pool.daemons[1].url, "name": "alive"}]}
    members = build_pool(host="", port=None, extras=extra, source="connection 'p'")
    chosen = asyncio.run(placement.place(members, "t1"))
    assert chosen.member.name == "alive" and "connection refused" in chosen.skipped["dead"]
    again = asyncio.run(placement.place(members, "t2"))
    assert again.skipped["dead"].startswith("down (") and "not asked again for" in again.skipped["dead"]
    only_dead = build_pool(host="", port=None, source="connection 'p'",
                           extras={**pool.extras(), "daemons": [{"url": dead, "name": "a"}, {"url": f"tcp://127.0.0.1:{closed_port()}", "name": "b"}]})
    placement.forget()
    with pytest.raises(placement.PlacementError) as caught:
        asyncio.run(placement.place(only_dead, "t3"))
    message = str(caught.value)
    assert re.match(r"^no daemon of connection 'p' is reachable \(a \(https://127\.0\.0\.1:\d+\): .*connection refused.*; "
                    r"b \(https://127\.0\.0\.1:\d+\): .*connection refused.*\); check that they run", message), message
    assert "\n" not in message


def test_the_start_goes_to_the_next_daemon_when_one_fails(pool: Pool) -> None:
    dead = f"tcp://127.0.0.1:{closed_port()}"
    extra = {**pool.extras(), "daemons": [{"url": dead, "name": "dead"}, {"url": pool.daemons[2].url, "name": "d2"}]}
    members = build_pool(host="", port=None, extras=extra, source="connection 'p'")
    labels = labels_for("failover")
    spec = ContainerSpec(image="rd-test/busybox:latest", command=["true"], network_mode="none")
    deployment = Deployment(b"test deployment")
    launch = Launch(image=spec.image, body=spec.create_body(deployment.stamp(labels)), deployment=deployment)
    hook = RemoteDockerHook(None)
    messages: list[str] = []

    class Log:
        def info(self, msg, *args):
            messages.append(msg % args)

        warning = info

    started = asyncio.run(start.start(members, launch, labels, hook.engine, Log()))
    member, container_id = started.daemon, started.container_id
    try:
        assert member.name == "d2" and any("Placing the container on d2" in m for m in messages), messages
    finally:
        clear(pool.daemons[2], [container_id])


# --------------------------------------------------------------------------- the operator on a pool


@pytest.fixture(scope="module")
def pool_run(airflow_env: AirflowEnv, pool: Pool):
    connection = pool.connection_json(d1={"labels": {"gpu": "true"}})
    return airflow_env.dags_test("rd_pool", extra_env={"AIRFLOW_CONN_RD_POOL": connection})


def where(pool: Pool, run, task_id: str) -> list[str]:
    """The daemons (d0..d2) holding the task's container."""
    found = []
    for i, daemon in enumerate(pool.daemons):
        client = daemon.client()
        if containers_of(client, run.dag_id, run.run_id, task_id):
            found.append(f"d{i}")
        client.close()
    return found


def test_tasks_spread_over_the_pool_each_exactly_once(pool: Pool, pool_run) -> None:
    homes = [where(pool, pool_run, f"spread{i}") for i in range(9)]
    assert all(len(home) == 1 for home in homes), homes
    assert len({home[0] for home in homes}) >= 2, homes
    for i in range(9):
        task = pool_run[f"spread{i}"]
        assert task.state == "success" and task.xcom == f"spread-{i}"
        assert re.search(r"Placing the container on d\d \(https://127\.0\.0\.1:\d+\) \(containers per daemon: d0 \d+, "
                         r"d1 \d+, d2 \d+\)", task.text()), task.text()[-2000:]


def test_a_pinned_task_and_a_labelled_task_go_where_they_are_told(pool: Pool, pool_run) -> None:
    assert where(pool, pool_run, "pinned") == ["d2"] and pool_run["pinned"].state == "success"
    assert where(pool, pool_run, "by_label") == ["d1"] and pool_run["by_label"].xcom == "on-a-gpu-daemon"
    assert pool_run["no_such_label"].state == "failed"
    assert "no daemon of connection 'rd_pool' carries daemon_labels {'gpu': 'false'}" in pool_run["no_such_label"].text()


def test_a_deferred_task_is_followed_on_the_daemon_it_landed_on(pool: Pool, pool_run) -> None:
    task = pool_run["deferred"]
    assert task.state == "success" and task.xcom == "deferred-on-a-pool"
    assert "[DAG TEST] running trigger in line" in task.text() and task.stdout() == ["deferred-on-a-pool"]
    assert len(where(pool, pool_run, "deferred")) == 1


def test_a_full_pool_waits_deferred_and_starts_when_room_frees(airflow_env: AirflowEnv, pool: Pool) -> None:
    connection = pool.connection_json(**{f"d{i}": {"max_containers": 1} for i in range(3)})
    client = pool.daemons[0].client()
    blockers = []
    for daemon in pool.daemons:  # one container of ours on each, ending in 20 s (after `dags test` has started)
        c = daemon.client()
        body = {"Image": "rd-test/busybox:latest", "Cmd": ["sleep", "20"], "HostConfig": {"NetworkMode": "none"},
                "Labels": labels_for("blocker")}
        blockers.append((daemon, c.api.create_container_from_config(body)["Id"]))
        c.api.start(blockers[-1][1])
        c.close()
    client.close()
    try:
        run = airflow_env.dags_test("rd_pool_full", extra_env={"AIRFLOW_CONN_RD_POOL_FULL": connection})
        task = run["waits"]
        assert task.state == "success" and task.xcom == "got-room", task.text()[-3000:]
        assert "Every daemon this task may use is full (containers per daemon: d0 1, d1 1, d2 1" in task.text()
        assert "[DAG TEST] running trigger in line" in task.text()
        waited = re.search(r"Daemon d\d \(https://127\.0\.0\.1:\d+\) has room after (\d+)s", task.text())
        assert waited and int(waited.group(1)) >= 1, task.text()[-3000:]  # it started only once a blocker ended
    finally:
        for daemon, container_id in blockers:
            clear(daemon, [container_id])


def test_dead_daemons_are_passed_over_and_none_reachable_is_one_line(airflow_env: AirflowEnv, pool: Pool) -> None:
    dead = f"tcp://127.0.0.1:{closed_port()}"
    down = json.dumps({"conn_type": "remote_docker", "host": "", "extra": {
        **pool.extras(), "daemons": [{"url": dead, "name": "gone"}, {"url": pool.daemons[1].url, "name": "d1"}]}})
    dead_only = json.dumps({"conn_type": "remote_docker", "host": f"{dead},tcp://127.0.0.1:{closed_port()}",
                            "extra": pool.extras()})
    run = airflow_env.dags_test("rd_pool_down", extra_env={"AIRFLOW_CONN_RD_POOL_DOWN": down,
                                                            "AIRFLOW_CONN_RD_POOL_DEAD": dead_only})
    assert run["skips_the_dead"].state == "success" and run["skips_the_dead"].xcom == "placed-past-a-dead-daemon"
    assert run["none_reachable"].state == "failed"
    assert re.search(r"no daemon of connection 'rd_pool_dead' is reachable \(127\.0\.0\.1:\d+: .*connection refused",
                     run["none_reachable"].text()), run["none_reachable"].text()[-2000:]


def test_doctor_checks_every_daemon_of_a_pool(pool: Pool) -> None:
    env = {"AIRFLOW_CONN_RD_DOCTOR_POOL": pool.connection_json()}
    done = run_cli("doctor", "--conn-id", "rd_doctor_pool", env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 4 and all(": ok: https://127.0.0.1:" in line for line in lines[:3]), lines
    assert lines[3] == "connection 'rd_doctor_pool': 3 of 3 daemons answer"
    dead = json.dumps({"conn_type": "remote_docker", "host": f"{pool.daemons[0].url},tcp://127.0.0.1:{closed_port()}",
                       "extra": pool.extras()})
    done = run_cli("doctor", "--conn-id", "rd_doctor_dead", env={"AIRFLOW_CONN_RD_DOCTOR_DEAD": dead})
    assert done.returncode == 2
    failed = [line for line in done.stdout.splitlines() if ": FAILED: " in line]
    assert len(failed) == 1 and "connection refused" in failed[0], done.stdout
    assert done.stdout.strip().endswith("1 of 2 daemons answer")


def test_occupying_counts_only_our_containers(pool: Pool) -> None:
    client = pool.daemons[2].client()
    foreign = client.api.create_container_from_config({"Image": "rd-test/busybox:latest", "Cmd": ["sleep", "30"],
                                                       "HostConfig": {"NetworkMode": "none"}})["Id"]
    client.api.start(foreign)
    ours = occupy(pool.daemons[2], 1)

    async def count() -> list[dict]:
        async with RemoteDockerHook(None, **pool.daemons[2].hook_params()).engine() as engine:
            return await placement.occupying(engine)

    try:
        found = asyncio.run(count())
        assert [c["Id"] for c in found] == ours and all(TRY_LABEL in c["Labels"] for c in found)
    finally:
        client.api.remove_container(foreign, force=True)
        client.close()
        clear(pool.daemons[2], ours)


# --------------------------------------------------------------------------- routing by DAG (cluster policy)


def test_a_routing_file_routes_tasks_through_airflows_cluster_policy(airflow_env: AirflowEnv, pool: Pool,
                                                                     tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - dag_id: 'rd_pool_rout*'\n    daemon: d2\n  - dag_id: '*'\n    daemon: d1\n")
    (tmp_path / "airflow_local_settings.py").write_text(
        f"from remote_docker.routing import task_policy_from\ntask_policy = task_policy_from({str(routes)!r})\n")
    run = airflow_env.dags_test("rd_pool_routed", extra_env={
        "AIRFLOW_CONN_RD_POOL": pool.connection_json(d0={}), "PYTHONPATH": f"{tmp_path}:{airflow_env.env['PYTHONPATH']}"})
    assert where(pool, run, "routed_by_file") == ["d2"] and run["routed_by_file"].xcom == "routed"
    assert where(pool, run, "told_by_the_dag") == ["d0"], "what the DAG says wins over the file"


@pytest.mark.parametrize(("text", "message"), [
    ("routes: [", r"routes\.yaml is not valid YAML at line 1; fix its syntax"),
    ("rules: []", r"needs a top-level 'routes:' list"),
    ("routes:\n  - dag_id: a\n", r"route 1 needs exactly one of daemon or daemon_labels"),
    ("routes:\n  - {dag_id: a, daemon: x, daemon_labels: {gpu: 'true'}}\n", r"route 1 needs exactly one of"),
    ("routes:\n  - {daemon: x}\n  - {dag: a, daemon: y}\n", r"route 2 has unknown key dag; allowed: daemon, daemon_labels, dag_id, task_id"),
    ("routes:\n  - {daemon_labels: [gpu]}\n", r"route 1 daemon_labels must be a mapping"),
    ("routes:\n  - {dag_id: 7, daemon: x}\n", r"route 1 dag_id must be a text pattern"),
    ("routes:\n  - just-a-string\n", r"route 1 is 'just-a-string'; give a mapping"),
])
def test_every_bad_routing_file_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    from remote_docker.routing import RoutingError, load_routes

    path = tmp_path / "routes.yaml"
    path.write_text(text)
    with pytest.raises(RoutingError, match=message) as caught:
        load_routes(path)
    assert "\n" not in str(caught.value)
    with pytest.raises(RoutingError, match=r"routing file /nonexistent\.yaml does not exist; create it or fix the path"):
        load_routes("/nonexistent.yaml")


def test_the_first_matching_route_wins() -> None:
    from remote_docker.routing import Route, route_for

    routes = [Route(dag_id="ml_*", task_id="train_*", daemon_labels=(("gpu", "true"),)), Route(dag_id="ml_*", daemon="cpu"),
              Route(daemon="default")]
    assert route_for(routes, "ml_daily", "train_model").daemon_labels == (("gpu", "true"),)
    assert route_for(routes, "ml_daily", "report").daemon == "cpu"
    assert route_for(routes, "etl", "load").daemon == "default"
    assert route_for(routes[:2], "etl", "load") is None

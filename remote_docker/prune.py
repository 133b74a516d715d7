"""Clean-up of what tasks leave on remote daemons: ``RemoteDockerPruneOperator`` and ``remote-docker prune``.

On every daemon of the connection (a pool's included), in this order:

1. **exited containers of this deployment** created before the cut-off (and containers it created but
   never started, such as a start interrupted midway);
2. **orphans**: running containers of this deployment whose task instance Airflow no longer runs or
   defers (a user marked it while its trigger could not reach the container, a try that lost its
   worker): stopped with the usual grace, then removed. Only a state Airflow reports as finished counts:
   a task instance that is running, deferred, queued or up for retry (a retry may reattach) keeps its
   container, and so does one Airflow can't say anything about (a deleted run: remove those by hand);
3. only when asked, and **daemon-wide** (whoever made them): dangling images, images no container uses
   created before a cut-off, and the build cache.

A container is this deployment's only if its proof checks out (``ownership``): another deployment's,
one without our labels, or one that copies our labels without the proof is never touched (it is named
in the report). ``dry_run`` reports what would go. The report says what went, per daemon.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow.sdk import BaseOperator

from remote_docker.compat import AirflowException
from remote_docker.daemon import ownership
from remote_docker.daemon.connection import DEFAULT_CONN_ID
from remote_docker.daemon.ownership import Deployment
from remote_docker.engine import Engine, EngineError
from remote_docker.hook import RemoteDockerHook
from remote_docker.lifecycle.spec import LABEL_PREFIX
from remote_docker.pool.members import Member
from remote_docker.triggers import state_key

# Airflow's finished states: a container of such a task instance is an orphan
FINISHED = {"success", "failed", "skipped", "upstream_failed", "removed"}
ORPHAN_MIN_AGE = dt.timedelta(minutes=2)  # a container younger than this is never judged: its task may be starting
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

# (dag_id, run_id, task_id, map_index) -> Airflow's state for it, or None when unknown
StateLookup = Callable[[list[tuple[str, str, str, int]]], Awaitable[dict[tuple[str, str, str, int], str | None]]]


def parse_duration(text: str, what: str = "--older-than") -> dt.timedelta:
    """``"24h"``, ``"30m"``, ``"7d"``, ``"90s"``, ``"2w"``."""
    found = _DURATION.match(str(text))
    if not found:
        raise ValueError(f"{what} {text!r} is not a duration; use a number and a unit: 90s, 30m, 24h, 7d or 2w")
    return dt.timedelta(seconds=float(found.group(1)) * _SECONDS[found.group(2)])


@dataclass
class DaemonReport:
    daemon: str
    containers: list[str] = field(default_factory=list)  # "name (dag/task/run, exited 3 days ago)"
    orphans: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    left_alone: list[str] = field(default_factory=list)  # claim this deployment without its proof
    bytes_reclaimed: int = 0
    build_cache_bytes: int = 0
    skipped: list[str] = field(default_factory=list)  # what this engine can't do, e.g. Podman's build cache
    error: str | None = None

    def line(self, dry_run: bool) -> str:
        if self.error:
            return f"{self.daemon}: FAILED: {self.error}"
        verb = "would remove" if dry_run else "removed"
        return (f"{self.daemon}: {verb} {len(self.containers)} exited container(s), {len(self.orphans)} orphan(s), "
                f"{len(self.images)} image(s) (daemon-wide); {'would reclaim' if dry_run else 'reclaimed'} "
                f"{(self.bytes_reclaimed + self.build_cache_bytes) / 1e6:.1f} MB from images"
                f"{f' and {self.build_cache_bytes / 1e6:.1f} MB of build cache (daemon-wide)' if self.build_cache_bytes else ''}"
                + "".join(f"; skipped {what}" for what in self.skipped)
                + (f"; left alone {len(self.left_alone)} container(s) claiming this deployment without its proof"
                   if self.left_alone else ""))


@dataclass
class Prune:
    """What to clean up, and how to ask Airflow about task instances."""

    deployment: Deployment  # whose containers are cleaned up
    older_than: dt.timedelta = dt.timedelta(hours=24)
    orphans: bool = True
    daemon_wide_dangling_images: bool = False
    daemon_wide_unused_images_older_than: dt.timedelta | None = None
    daemon_wide_build_cache: bool = False
    dry_run: bool = False
    states: StateLookup | None = None  # None: orphans are not looked for
    stop_timeout: int = 10
    orphan_min_age: dt.timedelta = ORPHAN_MIN_AGE

    async def run(self, hook: RemoteDockerHook, log: Any) -> list[DaemonReport]:
        pool = await hook.apool()
        reports = []
        for member in pool.members:
            report = DaemonReport(member.describe())
            try:
                async with hook.engine(member) as engine:
                    await self._on(engine, member, report, log)
            except EngineError as err:
                report.error = str(err)
            log.info("%s", report.line(self.dry_run))
            reports.append(report)
        return reports

    async def _on(self, engine: Engine, member: Member, report: DaemonReport, log: Any) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        cutoff = now - self.older_than
        ours = []
        for container in await engine.find(self.deployment.selector()):
            if self.deployment.owns(container.get("Labels")):
                ours.append(container)
            else:  # our fingerprint without our proof: not ours, whatever it claims
                report.left_alone.append(_describe(container, now))
        exited = [c for c in ours if c["State"] in ("exited", "dead", "created") and c.get("Created", 0) < cutoff.timestamp()]
        report.containers = [_describe(c, now) for c in exited]
        if not self.dry_run:
            for container in exited:  # one by one, each proven ours (the daemon's own prune filters by label only)
                await engine.remove(container["Id"])
        if self.orphans and self.states is not None:
            await self._orphans(engine, [c for c in ours if c["State"] in ("running", "paused", "restarting")], now,
                                report, log)
        if self.daemon_wide_dangling_images:
            await self._images(engine, {"dangling": ["true"]}, report)
        if self.daemon_wide_unused_images_older_than is not None:
            until = int((now - self.daemon_wide_unused_images_older_than).timestamp())
            await self._images(engine, {"dangling": ["false"], "until": [str(until)]}, report)
        if self.daemon_wide_build_cache and not self.dry_run:
            try:
                done = await engine.prune("build", {"until": [f"{int(self.older_than.total_seconds())}s"]})
            except EngineError as err:
                if err.kind != "gone":
                    raise
                report.skipped.append(f"the build cache ({(await engine.facts()).describe()} has no /build/prune)")
            else:
                report.build_cache_bytes = int(done.get("SpaceReclaimed") or 0)

    async def _orphans(self, engine: Engine, running: list[dict], now: dt.datetime, report: DaemonReport, log: Any) -> None:
        keys = {c["Id"]: _task_key(c["Labels"]) for c in running
                if now.timestamp() - c.get("Created", 0) >= self.orphan_min_age.total_seconds()}
        states = await self.states(sorted(set(keys.values()))) if keys else {}
        for container in running:
            key = keys.get(container["Id"])
            if key is None or states.get(key) not in FINISHED:
                continue  # young, or its task instance is alive (or Airflow can't tell): never an orphan
            report.orphans.append(f"{_describe(container, now)}: task instance {states[key]}")
            if not self.dry_run:
                log.info("Stopping orphan container %s (its task instance is %s)", container["Id"][:12], states[key])
                await engine.stop(container["Id"], self.stop_timeout)
                await engine.remove(container["Id"])

    async def _images(self, engine: Engine, filters: Mapping[str, list[str]], report: DaemonReport) -> None:
        if self.dry_run:
            dangling = filters.get("dangling") == ["true"]
            found = await engine.images(dangling=True) if dangling else []
            report.images += [f"{i['Id'][:19]} ({i.get('Size', 0) / 1e6:.1f} MB)" for i in found]
            report.bytes_reclaimed += sum(int(i.get("Size", 0)) for i in found)
            return
        done = await engine.prune("images", filters)
        report.images += [next(iter(item.values())) for item in done.get("ImagesDeleted") or [] if "Deleted" in item]
        report.bytes_reclaimed += int(done.get("SpaceReclaimed") or 0)


def _task_key(labels: Mapping[str, str]) -> tuple[str, str, str, int]:
    get = lambda name: labels.get(f"{LABEL_PREFIX}{name}", "")  # noqa: E731
    return get("dag_id"), get("run_id"), get("task_id"), int(get("map_index") or -1)


def _describe(container: Mapping[str, Any], now: dt.datetime) -> str:
    dag_id, run_id, task_id, map_index = _task_key(container.get("Labels") or {})
    age = dt.timedelta(seconds=int(now.timestamp() - container.get("Created", now.timestamp())))
    mapped = f"[{map_index}]" if map_index >= 0 else ""
    name = (container.get("Names") or ["/?"])[0].lstrip("/")
    return f"{name} ({dag_id}.{task_id}{mapped} of {run_id}, created {age} ago, {container['State']})"


# ---------------------------------------------------------------------- asking Airflow


def states_from_task_sdk(context: Any) -> StateLookup:
    """Inside a task: the Task SDK's ``get_task_states`` (the execution API; workers have no database)."""
    ti = context["ti"]

    async def lookup(keys: list[tuple[str, str, str, int]]) -> dict[tuple[str, str, str, int], str | None]:
        found: dict[tuple[str, str, str, int], str | None] = {}
        for dag_id in {k[0] for k in keys}:
            wanted = [k for k in keys if k[0] == dag_id]
            try:
                answer = await asyncio.to_thread(ti.get_task_states, dag_id=dag_id, run_ids=sorted({k[1] for k in wanted}))
            except Exception:  # the DAG is gone, or Airflow won't say: nothing is judged an orphan
                continue
            for key in wanted:
                per_run = answer.get(key[1]) or {}
                found[key] = per_run.get(state_key(key[2], key[3]), per_run.get(key[2]))
        return found

    return lookup


def states_from_database() -> StateLookup:
    """For the CLI, where Airflow is configured: the metadata database."""

    async def lookup(keys: list[tuple[str, str, str, int]]) -> dict[tuple[str, str, str, int], str | None]:
        return await asyncio.to_thread(_query_states, keys)

    return lookup


def _query_states(keys: list[tuple[str, str, str, int]]) -> dict[tuple[str, str, str, int], str | None]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    found: dict[tuple[str, str, str, int], str | None] = {}
    with create_session() as session:
        for dag_id, run_id, task_id, map_index in keys:
            state = session.query(TaskInstance.state).filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id,
                                                                map_index=map_index).scalar()
            # a task instance this Airflow doesn't know (another deployment's, a deleted run) is not judged
            found[(dag_id, run_id, task_id, map_index)] = str(getattr(state, "value", state)) if state is not None else None
    return found


# what the operator's arguments were called before clean-up of images and cache became daemon-wide opt-ins
_RENAMED = {"dangling_images": "daemon_wide_dangling_images", "build_cache": "daemon_wide_build_cache",
            "unused_images_older_than": "daemon_wide_unused_images_older_than"}


class RemoteDockerPruneOperator(BaseOperator):
    """Clean up the daemons of a connection (see the module docstring); the XCom is the report per daemon.

    :param older_than: exited containers of this deployment created before this long ago go (default 24 h).
    :param orphans: stop and remove running containers of this deployment whose task instance has finished.
    :param daemon_wide_dangling_images: also remove every dangling image on the daemon, whoever made it.
    :param daemon_wide_unused_images_older_than: also remove every image no container uses, created before
        this long ago, whoever made it.
    :param daemon_wide_build_cache: also prune the daemon's build cache (everyone's).
    :param dry_run: report only.
    :param orphan_min_age: a running container younger than this is never judged an orphan (default 2 min).
    """

    ui_color = "#f0e4bf"

    def __init__(self, *, remote_docker_conn_id: str | None = DEFAULT_CONN_ID, older_than: dt.timedelta = dt.timedelta(hours=24),
                 orphans: bool = True, daemon_wide_dangling_images: bool = False,
                 daemon_wide_unused_images_older_than: dt.timedelta | None = None, daemon_wide_build_cache: bool = False,
                 dry_run: bool = False, orphan_min_age: dt.timedelta = ORPHAN_MIN_AGE, **kwargs: Any) -> None:
        for old, new in _RENAMED.items():
            if old in kwargs:
                raise TypeError(f"RemoteDockerPruneOperator's {old} is now {new}: images and the build cache are the "
                                "whole daemon's, whoever made them, so their clean-up is asked for by that name")
        super().__init__(**kwargs)
        self.remote_docker_conn_id = remote_docker_conn_id
        self.settings = dict(older_than=older_than, orphans=orphans, daemon_wide_dangling_images=daemon_wide_dangling_images,
                             daemon_wide_unused_images_older_than=daemon_wide_unused_images_older_than,
                             daemon_wide_build_cache=daemon_wide_build_cache, dry_run=dry_run, orphan_min_age=orphan_min_age)

    def execute(self, context: Any) -> list[dict[str, Any]]:
        prune = Prune(ownership.for_worker(), **self.settings, states=states_from_task_sdk(context))
        reports = asyncio.run(prune.run(RemoteDockerHook(self.remote_docker_conn_id), self.log))
        failed = [r for r in reports if r.error]
        if failed:
            raise AirflowException("; ".join(r.line(prune.dry_run) for r in failed))
        return [asdict(r) for r in reports]

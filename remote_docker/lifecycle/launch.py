"""Start a task's container: image per the pull policy, create, copy files in, start.

Used wherever a container is started (a worker, or the triggerer when the task starts
there). A failure the daemon reports is one line naming the daemon, the cause and the fix
(``LaunchError``, not worth a retry); a transport failure stays an ``EngineError`` (worth
one). A container created but not started is removed again, so nothing half-made is left.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from remote_docker.daemon.ownership import Deployment
from remote_docker.daemon.registry import ImageError, Source, ensure_image
from remote_docker.engine import Engine, EngineError
from remote_docker.lifecycle.spec import LABEL_PREFIX, TASK_KEYS, TRY_LABEL

_RUNNING_STATES = ("running", "paused", "restarting")
PROBE_LABEL = f"{LABEL_PREFIX}probe"  # a container made only to look at the daemon's host, never started
_HOST_ROOT = "/.remote-docker-host"


class LaunchError(Exception):
    """The container can't be started as asked; the message names the daemon, the cause and the fix.
    ``status``: the daemon's HTTP status, when it answered (5xx: the daemon failed, not the request)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def daemon_fault(self) -> bool:
        """The daemon itself failed, not the request: its containerd or network store went away (as when it
        shuts down: it still answers pings), so another daemon may well succeed. A server error that is
        the task's own (an unknown user, a working_dir under a file) is not: it fails the same anywhere."""
        lowered = str(self).lower()
        return self.status is not None and self.status >= 500 and any(mark in lowered for mark in _DAEMON_FAULTS)


# what dockerd says when its own parts fail under it (seen while a daemon stops: P6 in BENCHMARKS.md)
_DAEMON_FAULTS = ("transport is closing", "code = unavailable", "containerd.sock", "failed to update store for object type")


class NoRoom(Exception):
    """The daemon filled up between placement and create (``admit`` said no); the container is gone again."""


@dataclass
class Launch:
    """What starting one container takes."""

    image: str
    body: Mapping[str, Any]  # the create body, labels included (spec.ContainerSpec.create_body, Deployment.stamp)
    deployment: Deployment  # whose containers may be reused (a name held by an earlier try's)
    name: str | None = None  # container_name
    pull: str = "missing"
    credentials: Source | None = None  # where the pull's credentials come from (fetched on the worker only)
    archive: bytes | None = None  # files to extract at / before the start (spec.files_archive)
    # what to say when the command is not in the image ({image} and {message} are filled in)
    missing_executable: str = "the image {image} has no such executable ({message}); check command and entrypoint"

    async def start(self, engine: Engine, log: Any,
                    admit: Callable[[Engine, str], Awaitable[bool]] | None = None) -> str:
        """Create and start the container; returns its id. ``admit``, asked once the container exists
        and before it starts, may refuse it (a daemon at its limit): it is removed and ``NoRoom`` raised."""
        if self.pull != "missing":  # "missing" asks only when the create says so: one round trip fewer per start
            await self._ensure_image(engine, log)
        container_id = await self._create(engine, log)
        try:
            if admit is not None and not await admit(engine, container_id):
                raise NoRoom(f"{engine.url} filled up while this container was created")
            if self.archive:
                await engine.copy_in(container_id, self.archive)
                log.info("Copied files into the container (%s bytes)", f"{len(self.archive):,}")
            await engine.start(container_id)
        except BaseException as err:
            await _remove_quietly(engine, container_id, log)
            if isinstance(err, EngineError) and not err.unreachable:
                raise LaunchError(self.explain(err, engine, "starting the container"), err.status) from None
            raise
        log.info("Started container %s from %s on %s", container_id[:12], self.image, engine.url)
        return container_id

    async def _ensure_image(self, engine: Engine, log: Any) -> None:
        try:
            await ensure_image(engine, self.image, self.pull, self.credentials, log)
        except ImageError as err:
            raise LaunchError(str(err)) from None

    async def _create(self, engine: Engine, log: Any) -> str:
        freed = pulled = False
        while True:
            try:
                await self._refuse_missing_bind_sources(engine)
                container_id, warnings = await engine.create(self.body, self.name)
            except EngineError as err:
                if err.kind == "conflict" and not freed and await self._free_name(engine, log):
                    freed = True
                    continue
                if err.kind == "gone" and self.pull == "missing" and not pulled:  # 404 here: no such image
                    await self._ensure_image(engine, log)
                    pulled = True
                    continue
                if err.unreachable:
                    raise
                raise LaunchError(self.explain(err, engine, "creating the container"), err.status) from None
            for warning in warnings:
                log.warning("Docker: %s", warning)
            return container_id

    async def _refuse_missing_bind_sources(self, engine: Engine) -> None:
        """Refuse a bind mount whose source is not on the daemon's host, as Docker does at create. Podman
        creates such a source instead (its compat API makes every missing bind source a folder), so there
        its sources are looked for first, through a container that is created with the host's / mounted
        read-only and removed unstarted. Raises ``EngineError`` as Docker's create would (400)."""
        sources = [m["Source"] for m in self.body.get("HostConfig", {}).get("Mounts") or []
                   if m.get("Type") == "bind" and m.get("Source")]
        if not sources or (await engine.facts()).engine != "podman":
            return
        probe = {"Image": self.body["Image"], "Cmd": ["true"], "Labels": self.deployment.stamp({PROBE_LABEL: "bind-sources"}),
                 "HostConfig": {"NetworkMode": "none", "Mounts": [{"Type": "bind", "Source": "/", "Target": _HOST_ROOT,
                                                                   "ReadOnly": True}]}}
        probe_id, _ = await engine.create(probe, None)
        try:
            for source in sources:
                if not await engine.path_exists(probe_id, f"{_HOST_ROOT}/{source.lstrip('/')}"):
                    message = f"invalid mount config for type \"bind\": bind source path does not exist: {source}"
                    raise EngineError("api", message, 400, message)
        finally:
            await engine.remove(probe_id)

    async def _free_name(self, engine: Engine, log: Any) -> bool:
        """``container_name`` is taken: free it if a finished container of an earlier try of this task holds it,
        by renaming that one ``<name>-try<N>``: kept for inspection, as the official operator keeps it (it
        fails the retry on the name instead)."""
        if not self.name:
            return False
        holder = await engine.inspect(self.name)
        if holder is None:
            return True
        theirs = holder["Config"].get("Labels") or {}
        ours = self.body.get("Labels") or {}
        same_task = all(theirs.get(k) == v for k, v in ours.items() if k in TASK_KEYS and k != TRY_LABEL)
        earlier_try = try_of(theirs) < try_of(ours)  # this try's own, or a later one's, is never removed here
        if same_task and earlier_try and not holder["State"]["Running"] and self.deployment.owns(theirs):
            kept = f"{self.name}-try{try_of(theirs)}"
            log.info("Renaming finished container %s of try %s to %s, to reuse its name; it is kept for inspection",
                     holder["Id"][:12], try_of(theirs), kept)
            await engine.rename(holder["Id"], kept)
            return True
        return False

    def explain(self, err: EngineError, engine: Engine, doing: str) -> str:
        message, url = err.detail or str(err), engine.url
        if err.kind == "conflict" and self.name:
            return (f"{doing} on {url}: the name {self.name!r} is taken by a container that is not "
                    "a finished try of this task; choose another container_name or remove that container")
        lowered = message.lower()
        if "bind source path does not exist" in message or ("no such file or directory" in lowered and "mount" in lowered):
            return (f"{doing} on {url}: a mount source does not exist on the daemon's host ({message}); on a remote "
                    "daemon a bind source is a path on that host: use a named volume or files= instead")
        if "executable file not found" in message:
            return f"{doing} on {url}: " + self.missing_executable.format(image=self.image, message=message)
        if "memory" in lowered and err.status == 400:
            return f"{doing} on {url}: {message}; adjust mem_limit"
        return f"{doing} on {url}: {message}"


async def _remove_quietly(engine: Engine, container_id: str, log: Any) -> None:
    try:
        await engine.remove(container_id)
    except EngineError as err:
        log.warning("Could not remove container %s: %s", container_id[:12], err)


def try_of(labels: Mapping[str, str]) -> int:
    """The try a container's labels name (0 when they name none or nonsense)."""
    try:
        return int(labels.get(TRY_LABEL, 0))
    except (TypeError, ValueError):
        return 0


def try_name(labels: Mapping[str, str]) -> str:
    """A container name unique to one try of one task instance: readable, and the daemon's own
    uniqueness check makes a second create of the same try fail instead of duplicating it."""
    digest = hashlib.sha256("\0".join(f"{k}={v}" for k, v in sorted(labels.items())).encode()).hexdigest()[:12]
    task = re.sub(r"[^a-zA-Z0-9_.-]+", "-", f"{labels[f'{LABEL_PREFIX}dag_id']}.{labels[f'{LABEL_PREFIX}task_id']}")
    return f"rd-{task[:80].strip('-.')}-{digest}"

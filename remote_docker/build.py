"""``RemoteDockerBuildOperator``: build an image on the remote daemon (the official provider has none).

The context (a local folder, honouring its ``.dockerignore``, or ``{path: text | bytes}``) goes as a tar
over mutual TLS to ``POST /build``; the build log streams into the task log line by line; a failed step
fails the task with the build's own error line; the image is tagged, pushed when asked (credentials as
for a pull: ``docker_conn_id``, ``credential_helper``, ``aws_conn_id``, fetched on the worker only),
and its id is the XCom. On a pool connection the image is built on every daemon, so tasks find it
wherever they are placed (``daemon=`` builds on one).

Not deferrable, on purpose: the daemon ties a build to the request that sent its context; when that
connection closes the build is cancelled, so the stream can't be handed to a triggerer as a running
container can. The worker slot is held for the build.
"""

from __future__ import annotations

import asyncio
import fnmatch
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator

from remote_docker.compat import AirflowFailException
from remote_docker.daemon.connection import DEFAULT_CONN_ID, DaemonConfigError
from remote_docker.daemon.registry import ImageError, registry_of, source_for
from remote_docker.engine import Engine, EngineError
from remote_docker.engine.api import stream_error
from remote_docker.hook import RemoteDockerHook
from remote_docker.pool.members import Member


def context_archive(context: str | Path | Mapping[str, str | bytes], dockerfile: str) -> bytes:
    """The build context as a tar: a folder (without what its .dockerignore names) or path -> content."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        if isinstance(context, Mapping):
            for name, content in context.items():
                data = content.encode() if isinstance(content, str) else bytes(content)
                info = tarfile.TarInfo(str(name).lstrip("/"))
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
            names = {str(name).lstrip("/") for name in context}
        else:
            root = Path(context)
            if not root.is_dir():
                raise ValueError(f"build context {root} is not a folder; give a folder or a {{path: content}} mapping")
            ignored, names = _ignore_patterns(root), set()
            for path in sorted(root.rglob("*")):
                relative = path.relative_to(root).as_posix()
                if relative not in (dockerfile, ".dockerignore") and any(fnmatch.fnmatch(relative, p) or
                                                                         relative.startswith(p.rstrip("/") + "/") for p in ignored):
                    continue
                if path.is_file() or path.is_symlink():
                    tar.add(path, arcname=relative, recursive=False)
                    names.add(relative)
    if dockerfile not in names:
        raise ValueError(f"the build context has no {dockerfile}; add it or set dockerfile= to the right path")
    return buffer.getvalue()


def _ignore_patterns(root: Path) -> list[str]:
    ignore = root / ".dockerignore"
    if not ignore.exists():
        return []
    patterns = [line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if any(p.startswith("!") for p in patterns):
        raise ValueError(f"{ignore} uses ! exceptions, which this operator does not read; list what to leave out only")
    return [p.lstrip("/") for p in patterns]


class RemoteDockerBuildOperator(BaseOperator):
    """Build an image on the remote daemon(s) and optionally push it; the XCom is the image id.

    :param context: a folder on the worker, or ``{path in the context: text or bytes}``.
    :param dockerfile: the Dockerfile's path inside the context.
    :param tag: the image's name(s), e.g. ``"127.0.0.1:5000/team/job:1"``.
    :param build_args: ``--build-arg`` values; :param labels: image labels.
    :param pull: pull newer base images first; :param nocache: build without the cache.
    :param target: the stage of a multi-stage Dockerfile to build.
    :param network_mode: the network of the build's RUN steps (``"none"`` for a daemon without a bridge).
    :param push: push every tag after the build.
    :param docker_conn_id: / ``credential_helper`` / ``aws_conn_id``: the registry's credentials (push,
        and base images from the same registry).
    :param daemon: on a pool connection, build on this daemon only (default: on every one).
    """

    template_fields: Sequence[str] = ("tag", "build_args", "labels", "dockerfile", "target")
    ui_color = "#bfe3f0"

    def __init__(self, *, context: str | Path | Mapping[str, str | bytes], tag: str | list[str], dockerfile: str = "Dockerfile",
                 build_args: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None, pull: bool = False,
                 nocache: bool = False, target: str | None = None, network_mode: str | None = None, push: bool = False,
                 docker_conn_id: str | None = None, credential_helper: str | None = None, aws_conn_id: str | None = None,
                 remote_docker_conn_id: str | None = DEFAULT_CONN_ID, daemon: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not tag:
            raise ValueError("tag is required: name the image to build, e.g. 'registry:5000/team/job:1'")
        self.context, self.dockerfile, self.tag = context, dockerfile, tag
        self.build_args, self.labels = dict(build_args or {}), dict(labels or {})
        self.pull, self.nocache, self.target, self.network_mode, self.push = pull, nocache, target, network_mode, push
        self.docker_conn_id, self.credential_helper, self.aws_conn_id = docker_conn_id, credential_helper, aws_conn_id
        self.remote_docker_conn_id, self.daemon = remote_docker_conn_id, daemon

    @property
    def tags(self) -> list[str]:
        return [self.tag] if isinstance(self.tag, str) else list(self.tag)

    def execute(self, context: Any) -> str:
        try:
            archive = context_archive(self.context, self.dockerfile)
            source = source_for(self.docker_conn_id, self.credential_helper, self.aws_conn_id)
            return asyncio.run(self._build_everywhere(archive, source))
        except (ValueError, ImageError, DaemonConfigError) as err:
            raise AirflowFailException(str(err)) from None

    async def _build_everywhere(self, archive: bytes, source: Any) -> str:
        hook = RemoteDockerHook(self.remote_docker_conn_id)
        pool = await hook.apool()
        members = [pool.member(self.daemon)] if self.daemon else list(pool.members)
        self.log.info("Build context: %s bytes", f"{len(archive):,}")
        # each registry named by a tag gets only its own credentials (a docker connection's: its host's only)
        credentials = {}
        for registry in dict.fromkeys(registry_of(tag) for tag in self.tags):
            credentials[registry] = await source.for_registry(registry, self.log) if source else None
        image_id = ""
        for member in members:
            async with hook.engine(member) as engine:
                image_id = await self._build(engine, member, archive, credentials)
                if self.push:
                    await self._push(engine, credentials)
        return image_id

    async def _build(self, engine: Engine, member: Member, archive: bytes, credentials: dict[str, Any]) -> str:
        params: dict[str, Any] = {"t": self.tags[0], "dockerfile": self.dockerfile, "rm": "1", "forcerm": "1",
                                  "pull": "1" if self.pull else "0", "nocache": "1" if self.nocache else "0"}
        for key, value in (("buildargs", self.build_args), ("labels", self.labels)):
            if value:
                params[key] = json.dumps(value)
        if self.target:
            params["target"] = self.target
        if self.network_mode:
            params["networkmode"] = self.network_mode
        config = {found.registry: {"username": found.username, "password": found.password}
                  for found in credentials.values() if found} or None
        self.log.info("Building %s on %s", self.tags[0], member.describe())
        image_id = ""
        try:
            async for item in engine.build(archive, params, config):
                if failure := stream_error(item):
                    raise AirflowFailException(f"building {self.tags[0]} on {engine.url} failed: {str(failure).strip()}")
                for line in str(item.get("stream", "")).splitlines():
                    if line.strip():
                        self.log.info("%s", line.rstrip())
                image_id = (item.get("aux") or {}).get("ID", image_id)
        except EngineError as err:
            raise AirflowFailException(f"building {self.tags[0]} on {engine.url} failed: {err.detail or err}") from None
        if not image_id:
            raise AirflowFailException(f"building {self.tags[0]} on {engine.url} ended without an image id")
        for extra in self.tags[1:]:
            await engine.tag(image_id, extra)
        self.log.info("Built %s (%s) on %s", ", ".join(self.tags), image_id, member.describe())
        return image_id

    async def _push(self, engine: Engine, credentials: dict[str, Any]) -> None:
        for tag in self.tags:
            self.log.info("Pushing %s", tag)
            found = credentials.get(registry_of(tag))
            try:
                async for item in engine.push(tag, found.auth() if found else None):
                    if item.get("status") and not item.get("progressDetail") and item.get("id") is None:
                        self.log.info("%s", item["status"])
            except EngineError as err:
                raise AirflowFailException(f"pushing {tag} to {registry_of(tag)} failed: {err.detail or err}") from None


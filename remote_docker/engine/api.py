"""The engine layer: every Docker Engine API call the provider makes, in one place.

``Engine`` wraps one aiodocker client for one daemon. The worker and the triggerer both
use it (the worker inside one event loop per step), so a remote action is written once.
Public aiodocker methods are used wherever they do the job; the few private ``_query``
calls that remain live here only, each with the reason. Failures are classified once:
``EngineError.kind`` is ``unreachable`` (transport: retry or wait), ``gone`` (404),
``conflict`` (409) or ``api`` (the daemon refused), and the message is one line naming
the daemon.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import asynccontextmanager, nullcontext
from typing import Any, Literal, TypeVar

import aiodocker
import aiohttp

from remote_docker.daemon.connection import DaemonConfig
from remote_docker.daemon.errors import DaemonError, explain, timed_out
from remote_docker.engine import versions
from remote_docker.engine.clients import (
    NegotiatingDocker,
    shrink_tls_read_buffer,
    small_tls_buffers,
    stream_tls_buffer_bytes,
)
from remote_docker.engine.start_slots import start_slot

# unsupported: the daemon can't do this for this container (a log driver that can't be read back)
ErrorKind = Literal["unreachable", "gone", "conflict", "unsupported", "api"]
CONNECTION_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError)
_T = TypeVar("_T")


class EngineError(DaemonError):
    """A failed Engine API call; ``str()`` is one line naming the daemon, what was done and why."""

    def __init__(self, kind: ErrorKind, message: str, status: int | None = None, detail: str = "", *,
                 timed_out: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.detail = detail  # the daemon's own message, for callers that add a hint
        self.timed_out = timed_out  # unreachable because no answer came in time (not refused, not reset)

    @property
    def unreachable(self) -> bool:
        return self.kind == "unreachable"


def classify(err: BaseException) -> ErrorKind | None:
    """Which kind of failure ``err`` is; None if it is not an engine failure at all."""
    if isinstance(err, EngineError):
        return err.kind
    if isinstance(err, aiodocker.DockerError):
        if err.status == 400 and "http request to an https server" in str(err.message).lower():
            return "unreachable"  # plain HTTP to a TLS port: we can't talk to this daemon as configured
        if err.status == 501 or "does not support reading" in str(err.message):  # older engines: 400 with this text
            return "unsupported"
        # aiodocker reports connection failures as DockerError(900, ...)
        return {404: "gone", 409: "conflict", 900: "unreachable"}.get(err.status, "api")
    if isinstance(err, CONNECTION_ERRORS):
        return "unreachable"
    return None


class Engine:
    """One daemon's Engine API, as the provider uses it."""

    def __init__(self, docker: NegotiatingDocker, config: DaemonConfig) -> None:
        self.docker = docker
        self.config = config

    @property
    def url(self) -> str:
        return self.config.url

    def _timeout(self, extra: float = 0.0) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=self.config.timeout + extra)

    async def _call(self, doing: str, call: Awaitable[_T], *, bound: float | None = None) -> _T:
        """Await ``call`` (bounded by the connection's timeout); failures become ``EngineError``."""
        try:
            return await asyncio.wait_for(call, bound if bound is not None else self.config.timeout)
        except BaseException as err:
            raise self.error(err, doing) from None

    def error(self, err: BaseException, doing: str) -> BaseException:
        """``err`` as an ``EngineError`` (or unchanged when it is not an engine failure)."""
        kind = classify(err)
        if kind is None or isinstance(err, EngineError):
            return err
        if kind == "unreachable":
            return EngineError(kind, explain(err, self.config, doing), timed_out=timed_out(err))
        detail = (getattr(err, "message", None) or str(err)).strip()
        if "client version" in detail.lower() and getattr(err, "status", None) == 400:
            versions.forget(self.config)  # upgraded or downgraded in place: the next client asks again
            return EngineError(kind, f"{doing} {self.url}: {detail}; leave api_version unset (or 'auto') to negotiate, "
                               "or set one the daemon speaks (remote-docker doctor shows its range)", 400, detail)
        return EngineError(kind, f"{doing} {self.url}: {detail}", getattr(err, "status", None), detail)

    # ------------------------------------------------------------------ containers

    async def find(self, labels: Mapping[str, str], statuses: Sequence[str] = (), *,
                   bound: float | None = None) -> list[dict[str, Any]]:
        """Every container carrying all of ``labels`` (a value of None: the label with any value), in one
        of ``statuses`` if given, oldest first."""
        filters: dict[str, list[str]] = {"label": [key if value is None else f"{key}={value}" for key, value in labels.items()]}
        found = await self._call("listing containers on", self.docker.containers.list(all=True, filters=filters),
                                 bound=bound)
        # private: the list entry each DockerContainer was made from; aiodocker has no public accessor for it
        entries = [c._container for c in found]
        # Docker lists newest first by its nanosecond creation times, Podman oldest first (the entries' Created
        # is in whole seconds): in the engine's own order made oldest first, then sorted stably by Created
        if (await self.facts()).lists_newest_first:
            entries.reverse()
        # states are chosen here, not by the daemon's status filter: Podman refuses some of Docker's ("restarting")
        return sorted((c for c in entries if not statuses or c.get("State") in statuses), key=lambda c: c.get("Created") or 0)

    async def facts(self) -> versions.DaemonFacts:
        """What the daemon is (Docker or Podman, its version and API range); asked once per process."""
        return await self._call("asking the version of", self.docker.facts())

    async def api_version(self) -> str:
        """The Engine API version spoken to this daemon (``engine.versions``)."""
        return await self._call("asking the version of", self.docker.settled_version())

    async def inspect(self, container_id: str) -> dict[str, Any] | None:
        """The container's inspect document; None if it no longer exists."""
        try:
            return await self._call("inspecting the container on", self.docker.containers.container(container_id).show())
        except EngineError as err:
            if err.kind == "gone":
                return None
            raise

    async def create(self, body: Mapping[str, Any], name: str | None) -> tuple[str, list[str]]:
        """Create a container; returns its id and the daemon's warnings."""
        # private: aiodocker's containers.create() drops the daemon's Warnings
        created = await self._call("creating a container on", self.docker._query_json(
            "containers/create", method="POST", data=json.dumps(body), params={"name": name} if name else None,
            timeout=self._timeout()))
        return created["Id"], list(created.get("Warnings") or [])

    async def copy_in(self, container_id: str, archive: bytes) -> None:
        """Extract a tar archive at ``/`` in the (not yet started) container."""
        container = self.docker.containers.container(container_id)
        await self._call("copying files to", container.put_archive("/", archive), bound=self.config.timeout + len(archive) / 1e6)

    async def start(self, container_id: str) -> None:
        """Start a created container, as many at a time per daemon as it has CPUs (``start_slots``)."""
        async with start_slot(self.url, self._cpus):
            await self._call("starting a container on", self.docker.containers.container(container_id).start())

    async def _cpus(self) -> int | None:
        return (await self.info()).get("NCPU")

    async def stop(self, container_id: str, grace: int) -> bool:
        """SIGTERM, then SIGKILL after ``grace`` seconds; False if it was not running or is gone."""
        container = self.docker.containers.container(container_id)
        try:
            await self._call("stopping a container on", container.stop(t=grace, timeout=self._timeout(grace)),
                             bound=self.config.timeout + grace)
            return True
        except EngineError as err:
            if err.kind == "gone" or err.status == 304:  # 304: already stopped
                return False
            raise

    async def kill(self, container_id: str, signal: str | None = None) -> bool:
        """Send ``signal`` (SIGKILL by default); False if it was not running or is gone."""
        container = self.docker.containers.container(container_id)
        try:
            await self._call("killing a container on", container.kill(signal=signal, timeout=self._timeout()))
            return True
        except EngineError as err:
            if err.kind in ("gone", "conflict"):  # 409: not running (it had just exited)
                return False
            raise

    async def rename(self, container_id: str, name: str) -> None:
        await self._call("renaming a container on", self.docker.containers.container(container_id).rename(name))

    async def remove(self, container_id: str) -> None:
        """Remove the container and its anonymous volumes; gone already counts as done."""
        container = self.docker.containers.container(container_id)
        try:
            await self._call("removing a container on", container.delete(force=True, v=True, timeout=self._timeout()))
        except EngineError as err:
            if err.kind != "gone":
                raise

    @asynccontextmanager
    async def logs(self, container_id: str, *, follow: bool, since: str | None = None, tail: int | None = None,
                   stderr: bool = True) -> AsyncIterator[AsyncIterator[bytes]]:
        """The raw log stream (``timestamps=1``): Docker's frames for a container without a TTY.

        A follow stream has no total timeout (silence is normal while the container works); a
        dropped connection ends the iterator or raises, which the caller treats as "resume".
        """
        params: dict[str, Any] = {"stdout": True, "stderr": stderr, "follow": follow, "timestamps": True}
        if since:
            params["since"] = since
        if tail is not None:
            params["tail"] = str(tail)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.config.timeout,
                                        sock_read=None if follow else self.config.timeout)
        try:
            # private: aiodocker's log() drops the stdout/stderr marker and ends quietly on a dropped connection
            size = stream_tls_buffer_bytes() if follow else None  # a follow stream is held as long as the container runs
            with small_tls_buffers(size) if size else nullcontext():
                async with self._response(f"containers/{container_id}/logs", params=params, timeout=timeout) as response:
                    if size and response.connection is not None:  # a connection reused from the pool: shrink it now
                        shrink_tls_read_buffer(response.connection.transport, size)
                    yield response.content.iter_any()
        except BaseException as err:
            raise self.error(err, "reading the log on") from None

    async def kill_events(self, container_id: str, since: int, until: float) -> list[dict[str, Any]]:
        """The ``kill`` events the daemon recorded for the container between two UNIX times (``until`` to the
        nanosecond: one in the daemon's future holds the answer back until then)."""
        params = {"since": str(since), "until": f"{until:.9f}",
                  "filters": json.dumps({"container": [container_id], "event": ["kill"]})}
        # private: aiodocker's events() runs one shared background subscription, not a bounded read
        body = await self._call("reading events on", self._read("events", params))
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    async def _read(self, path: str, params: dict[str, Any] | None = None, versioned_api: bool = True,
                    method: str = "GET") -> bytes:
        async with self._response(path, method=method, params=params, timeout=self._timeout(), versioned_api=versioned_api) as response:
            return await response.read()

    @asynccontextmanager
    async def _response(self, path: str, **kwargs: Any) -> AsyncIterator[aiohttp.ClientResponse]:
        """A raw response (the callers say why they need one); closed however the caller leaves,
        since aiodocker's ``_query`` leaves a response it did not read to the end open."""
        async with self.docker._query(path, **kwargs) as response:
            try:
                yield response
            finally:
                response.close()

    async def ping(self) -> None:
        """The cheapest liveness call (``/info`` is heavy, docker/cli#2420)."""
        # private: aiodocker has no public _ping
        await self._call("pinging", self._read("_ping", versioned_api=False))

    @asynccontextmanager
    async def archive(self, container_id: str, path: str) -> AsyncIterator[tuple[dict[str, Any], AsyncIterator[bytes]] | None]:
        """A file or folder of the container as a tar stream with its stat header; None if it does not exist."""
        try:
            # private: aiodocker's get_archive() reads the whole tar into memory and drops the stat header
            async with self._response(f"containers/{container_id}/archive", params={"path": path},
                                          timeout=aiohttp.ClientTimeout(total=None, sock_read=self.config.timeout)) as response:
                header = response.headers.get("X-Docker-Container-Path-Stat", "")
                stat = json.loads(base64.b64decode(header)) if header else {}
                yield stat, response.content.iter_chunked(1 << 20)
        except aiodocker.DockerError as err:
            if err.status == 404:
                yield None
                return
            raise self.error(err, "reading a file on") from None
        except CONNECTION_ERRORS as err:
            raise self.error(err, "reading a file on") from None

    async def path_exists(self, container_id: str, path: str) -> bool:
        """Whether ``path`` exists in the container (``HEAD /containers/{id}/archive``); it need not run."""
        async def ask() -> None:  # the headers say it: the archive itself is never read (HEAD has no error body)
            async with self._response(f"containers/{container_id}/archive", params={"path": path}, timeout=self._timeout()):
                pass

        try:
            await self._call("looking for a path on", ask())
            return True
        except EngineError as err:
            if err.kind == "gone":
                return False
            raise

    # ------------------------------------------------------------------ images and the daemon

    async def image_present(self, image: str) -> bool:
        try:
            await self._call("checking the image on", self.docker.images.inspect(image))
            return True
        except EngineError as err:
            if err.kind == "gone":
                return False
            raise

    async def pull(self, image: str, auth: Mapping[str, str] | None = None) -> AsyncIterator[dict[str, Any]]:
        """The pull's progress items; an error the daemon reports inside the stream raises ``EngineError``."""
        try:
            async for item in self.docker.images.pull(image, auth=dict(auth) if auth else None, stream=True):
                if failure := stream_error(item):  # older aiodocker does not raise these
                    raise aiodocker.DockerError(500, failure)
                yield item
        except BaseException as err:
            raise self.error(err, "pulling on") from None

    async def tag(self, image_id: str, reference: str) -> None:
        name, tag = _split_reference(reference)
        await self._call("tagging an image on", self.docker.images.tag(image_id, name, tag=tag))

    async def push(self, image: str, auth: Mapping[str, str] | None = None) -> AsyncIterator[dict[str, Any]]:
        """The push's progress items; an error inside the stream raises ``EngineError``."""
        name, tag = _split_reference(image)
        try:
            async for item in self.docker.images.push(name, tag=tag, auth=dict(auth) if auth else None, stream=True):
                if failure := stream_error(item):
                    raise aiodocker.DockerError(500, failure)
                yield item
        except BaseException as err:
            raise self.error(err, "pushing from") from None

    async def build(self, archive: bytes, params: Mapping[str, Any],
                    registry_config: Mapping[str, Any] | None = None) -> AsyncIterator[dict[str, Any]]:
        """``POST /build`` with a tar context; the daemon's stream items (``stream``, ``aux``, ``error``)."""
        headers = {"Content-Type": "application/x-tar"}
        if registry_config:  # credentials for the base images, as the docker CLI sends them
            headers["X-Registry-Config"] = base64.urlsafe_b64encode(json.dumps(registry_config).encode()).decode()
        try:
            # private: aiodocker's images.build() takes no networkmode, target or registry config
            async with self._response("build", method="POST", params=dict(params), data=archive, headers=headers,
                                      timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as response:
                buffer = b""
                async for chunk in response.content.iter_any():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in (line for line in lines if line.strip()):
                        yield json.loads(line)
                if buffer.strip():
                    yield json.loads(buffer)
        except BaseException as err:
            raise self.error(err, "building on") from None

    async def prune(self, kind: Literal["containers", "images", "build"], filters: Mapping[str, list[str]]) -> dict[str, Any]:
        """``POST /{kind}/prune`` with ``filters``; the daemon's report (what went, bytes reclaimed)."""
        path = "build/prune" if kind == "build" else f"{kind}/prune"
        # private: aiodocker 0.25 has no prune methods; one call for all three keeps the report's shape
        body = await self._call(f"pruning {kind} on", self._read(path, {"filters": json.dumps(dict(filters))}, method="POST"),
                                bound=self.config.timeout * 10)
        return json.loads(body) if body else {}

    async def images(self, *, dangling: bool | None = None) -> list[dict[str, Any]]:
        filters = {"dangling": ["true" if dangling else "false"]} if dangling is not None else {}
        return await self._call("listing images on", self.docker.images.list(filters=json.dumps(filters) if filters else None))

    async def info(self) -> dict[str, Any]:
        return await self._call("asking", self.docker.system.info())

    async def version(self) -> dict[str, Any]:
        return await self._call("connecting", self.docker.version())


def stream_error(item: Mapping[str, Any]) -> str | None:
    """The error a pull, push or build stream reports in ``item``: ``errorDetail`` (``error`` is deprecated from
    API 1.48 and may go empty)."""
    detail = item.get("errorDetail")
    message = detail.get("message") if isinstance(detail, Mapping) else None
    return message or item.get("error") or None


def _split_reference(reference: str) -> tuple[str, str]:
    """``registry:5000/team/job:1`` -> (``registry:5000/team/job``, ``1``); no tag is ``latest``."""
    name, sep, tag = reference.rpartition(":")
    return (name, tag) if sep and "/" not in tag else (reference, "latest")

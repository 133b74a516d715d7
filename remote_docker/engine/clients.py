"""Clients for one daemon, made from its ``DaemonConfig``: the transport under the engine layer.

* ``shared_async_client(config)``: an ``aiodocker.Docker`` shared by every caller in the same
  event loop that uses the same daemon and credentials: one SSL context, one unbounded
  connection pool. This is what lets one triggerer watch many containers.
* ``make_sync_client(config)``: a docker-py ``DockerClient`` whose TLS is pinned to our CA
  through our own SSL context, immune to ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``
  (``RemoteDockerHook.get_conn()`` for users' own code; the provider itself uses the engine).

Both speak the Engine API version ``versions`` settles for their daemon.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextvars
import functools
import logging
import os
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiodocker
import aiohttp
import docker
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver
from requests.adapters import HTTPAdapter

from remote_docker.daemon.connection import DaemonConfig
from remote_docker.engine import versions
from remote_docker.engine.versions import DaemonFacts

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- docker-py (sync)


class _PinnedTLSAdapter(HTTPAdapter):
    """requests adapter that uses our SSL context and nothing else.

    requests would otherwise load REQUESTS_CA_BUNDLE / certifi into the context and trust
    public CAs for the daemon, or replace our CA outright (docker-py #2672).
    """

    def __init__(self, config: DaemonConfig, pool_size: int = 10) -> None:
        self._ssl_context = config.ssl_context()
        self._server_hostname = config.tls.hostname if config.tls else None
        super().__init__(pool_connections=pool_size, pool_maxsize=pool_size)

    def _tls_pool_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"ssl_context": self._ssl_context}
        if self._server_hostname:
            kwargs["server_hostname"] = self._server_hostname
            kwargs["assert_hostname"] = self._server_hostname
        elif self._server_hostname == "":
            kwargs["assert_hostname"] = False
        return kwargs

    def init_poolmanager(self, *args: Any, **pool_kwargs: Any) -> None:
        super().init_poolmanager(*args, **pool_kwargs, **self._tls_pool_kwargs())

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, _ = super().build_connection_pool_key_attributes(request, False, None)
        return host_params, self._tls_pool_kwargs()

    def cert_verify(self, conn, url, verify, cert) -> None:
        """Our context already holds the CA and the client certificate; add nothing to it."""


def make_sync_client(config: DaemonConfig) -> docker.DockerClient:
    """A docker-py client for ``config``, speaking the version ``versions`` chooses (asking the daemon once
    per process when nothing sets it)."""
    explicit = versions.explicit_for(config)
    if explicit is None:
        facts = versions.known(config)
        if facts is None:
            probe = _docker_py(config, versions.OLDEST)
            try:
                facts = DaemonFacts.from_document(probe.api.version(api_version=False))  # unversioned /version
            finally:
                probe.close()
            versions.remember(config, facts)
        explicit = versions.choose(facts, None, config.url)
    return _docker_py(config, explicit)


def _docker_py(config: DaemonConfig, version: str) -> docker.DockerClient:
    """A docker-py client speaking ``version``; it makes no request."""
    if config.url.startswith("https://"):
        client = docker.DockerClient(base_url=config.url, version=version, timeout=config.timeout, tls=False)
        client.api.mount("https://", _PinnedTLSAdapter(config))
    else:
        client = docker.DockerClient(base_url=config.url, version=version, timeout=config.timeout)
    client.api.trust_env = False  # no proxies or CA bundles from the environment
    return client


# --------------------------------------------------------------------------- aiodocker (async)


class _PinnedResolver(AbstractResolver):
    """Resolve the TLS name (tls_hostname) to the daemon's real host, so the certificate is
    checked against that name while the connection goes to the configured address."""

    def __init__(self, alias: str, real_host: str) -> None:
        self._alias, self._real_host = alias, real_host
        self._resolver = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: int = 0):
        addresses = await self._resolver.resolve(self._real_host if host == self._alias else host, port, family)
        return [{**address, "hostname": host} for address in addresses]

    async def close(self) -> None:
        await self._resolver.close()


TLS_BUFFER_ENV = "REMOTE_DOCKER_TLS_READ_BUFFER_KB"
DEFAULT_STREAM_TLS_BUFFER = 32 * 1024


def tls_read_buffer_bytes(value: str | None) -> int | None:
    """``REMOTE_DOCKER_TLS_READ_BUFFER_KB`` as bytes; None when unset. Raises ValueError with the fix."""
    if value is None or not value.strip():
        return None
    if not value.strip().isdigit() or not 16 <= int(value) <= 256:
        raise ValueError(f"{TLS_BUFFER_ENV}={value!r} is not valid; use a whole number of KiB from 16 to 256 (asyncio's default is 256)")
    return int(value) * 1024


def stream_tls_buffer_bytes() -> int:
    """The read buffer for our long-lived streams: ``REMOTE_DOCKER_TLS_READ_BUFFER_KB``, else 32 KiB."""
    try:
        return tls_read_buffer_bytes(os.environ.get(TLS_BUFFER_ENV)) or DEFAULT_STREAM_TLS_BUFFER
    except ValueError as err:
        log.warning("%s; using %d KiB", err, DEFAULT_STREAM_TLS_BUFFER // 1024)
        return DEFAULT_STREAM_TLS_BUFFER


# asyncio allocates a zero-filled read buffer of ``SSLProtocol.max_size`` (256 KiB) for every TLS connection,
# most of what following one container's log costs; a triggerer follows hundreds. Our follow streams ask
# for a smaller one through this context variable, read as the connection is made: no other connection
# in the process is affected. (Shrinking after the fact does not help: glibc keeps the freed memory.)
_STREAM_TLS_BUFFER: contextvars.ContextVar[int | None] = contextvars.ContextVar("remote_docker_tls_buffer", default=None)


@contextmanager
def small_tls_buffers(size: int) -> Iterator[None]:
    """TLS connections made inside this block (in this task) read through ``size``-byte buffers."""
    _install_scoped_buffer_size()
    token = _STREAM_TLS_BUFFER.set(size)
    try:
        yield
    finally:
        _STREAM_TLS_BUFFER.reset(token)


def _install_scoped_buffer_size() -> None:
    """Let ``SSLProtocol`` take its buffer size from ``_STREAM_TLS_BUFFER`` (CPython 3.11+ sslproto, where the
    buffer is allocated in ``__init__`` from ``max_size``; elsewhere the instance attribute is simply unused)."""
    original = asyncio.sslproto.SSLProtocol.__init__
    if getattr(original, "_remote_docker_scoped", False):
        return

    @functools.wraps(original)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        if size := _STREAM_TLS_BUFFER.get():
            self.max_size = size
        original(self, *args, **kwargs)

    init._remote_docker_scoped = True  # type: ignore[attr-defined]
    asyncio.sslproto.SSLProtocol.__init__ = init


def shrink_tls_read_buffer(transport: Any, size: int) -> bool:
    """Give a TLS connection that already exists (reused from the pool) a smaller read buffer. False where
    CPython's sslproto differs (``_ssl_protocol`` / ``_ssl_buffer``)."""
    protocol = getattr(transport, "_ssl_protocol", None)
    buffer = getattr(protocol, "_ssl_buffer", None)
    if not isinstance(buffer, bytearray):
        return False
    if len(buffer) > size:  # get_buffer() never asks for more than max_size, so this one stays small
        protocol.max_size = size
        protocol._ssl_buffer = bytearray(size)
        protocol._ssl_buffer_view = memoryview(protocol._ssl_buffer)
    return True


class NegotiatingDocker(aiodocker.Docker):
    """aiodocker speaking the Engine API version ``versions`` chooses for its daemon, settled at its first
    versioned call (so a daemon down when the client is made is waited for like any other call)."""

    def __init__(self, config: DaemonConfig, **kwargs: Any) -> None:
        self.config = config
        explicit = versions.explicit_for(config)
        super().__init__(api_version=f"v{explicit}" if explicit else "auto", **kwargs)
        self._settling: asyncio.Lock | None = None

    async def facts(self) -> DaemonFacts:
        """What the daemon is (engine, version, API range): asked once per daemon per process."""
        found = versions.known(self.config)
        if found is None:
            # private: aiodocker has no public call for the unversioned /version
            found = DaemonFacts.from_document(await self._query_json("version", versioned_api=False))
            versions.remember(self.config, found)
        return found

    async def _check_version(self) -> None:
        """aiodocker's hook before every versioned call."""
        await self.settled_version()

    async def settled_version(self) -> str:
        """The version this client speaks (``"1.44"``), settled once: no request when the facts are known."""
        if self.api_version == "auto":
            self._settling = self._settling or asyncio.Lock()
            async with self._settling:
                if self.api_version == "auto":
                    self.api_version = "v" + versions.choose(await self.facts(), None, self.config.url)
        return self.api_version.lstrip("v")


def make_async_client(config: DaemonConfig) -> NegotiatingDocker:
    """An aiodocker client for ``config`` that owns its connector (closed by ``close_async_client``)."""
    if config.is_unix:
        connector = aiohttp.UnixConnector(path=urlsplit(config.url).path, limit=0)
        return NegotiatingDocker(config, url="unix://localhost", connector=connector)
    url = config.url
    resolver = None
    if config.tls and config.tls.hostname:
        parts = urlsplit(url)
        url = f"{parts.scheme}://{config.tls.hostname}:{parts.port}"
        resolver = _PinnedResolver(config.tls.hostname, config.host.strip("[]"))
    # limit=0: the default of 100 connections makes watcher 101+ queue behind the others.
    connector = aiohttp.TCPConnector(ssl=config.ssl_context() or False, limit=0, resolver=resolver)
    return NegotiatingDocker(config, url=url, connector=connector)


async def close_async_client(client: NegotiatingDocker) -> None:
    await client.close()
    await client.connector.close()


@dataclass
class _Shared:
    client: NegotiatingDocker
    users: int = 0


# event loop -> config fingerprint -> shared client; loops that end take their entries with them.
_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Shared]] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def shared_async_client(config: DaemonConfig) -> AsyncIterator[NegotiatingDocker]:
    """Borrow the loop's client for ``config``; the last borrower to leave closes it."""
    clients = _SHARED.setdefault(asyncio.get_running_loop(), {})
    key = config.fingerprint
    entry = clients.get(key)
    if entry is None:
        entry = clients[key] = _Shared(make_async_client(config))
    entry.users += 1
    try:
        yield entry.client
    finally:
        entry.users -= 1
        if entry.users == 0 and clients.get(key) is entry:
            del clients[key]
            await close_async_client(entry.client)


def shared_client_count() -> int:
    """How many shared async clients the running loop holds (for tests and benchmarks)."""
    return len(_SHARED.get(asyncio.get_running_loop(), {}))

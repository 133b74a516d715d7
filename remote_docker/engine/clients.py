"""Clients for one daemon, made from its ``DaemonConfig``: the transport under the engine layer.

* ``shared_async_client(config)``: an ``aiodocker.Docker`` shared by every caller in the same
  event loop that uses the same daemon and credentials: one SSL context, one unbounded
  connection pool. This is what lets one triggerer watch many containers.

It speaks the Engine API version ``versions`` settles for its daemon. docker-py's client, for users' own code, is
``docker_py.make_sync_client``: a module of its own, so a task that never asks for it never imports docker-py.
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
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

from remote_docker.daemon.connection import DaemonConfig
from remote_docker.engine import versions
from remote_docker.engine.versions import DaemonFacts

log = logging.getLogger(__name__)


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

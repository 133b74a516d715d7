"""``RemoteDockerHook``: clients for a Docker daemon reached over mutual TLS.

One ``DaemonConfig`` is resolved from the Airflow connection (or Docker's environment, or
operator overrides) and both clients are made from it:

* ``async_client()``: an ``aiodocker.Docker`` shared by every caller in the same event loop
  that uses the same daemon and credentials: one SSL context, one unbounded connection
  pool. This is what lets one triggerer watch many containers.
* ``get_conn()``: a docker-py ``DockerClient`` whose TLS is pinned to our CA through our own
  SSL context, immune to ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import datetime as dt
import logging
import os
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

import aiodocker
import aiohttp
import docker
import requests
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver
from airflow.sdk import BaseHook
from requests.adapters import HTTPAdapter

from remote_docker.connection import (
    DEFAULT_CONN_ID,
    DaemonConfig,
    DaemonConfigError,
    build_config,
    config_from_environment,
)
from remote_docker.errors import DaemonError, explain

log = logging.getLogger(__name__)

# Operator arguments that override the connection, passed to the hook (and the trigger) as they are.
HOOK_OVERRIDES = ("docker_url", "tls_ca_cert", "tls_client_cert", "tls_client_key", "tls_verify", "tls_hostname",
                  "api_version", "timeout")

# Engine API 1.41 is Docker 20.10, the oldest engine we test against; it has everything we use.
MIN_API_VERSION = "1.41"


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
    """A docker-py client for ``config``; it makes no request until used."""
    version = config.api_version or MIN_API_VERSION
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


def tls_read_buffer_bytes(value: str | None) -> int | None:
    """``REMOTE_DOCKER_TLS_READ_BUFFER_KB`` as bytes; None when unset. Raises ValueError with the fix."""
    if value is None or not value.strip():
        return None
    if not value.strip().isdigit() or not 16 <= int(value) <= 256:
        raise ValueError(f"{TLS_BUFFER_ENV}={value!r} is not valid; use a whole number of KiB from 16 to 256 (asyncio's default is 256)")
    return int(value) * 1024


def _apply_tls_read_buffer() -> None:
    """asyncio gives every TLS connection a zero-filled 256 KiB read buffer (``SSLProtocol.max_size``):
    most of what watching one container costs. A triggerer watching many can shrink it for the whole
    process by setting ``REMOTE_DOCKER_TLS_READ_BUFFER_KB`` (see docs/deployment.md)."""
    try:
        size = tls_read_buffer_bytes(os.environ.get(TLS_BUFFER_ENV))
    except ValueError as err:
        log.warning("%s; keeping asyncio's default", err)
        return
    if size:
        asyncio.sslproto.SSLProtocol.max_size = size


def make_async_client(config: DaemonConfig) -> aiodocker.Docker:
    """An aiodocker client for ``config`` that owns its connector (closed by ``close_async_client``)."""
    api_version = f"v{(config.api_version or MIN_API_VERSION).lstrip('v')}"
    if config.is_unix:
        connector = aiohttp.UnixConnector(path=urlsplit(config.url).path, limit=0)
        return aiodocker.Docker(url="unix://localhost", connector=connector, api_version=api_version)
    url = config.url
    resolver = None
    if config.tls and config.tls.hostname:
        parts = urlsplit(url)
        url = f"{parts.scheme}://{config.tls.hostname}:{parts.port}"
        resolver = _PinnedResolver(config.tls.hostname, config.host.strip("[]"))
    _apply_tls_read_buffer()
    # limit=0: the default of 100 connections makes watcher 101+ queue behind the others.
    connector = aiohttp.TCPConnector(ssl=config.ssl_context() or False, limit=0, resolver=resolver)
    return aiodocker.Docker(url=url, connector=connector, api_version=api_version)


async def close_async_client(client: aiodocker.Docker) -> None:
    await client.close()
    await client.connector.close()


@dataclass
class _Shared:
    client: aiodocker.Docker
    users: int = 0


# event loop -> config fingerprint -> shared client; loops that end take their entries with them.
_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Shared]] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def shared_async_client(config: DaemonConfig) -> AsyncIterator[aiodocker.Docker]:
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


# --------------------------------------------------------------------------- the hook


def normalize_extras(extras: dict[str, Any], conn_type: str) -> dict[str, Any]:
    """Accept UI-prefixed keys (``extra__remote_docker__ca_cert``) and drop empty form values."""
    prefix = f"extra__{conn_type}__"
    return {key.removeprefix(prefix): value for key, value in extras.items() if value not in (None, "")}


def _mask_inline_keys(extras: dict[str, Any]) -> None:
    """A private key pasted as PEM must never show in logs or rendered fields."""
    value = extras.get("client_key")
    if isinstance(value, str) and "-----BEGIN" in value:
        from airflow.sdk.log import mask_secret

        mask_secret(value)
        for line in value.strip().splitlines()[1:-1]:
            mask_secret(line)


class RemoteDockerHook(BaseHook):
    """Connect to a Docker daemon over mutual TLS.

    :param remote_docker_conn_id: Airflow connection of type ``remote_docker``. If it does not
        exist and it is the default id, Docker's environment (DOCKER_HOST, DOCKER_CERT_PATH) is used.
    :param docker_url: daemon URL overriding the connection's host.
    :param tls_ca_cert: CA certificate (path or PEM) overriding the connection.
    :param tls_client_cert: client certificate (path or PEM) overriding the connection.
    :param tls_client_key: client key (path or PEM) overriding the connection.
    :param tls_verify: verify the daemon's certificate (default true).
    :param tls_hostname: name the daemon's certificate must carry, if not the URL's host.
    :param api_version: Engine API version to speak (default: 1.41 or the connection's).
    :param timeout: seconds for ordinary API calls.
    """

    conn_name_attr = "remote_docker_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "remote_docker"
    hook_name = "Remote Docker (mutual TLS)"

    def __init__(
        self,
        remote_docker_conn_id: str | None = DEFAULT_CONN_ID,
        *,
        docker_url: str | None = None,
        tls_ca_cert: str | None = None,
        tls_client_cert: str | None = None,
        tls_client_key: str | None = None,
        tls_verify: bool | None = None,
        tls_hostname: str | bool | None = None,
        api_version: str | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.remote_docker_conn_id = remote_docker_conn_id
        self.overrides: dict[str, Any] = {
            key: value
            for key, value in {
                "ca_cert": tls_ca_cert,
                "client_cert": tls_client_cert,
                "client_key": tls_client_key,
                "tls_verify": tls_verify,
                "tls_hostname": tls_hostname,
                "api_version": api_version,
                "timeout": timeout,
            }.items()
            if value is not None
        }
        self.docker_url = docker_url

    # -- configuration

    def _resolve(self, connection: Any | None) -> DaemonConfig:
        """Merge connection, environment and overrides into one DaemonConfig."""
        conn_id = self.remote_docker_conn_id
        if connection is None:
            if self.docker_url:
                return build_config(host=self.docker_url, extras=self.overrides, source=f"docker_url {self.docker_url}")
            environment = config_from_environment()
            if environment is not None and conn_id in (None, DEFAULT_CONN_ID):
                return environment
            fallback = " or set DOCKER_HOST and DOCKER_CERT_PATH" if conn_id in (None, DEFAULT_CONN_ID) else ""
            raise DaemonConfigError(
                f"connection {conn_id!r} does not exist; create it (UI, `airflow connections add`, "
                f"or AIRFLOW_CONN_{str(conn_id).upper()}){fallback}"
            )
        extras = normalize_extras(connection.extra_dejson or {}, self.conn_type)
        extras.update(self.overrides)
        _mask_inline_keys(extras)
        host = self.docker_url or connection.host or ""
        if connection.schema and "://" not in host and connection.schema in ("tcp", "https", "http", "unix"):
            host = f"{connection.schema}://{host}"
        return build_config(host=host, port=connection.port, extras=extras, source=f"connection {conn_id!r}")

    def _lookup_error(self, err: Exception) -> bool:
        return type(err).__name__ in ("AirflowNotFoundException", "NotFound") or "isn't defined" in str(err)

    @cached_property
    def config(self) -> DaemonConfig:
        connection = None
        if self.remote_docker_conn_id:
            try:
                connection = self.get_connection(self.remote_docker_conn_id)
            except Exception as err:
                if not self._lookup_error(err):
                    raise
        return self._resolve(connection)

    async def aconfig(self) -> DaemonConfig:
        """``config`` for async code: looks the connection up without blocking the loop."""
        if "config" in self.__dict__:
            return self.__dict__["config"]
        connection = None
        if self.remote_docker_conn_id:
            try:
                connection = await self.aget_connection(self.remote_docker_conn_id)
            except Exception as err:
                if not self._lookup_error(err):
                    raise
        config = self.__dict__["config"] = self._resolve(connection)
        return config

    # -- clients

    def get_conn(self) -> docker.DockerClient:
        return self.client

    @cached_property
    def client(self) -> docker.DockerClient:
        return make_sync_client(self.config)

    @asynccontextmanager
    async def async_client(self) -> AsyncIterator[aiodocker.Docker]:
        async with shared_async_client(await self.aconfig()) as client:
            yield client

    # -- checks

    def ping(self) -> dict[str, Any]:
        """The daemon's version document, or a DaemonError naming the URL and the fix."""
        try:
            return self.client.version()
        except (requests.RequestException, docker.errors.DockerException, OSError) as err:
            raise DaemonError(explain(err, self.config)) from None

    async def aping(self) -> dict[str, Any]:
        """``ping`` through the shared async client."""
        config = await self.aconfig()
        try:
            async with self.async_client() as client:
                return await asyncio.wait_for(client.version(), config.timeout)
        except (aiohttp.ClientError, aiodocker.DockerError, OSError, asyncio.TimeoutError) as err:
            raise DaemonError(explain(err, config)) from None

    def diagnose(self) -> dict[str, str]:
        """What ``remote-docker doctor`` prints."""
        config = self.config
        version = self.ping()
        report = {
            "daemon": config.url,
            "source": config.source,
            "docker version": version.get("Version", "?"),
            "api version": f"{version.get('ApiVersion', '?')} (min {version.get('MinAPIVersion', '?')}; we speak {self.client.api.api_version})",
            "os/arch": f"{version.get('Os', '?')}/{version.get('Arch', '?')}",
        }
        if config.tls:
            report["tls"] = "mutual TLS, server certificate verified" if config.tls.verify else "TLS WITHOUT verification (tls_verify=false)"
            peer = self._peer_certificate()
            if peer:
                report["tls peer"] = peer
            if config.tls.client_not_after:
                left = config.tls.client_not_after - dt.datetime.now(dt.timezone.utc)
                report["client certificate expires"] = f"{config.tls.client_not_after:%Y-%m-%d} ({left.days} days)"
        else:
            report["tls"] = "none (unix socket)" if config.is_unix else "OFF: plain HTTP (\"tls\": false)"
        return report

    def _peer_certificate(self) -> str | None:
        import socket

        from cryptography import x509

        config = self.config
        context = config.ssl_context()
        name = config.tls.hostname or config.host.strip("[]")
        address = (config.host.strip("[]"), config.port)
        with socket.create_connection(address, timeout=config.timeout) as raw, \
                context.wrap_socket(raw, server_hostname=name if context.check_hostname else None) as tls:
            der = tls.getpeercert(binary_form=True)
            protocol = tls.version()
        if not der:
            return None
        cert = x509.load_der_x509_certificate(der)
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = ", ".join(str(n.value) for n in sans)
        except x509.ExtensionNotFound:
            names = "-"
        return (f"{cert.subject.rfc4514_string()} (SANs {names}; issuer {cert.issuer.rfc4514_string()}; "
                f"expires {cert.not_valid_after_utc:%Y-%m-%d}; {protocol})")

    def test_connection(self) -> tuple[bool, str]:
        """For the UI's Test button."""
        try:
            version = self.ping()
        except (DaemonError, DaemonConfigError) as err:
            return False, str(err)
        return True, f"Connected to Docker {version.get('Version')} (API {version.get('ApiVersion')}) at {self.config.url}"

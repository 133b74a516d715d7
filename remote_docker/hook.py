"""``RemoteDockerHook``: one Docker daemon reached over mutual TLS, as an Airflow hook.

One ``DaemonConfig`` is resolved from the Airflow connection (or Docker's environment, or
operator overrides); ``engine()`` gives the engine layer over the event loop's shared
client for it, ``get_conn()`` a docker-py client, ``diagnose()`` what ``remote-docker doctor``
prints. Registry credentials and pulls are ``daemon.registry``'s.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from remote_docker.daemon.connection import (
    CONNECTION_OVERRIDES,
    DEFAULT_CONN_ID,
    OVERRIDE_ARGUMENTS,
    RENAMED_EXTRAS,
    DaemonConfig,
    DaemonConfigError,
    is_inline_pem,
    rebuild_pem,
)
from remote_docker.daemon.diagnose import report, speaking
from remote_docker.daemon.errors import DaemonError
from remote_docker.engine import Engine, versions
from remote_docker.engine.clients import shared_async_client
from remote_docker.pool.members import ConnectionFields, DaemonPool, Member, normalize_extras, old_extra_names, pool_for

if TYPE_CHECKING:
    import docker


def _mask_inline_keys(extras: dict[str, Any]) -> None:
    """A private key pasted as PEM, at the top or in a pool member, must never show in logs or rendered fields."""
    members = extras.get("daemons") if isinstance(extras.get("daemons"), list) else []
    for where in (extras, *(m for m in members if isinstance(m, dict))):
        for name in ("client_private_key", *RENAMED_EXTRAS):
            value = where.get(name)
            if is_inline_pem(value):
                from airflow.sdk.log import mask_secret

                mask_secret(value)
                for line in rebuild_pem(value.strip()).splitlines():  # however its line breaks came
                    if not line.startswith("-----"):
                        mask_secret(line)


class RemoteDockerHook(BaseHook):
    """Connect to a Docker daemon, or a pool of them, over mutual TLS.

    :param remote_docker_conn_id: Airflow connection of type ``remote_docker``. If it does not
        exist and it is the default id, Docker's environment (DOCKER_HOST, DOCKER_CERT_PATH) is used.
    :param daemon: which daemon of a pool connection this hook talks to (its name or URL); a
        connection of one daemon needs none (``remote_docker.pool.members``).
    :param docker_url: daemon URL overriding the connection's host; a list of them (the official operator's
        failover form) is a pool.
    :param tls_ca_cert: CA certificate (path or PEM) overriding the connection.
    :param tls_client_cert: client certificate (path or PEM) overriding the connection.
    :param tls_client_key: client key (path or PEM) overriding the connection.
    :param tls_verify: verify the daemon's certificate (default true).
    :param tls_hostname: name the daemon's certificate must carry, if not the URL's host.
    :param api_version: Engine API version to speak; default (or ``"auto"``): the connection's, else
        ``DOCKER_API_VERSION``, else negotiated with the daemon (``engine.versions``).
    :param timeout: seconds for ordinary API calls.
    """

    conn_name_attr = "remote_docker_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "remote_docker"
    hook_name = "Remote Docker (mutual TLS)"

    def __init__(self, remote_docker_conn_id: str | None = DEFAULT_CONN_ID, daemon: str | None = None,
                 **overrides: Any) -> None:
        super().__init__()
        unknown = sorted(set(overrides) - set(OVERRIDE_ARGUMENTS))
        if unknown:
            raise TypeError(f"RemoteDockerHook got unknown argument(s) {', '.join(unknown)}; "
                            f"it takes daemon, {', '.join(OVERRIDE_ARGUMENTS)}")
        self.remote_docker_conn_id = remote_docker_conn_id
        self.daemon = daemon
        docker_url = overrides.pop("docker_url", None)
        # the official operator's failover list: here a pool of them (each placed on, dead ones skipped)
        self.docker_url = ",".join(docker_url) if isinstance(docker_url, (list, tuple)) else docker_url
        self.overrides = {CONNECTION_OVERRIDES[name]: value for name, value in overrides.items() if value is not None}

    # -- configuration

    def _resolve(self, connection: Any | None) -> DaemonPool:
        """Merge connection, environment and overrides into the daemons they name (``pool.members.pool_for``)."""
        fields = ConnectionFields.of(connection) if connection is not None else None
        if fields is not None:
            extras = normalize_extras(fields.extra, self.conn_type)
            _mask_inline_keys({**extras, **self.overrides})
            for old in old_extra_names(extras):
                self.log.warning("connection %r names its key extra %r, which Airflow shows in clear in its connections "
                                 "API and form; rename it %r, which Airflow masks", self.remote_docker_conn_id, old,
                                 RENAMED_EXTRAS[old])
        return pool_for(self.remote_docker_conn_id, fields, docker_url=self.docker_url, overrides=self.overrides,
                        conn_type=self.conn_type)

    @staticmethod
    def _lookup_error(err: Exception) -> bool:
        return type(err).__name__ in ("AirflowNotFoundException", "NotFound") or "isn't defined" in str(err)

    @cached_property
    def pool(self) -> DaemonPool:
        """Every daemon the connection names (one, for most connections)."""
        connection = None
        if self.remote_docker_conn_id:
            try:
                connection = self.get_connection(self.remote_docker_conn_id)
            except Exception as err:
                if not self._lookup_error(err):
                    raise
        return self._resolve(connection)

    async def apool(self) -> DaemonPool:
        """``pool`` for async code: looks the connection up without blocking the loop."""
        if "pool" in self.__dict__:
            return self.__dict__["pool"]
        connection = None
        if self.remote_docker_conn_id:
            try:
                connection = await _shared_lookup(self.remote_docker_conn_id, self.aget_connection)
            except Exception as err:
                if not self._lookup_error(err):
                    raise
        pool = self.__dict__["pool"] = self._resolve(connection)
        return pool

    def _member_of(self, pool: DaemonPool) -> Member:
        if self.daemon:
            return pool.member(self.daemon)
        if not pool.single:
            raise DaemonConfigError(f"{pool.source} names {len(pool.members)} daemons "
                                    f"({', '.join(m.name for m in pool.members)}); say which one with daemon=")
        return pool.members[0]

    @property
    def config(self) -> DaemonConfig:
        """The daemon this hook talks to: ``daemon``, or the connection's only one."""
        return self._member_of(self.pool).config

    async def aconfig(self) -> DaemonConfig:
        return self._member_of(await self.apool()).config

    # -- clients

    @asynccontextmanager
    async def engine(self, member: Member | None = None) -> AsyncIterator[Engine]:
        """The engine layer for ``member`` (default: this hook's daemon), over the event loop's shared client."""
        config = member.config if member else await self.aconfig()
        async with shared_async_client(config) as client:
            yield Engine(client, config)

    def get_conn(self) -> docker.DockerClient:
        """A docker-py client pinned to our TLS material, for users' own code."""
        return self.client

    @cached_property
    def client(self) -> docker.DockerClient:
        from remote_docker.engine.docker_py import make_sync_client  # docker-py only for those who ask for it

        return make_sync_client(self.config)

    # -- checks

    def ping(self) -> dict[str, Any]:
        """The daemon's version document, or a DaemonError naming the URL and the fix."""
        return asyncio.run(self.aping())

    async def aping(self) -> dict[str, Any]:
        async with self.engine() as engine:
            return await engine.version()

    async def _speaking(self) -> tuple[dict[str, Any], versions.DaemonFacts, str]:
        return await speaking(await self.aconfig())

    def diagnose(self) -> dict[str, str]:
        """What ``remote-docker doctor`` prints (``diagnose.report``)."""
        return report(self.config)

    def test_connection(self) -> tuple[bool, str]:
        """For the UI's Test button."""
        try:
            _, facts, spoken = asyncio.run(self._speaking())
        except (DaemonError, DaemonConfigError) as err:
            return False, str(err)
        return True, f"Connected to {facts.describe()} at {self.config.url}, speaking API {spoken}"


# A triggerer starts many triggers of one connection at once, and each lookup is a round trip through its
# supervisor, one at a time: lookups of the same connection in the same event loop share one request, and
# its answer for this long (a rotated certificate reaches new triggers within it).
CONNECTION_CACHE_SECONDS = 30.0
_lookups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, tuple[float, asyncio.Future]]] = \
    weakref.WeakKeyDictionary()


async def _shared_lookup(conn_id: str, lookup: Any) -> Any:
    loop = asyncio.get_running_loop()
    known, now = _lookups.setdefault(loop, {}), loop.time()
    found = known.get(conn_id)
    if found is None or found[0] < now or (found[1].done() and (found[1].cancelled() or found[1].exception())):
        found = known[conn_id] = (now + CONNECTION_CACHE_SECONDS, asyncio.ensure_future(lookup(conn_id)))
    return await asyncio.shield(found[1])  # one caller cancelled does not cancel the others' lookup

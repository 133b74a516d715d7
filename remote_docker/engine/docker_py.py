"""docker-py's client for one daemon, made from its ``DaemonConfig``: ``RemoteDockerHook.get_conn()`` for users' own
code (the provider itself uses the engine layer). Its TLS is pinned to our CA through our own SSL context, immune to
``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``, and it speaks the Engine API version ``versions`` settles for the daemon.
A module of its own: importing docker-py and requests costs a task process ~60 ms, which only its users pay."""

from __future__ import annotations

from typing import Any

import docker
from requests.adapters import HTTPAdapter

from remote_docker.daemon.connection import DaemonConfig
from remote_docker.engine import versions
from remote_docker.engine.versions import DaemonFacts


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

"""Several daemons behind one connection: the members of a pool and how a connection names them.

A ``remote_docker`` connection names one daemon, or several:

* ``host`` as a comma-separated list (``tcp://h1:2376,tcp://h2:2376``): every member shares the
  connection's TLS material and settings;
* ``extra.daemons``: a list of ``{url, name?, ca_cert?, client_cert?, client_private_key?, tls_hostname?,
  labels?, max_containers?}``; what a member leaves out it takes from the connection.

A member's ``name`` defaults to its ``host:port``. One daemon is a pool of one, so every caller
deals with pools only. Where a task's container goes is ``placement``'s business.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from remote_docker.daemon.connection import (
    DEFAULT_CONN_ID,
    RENAMED_EXTRAS,
    TLS_FILES,
    DaemonConfig,
    DaemonConfigError,
    build_config,
    config_from_environment,
    renamed_extras,
)

# what a member of extra.daemons may set for itself; the rest is the connection's
_MEMBER_KEYS = {"url", "name", "labels", "max_containers", "tls_hostname", *TLS_FILES}


@dataclass(frozen=True)
class Member:
    """One daemon of a pool."""

    name: str
    config: DaemonConfig
    labels: Mapping[str, str] = field(default_factory=dict)
    max_containers: int | None = None  # None: no limit of ours

    @property
    def url(self) -> str:
        return self.config.url

    def describe(self) -> str:
        return self.name if self.name in self.url else f"{self.name} ({self.url})"


@dataclass(frozen=True)
class DaemonPool:
    """The daemons one connection names, in the order it names them."""

    source: str
    members: tuple[Member, ...]

    @property
    def single(self) -> bool:
        return len(self.members) == 1

    def member(self, name_or_url: str) -> Member:
        """The member called ``name_or_url`` (its name, URL or ``host:port``)."""
        for member in self.members:
            if name_or_url in (member.name, member.url, member.url.split("://", 1)[-1]):
                return member
        raise DaemonConfigError(f"{self.source} has no daemon {name_or_url!r}; its daemons are "
                                f"{', '.join(m.name for m in self.members)}")

    def say_checks_off(self, log: Any) -> None:
        """One warning per daemon whose authentication the user turned off (``DaemonConfig.checks_off``)."""
        for member in self.members:
            if why := member.config.checks_off:
                log.warning("Connecting to %s with %s", member.describe(), why)

    def matching(self, daemon: str | None = None, daemon_labels: Mapping[str, str] | None = None) -> list[Member]:
        """The members a task may go to: the pinned one, or those carrying every wanted label."""
        chosen = [self.member(daemon)] if daemon else list(self.members)
        wanted = {str(k): str(v) for k, v in (daemon_labels or {}).items()}
        fitting = [m for m in chosen if all(m.labels.get(k) == v for k, v in wanted.items())]
        if not fitting:
            have = "; ".join(f"{m.name}: {dict(m.labels) or 'no labels'}" for m in chosen)
            raise DaemonConfigError(f"no daemon of {self.source} carries daemon_labels {wanted} ({have}); "
                                    "change daemon_labels or label a daemon in extra.daemons")
        return fitting


def build_pool(*, host: str, port: int | None, extras: Mapping[str, Any], source: str) -> DaemonPool:
    """The pool a connection describes (see the module docstring); every member is checked as
    ``build_config`` checks one daemon, and a bad member names itself."""
    extras = dict(extras)
    daemons = extras.pop("daemons", None)
    if daemons is None:
        hosts = [h.strip() for h in host.split(",") if h.strip()] if "," in host else [host]
        members = [_member({"url": one}, host_port=port, shared=extras, source=source, index=i, of=len(hosts))
                   for i, one in enumerate(hosts)]
    else:
        if not isinstance(daemons, Sequence) or isinstance(daemons, str) or not daemons:
            raise DaemonConfigError(f"{source} extra daemons must be a list of {{\"url\": ...}} objects; got {daemons!r:.80}")
        if "," in host:
            raise DaemonConfigError(f"{source} names daemons both in host and in extra.daemons; keep one of them")
        members = [_member(entry, host_port=port, shared=extras, source=source, index=i, of=len(daemons))
                   for i, entry in enumerate(daemons)]
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise DaemonConfigError(f"{source} names daemon {', '.join(twice)} twice; give each a distinct name or url")
    return DaemonPool(source=source, members=tuple(members))


def _member(entry: Any, *, host_port: int | None, shared: Mapping[str, Any], source: str, index: int, of: int) -> Member:
    where = source if of == 1 else f"{source} daemon {index + 1}"
    if not isinstance(entry, Mapping) or not entry.get("url"):
        raise DaemonConfigError(f"{where} needs a url, e.g. {{\"url\": \"tcp://docker2:2376\"}}; got {entry!r:.80}")
    entry = renamed_extras(entry, where)
    unknown = set(entry) - _MEMBER_KEYS
    if unknown:
        raise DaemonConfigError(f"{where} has unknown key {', '.join(sorted(unknown))}; "
                                f"allowed: {', '.join(sorted(_MEMBER_KEYS))}")
    url = str(entry["url"])
    if of > 1:
        where = f"{source} daemon {entry.get('name') or url}"
    own = {key: entry[key] for key in (*TLS_FILES, "tls_hostname") if entry.get(key) is not None}
    config = build_config(host=url, port=host_port, extras={**shared, **own}, source=where)
    labels = entry.get("labels") or {}
    if not isinstance(labels, Mapping):
        raise DaemonConfigError(f"{where} labels must be an object like {{\"gpu\": \"true\"}}; got {labels!r:.80}")
    limit = entry.get("max_containers")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DaemonConfigError(f"{where} max_containers is {limit!r}; give a whole number of 1 or more, or leave it out")
    name = str(entry.get("name") or config.url.split("://", 1)[-1])
    return Member(name=name, config=config, labels={str(k): str(v) for k, v in labels.items()}, max_containers=limit)


@dataclass(frozen=True)
class ConnectionFields:
    """What of an Airflow connection names daemons: read from Airflow's ``Connection`` (``of``), or from an
    ``AIRFLOW_CONN_...`` JSON value without importing Airflow (``remote-docker doctor``)."""

    host: str | None = None
    port: int | None = None
    schema: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, connection: Any) -> ConnectionFields:
        return cls(connection.host, connection.port, connection.schema, connection.extra_dejson or {})


def normalize_extras(extras: Mapping[str, Any], conn_type: str) -> dict[str, Any]:
    """Accept UI-prefixed keys (``extra__remote_docker__ca_cert``) and drop empty form values."""
    prefix = f"extra__{conn_type}__"
    return {key.removeprefix(prefix): value for key, value in extras.items() if value not in (None, "")}


def old_extra_names(extras: Mapping[str, Any]) -> list[str]:
    """The renamed extras (``RENAMED_EXTRAS``) a connection still uses, at the top or in a pool member."""
    members = extras.get("daemons") if isinstance(extras.get("daemons"), list) else []
    return sorted({old for where in (extras, *(m for m in members if isinstance(m, dict))) for old in RENAMED_EXTRAS
                   if old in where})


def pool_for(conn_id: str | None, connection: ConnectionFields | None, *, docker_url: str | None,
             overrides: Mapping[str, Any], conn_type: str = "remote_docker") -> DaemonPool:
    """The daemons a connection (None: not found), Docker's environment, ``docker_url`` and the operator's overrides
    name together: what a hook talks to."""
    if connection is None:
        if docker_url:
            return build_pool(host=docker_url, port=None, extras=overrides, source=f"docker_url {docker_url}")
        environment = config_from_environment()
        if environment is not None and conn_id in (None, DEFAULT_CONN_ID):
            return pool_of_config(environment)
        fallback = " or set DOCKER_HOST and DOCKER_CERT_PATH" if conn_id in (None, DEFAULT_CONN_ID) else ""
        raise DaemonConfigError(
            f"connection {conn_id!r} does not exist; create it (UI, `airflow connections add`, "
            f"or AIRFLOW_CONN_{str(conn_id).upper()}){fallback}"
        )
    extras = {**normalize_extras(connection.extra, conn_type), **overrides}
    source = f"connection {conn_id!r}"
    if docker_url:  # the official operator's docker_url (one daemon, or a list): the connection's TLS material
        extras.pop("daemons", None)
        return build_pool(host=docker_url, port=connection.port, extras=extras, source=source)
    hosts = [h.strip() for h in (connection.host or "").split(",")]
    if connection.schema in ("tcp", "https", "http", "unix"):
        hosts = [h if "://" in h or not h else f"{connection.schema}://{h}" for h in hosts]
    return build_pool(host=",".join(hosts), port=connection.port, extras=extras, source=source)


def pool_of_config(config: DaemonConfig) -> DaemonPool:
    return DaemonPool(source=config.source, members=(Member(name=config.url.split("://", 1)[-1], config=config),))

"""Which Engine API version we speak to a daemon, and what the daemon is (Docker or Podman).

Negotiated as the docker CLI and docker-py's ``version="auto"`` do: one unversioned ``GET /version`` per
daemon (cached in the process for ``FACTS_SECONDS``) gives the daemon's newest and oldest API version;
we speak the lower of the daemon's newest and ours (``NEWEST``), and refuse with one line naming both
ranges when they don't meet. An explicit version wins: the operator's or hook's ``api_version``, the
connection's extra ``api_version``, else ``DOCKER_API_VERSION``; ``"auto"`` (or nothing) negotiates.

No fixed version serves every engine in use: Docker 20.10 refuses anything above 1.41, Docker 29
anything below 1.44 (docs/engines.md).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from remote_docker.daemon.connection import DaemonConfig, DaemonConfigError, parse_api_version

# Docker 20.10's API: the oldest engine we test; everything we call exists there.
OLDEST = "1.41"
# Docker 28.5's: every change of the API changelog up to it is read (docs/engines.md), and tested against it.
NEWEST = "1.51"
VERSION_ENV = "DOCKER_API_VERSION"
FACTS_SECONDS = 300.0  # a daemon upgraded in place is asked again after this long (or after a refusal)

EngineKind = Literal["docker", "podman"]
log = logging.getLogger(__name__)


def key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def explicit_for(config: DaemonConfig) -> str | None:
    """The version the user set for ``config``'s daemon, if any (the environment's last). One older than ``OLDEST``
    (the official operator's examples set 1.19) would drop fields of what we send (mounts among them): the
    version is negotiated instead, with one warning."""
    explicit = config.api_version or parse_api_version(os.environ.get(VERSION_ENV), VERSION_ENV)
    if explicit is not None and key(explicit) < key(OLDEST):
        if explicit not in _warned:
            _warned.add(explicit)
            log.warning("api_version %s is older than %s, the oldest remote-docker speaks (Docker 20.10); the version is "
                        "negotiated with the daemon instead", explicit, OLDEST)
        return None
    return explicit


_warned: set[str] = set()


@dataclass(frozen=True)
class DaemonFacts:
    """What a daemon's ``/version`` says of itself."""

    engine: EngineKind
    version: str  # the engine's own version, e.g. "28.5.2" or "5.8.6"
    api_newest: str
    api_oldest: str

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> DaemonFacts:
        names = " ".join(str(c.get("Name", "")) for c in document.get("Components") or [])
        engine: EngineKind = "podman" if "podman" in names.lower() else "docker"
        newest = str(document.get("ApiVersion") or OLDEST)
        return cls(engine=engine, version=str(document.get("Version") or "?"), api_newest=newest,
                   api_oldest=str(document.get("MinAPIVersion") or newest))

    @property
    def lists_newest_first(self) -> bool:
        """``GET /containers/json`` order: Docker newest first, Podman oldest first."""
        return self.engine == "docker"

    @property
    def tail_counts_entries(self) -> bool:
        """Whether ``tail=N`` means the last N log entries. Podman counts whole lines, and sends every piece
        of a long one: ``tail=1`` after a 1 GB line is 1 GB (docs/engines.md)."""
        return self.engine == "docker"

    @property
    def follow_is_complete(self) -> bool:
        """Whether a follow stream delivers every entry it does not end before. Podman's can skip entries of a
        log written fast (containers/podman#21914, #26206): its whole log is read again after the exit."""
        return self.engine == "docker"

    @property
    def kill_events_name_signal(self) -> bool:
        """Whether a ``kill`` event names its signal. Podman's name none (docs/engines.md): one explains an exit
        only when the exit code names the signal."""
        return self.engine == "docker"

    @property
    def reads_past_events_at_once(self) -> bool:
        """Whether ``/events`` with an ``until`` already past returns every event logged by then. Podman's reader
        stops at that deadline, racing its own read: a kill logged 0.1 s before was found in 4 of 9 asks (5.8),
        while an ``until`` ahead is waited for and found."""
        return self.engine == "docker"

    @property
    def unsupported(self) -> str | None:
        """Why this engine can't run tasks, or None. Podman 4's log follow stream does not end when its container
        exits, so a watched task never ends (docs/engines.md, measured on 4.3.1)."""
        if self.engine == "podman" and self.version.split(".")[0].isdigit() and int(self.version.split(".")[0]) < 5:
            return f"Podman {self.version} is not supported (a task hangs after its container exits); use Podman 5 or newer"
        return None

    def describe(self) -> str:
        return f"{'Podman' if self.engine == 'podman' else 'Docker'} {self.version}, Engine API {self.api_oldest}-{self.api_newest}"


def choose(facts: DaemonFacts, explicit: str | None, url: str) -> str:
    """The version to speak: ``explicit`` as given, else the newest both sides know. Raises
    ``DaemonConfigError`` naming both ranges when they don't meet, or the engine when it is not supported."""
    if facts.unsupported:
        raise DaemonConfigError(f"{url} is {facts.describe()}: {facts.unsupported}")
    if explicit is not None:
        return explicit
    chosen = min(NEWEST, facts.api_newest, key=key)
    if key(chosen) < key(OLDEST):
        raise DaemonConfigError(
            f"{url} is {facts.describe()}; remote-docker speaks Engine API {OLDEST}-{NEWEST} (Docker 20.10 or newer): "
            "upgrade the daemon, or set api_version to one it speaks at your own risk")
    if key(chosen) < key(facts.api_oldest):
        raise DaemonConfigError(
            f"{url} is {facts.describe()}; remote-docker speaks Engine API {OLDEST}-{NEWEST}: upgrade "
            f"remote-docker, or set api_version to {facts.api_oldest} or newer at your own risk")
    return chosen


# fingerprint of the daemon's config -> (valid until, facts): every client of the process shares them
_known: dict[str, tuple[float, DaemonFacts]] = {}


def known(config: DaemonConfig) -> DaemonFacts | None:
    found = _known.get(config.fingerprint)
    return found[1] if found and found[0] > time.monotonic() else None


def remember(config: DaemonConfig, facts: DaemonFacts) -> None:
    _known[config.fingerprint] = (time.monotonic() + FACTS_SECONDS, facts)


def forget(config: DaemonConfig | None = None) -> None:
    """Ask the daemon again next time (it refused our version: upgraded or downgraded in place)."""
    if config is None:
        _known.clear()
    else:
        _known.pop(config.fingerprint, None)

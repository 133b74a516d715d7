"""Registries: where an image's credentials come from, and the pull that uses them.

Credentials are fetched on the worker for each pull and handed to the daemon in the pull request
only: never to trigger kwargs, XComs or logs (the password is masked the moment it is read). A
source is, in the order the operator looks:

* ``docker_conn_id``: an Airflow ``docker`` connection, static login and password (as upstream);
* ``credential_helper``: Docker's credential-helper protocol, exactly as the docker CLI uses it:
  ``docker-credential-<name> get`` with the registry host on stdin, ``{"Username", "Secret"}`` on
  stdout, so every existing helper (ecr-login, gcr, pass, ...) works; also the docker connection's
  ``extra.credential_helper``;
* ``aws_conn_id``: ECR through the amazon provider (``EcrHook.get_temporary_credentials``), kept in
  the process until ``ECR_MARGIN`` before the token expires.

Helper and ECR answers are cached in the process (``HELPER_CACHE_SECONDS``; ECR until its expiry).
A pull the registry refuses (401, denied) fetches fresh credentials once and tries again; refused
again, it fails with one line naming the registry and the credential source.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from remote_docker.engine import Engine, EngineError

PULL_POLICIES = ("missing", "always", "never")
HELPER_CACHE_SECONDS = 900.0
HELPER_TIMEOUT = 30.0
ECR_MARGIN = 300.0  # seconds before expires_at an ECR token is fetched anew
PROGRESS_EVERY = 10.0  # seconds between pull progress lines
_ECR_HOST = re.compile(r"^(\d{12})\.dkr\.ecr(-fips)?\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_REFUSED = ("unauthorized", "authentication required", "denied", "401", "no basic auth credentials")


class ImageError(Exception):
    """The image can't be had on the daemon; the message names the image, the registry and the fix."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    registry: str

    def auth(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password, "serveraddress": self.registry}


def registry_of(image: str) -> str:
    """The registry host of an image reference (docker.io when it names none)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return normal_registry(first)
    return "docker.io"


# Docker Hub's names for itself (a docker connection's host is often its v1 URL)
_DOCKER_HUB = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


def normal_registry(host: str) -> str:
    """A registry as ``host[:port]``, lower case, whatever URL form names it; Docker Hub as docker.io."""
    bare = re.sub(r"^[a-z][a-z0-9+.-]*://", "", host.strip().lower()).split("/")[0]
    return "docker.io" if bare in _DOCKER_HUB else bare


_cache: dict[tuple[str, str, str], tuple[float, Credentials]] = {}


def forget() -> None:
    """Drop every cached helper and ECR answer of this process."""
    _cache.clear()


def _mask(value: str) -> None:
    from airflow.sdk.log import mask_secret

    mask_secret(value)


@dataclass(frozen=True)
class Source:
    """Where a pull's credentials come from: one of docker_conn_id, credential_helper, aws_conn_id."""

    docker_conn_id: str | None = None
    credential_helper: str | None = None
    aws_conn_id: str | None = None

    def describe(self) -> str:
        if self.credential_helper:
            return f"credential helper docker-credential-{self.credential_helper}"
        if self.aws_conn_id:
            return f"ECR through aws_conn_id {self.aws_conn_id!r}"
        return f"docker_conn_id {self.docker_conn_id!r}"

    def fix(self) -> str:
        if self.credential_helper:
            return "log in through the helper again (docker login), or check the helper's configuration"
        if self.aws_conn_id:
            return "check that the AWS identity may pull from this repository (ecr:BatchGetImage)"
        return f"check the login and password of connection {self.docker_conn_id!r}"

    async def for_registry(self, registry: str, log: Any, *, fresh: bool = False) -> Credentials | None:
        """Credentials to present to ``registry``, or None (with one warning) when this source's belong to
        another: a docker connection's login goes only to the registry its host names."""
        credentials = await self.get(registry, fresh=fresh)
        if normal_registry(credentials.registry) != normal_registry(registry):
            log.warning("Not sending the credentials of docker_conn_id %r to %s: they are for %s (the connection's "
                        "host); the image goes without credentials", self.docker_conn_id, registry, credentials.registry)
            return None
        return credentials

    async def get(self, registry: str, *, fresh: bool = False) -> Credentials:
        if self.credential_helper:
            return await self._cached(("helper", self.credential_helper, registry), fresh, self._from_helper)
        if self.aws_conn_id:
            return await self._cached(("ecr", self.aws_conn_id, registry), fresh, self._from_ecr)
        return await asyncio.to_thread(self._from_connection)

    async def _cached(self, key: tuple[str, str, str], fresh: bool, fetch: Any) -> Credentials:
        found = _cache.get(key)
        if found and not fresh and found[0] > time.time():
            return found[1]
        expires, credentials = await fetch(key[2])
        _cache[key] = (expires, credentials)
        return credentials

    def _from_connection(self) -> Credentials:
        from airflow.sdk import BaseHook

        connection = BaseHook.get_connection(self.docker_conn_id)
        if not connection.login:
            raise ImageError(f"docker_conn_id {self.docker_conn_id!r} has no login; set the registry user and password")
        if not connection.host:
            raise ImageError(f"docker_conn_id {self.docker_conn_id!r} has no host; set it to the registry its login is "
                             "for (e.g. registry.example.com:5000): credentials go to that registry only")
        registry = connection.host
        if connection.port and ":" not in registry.split("/")[-1]:
            registry = f"{registry}:{connection.port}"
        if connection.password:
            _mask(connection.password)
        return Credentials(connection.login, connection.password or "", registry)

    async def _from_helper(self, registry: str) -> tuple[float, Credentials]:
        name = f"docker-credential-{self.credential_helper}"
        try:
            process = await asyncio.create_subprocess_exec(name, "get", stdin=asyncio.subprocess.PIPE,
                                                           stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, _ = await asyncio.wait_for(process.communicate(registry.encode()), HELPER_TIMEOUT)
        except FileNotFoundError:
            raise ImageError(f"credential helper {name} is not on this worker's PATH; install it there or fix "
                             "credential_helper") from None
        except asyncio.TimeoutError:
            process.kill()
            raise ImageError(f"credential helper {name} gave no answer for {registry} within {HELPER_TIMEOUT:g}s") from None
        if process.returncode:
            # what a failing helper printed stays out of the message: it may hold a token or a password
            raise ImageError(f"credential helper {name} has no credentials for {registry} (exit code {process.returncode}); "
                             f"log in with it first, or run `echo {registry} | {name} get` on this worker to see why")
        try:
            document = json.loads(out)
            username, secret = str(document["Username"]), str(document["Secret"])
        except (ValueError, KeyError, TypeError):
            raise ImageError(f"credential helper {name} answered for {registry} with something other than "
                             "{\"Username\": ..., \"Secret\": ...}; check the helper") from None
        _mask(secret)
        return time.time() + HELPER_CACHE_SECONDS, Credentials(username, secret, registry)

    async def _from_ecr(self, registry: str) -> tuple[float, Credentials]:
        try:
            from airflow.providers.amazon.aws.hooks.ecr import EcrHook
        except ImportError:
            raise ImageError("aws_conn_id needs the amazon provider: pip install 'airflow-provider-remote-docker[amazon]'") from None
        account = _ECR_HOST.match(registry)
        hook = EcrHook(aws_conn_id=self.aws_conn_id)
        try:
            issued = await asyncio.to_thread(hook.get_temporary_credentials, registry_ids=[account.group(1)] if account else None)
        except Exception as err:  # botocore's errors: one line naming the source
            raise ImageError(f"ECR through aws_conn_id {self.aws_conn_id!r} gave no token for {registry}: "
                             f"{str(err).splitlines()[0][:200]}") from None
        for credentials in issued:
            endpoint = re.sub(r"^https?://", "", credentials.proxy_endpoint).rstrip("/")
            if endpoint == registry:
                _mask(credentials.password)
                expires = credentials.expires_at.timestamp() - ECR_MARGIN
                return expires, Credentials(credentials.username, credentials.password, registry)
        offered = ", ".join(c.proxy_endpoint for c in issued) or "none"
        raise ImageError(f"ECR through aws_conn_id {self.aws_conn_id!r} issued tokens for {offered}, not for {registry}; "
                         "check the image's registry and the AWS account")


def source_for(docker_conn_id: str | None, credential_helper: str | None, aws_conn_id: str | None) -> Source | None:
    """The credential source an operator's arguments name (a docker connection may name a helper in its extra)."""
    if credential_helper and aws_conn_id:
        raise ImageError("credential_helper and aws_conn_id both name a credential source; keep one")
    if credential_helper or aws_conn_id:
        return Source(credential_helper=credential_helper, aws_conn_id=aws_conn_id)
    if docker_conn_id:
        from airflow.sdk import BaseHook

        helper = (BaseHook.get_connection(docker_conn_id).extra_dejson or {}).get("credential_helper")
        return Source(credential_helper=helper) if helper else Source(docker_conn_id=docker_conn_id)
    return None


async def ensure_image(engine: Engine, image: str, policy: str, source: Source | None, log: Any) -> None:
    """Make ``image`` present on the daemon per ``policy`` (missing / always / never)."""
    if policy != "always" and await engine.image_present(image):
        return
    if policy == "never":
        raise ImageError(f"image {image} is not on the daemon at {engine.url} and pull='never'; "
                         "load or pull it there first, or use pull='missing'")
    registry = registry_of(image)
    for attempt in (1, 2):
        credentials = await source.for_registry(registry, log, fresh=attempt == 2) if source else None
        if source and credentials is None:
            source = None  # not this registry's: pulled like a public image
        log.info("Pulling %s from %s%s", image, registry, f" (credentials: {source.describe()})" if source else "")
        try:
            await _pull(engine, image, credentials, log)
            return
        except EngineError as err:
            if err.unreachable:
                raise
            refused = any(word in err.detail.lower() for word in _REFUSED)
            if refused and source and attempt == 1:
                log.warning("%s refused the credentials from %s; fetching fresh ones", registry, source.describe())
                continue
            raise ImageError(f"pulling {image} from {registry} failed: {err.detail[:300]}; "
                             f"{pull_hint(err.detail, registry, source, refused)}") from None


# what a daemon says when it can't reach a registry at all (its own network, DNS or proxy)
_NO_ROUTE = ("proxyconnect", "dial tcp", "no such host", "i/o timeout", "connection refused", "network is unreachable",
             "tls handshake timeout", "context deadline exceeded", "request canceled while waiting for connection")


def pull_hint(detail: str, registry: str, source: Source | None, refused: bool) -> str:
    """What to do about a failed pull, by what the daemon said."""
    if any(words in detail.lower() for words in _NO_ROUTE):
        return (f"the daemon can't reach {registry} (its own network, DNS or proxy settings), so the image must already "
                "be on it: load it there (docker load / a local registry), or let the daemon reach the registry")
    if source and refused:
        return f"the registry refused the credentials from {source.describe()}, fetched twice; {source.fix()}"
    if source:
        return f"credentials from {source.describe()}"
    return "check the image name, or set docker_conn_id / credential_helper for a private registry"


# a layer is in place: Docker extracts after "Download complete" and then says "Pull complete"; Podman's
# compat API ends a layer at "Download complete"
_LAYER_DONE = {"docker": ("Pull complete", "Already exists"), "podman": ("Download complete", "Already exists")}


async def _pull(engine: Engine, image: str, credentials: Credentials | None, log: Any) -> None:
    """The pull, logged as one line per layer done and a summary every PROGRESS_EVERY seconds."""
    layers: dict[str, str] = {}
    sizes: dict[str, tuple[int, int]] = {}  # layer -> (current, total) bytes downloaded
    last_summary = time.monotonic()
    done_words = _LAYER_DONE[(await engine.facts()).engine]
    async for item in engine.pull(image, credentials.auth() if credentials else None):
        layer, status = item.get("id"), item.get("status", "")
        if layer and status in done_words and layers.get(layer) != "done":
            layers[layer] = "done"
            log.info("%s: %s", layer, status)
        elif layer and layer not in layers and status not in ("Pulling from", ""):
            layers[layer] = "pending"
        if layer and (detail := item.get("progressDetail")) and detail.get("total"):
            sizes[layer] = (int(detail.get("current", 0)), int(detail["total"]))
        if not layer and status and not status.startswith("Pulling from"):
            log.info("%s", status)  # the digest and the final status
        if time.monotonic() - last_summary >= PROGRESS_EVERY:
            last_summary = time.monotonic()
            done = sum(1 for state in layers.values() if state == "done")
            current, total = sum(c for c, _ in sizes.values()), sum(t for _, t in sizes.values())
            log.info("Pulling %s: %d of %d layers done, %.1f of %.1f MB downloaded", image, done, len(layers),
                     current / 1e6, total / 1e6)

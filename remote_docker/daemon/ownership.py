"""Which containers are this deployment's: a proof on every container we create, checked before we touch one.

Anyone who can reach a daemon can start a container with our labels, and two Airflow deployments with the
same DAGs (staging and production) on one daemon have the same DAG, task and run ids. So every container we
create also carries:

* ``io.remote-docker.deployment``: a public fingerprint of this deployment's secret. Listings ask the daemon
  for it, so another deployment's containers never show up;
* ``io.remote-docker.proof``: an HMAC-SHA256, under the deployment's secret, of the container's own task
  labels (DAG, task, run, map index, try). It can't be computed without the secret; copied from one of our
  containers, it proves only that container's own task and try.

A container is ours only if its proof checks out (``Deployment.owns``); reattach, adoption, result reading
and prune act on nothing else.

The secret is ``[remote_docker] deployment_secret`` (``AIRFLOW__REMOTE_DOCKER__DEPLOYMENT_SECRET``) when set:
the same on every worker and triggerer of a deployment, different between deployments. Without it, the
Airflow Variable ``remote_docker_deployment_secret`` is used, made by the first task that needs it (32
random bytes): each deployment has its own metadata database, so its own secret. Airflow masks both by name.
A worker keeps the Variable's value for ``WORKER_CACHE_SECONDS`` in a file only its user can read
(``AIRFLOW_HOME/remote-docker/``, named after the deployment's Execution API URL): one Execution API call per
task less, which parallel short tasks on a small worker feel (BENCHMARKS.md, short tasks).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remote_docker.lifecycle.spec import LABEL_PREFIX

DEPLOYMENT_LABEL = f"{LABEL_PREFIX}deployment"
PROOF_LABEL = f"{LABEL_PREFIX}proof"
SECRET_OPTION = ("remote_docker", "deployment_secret")
SECRET_VARIABLE = "remote_docker_deployment_secret"
_DESCRIPTION = "remote-docker: proves which containers this Airflow made (docs/security.md)"
_SETTLE_SECONDS = 1.0  # tasks that made the Variable at the same moment read back the one that stayed
_UNSIGNED = (DEPLOYMENT_LABEL, PROOF_LABEL)
WORKER_CACHE_SECONDS = 600.0


class DeploymentSecretError(RuntimeError):
    """The deployment secret can't be had; the message says how to provide it."""


class NoSecretYet(LookupError):
    """No task of this deployment has made its secret yet, and none is configured."""


@dataclass(frozen=True)
class Deployment:
    """This deployment's secret, and what it proves."""

    secret: bytes

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(b"remote-docker deployment\0" + self.secret).hexdigest()[:16]

    def proof(self, labels: Mapping[str, str]) -> str:
        """The HMAC of a container's own labels of ours (task identity, try, what it is for)."""
        signed = "\0".join(f"{k}={v}" for k, v in sorted(labels.items()) if k.startswith(LABEL_PREFIX) and k not in _UNSIGNED)
        return hmac.new(self.secret, b"remote-docker/1\0" + signed.encode(), hashlib.sha256).hexdigest()[:32]

    def stamp(self, labels: Mapping[str, str]) -> dict[str, str]:
        """``labels`` with this deployment's fingerprint and proof added: what a container we create carries."""
        return {**labels, DEPLOYMENT_LABEL: self.fingerprint, PROOF_LABEL: self.proof(labels)}

    def selector(self, labels: Mapping[str, str | None] | None = None) -> dict[str, str | None]:
        """A listing filter for this deployment's containers carrying ``labels``."""
        return {**(labels or {}), DEPLOYMENT_LABEL: self.fingerprint}

    def seal(self, data: bytes) -> str:
        """``data`` encrypted and authenticated under this deployment's secret: only its workers and triggerers can
        read it back (``unseal``). For what must cross to the triggerer but not be stored in clear."""
        return self._fernet().encrypt(data).decode("ascii")

    def unseal(self, token: str) -> bytes:
        """What ``seal`` sealed; ``cryptography.fernet.InvalidToken`` if another secret sealed it or it was altered."""
        return self._fernet().decrypt(token.encode("ascii"))

    def _fernet(self) -> Any:
        from cryptography.fernet import Fernet

        key = hmac.new(self.secret, b"remote-docker/seal", hashlib.sha256).digest()  # not the proofs' key
        return Fernet(base64.urlsafe_b64encode(key))

    def owns(self, labels: Mapping[str, str] | None) -> bool:
        """Whether a container with these labels was made by this deployment."""
        labels = labels or {}
        return labels.get(DEPLOYMENT_LABEL) == self.fingerprint and hmac.compare_digest(
            str(labels.get(PROOF_LABEL, "")), self.proof(labels))


def describe_stranger(container: Mapping[str, Any]) -> str:
    """One line naming a container that carries our task labels but fails the check, for the task log."""
    labels = container.get("Labels") or {}
    whose = "another deployment's" if labels.get(DEPLOYMENT_LABEL) else "not made by remote-docker"
    name = (container.get("Names") or ["/?"])[0].lstrip("/")
    return (f"container {str(container.get('Id', '?'))[:12]} ({name}) carries this task's labels but not this "
            f"deployment's proof ({whose}); it is left alone")


def _configured() -> bytes | None:
    from airflow.configuration import conf

    value = conf.get(*SECRET_OPTION, fallback=None)
    return value.strip().encode() if value and value.strip() else None


_cached: Deployment | None = None


def for_worker() -> Deployment:
    """This deployment, on a worker: the configured secret, else the Variable (made here if nobody has yet)."""
    global _cached
    if _cached is None:
        secret = _configured() or _from_worker_cache(_worker_cache_file())
        if secret is None:
            from airflow.sdk import Variable

            value = Variable.get(SECRET_VARIABLE, default=None)
            if not value:
                try:
                    Variable.set(SECRET_VARIABLE, secrets.token_hex(32), description=_DESCRIPTION)
                except Exception as err:  # e.g. Airflow 3.1 with cryptography >= 51 can't store any Variable
                    raise DeploymentSecretError(
                        f"could not make the Airflow Variable {SECRET_VARIABLE} ({type(err).__name__}: {str(err)[:120]}); "
                        "make it yourself (airflow variables set ... with 64 random hex characters) or set "
                        "[remote_docker] deployment_secret") from None
                time.sleep(_SETTLE_SECONDS)  # another task that set it meanwhile: both go on with the one that stayed
                value = Variable.get(SECRET_VARIABLE)
            secret = str(value).encode()
            _to_worker_cache(_worker_cache_file(), secret)
        _cached = Deployment(secret)
    return _cached


def _worker_cache_file() -> Path | None:
    """Where this worker keeps the Variable's value: one file per deployment (its Execution API URL)."""
    from remote_docker.lifecycle.history import worker_folder

    folder = worker_folder()
    if folder is None:
        return None
    from airflow.configuration import conf

    deployment = conf.get("core", "execution_api_server_url", fallback="") or ""
    return folder / f"deployment-secret-{hashlib.sha256(deployment.encode()).hexdigest()[:16]}"


def _from_worker_cache(path: Path | None, now: float | None = None) -> bytes | None:
    """The cached secret, if the file is ours alone and younger than ``WORKER_CACHE_SECONDS``."""
    try:
        found = path.stat() if path else None
    except OSError:
        return None
    if found is None or found.st_mode & 0o077 or (now or time.time()) - found.st_mtime > WORKER_CACHE_SECONDS:
        return None
    value = path.read_bytes().strip()
    return value or None


def _to_worker_cache(path: Path | None, secret: bytes) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(secret)
        os.replace(partial, path)  # whole or not at all, for the tasks reading it meanwhile
    except OSError:  # a read-only home: every task asks the Variable, as without the cache
        pass


async def for_trigger() -> Deployment:
    """This deployment, in a triggerer: the configured secret, else the Variable, asked through
    the triggerer's supervisor, and made there when no task has made it yet (as a worker makes it: a fresh
    deployment's first tasks started in the triggerer need no worker either). ``NoSecretYet`` when it can't be
    had: the task starts on a worker, which makes it."""
    global _cached
    if _cached is None:
        secret = _configured()
        if secret is None:
            from airflow.sdk.execution_time.comms import GetVariable, PutVariable
            from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS

            async def read() -> str | None:
                answer = await SUPERVISOR_COMMS.asend(GetVariable(key=SECRET_VARIABLE))
                return getattr(answer, "value", None)

            value = await read()
            if not value:
                try:
                    await SUPERVISOR_COMMS.asend(PutVariable(key=SECRET_VARIABLE, value=secrets.token_hex(32),
                                                             description=_DESCRIPTION))
                except Exception as err:  # the triggerer may not write Variables: a worker will
                    raise NoSecretYet(f"the Airflow Variable {SECRET_VARIABLE} does not exist yet and the triggerer "
                                      f"could not make it ({type(err).__name__}); a worker makes it") from None
                await asyncio.sleep(_SETTLE_SECONDS)  # another maker meanwhile: all go on with the one that stayed
                value = await read()
            if not value:
                raise NoSecretYet(f"the Airflow Variable {SECRET_VARIABLE} does not exist yet (a worker makes it)")
            secret = str(value).encode()
        _cached = Deployment(secret)
    return _cached


def for_cli() -> Deployment:
    """This deployment, for the ``remote-docker`` command on a machine configured for this Airflow (its database)."""
    secret = _configured()
    if secret is None:
        from airflow.models import Variable

        value = Variable.get(SECRET_VARIABLE, default_var=None)
        if not value:
            raise NoSecretYet(f"this Airflow has no deployment secret yet ([remote_docker] deployment_secret, or the "
                              f"Variable {SECRET_VARIABLE} its first task makes): none of its containers can be told")
        secret = str(value).encode()
    return Deployment(secret)


def forget() -> None:
    """Drop the cached deployment (tests; a process whose configuration changed)."""
    global _cached
    _cached = None

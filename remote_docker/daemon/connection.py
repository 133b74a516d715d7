"""Where the Docker daemon is and how to talk to it securely.

``DaemonConfig`` is the one resolved description of a daemon (URL, TLS material, API
version, timeout) built from an Airflow connection, from Docker's own environment
variables, or from operator overrides. Every client (aiodocker in the triggerer, docker-py
on the worker, ``remote-docker doctor``) is made from it, so all of them apply the same
rules: TLS is never silently off, hostname verification stays on, and a certificate is a
file path or the PEM text itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

DEFAULT_CONN_ID = "remote_docker_default"
DEFAULT_TLS_PORT = 2376
DEFAULT_TIMEOUT = 60.0
TLS_FILES = ("ca_cert", "client_cert", "client_private_key")
# Operator / hook arguments (the official DockerOperator's names) -> the connection extra each overrides.
# ``docker_url`` overrides the connection's host.
CONNECTION_OVERRIDES = {
    "tls_ca_cert": "ca_cert",
    "tls_client_cert": "client_cert",
    "tls_client_key": "client_private_key",
    "tls_verify": "tls_verify",
    "tls_hostname": "tls_hostname",
    "api_version": "api_version",
    "timeout": "timeout",
}
OVERRIDE_ARGUMENTS = ("docker_url", *CONNECTION_OVERRIDES)
# Extras renamed, old name -> new. Airflow masks a connection extra by its name, and "client_key" is not a
# name it masks ("client_private_key" contains "private_key", which it does): the old name still works.
RENAMED_EXTRAS = {"client_key": "client_private_key"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class DaemonConfigError(ValueError):
    """The daemon connection is not usable as configured; the message names what and the fix."""


def is_inline_pem(value: Any) -> bool:
    """A certificate or key given as the PEM text itself rather than a file path."""
    return isinstance(value, str) and "-----BEGIN" in value


_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.S)


def rebuild_pem(text: str) -> str:
    """PEM text with its line breaks restored: a browser's single-line input turns each into a space (the
    connection form's key field is one), which OpenSSL then refuses. Well-formed PEM comes back the same
    but for line lengths; a block with headers (an encrypted key's) is left as it is."""
    blocks = _PEM_BLOCK.findall(text)
    if not blocks or any(":" in body for _, body in blocks):
        return text
    rebuilt = []
    for label, body in blocks:
        data = re.sub(r"\s+", "", body)
        lines = "\n".join(data[i:i + 64] for i in range(0, len(data), 64))
        rebuilt.append(f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----\n")
    return "".join(rebuilt)


def renamed_extras(extras: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``extras`` with old names replaced by their new ones (``RENAMED_EXTRAS``)."""
    found = dict(extras)
    for old, new in RENAMED_EXTRAS.items():
        if old in found:
            if found.get(new) not in (None, ""):
                raise DaemonConfigError(f"{where} has both {old} and {new}; keep {new} (Airflow masks it by that name)")
            found[new] = found.pop(old)
    return found


def parse_api_version(value: Any, what: str) -> str | None:
    """``"1.44"`` / ``"v1.44"`` -> ``"1.44"``; ``None``, ``""`` or ``"auto"`` -> None (negotiate: ``api_version``)."""
    if value is None:
        return None
    text = str(value).strip()
    if text.lower() in ("", "auto"):
        return None
    found = re.match(r"^v?(\d+)\.(\d+)$", text)
    if not found:
        raise DaemonConfigError(f"{what} is {value!r}; give an Engine API version like '1.44', or 'auto' to negotiate")
    return f"{int(found.group(1))}.{int(found.group(2))}"


def parse_bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise DaemonConfigError(f"{what} is {value!r}; use true or false")


@dataclass(frozen=True)
class PemSource:
    """A certificate or key given as a path or as PEM text; ``origin`` says where it came from."""

    value: str
    origin: str

    @property
    def is_inline(self) -> bool:
        return is_inline_pem(self.value)

    def describe(self) -> str:
        return f"{self.origin} (inline PEM)" if self.is_inline else f"{self.origin} file {self.value}"

    def read(self) -> bytes:
        if self.is_inline:
            return rebuild_pem(self.value.strip()).strip().encode() + b"\n"
        path = Path(self.value).expanduser()
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise DaemonConfigError(
                f"{self.describe()} does not exist; fix the path or paste the PEM text instead"
            ) from None
        except IsADirectoryError:
            raise DaemonConfigError(f"{self.describe()} is a folder; point it at the .pem file") from None
        except PermissionError:
            raise DaemonConfigError(f"{self.describe()} is not readable by this user; fix its permissions") from None


@dataclass(frozen=True)
class TLSMaterial:
    """Loaded and cross-checked PEM material for mutual TLS."""

    ca_pem: bytes | None
    cert_pem: bytes | None
    key_pem: bytes | None
    verify: bool = True
    hostname: str | None = None  # name the server certificate must carry, if not the URL's host
    client_not_after: dt.datetime | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """An SSLContext pinned to our CA only (never the system store) with our client certificate."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.verify:
            context.load_verify_locations(cadata=self.ca_pem.decode())
            context.check_hostname = self.hostname != ""
        else:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_pem:
            # load_cert_chain only takes paths: hand it a private file that lives for this call only.
            with tempfile.TemporaryDirectory(prefix="remote-docker-") as private_dir:
                chain = Path(private_dir) / "client.pem"
                fd = os.open(chain, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(self.key_pem + b"\n" + self.cert_pem)
                context.load_cert_chain(chain)
        return context


@dataclass(frozen=True)
class DaemonConfig:
    """A resolved daemon: ``url`` is ``https://``, ``http://`` or ``unix://``."""

    url: str
    source: str  # e.g. "connection 'remote_docker_default'", for error messages
    tls: TLSMaterial | None = None
    api_version: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    _fingerprint: str = field(default="", compare=False, repr=False)

    @property
    def is_unix(self) -> bool:
        return self.url.startswith("unix://")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int | None:
        return urlsplit(self.url).port

    @property
    def fingerprint(self) -> str:
        """Identity of the endpoint and credentials: equal configs may share one client."""
        if not self._fingerprint:
            digest = hashlib.sha256(self.url.encode())
            if self.tls:
                for part in (self.tls.ca_pem, self.tls.cert_pem, self.tls.key_pem):
                    digest.update(b"\0" + (part or b""))
                digest.update(f"\0{self.tls.verify}\0{self.tls.hostname}".encode())
            digest.update(f"\0{self.api_version}\0{self.timeout}".encode())
            object.__setattr__(self, "_fingerprint", digest.hexdigest())
        return self._fingerprint

    def ssl_context(self) -> ssl.SSLContext | None:
        return self.tls.ssl_context() if self.tls else None

    @property
    def checks_off(self) -> str | None:
        """What the user turned off of the daemon's authentication, in words; None when nothing is."""
        if self.tls is not None and not self.tls.verify:
            return "tls_verify=false: the traffic is encrypted, but the daemon's certificate is not checked"
        if self.tls is not None and self.tls.hostname == "":
            return "tls_hostname=False: the daemon's certificate is checked against the CA, not its name"
        if self.tls is None and not self.is_unix:
            return '"tls": false: plain HTTP, neither encrypted nor authenticated'
        return None


def _load_certificate(source: PemSource, data: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificates(data)[0]
    except ValueError:
        raise DaemonConfigError(f"{source.describe()} is not a PEM certificate; check it begins with -----BEGIN CERTIFICATE-----") from None


def _load_key(source: PemSource, data: bytes):
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise DaemonConfigError(f"{source.describe()} is encrypted; give an unencrypted key (openssl pkey -in KEY -out KEY.pem)") from None
    except ValueError:
        raise DaemonConfigError(f"{source.describe()} is not a PEM private key; check it begins with -----BEGIN ... PRIVATE KEY-----") from None


def load_tls_material(
    ca: PemSource | None,
    cert: PemSource | None,
    key: PemSource | None,
    *,
    verify: bool,
    hostname: str | None,
    where: str,
    now: dt.datetime | None = None,
) -> TLSMaterial:
    """Load and cross-check TLS files; refuse partial sets instead of quietly dropping TLS."""
    given = {"ca_cert": ca, "client_cert": cert, "client_private_key": key}
    missing = [name for name, value in given.items() if value is None]
    if len(missing) == 3 and verify:
        raise DaemonConfigError(
            f"{where} uses TLS but has no certificates; set ca_cert, client_cert and client_private_key "
            "(file paths or PEM text), or \"tls\": false for a plain-HTTP socket proxy"
        )
    if (cert is None and key is not None) or (cert is not None and key is None):
        raise DaemonConfigError(f"{where} has {'client_private_key' if key else 'client_cert'} without "
                                f"{'client_cert' if key else 'client_private_key'}; give both")
    if verify and missing:
        raise DaemonConfigError(f"{where} is missing {', '.join(missing)}; give all three TLS files "
                                "(or generate them with `remote-docker generate-certs`)")

    ca_pem, cert_pem, key_pem = (source.read() if source else None for source in (ca, cert, key))
    key_of = (ca_pem, cert_pem, key_pem, verify, hostname)
    hit = _loaded.get(key_of)
    if hit is not None:  # parsed before, and the files are unchanged: only the dates need checking again
        material, not_before = hit
        if cert is not None:
            _check_dates(cert, not_before, material.client_not_after, now)
        return material
    if ca is not None:
        _load_certificate(ca, ca_pem)
    not_after = not_before = None
    if cert is not None and key is not None:
        certificate = _load_certificate(cert, cert_pem)
        private_key = _load_key(key, key_pem)
        fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if certificate.public_key().public_bytes(*fmt) != private_key.public_key().public_bytes(*fmt):
            raise DaemonConfigError(
                f"{key.describe()} does not match {cert.describe()}; use the key issued with that certificate"
            )
        not_after, not_before = certificate.not_valid_after_utc, certificate.not_valid_before_utc
        _check_dates(cert, not_before, not_after, now)
        key_pem = private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    material = TLSMaterial(ca_pem, cert_pem, key_pem, verify=verify, hostname=hostname, client_not_after=not_after)
    if len(_loaded) >= _LOADED_MAX:
        _loaded.clear()
    _loaded[key_of] = (material, not_before)
    return material


# Parsed TLS material by the PEM bytes it came from: every trigger of a triggerer resolves the same
# connection, and parsing the key and certificates each time costs the event loop ~7 ms a task.
_loaded: dict[tuple, tuple[TLSMaterial, dt.datetime | None]] = {}
_LOADED_MAX = 64


def _check_dates(cert: PemSource, not_before: dt.datetime | None, not_after: dt.datetime | None,
                 now: dt.datetime | None) -> None:
    now = now or dt.datetime.now(dt.timezone.utc)
    if not_after is not None and now >= not_after:
        raise DaemonConfigError(
            f"{cert.describe()} expired on {not_after:%Y-%m-%d}; issue a new client certificate "
            "(remote-docker generate-certs --force)"
        )
    if not_before is not None and now < not_before:
        raise DaemonConfigError(f"{cert.describe()} is not valid before {not_before:%Y-%m-%d %H:%M} UTC; check the clock")


def normalize_url(raw: str, port: int | None, where: str) -> tuple[str, str]:
    """Return ``(scheme, url)``; bare hosts and ``tcp://`` keep their scheme for the TLS decision."""
    raw = raw.strip()
    if not raw:
        raise DaemonConfigError(f"{where} has no host; set it to e.g. tcp://docker:2376")
    if raw.startswith("/"):
        raw = "unix://" + raw
    if "://" not in raw:
        raw = f"tcp://{raw}"
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme == "unix":
        path = raw[len("unix://"):]
        return scheme, "unix:///" + path.lstrip("/")
    if scheme not in ("tcp", "https", "http"):
        raise DaemonConfigError(f"{where} has URL scheme {scheme!r}; use tcp://, https://, unix:// or http://")
    if not parts.hostname:
        raise DaemonConfigError(f"{where} URL {raw!r} has no host name")
    try:
        url_port = parts.port
    except ValueError:
        raise DaemonConfigError(f"{where} URL {raw!r} has an invalid port") from None
    effective_port = url_port or port or (DEFAULT_TLS_PORT if scheme in ("tcp", "https") else 2375)
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    return scheme, f"{host}:{effective_port}"


def build_config(
    *,
    host: str,
    port: int | None = None,
    extras: Mapping[str, Any] | None = None,
    source: str,
) -> DaemonConfig:
    """Resolve a daemon from a host and connection-style extras (see the connection docs).

    ``extras`` keys: ``ca_cert``, ``client_cert``, ``client_private_key`` (path or PEM), ``tls``
    (explicit on/off), ``tls_verify``, ``tls_hostname``, ``api_version``, ``timeout``.
    """
    extras = renamed_extras(extras or {}, source)
    scheme, address = normalize_url(host, port, source)
    unknown = set(extras) - {*TLS_FILES, "tls", "tls_verify", "tls_hostname", "api_version", "timeout"}
    if unknown:
        raise DaemonConfigError(f"{source} has unknown extra {', '.join(sorted(unknown))}; "
                                "allowed: ca_cert, client_cert, client_private_key, tls, tls_verify, tls_hostname, api_version, timeout")
    try:
        timeout = float(extras.get("timeout") or DEFAULT_TIMEOUT)
    except (TypeError, ValueError):
        raise DaemonConfigError(f"{source} extra timeout is {extras['timeout']!r}; give seconds as a number") from None
    if timeout <= 0:
        raise DaemonConfigError(f"{source} extra timeout is {timeout}; give a positive number of seconds")
    api_version = parse_api_version(extras.get("api_version"), f"{source} api_version")

    sources = {
        name: PemSource(str(extras[name]), f"{source} {name}") for name in TLS_FILES if extras.get(name)
    }
    if scheme == "unix":
        if sources:
            raise DaemonConfigError(f"{source} is a unix socket but has TLS files; remove them or use tcp://")
        return DaemonConfig(url=address, source=source, api_version=api_version, timeout=timeout)

    tls_setting = extras.get("tls")
    tls_on = parse_bool(tls_setting, f"{source} extra tls") if tls_setting is not None else None
    if tls_on is False:
        if scheme == "https":
            raise DaemonConfigError(f"{source} says https:// but \"tls\": false; use http:// for a plain proxy")
        if sources:
            raise DaemonConfigError(f"{source} says \"tls\": false but has TLS files; remove one or the other")
        return DaemonConfig(url=f"http://{address}", source=source, api_version=api_version, timeout=timeout)
    if scheme == "http":
        raise DaemonConfigError(
            f"{source} is plain http://{address}; a plain-HTTP daemon or socket proxy needs \"tls\": false "
            "set explicitly, otherwise use tcp:// or https:// with certificates"
        )
    verify = parse_bool(extras.get("tls_verify", True), f"{source} extra tls_verify")
    hostname = extras.get("tls_hostname")
    if isinstance(hostname, str) and not hostname.strip():
        raise DaemonConfigError(f"{source} tls_hostname is empty; give the name the daemon's certificate carries, "
                                "or False to turn the name check off")
    if hostname is False or (isinstance(hostname, str) and hostname.strip().lower() == "false"):
        hostname = ""  # explicit opt-out of hostname checking (the official operator's tls_hostname=False)
    material = load_tls_material(
        sources.get("ca_cert"), sources.get("client_cert"), sources.get("client_private_key"),
        verify=verify, hostname=hostname or (None if hostname is None else ""), where=source,
    )
    return DaemonConfig(url=f"https://{address}", source=source, tls=material, api_version=api_version, timeout=timeout)


def config_from_environment(environ: Mapping[str, str] | None = None) -> DaemonConfig | None:
    """Docker's own variables: DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH. None if unset."""
    environ = os.environ if environ is None else environ
    host = environ.get("DOCKER_HOST")
    if not host:
        return None
    extras: dict[str, Any] = {}
    cert_path = environ.get("DOCKER_CERT_PATH")
    if cert_path:
        folder = Path(cert_path).expanduser()
        extras.update(ca_cert=str(folder / "ca.pem"), client_cert=str(folder / "cert.pem"), client_private_key=str(folder / "key.pem"))
    # tcp:// without DOCKER_CERT_PATH is refused by build_config: never plain HTTP by omission.
    return build_config(host=host, extras=extras, source="DOCKER_HOST")

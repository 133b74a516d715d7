"""Errors a user can act on, and the translation of low-level failures into one clear line."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator

from remote_docker.daemon.connection import DaemonConfig


class DaemonError(Exception):
    """The daemon could not be used; the message names the URL and the likely fix.

    Transient by nature (network, daemon restart), so Airflow retries apply.
    """


def _causes(exc: BaseException, seen: set[int] | None = None) -> Iterator[BaseException]:
    """Walk an exception and everything it wraps (requests/urllib3/aiohttp nest them deeply)."""
    seen = seen if seen is not None else set()
    if id(exc) in seen:
        return
    seen.add(id(exc))
    yield exc
    nested = [exc.__cause__, exc.__context__, getattr(exc, "reason", None),
              getattr(exc, "os_error", None), getattr(exc, "certificate_error", None),
              *[a for a in getattr(exc, "args", ()) if isinstance(a, BaseException)]]
    for inner in nested:
        if isinstance(inner, BaseException):
            yield from _causes(inner, seen)


def _text(exc: BaseException) -> str:
    return " ".join(" ".join(str(c).split()) for c in _causes(exc))  # one line, whatever the causes hold


def _peer_names(config: DaemonConfig) -> str:
    return config.tls.hostname if config.tls and config.tls.hostname else config.host


def timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` (or anything it wraps) is a call that got no answer in time."""
    return any(isinstance(cause, (TimeoutError, asyncio.TimeoutError)) or "timed out" in str(cause).lower()
               for cause in _causes(exc))


def explain(exc: BaseException, config: DaemonConfig, doing: str = "connecting") -> str:
    """One line naming the daemon, what went wrong and the likely fix."""
    url = config.url
    causes = list(_causes(exc))
    text = _text(exc)
    lowered = text.lower()
    ca_origin = "the configured ca_cert"

    for cause in causes:
        # urllib3 raises its own CertificateError (a ValueError) for hostname mismatches
        if isinstance(cause, ssl.SSLCertVerificationError) or type(cause).__name__ == "CertificateError":
            detail = getattr(cause, "verify_message", None) or str(cause)
            message = detail.lower()
            if "hostname mismatch" in message or "ip address mismatch" in message or "doesn't match" in message:
                return (f"{doing} {url}: the daemon's server certificate does not name {_peer_names(config)!r}; "
                        f"connect by a name it carries, re-issue it with --san {_peer_names(config)}, or set tls_hostname")
            if "expired" in message:
                return f"{doing} {url}: the daemon's server certificate has expired; re-issue it (remote-docker generate-certs --force)"
            return (f"{doing} {url}: the daemon's server certificate is not signed by {ca_origin} ({detail}); "
                    "use the ca.pem of the CA that issued the daemon's certificate")
    if "certificate_required" in lowered or "alert_bad_certificate" in lowered or "unknown_ca" in lowered \
            or "certificate_expired" in lowered or "certificate expired" in lowered or "alert certificate" in lowered:
        if config.tls is not None and not config.tls.cert_pem:
            return (f"{doing} {url}: the daemon requires a client certificate and none is configured; "
                    "set client_cert and client_private_key")
        return (f"{doing} {url}: the daemon rejected our client certificate; use a client certificate "
                "issued by the daemon's CA and still valid (remote-docker check-certs)")
    closed_early = any(isinstance(c, (ssl.SSLEOFError, ConnectionResetError)) for c in causes) or \
        "eof occurred in violation of protocol" in lowered or "server disconnected" in lowered
    if config.tls is not None and closed_early:
        # TLS 1.3 sends the refusal after the handshake; under load the client often sees only the close
        if not config.tls.cert_pem:
            return (f"{doing} {url}: the daemon requires a client certificate and none is configured; "
                    "set client_cert and client_private_key")
        return (f"{doing} {url}: the daemon closed the TLS connection, most likely because it rejected our client "
                "certificate; use a client certificate issued by the daemon's CA and still valid (remote-docker check-certs)")
    if "wrong_version_number" in lowered or "record layer failure" in lowered or "packet_length_too_long" in lowered \
            or "http_request" in lowered:
        return (f"{doing} {url}: the daemon answered in plain HTTP, not TLS; point at its TLS port, "
                "or use http:// with \"tls\": false only for a plain socket proxy")
    if "client sent an http request to an https server" in lowered:
        return (f"{doing} {url}: that port speaks TLS; use tcp:// or https:// with ca_cert, client_cert and client_private_key")
    if "payload is not completed" in lowered or "transfer length" in lowered:
        return f"{doing} {url}: the daemon ended the response midway (restarted or stopped?)"
    if isinstance(exc, ssl.SSLError) or any(isinstance(c, ssl.SSLError) for c in causes):
        return f"{doing} {url}: TLS handshake failed ({text[:200]}); check the certificates with remote-docker check-certs"
    for cause in causes:
        if isinstance(cause, ConnectionRefusedError) or "connection refused" in str(cause).lower():
            return f"{doing} {url}: connection refused; is dockerd listening there (check host and port)?"
        if isinstance(cause, FileNotFoundError) and config.is_unix:
            return f"{doing} {url}: no such socket; is dockerd running and the path right?"
        if isinstance(cause, socket.gaierror):
            return f"{doing} {url}: cannot resolve host {config.host!r}; check the host name"
        if timed_out(cause):
            return f"{doing} {url}: no answer within {config.timeout:g}s; is the daemon up and reachable?"
        if isinstance(cause, ConnectionResetError) or "connection reset" in str(cause).lower() \
                or "server disconnected" in str(cause).lower():
            return (f"{doing} {url}: the daemon closed the connection; if it requires TLS check the client "
                    "certificate, otherwise check the daemon is up")
    return f"{doing} {url}: {type(exc).__name__}: {text[:300]}"

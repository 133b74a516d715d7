"""What ``remote-docker doctor`` (and the connection's Test button) says of a daemon: who answers, which API version
both speak, how TLS is set up and whose certificate the daemon shows. Airflow-free: ``doctor`` need not import
Airflow when the connection is in the environment."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from remote_docker.daemon.connection import DaemonConfig
from remote_docker.engine import Engine, versions
from remote_docker.engine.clients import shared_async_client


async def speaking(config: DaemonConfig) -> tuple[dict[str, Any], versions.DaemonFacts, str]:
    """The daemon's version document, what it is, and the API version both speak."""
    async with shared_async_client(config) as client:
        engine = Engine(client, config)
        return await engine.version(), await engine.facts(), await engine.api_version()


def report(config: DaemonConfig) -> dict[str, str]:
    """What ``remote-docker doctor`` prints."""
    version, facts, spoken = asyncio.run(speaking(config))
    how = "set by api_version" if versions.explicit_for(config) else "negotiated"
    report = {
        "daemon": config.url,
        "source": config.source,
        "engine": f"{'Podman' if facts.engine == 'podman' else 'Docker'} {facts.version}",
        "api version": f"{spoken} ({how}; the daemon speaks {facts.api_oldest}-{facts.api_newest}, "
                       f"remote-docker {versions.OLDEST}-{versions.NEWEST})",
        "os/arch": f"{version.get('Os', '?')}/{version.get('Arch', '?')}",
    }
    if config.tls:
        report["tls"] = "mutual TLS, server certificate verified" if config.tls.verify else "TLS WITHOUT verification (tls_verify=false)"
        peer = peer_certificate(config)
        if peer:
            report["tls peer"] = peer
        if config.tls.client_not_after:
            left = config.tls.client_not_after - dt.datetime.now(dt.timezone.utc)
            report["client certificate expires"] = f"{config.tls.client_not_after:%Y-%m-%d} ({left.days} days)"
    else:
        report["tls"] = "none (unix socket)" if config.is_unix else "OFF: plain HTTP (\"tls\": false)"
    return report


def peer_certificate(config: DaemonConfig) -> str | None:
    """The daemon's certificate, as a TLS handshake shows it."""
    import socket

    from cryptography import x509

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

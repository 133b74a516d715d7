"""The ``remote-docker`` command: generate-certs, check-certs, doctor, prune."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from remote_docker import __version__
from remote_docker.daemon import certs

if TYPE_CHECKING:
    from remote_docker.pool.members import DaemonPool


def _generate(args: argparse.Namespace) -> int:
    sans = args.san or list(certs.DEFAULT_SANS)
    result = certs.generate(
        Path(args.out),
        sans=sans,
        days=args.days,
        key_type=args.key_type,
        rsa_bits=args.rsa_bits,
        server_name=args.server_name,
        client_name=args.client_name,
        with_client=not args.no_client,
        force=args.force,
    )
    for path in result.written:
        print(f"wrote {path}")
    for path in result.kept:
        print(f"kept  {path} (exists; --force re-issues a leaf certificate, the CA is always reused)")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _check(args: argparse.Namespace) -> int:
    findings = certs.check(Path(args.folder))
    for finding in findings:
        print(finding, file=sys.stderr if finding.level == "error" else sys.stdout)
    errors = [f for f in findings if f.level == "error"]
    if not errors:
        for line in certs.summary(Path(args.folder)):
            print(line)
        print(f"ok: {args.folder}: chain, key pairs, usages, SANs, expiry and key modes")
    return 1 if errors else 0


def _hook_class() -> type:
    """``RemoteDockerHook`` looking connections up as Airflow's own CLI does: environment, secrets backends and the
    metadata database (a task asks through the Task SDK, which a shell has not)."""
    from remote_docker.daemon.connection import DaemonConfigError
    from remote_docker.hook import RemoteDockerHook

    class CliHook(RemoteDockerHook):
        @classmethod
        def get_connection(cls, conn_id: str):  # type: ignore[override]
            from airflow.models.connection import Connection

            raw = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
            if raw is not None:  # Airflow would call a value it can't parse "not defined": say what is wrong
                try:
                    return Connection.from_json(raw, conn_id=conn_id) if raw.lstrip().startswith("{") \
                        else Connection(conn_id=conn_id, uri=raw)
                except Exception as err:
                    raise DaemonConfigError(f"AIRFLOW_CONN_{conn_id.upper()} does not parse as a connection "
                                            f"({type(err).__name__}: {str(err)[:120]}); fix its JSON or URI") from None
            return Connection.get_connection_from_secrets(conn_id)

    return CliHook


def _pool_without_airflow(args: argparse.Namespace) -> DaemonPool | None:
    """The daemons of a connection given as an ``AIRFLOW_CONN_...`` JSON value, read as Airflow reads it but without
    importing Airflow (seconds less); None when Airflow must be asked: no such value, a URI, a value that does not
    parse (Airflow's own parse says what is wrong), or a secrets backend Airflow would ask before the environment."""
    import configparser
    import json

    from remote_docker.pool.members import ConnectionFields, pool_for

    raw = os.environ.get(f"AIRFLOW_CONN_{str(args.conn_id).upper()}")
    if not raw or not raw.lstrip().startswith("{") or os.environ.get("AIRFLOW__SECRETS__BACKEND"):
        return None
    config = configparser.ConfigParser(interpolation=None)
    config.read(Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow")) / "airflow.cfg")
    if config.get("secrets", "backend", fallback=""):
        return None
    try:
        data = json.loads(raw)
        extra = json.loads(data["extra"]) if isinstance(data.get("extra"), str) else data.get("extra") or {}
        fields = ConnectionFields(host=data.get("host"), port=int(data["port"]) if data.get("port") else None,
                                  schema=data.get("schema"), extra=dict(extra))
    except (ValueError, TypeError, AttributeError):
        return None
    return pool_for(args.conn_id, fields, docker_url=args.docker_url, overrides={})


def _doctor(args: argparse.Namespace) -> int:
    from remote_docker.daemon.diagnose import report
    from remote_docker.daemon.errors import DaemonError

    pool = _pool_without_airflow(args)
    if pool is None:
        pool = _hook_class()(remote_docker_conn_id=args.conn_id, docker_url=args.docker_url).pool
    if pool.single:
        for key, value in report(pool.members[0].config).items():
            print(f"{key}: {value}")
        return 0
    failed = 0
    for member in pool.members:  # one line per daemon of the pool
        try:
            found = report(member.config)
        except DaemonError as err:
            failed += 1
            print(f"{member.name}: FAILED: {err}")
            continue
        extra = f", labels {dict(member.labels)}" if member.labels else ""
        extra += f", max_containers {member.max_containers}" if member.max_containers else ""
        expires = found.get("client certificate expires")
        print(f"{member.name}: ok: {found['daemon']}, {found['engine']}, API {found['api version'].split()[0]}, {found['tls']}"
              f"{f', client certificate expires {expires}' if expires else ''}{extra}")
    print(f"{pool.source}: {len(pool.members) - failed} of {len(pool.members)} daemons answer")
    return 2 if failed else 0


def _prune(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from remote_docker.daemon import ownership
    from remote_docker.prune import Prune, parse_duration, states_from_database

    RemoteDockerHook = _hook_class()

    try:
        older = parse_duration(args.older_than)
        unused = parse_duration(args.daemon_wide_unused_images_older_than, "--daemon-wide-unused-images-older-than") \
            if args.daemon_wide_unused_images_older_than else None
        min_age = parse_duration(args.orphan_min_age, "--orphan-min-age")
    except ValueError as err:
        print(f"remote-docker prune: {err}", file=sys.stderr)
        return 2
    prune = Prune(ownership.for_cli(), older_than=older, orphans=not args.no_orphans,
                  daemon_wide_dangling_images=args.daemon_wide_dangling_images,
                  daemon_wide_unused_images_older_than=unused, daemon_wide_build_cache=args.daemon_wide_build_cache,
                  dry_run=args.dry_run, orphan_min_age=min_age, states=None if args.no_orphans else states_from_database())
    log = logging.getLogger("remote_docker.prune")
    log.addHandler(logging.NullHandler())
    log.propagate = False  # the lines are printed below; Airflow's own logging would print them a second time
    reports = asyncio.run(prune.run(RemoteDockerHook(args.conn_id), log))
    for report in reports:
        print(report.line(args.dry_run))
        for what, items in (("container", report.containers), ("orphan", report.orphans), ("image", report.images),
                            ("left alone", report.left_alone)):
            for item in items:
                print(f"  {what}: {item}")
    return 2 if any(r.error for r in reports) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="remote-docker", description=__doc__.replace("``", "`"))
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate-certs", help="make a CA, a server and a client certificate (docker:dind layout)")
    gen.add_argument("--out", default="certs", help="output folder (default: ./certs)")
    gen.add_argument("--san", action="append", metavar="NAME_OR_IP",
                     help=f"server subjectAltName; repeat it (default: {', '.join(certs.DEFAULT_SANS)})")
    gen.add_argument("--days", type=int, default=certs.DEFAULT_DAYS, help=f"validity in days (default {certs.DEFAULT_DAYS})")
    gen.add_argument("--key-type", choices=("ec", "rsa"), default="ec", help="EC P-256 (default) or RSA")
    gen.add_argument("--rsa-bits", type=int, default=certs.MIN_RSA_BITS, help="RSA key size (3072+)")
    gen.add_argument("--server-name", default="server", help="folder for the server certificate (another daemon: host2)")
    gen.add_argument("--client-name", default="client", help="folder for the client certificate")
    gen.add_argument("--no-client", action="store_true", help="issue only the server certificate")
    gen.add_argument("--force", action="store_true", help="re-issue leaf certificates that exist")
    gen.set_defaults(func=_generate)

    chk = sub.add_parser("check-certs", help="verify chain, key pairs, usages, SANs, expiry and key modes")
    chk.add_argument("folder", nargs="?", default="certs", help="certificate folder (default: ./certs)")
    chk.set_defaults(func=_check)

    doc = sub.add_parser("doctor", help="connect as the operator would and report the daemon")
    doc.add_argument("--conn-id", default="remote_docker_default", help="Airflow connection id")
    doc.add_argument("--docker-url", default=None, help="daemon URL, overriding the connection's host")
    doc.set_defaults(func=_doctor)

    pru = sub.add_parser("prune", help="remove this Airflow's exited and orphaned containers (and, if asked, the "
                                       "daemon's dangling images and build cache)")
    pru.add_argument("--conn-id", default="remote_docker_default", help="Airflow connection id (every daemon of a pool)")
    pru.add_argument("--older-than", default="24h", help="exited containers created before this (90s, 30m, 24h, 7d; default 24h)")
    pru.add_argument("--dry-run", action="store_true", help="report what would go; remove nothing")
    pru.add_argument("--no-orphans", action="store_true",
                     help="leave running containers alone (finding orphans asks Airflow's metadata database)")
    pru.add_argument("--daemon-wide-dangling-images", action="store_true",
                     help="also remove every dangling image on the daemon, whoever made it")
    pru.add_argument("--daemon-wide-unused-images-older-than", default=None, metavar="DURATION",
                     help="also remove every image no container uses, created before this, whoever made it")
    pru.add_argument("--daemon-wide-build-cache", action="store_true", help="also prune the daemon's build cache (everyone's)")
    pru.add_argument("--orphan-min-age", default="2m", help="never judge a container younger than this an orphan (default 2m)")
    pru.set_defaults(func=_prune)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # stdout is this command's report: Airflow's own warnings (no Fernet key, a connection type that is no RFC 3986
    # scheme) would land in it, so Airflow logs errors only here unless the user set a level
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "ERROR")
    from remote_docker.daemon.connection import DaemonConfigError
    from remote_docker.daemon.errors import DaemonError

    try:
        return args.func(args)
    except (certs.CertificateError, DaemonConfigError, DaemonError, LookupError) as err:
        print(f"remote-docker {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

#!/usr/bin/env python3
"""Container engines for the tests, from Debian's own package archive, each on loopback over mutual TLS.

    python scripts/engines.py list
    python scripts/engines.py fetch NAME          # download and unpack (once; cached)
    python scripts/engines.py start NAME STATE    # prints the env to use it (DOCKER_HOST, ...)
    python scripts/engines.py stop STATE
    python scripts/engines.py doctor [NAME]       # start each engine in turn, `remote-docker doctor` on it

Engines (``ENGINES``): the machine's own Docker 20.10 (Debian 12), Docker 26.1 (Debian 13) and 28.5
(sid), a Docker 29 stand-in (28.5 refusing API versions below 1.44, as Docker 29 does by default),
Podman 4.3 (Debian 12) and Podman 5.8 (sid). Packages come only from the suites bookworm, trixie and sid
of the archive this machine already uses (its ``debian.sources`` URI and keyring), through a private
apt sources list and cache: ``apt-get download`` + ``dpkg-deb -x`` into ``ENGINES_DIR``; nothing is
installed system-wide. sid's podman needs glibc 2.38, newer than this machine's: its binary and conmon
are given sid's dynamic loader and libraries (``patchelf``, also from the archive), nothing else changes.

Every engine gets the state layout of ``tls_dockerd`` (certificates under STATE/certs, the port in
STATE/dockerd.port), listens on 127.0.0.1 only, runs containers without networks and reaches the
outside world through a closed proxy port only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tls_dockerd

ENGINES_DIR = Path(os.environ.get("REMOTE_DOCKER_ENGINES_DIR", Path.home() / ".cache" / "remote-docker" / "engines"))
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
CLOSED_PROXY = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
                "NO_PROXY": "127.0.0.1,localhost,::1"}


@dataclass(frozen=True)
class EngineSpec:
    kind: str  # "docker" or "podman"
    suite: str | None  # None: the machine's own (installed by scripts/setup)
    packages: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)  # the daemon's environment
    unpacked_as: str | None = None  # the same packages as this engine: share its folder
    new_glibc: bool = False  # built against a newer glibc than this machine's: bring the suite's loader


ENGINES: dict[str, EngineSpec] = {
    "docker-20.10": EngineSpec("docker", None),
    "docker-26.1": EngineSpec("docker", "trixie", ("docker.io", "containerd", "docker-cli")),
    "docker-28.5": EngineSpec("docker", "sid", ("docker.io", "containerd", "docker-cli")),
    # Docker 29 refuses clients older than API 1.44 by default; 28.5 does the same with this variable
    "docker-29": EngineSpec("docker", "sid", ("docker.io", "containerd", "docker-cli"),
                            env={"DOCKER_MIN_API_VERSION": "1.44"}, unpacked_as="docker-28.5"),
    "podman-4.3": EngineSpec("podman", "bookworm", ("podman", "conmon", "golang-github-containers-common")),
    # Podman 5 wants netavark present even with no network
    "podman-5.8": EngineSpec("podman", "sid", ("podman", "conmon", "golang-github-containers-common", "netavark"),
                             new_glibc=True),
}
DEFAULT_ENGINE = "docker-20.10"
ENGINE_ENV = "REMOTE_DOCKER_ENGINE"  # which engine the tests, the demo and the benchmarks start


def root_of(name: str) -> Path:
    spec = ENGINES[name]
    return ENGINES_DIR / (spec.unpacked_as or name) / "root"


# ----------------------------------------------------------------------------------------- fetch


def _archive() -> tuple[str, str]:
    """The URI and keyring this machine's own Debian sources use."""
    text = SOURCES.read_text() if SOURCES.exists() else ""
    uri = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.M)
    key = re.search(r"^Signed-By:\s*(\S+)\s*$", text, re.M)
    if not uri:
        raise SystemExit(f"{SOURCES} names no Debian archive URI; engines come from that archive only")
    return uri.group(1), key.group(1) if key else "/usr/share/keyrings/debian-archive-keyring.gpg"


class Apt:
    """apt-get / apt-cache over a private sources list, lists and cache under ENGINES_DIR/apt."""

    def __init__(self) -> None:
        self.home = ENGINES_DIR / "apt"
        uri, keyring = _archive()
        for sub in ("lists/partial", "cache/archives/partial"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        sources = self.home / "sources.list"
        sources.write_text("".join(f"deb [signed-by={keyring}] {uri} {suite} main\n" for suite in ("bookworm", "trixie", "sid")))
        self.options = [f"-o=Dir::Etc::SourceList={sources}", "-o=Dir::Etc::SourceParts=/nonexistent",
                        f"-o=Dir::State::Lists={self.home / 'lists'}", f"-o=Dir::Cache={self.home / 'cache'}",
                        "-o=APT::Sandbox::User=root"]
        stamp = self.home / "updated"
        if not stamp.exists() or (os.path.getmtime(stamp) < os.path.getmtime(sources)):
            subprocess.run(["apt-get", *self.options, "-qq", "update"], check=True)
            stamp.touch()

    def show(self, package: str, suite: str) -> dict[str, str]:
        out = subprocess.run(["apt-cache", *self.options, "show", f"{package}/{suite}"], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{package} is not in Debian {suite}: {out.stderr.strip()[:200]}")
        fields: dict[str, str] = {}
        for line in out.stdout.split("\n\n")[0].splitlines():
            if ":" in line and not line.startswith(" "):
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        return fields

    def download(self, packages: list[str], suite: str, into: Path) -> list[Path]:
        into.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", *self.options, "-qq", "download", *(f"{p}/{suite}" for p in packages)],
                       cwd=into, check=True)
        return sorted(into.glob("*.deb"))


def _installed(package: str) -> str | None:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status} ${Version}", package], capture_output=True, text=True)
    status = out.stdout.split()
    return status[-1] if out.returncode == 0 and "installed" in status[:3] else None


def _satisfied(installed: str | None, constraint: str) -> bool:
    if installed is None:
        return False
    found = re.match(r"\(\s*([<>=]+)\s*([^)\s]+)\s*\)", constraint.strip())
    if not found:
        return True
    op = {">=": "ge", "<=": "le", ">>": "gt", "<<": "lt", "=": "eq"}[found.group(1)]
    return subprocess.run(["dpkg", "--compare-versions", installed, op, found.group(2)]).returncode == 0


def library_closure(apt: Apt, packages: tuple[str, ...], suite: str) -> list[str]:
    """``packages`` and every library package they need (Depends on ``lib*``, first alternative) that this
    machine lacks at the version asked for; tools they depend on (runc, iptables) are the machine's own."""
    wanted, queue = list(packages), list(packages)
    while queue:
        fields = apt.show(queue.pop(), suite)
        for clause in ", ".join(filter(None, (fields.get("Pre-Depends"), fields.get("Depends")))).split(","):
            first = clause.split("|")[0].strip()
            if not first:
                continue
            name = first.split()[0].split(":")[0]
            if not name.startswith("lib") or name in wanted:
                continue
            if _satisfied(_installed(name), first[len(name):]):
                continue
            wanted.append(name)
            queue.append(name)
    return wanted


def fetch(name: str) -> Path:
    """Download and unpack ``name`` (once); returns its root folder."""
    spec = ENGINES[name]
    if spec.suite is None:
        if spec.kind == "docker" and not shutil.which("dockerd"):
            raise SystemExit("dockerd is not installed; run ./scripts/setup (apt-get install docker.io)")
        return Path("/")
    root = root_of(name)
    done = root.parent / "unpacked"
    if done.exists():
        return root
    apt = Apt()
    packages = library_closure(apt, spec.packages, spec.suite) if spec.kind == "podman" else list(spec.packages)
    debs = root.parent / "debs"
    shutil.rmtree(debs, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    for deb in apt.download(packages, spec.suite, debs):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    if spec.new_glibc:
        _use_own_loader(apt, root, [root / "usr/bin/podman", root / "usr/bin/conmon", *root.glob("usr/lib/podman/netavark"),
                                    *root.glob("usr/libexec/podman/*")])
    done.write_text(json.dumps({"suite": spec.suite, "packages": packages}))
    shutil.rmtree(debs, ignore_errors=True)
    return root


def _use_own_loader(apt: Apt, root: Path, binaries: list[Path]) -> None:
    """Point ``binaries`` at the loader and libraries unpacked beside them (their glibc is newer than ours); an
    RPATH, not a RUNPATH, so the libraries they load find theirs there too."""
    patchelf = ENGINES_DIR / "patchelf" / "root" / "usr/bin/patchelf"
    if not patchelf.exists():
        for deb in apt.download(["patchelf"], "bookworm", patchelf.parents[2] / "debs"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(patchelf.parents[2])], check=True)
    libraries = ":".join(str(root / d) for d in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"))
    loader = root / "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    if not loader.exists():
        loader = root / "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    for binary in binaries:
        subprocess.run([str(patchelf), "--set-interpreter", str(loader), "--force-rpath", "--set-rpath", libraries, str(binary)], check=True)


# ----------------------------------------------------------------------------------------- start / stop


def chosen(state: Path | None = None) -> str:
    """The engine a restart of ``state`` uses (the one it ran), else ``REMOTE_DOCKER_ENGINE``, else the default."""
    if state is not None and (state / "engine").exists():
        return (state / "engine").read_text().strip()
    name = os.environ.get(ENGINE_ENV, "").strip() or DEFAULT_ENGINE
    if name not in ENGINES:
        raise SystemExit(f"{ENGINE_ENV}={name!r} is not an engine; use one of {', '.join(ENGINES)}")
    return name


def start(name: str | None, state: Path, port: int | None = None, *, ca_from: Path | None = None,
          live_restore: bool = False) -> dict[str, str]:
    """Start engine ``name`` (None: ``chosen(state)``) with its state in ``state``: mutual TLS on 127.0.0.1:``port``."""
    name = name or chosen(state)
    spec = ENGINES[name]
    root = fetch(name)
    state.mkdir(parents=True, exist_ok=True)
    (state / "engine").write_text(name)
    if spec.kind == "docker":
        if spec.suite is None:
            return tls_dockerd.start(state, port, live_restore=live_restore, ca_from=ca_from)
        return tls_dockerd.start(state, port, live_restore=live_restore, ca_from=ca_from,
                                 dockerd=str(root / "usr/sbin/dockerd"), extra_env=spec.env,
                                 path_prefix=[str(root / "usr/sbin"), str(root / "usr/bin")])
    import podman_service

    return podman_service.start(root, state, port, ca_from=ca_from, env={**CLOSED_PROXY, **spec.env})


def stop(state: Path) -> None:
    tls_dockerd.stop(state)


def remove(state: Path) -> None:
    tls_dockerd.remove(state)


def doctor(names: list[str]) -> int:
    """Start each engine in turn and run `remote-docker doctor` against it as a user would (no api_version set)."""
    import tempfile

    failed = 0
    for name in names:
        state = Path(tempfile.mkdtemp(prefix=f"rd-doctor-{name}-"))
        try:
            environment = start(name, state)
            daemon = tls_dockerd.RunningDaemon(state, int(environment["DOCKER_HOST"].rsplit(":", 1)[1]))
            done = subprocess.run([str(Path(sys.executable).parent / "remote-docker"), "doctor"], capture_output=True,
                                  text=True, env={**os.environ, "AIRFLOW_CONN_REMOTE_DOCKER_DEFAULT": daemon.connection_json()})
            print(f"== {name}\n{done.stdout}{done.stderr}", end="", flush=True)
            failed += done.returncode != 0
        finally:
            remove(state)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("list", "fetch", "start", "stop", "remove", "doctor"))
    parser.add_argument("name_or_state", nargs="?")
    parser.add_argument("state", nargs="?", type=Path)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.action == "list":
        for name, spec in ENGINES.items():
            where = "this machine's" if spec.suite is None else f"Debian {spec.suite}"
            print(f"{name}: {spec.kind} from {where} packages" + (f", env {spec.env}" if spec.env else ""))
        return 0
    if args.action == "fetch":
        for name in ([args.name_or_state] if args.name_or_state else list(ENGINES)):
            if name not in ENGINES:
                raise SystemExit(f"unknown engine {name!r}; one of {', '.join(ENGINES)}")
            print(f"{name}: {fetch(name)}")
        return 0
    if args.action == "doctor":
        return doctor([args.name_or_state] if args.name_or_state else list(ENGINES))
    if args.action == "start":
        if args.name_or_state not in ENGINES or args.state is None:
            raise SystemExit(f"usage: engines.py start NAME STATE; NAME is one of {', '.join(ENGINES)}")
        for key, value in start(args.name_or_state, args.state.resolve(), args.port).items():
            print(f"export {key}={value}")
        return 0
    state = Path(args.name_or_state or "").resolve()
    (remove if args.action == "remove" else stop)(state)
    return 0


if __name__ == "__main__":
    sys.exit(main())

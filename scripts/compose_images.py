"""Stand-ins for the images docker-compose.yaml names, built from this machine's own files (no registry is
reachable here), each doing what the real image does for the stack:

* ``remote-docker-airflow:3.3.2`` (the Dockerfile's image): this machine's Python with the packages of
  ``.venv`` and remote-docker installed from the checkout (not editable), ``airflow`` as the entrypoint for
  Airflow subcommands like apache/airflow's, running as the user compose gives (``AIRFLOW_UID``);
* ``postgres:16.4``: Debian's PostgreSQL, initialised from ``POSTGRES_USER/PASSWORD/DB`` on first start;
* ``docker:27.3.1-dind``: Debian's dockerd, containerd and runc, started as dind's entrypoint starts them
  with ``DOCKER_TLS_CERTDIR``: mutual TLS on 2376 with ``/certs/server``, its own socket inside
  (``DIND_TLS_ADDRESS`` moves the TLS address: host networking on loopback here).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from images import _add_busybox, _data, _dir, _shared_libraries

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_IMAGE = "remote-docker-airflow:3.3.2"
POSTGRES_IMAGE = "postgres:16.4"
DIND_IMAGE = "docker:27.3.1-dind"
PASSWD = (b"root:x:0:0:root:/root:/bin/sh\nairflow:x:50000:0:airflow:/home/airflow:/bin/sh\n"
          b"postgres:x:999:999:postgres:/var/lib/postgresql:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
GROUP = b"root:x:0:\npostgres:x:999:\nnogroup:x:65534:\n"

AIRFLOW_ENTRYPOINT = b"""#!/bin/sh
# as apache/airflow's entrypoint: an Airflow subcommand runs `airflow`, anything else runs as given
case "$1" in
  ""|bash|sh|python|python3|remote-docker|airflow|/*) exec "$@" ;;
  *) exec airflow "$@" ;;
esac
"""

POSTGRES_ENTRYPOINT = b"""#!/bin/sh
# as postgres's entrypoint: initialise PGDATA from POSTGRES_* once, then run the server as postgres
set -e
export PGDATA=/var/lib/postgresql/data PATH=/usr/lib/postgresql/15/bin:$PATH
as_postgres() { su -s /bin/sh postgres -c "export PATH=$PATH PGDATA=$PGDATA; $*"; }
mkdir -p "$PGDATA" /var/run/postgresql
chown -R postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "$POSTGRES_PASSWORD" > /tmp/pwfile
  chown postgres /tmp/pwfile
  as_postgres initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile=/tmp/pwfile -A scram-sha-256 >/dev/null
  rm /tmp/pwfile
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  # a first start on the container's own socket only, to make the database
  as_postgres pg_ctl -D "$PGDATA" -o "'-c listen_addresses= -p 5432'" -w start >/dev/null
  [ "${POSTGRES_DB:=$POSTGRES_USER}" = postgres ] || PGPASSWORD="$POSTGRES_PASSWORD" createdb -h /var/run/postgresql -p 5432 \
    -U "$POSTGRES_USER" "$POSTGRES_DB"
  as_postgres pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec su -s /bin/sh postgres -c "export PATH=$PATH; exec postgres -D $PGDATA -c listen_addresses='*' $*"
"""

DIND_ENTRYPOINT = b"""#!/bin/sh
# as dind's dockerd-entrypoint with DOCKER_TLS_CERTDIR: mutual TLS with the certificates under /certs/server
set -e
certs="${DOCKER_TLS_CERTDIR:?DOCKER_TLS_CERTDIR is not set}/server"
for f in ca.pem cert.pem key.pem; do [ -s "$certs/$f" ] || { echo "missing $certs/$f" >&2; exit 1; }; done
mount -t tmpfs tmpfs /run 2>/dev/null || true
ln -sf /run /var/run
exec dockerd --host=unix:///var/run/docker.sock --host="tcp://${DIND_TLS_ADDRESS:-0.0.0.0:2376}" --tlsverify \\
  --tlscacert="$certs/ca.pem" --tlscert="$certs/cert.pem" --tlskey="$certs/key.pem" "$@"
"""


class _Rootfs(tarfile.TarFile):
    """A rootfs tar where a path added twice (a folder two sources share) is kept once: the daemon refuses
    duplicates."""

    def addfile(self, tarinfo: tarfile.TarInfo, fileobj=None) -> None:
        seen = self.__dict__.setdefault("_names", set())
        name = os.path.normpath(tarinfo.name)
        if name in seen:
            return
        seen.add(name)
        super().addfile(tarinfo, fileobj)


def _add_files(tar: tarfile.TarFile, paths: list[Path], libraries_for: list[Path] = (), inside: Path | None = None) -> None:
    """Each path and the shared libraries it and ``libraries_for`` need, at the same place as here (but those
    ``inside`` a folder the image gets whole)."""
    made: set[str] = set()
    libraries = {lib for lib in _shared_libraries([*paths, *libraries_for]) if inside is None or inside not in lib.parents}
    for path in sorted({*paths, *libraries}):
        parts = Path(str(path).lstrip("/")).parts
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder not in made and folder not in ("bin", "etc", "tmp", "root"):
                _dir(tar, folder)
                made.add(folder)
        tar.add(str(path.resolve()), arcname=str(path).lstrip("/"))


def _base(tar: tarfile.TarFile) -> None:
    _dir(tar, "etc")
    _data(tar, "etc/passwd", PASSWD)  # first: the busybox rootfs's own passwd is then the duplicate left out
    _data(tar, "etc/group", GROUP)
    _add_busybox(tar)
    _data(tar, "etc/hosts", b"127.0.0.1 localhost\n::1 localhost\n")
    _data(tar, "etc/nsswitch.conf", b"hosts: files dns\npasswd: files\ngroup: files\n")


def airflow_tar(out: Path) -> None:
    prefix = Path(sys.base_prefix)  # the Python .venv was made from (pyenv here): its own layout, its RPATH
    venv_packages = ROOT / ".venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    minor = f"python{sys.version_info.major}.{sys.version_info.minor}"
    with tempfile.TemporaryDirectory() as staging:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        staging, str(ROOT)], check=True)
        extensions = [*prefix.glob(f"lib/{minor}/lib-dynload/*.so"), *venv_packages.rglob("*.so")]
        skip = re.compile(r"(/__pycache__|/test/|/tests/|/idlelib|/tkinter|/turtledemo|/ensurepip|__editable__|"
                          r"airflow_provider_remote_docker-[^/]*\.dist-info)")
        with _Rootfs.open(out, "w") as tar:
            _base(tar)
            _add_files(tar, [prefix / "bin" / minor, Path("/usr/bin/curl"), Path("/bin/bash")], extensions, inside=ROOT / ".venv")
            tar.add(str(prefix / "lib" / minor), arcname=str(prefix / "lib" / minor).lstrip("/"),
                    filter=lambda i: None if skip.search("/" + i.name) or "/site-packages/" in "/" + i.name + "/" else i)
            packages = str(prefix / "lib" / minor / "site-packages").lstrip("/")
            tar.add(str(venv_packages), arcname=packages, filter=lambda i: None if skip.search("/" + i.name) else i)
            tar.add(staging, arcname=packages, filter=lambda i: None if "__pycache__" in i.name or i.name.endswith("/bin") else i)
            for name, module in (("airflow", "airflow.__main__"), ("remote-docker", "remote_docker.cli")):
                _data(tar, f"usr/bin/{name}", f"#!{prefix}/bin/{minor}\nimport sys\nfrom {module} import main\n"
                                              f"sys.exit(main())\n".encode(), 0o755)
            for alias in ("usr/bin/python3", "usr/bin/python"):
                link = tarfile.TarInfo(alias)
                link.type, link.linkname = tarfile.SYMTYPE, str(prefix / "bin" / minor)
                tar.addfile(link)
            _data(tar, "entrypoint", AIRFLOW_ENTRYPOINT, 0o755)
            for folder in ("opt", "home"):
                _dir(tar, folder)
            for folder in ("opt/airflow", "home/airflow"):
                info = tarfile.TarInfo(folder)
                info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o775, 50000, 0
                tar.addfile(info)


def postgres_tar(out: Path) -> None:
    version_dir = sorted(Path("/usr/lib/postgresql").iterdir())[-1]
    binaries = [version_dir / "bin" / name for name in ("postgres", "initdb", "pg_ctl", "pg_isready", "createdb", "psql")]
    with _Rootfs.open(out, "w") as tar:
        _base(tar)
        _add_files(tar, [*binaries, *version_dir.glob("lib/*.so")])
        tar.add(f"/usr/share/postgresql/{version_dir.name}", arcname=f"usr/share/postgresql/{version_dir.name}")
        if Path("/usr/lib/postgresql/15/bin") != version_dir / "bin":
            raise SystemExit(f"expected PostgreSQL 15 (Debian 12), found {version_dir}")
        for folder in ("var", "var/lib", "var/run"):
            _dir(tar, folder)
        _data(tar, "docker-entrypoint.sh", POSTGRES_ENTRYPOINT, 0o755)
        for alias in ("pg_isready", "postgres"):
            link = tarfile.TarInfo(f"usr/bin/{alias}")
            link.type, link.linkname = tarfile.SYMTYPE, str(version_dir / "bin" / alias)
            tar.addfile(link)


def dind_tar(out: Path) -> None:
    binaries = [Path(p) for p in (shutil.which("dockerd"), shutil.which("containerd"), shutil.which("containerd-shim-runc-v2"),
                                  shutil.which("runc"), shutil.which("docker"), shutil.which("docker-init") or "")
                if p]
    with _Rootfs.open(out, "w") as tar:
        _base(tar)
        _add_files(tar, binaries)
        for folder in ("var", "var/lib", "run", "usr/local", "usr/local/bin"):
            _dir(tar, folder)
        _data(tar, "usr/local/bin/dockerd-entrypoint.sh", DIND_ENTRYPOINT, 0o755)


def build(client, force: bool = False) -> None:
    """Import the three stand-ins into the daemon behind ``client`` (docker-py), unless there already."""
    api = client.api
    specs = (
        (AIRFLOW_IMAGE, airflow_tar, ["ENV PATH=/usr/bin:/bin", "ENV AIRFLOW_HOME=/opt/airflow", "WORKDIR /opt/airflow",
                                      "USER 50000", 'ENTRYPOINT ["/entrypoint"]', 'CMD ["--help"]']),
        (POSTGRES_IMAGE, postgres_tar, ["ENV PATH=/usr/lib/postgresql/15/bin:/usr/bin:/bin", "EXPOSE 5432",
                                        'ENTRYPOINT ["/docker-entrypoint.sh"]']),
        (DIND_IMAGE, dind_tar, ["ENV PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin", "EXPOSE 2376",
                                'ENTRYPOINT ["/usr/local/bin/dockerd-entrypoint.sh"]']),
    )
    for image, make, changes in specs:
        if api.images(name=image) and not force:
            continue
        handle, name = tempfile.mkstemp(suffix=".tar")
        os.close(handle)
        try:
            make(Path(name))
            repository, tag = image.rsplit(":", 1)
            api.import_image_from_file(name, repository=repository, tag=tag, changes=changes)
        finally:
            Path(name).unlink()

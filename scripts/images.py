"""Build the test and demo images locally: no registry is reachable from here.

* ``rd-test/busybox``: busybox-static with its applets linked.
* ``rd-test/python``: the host's Debian interpreter, its standard library and the shared
  libraries ``ldd`` lists, plus busybox for a shell and the host's bash (the official ``@task.docker``
  runs ``bash -c``); no cloudpickle.
* ``rd-test/python-cloudpickle``: the same with cloudpickle and dill in site-packages.

Stand-in tags (``busybox:latest``, ``python:3.11-slim``) let example DAGs name the public
images they would use elsewhere.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

BUSYBOX_IMAGE = "rd-test/busybox:latest"
IMAGE_PYTHON = (3, 11)  # the Python images carry Debian 12's own interpreter, whatever runs the tests
_MINOR = "{}.{}".format(*IMAGE_PYTHON)
PYTHON_IMAGE = f"rd-test/python:{_MINOR}"
CLOUDPICKLE_IMAGE = f"rd-test/python-cloudpickle:{_MINOR}"
STAND_INS = {BUSYBOX_IMAGE: "busybox:latest", PYTHON_IMAGE: f"python:{_MINOR}-slim"}
HOST_PYTHON = Path(f"/usr/bin/python{_MINOR}")
_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"


def _dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def _data(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _add_busybox(tar: tarfile.TarFile) -> None:
    busybox = shutil.which("busybox")
    if not busybox:
        raise SystemExit("busybox is not installed; run `apt-get install -y busybox-static`")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for folder in ("bin", "etc", "work", "root"):
        _dir(tar, folder)
    _dir(tar, "tmp", 0o1777)
    tar.add(busybox, arcname="bin/busybox")
    for applet in applets:
        if applet == "busybox":  # the binary itself, not a link to itself
            continue
        link = tarfile.TarInfo(f"bin/{applet}")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
    _data(tar, "etc/passwd", _PASSWD)


def busybox_tar(marker: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add_busybox(tar)
        if marker is not None:
            _data(tar, "etc/marker", marker)
    return buffer.getvalue()


def _shared_libraries(binaries: list[Path]) -> set[Path]:
    found: set[Path] = set()
    for binary in binaries:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
        for match in re.finditer(r"(/\S+\.so[.\d]*)", out):
            found.add(Path(match.group(1)))
    return found


def python_tar(with_cloudpickle: bool) -> Path:
    """A rootfs tar (written to a temporary file: it is ~50 MB) with the host's Python."""
    if not HOST_PYTHON.exists():
        raise SystemExit(f"{HOST_PYTHON} is missing; run `apt-get install -y python{_MINOR}`")
    stdlib = Path(f"/usr/lib/python{_MINOR}")
    extensions = sorted((stdlib / "lib-dynload").glob("*.so"))
    bash = Path("/bin/bash")
    libraries = _shared_libraries([HOST_PYTHON, bash, *extensions])
    handle, name = tempfile.mkstemp(suffix=".tar")
    os.close(handle)
    skip = re.compile(r"(/__pycache__|/test/|/tests/|/idlelib|/tkinter|/turtledemo|/ensurepip|/lib2to3|/site-packages|/dist-packages)")
    with tarfile.open(name, mode="w") as tar:
        _add_busybox(tar)
        for folder in ("usr", "usr/bin", "usr/lib", "lib", "lib64", "lib/x86_64-linux-gnu"):
            _dir(tar, folder)
        tar.add(str(HOST_PYTHON), arcname=f"usr/bin/python{_MINOR}")
        tar.add(str(bash), arcname="usr/bin/bash")
        for alias in ("usr/bin/python3", "usr/bin/python"):
            link = tarfile.TarInfo(alias)
            link.type, link.linkname = tarfile.SYMTYPE, f"python{_MINOR}"
            tar.addfile(link)
        tar.add(str(stdlib), arcname=f"usr/lib/python{_MINOR}", filter=lambda i: None if skip.search("/" + i.name) else i)
        for library in sorted(libraries):
            real = library.resolve()
            tar.add(str(real), arcname=str(library).lstrip("/"))
        if with_cloudpickle:
            import cloudpickle
            import dill

            for module in (cloudpickle, dill):
                package = Path(module.__file__).parent
                tar.add(str(package), arcname=f"usr/lib/python{_MINOR}/{package.name}",
                        filter=lambda i: None if "__pycache__" in i.name else i)
    return Path(name)


def build(client, force: bool = False, python: bool = True) -> None:
    """Import the images into the daemon behind ``client`` (a docker-py DockerClient); ``python=False``: busybox only."""
    api = client.api
    changes = ["ENV PATH=/usr/bin:/bin", "WORKDIR /work"]
    if force or not api.images(name=BUSYBOX_IMAGE):
        api.import_image_from_data(busybox_tar(), repository=BUSYBOX_IMAGE.split(":")[0], tag="latest", changes=changes)
    for image, with_cloudpickle in ((PYTHON_IMAGE, False), (CLOUDPICKLE_IMAGE, True)):
        if python and (force or not api.images(name=image)):
            path = python_tar(with_cloudpickle)
            try:
                repository, tag = image.rsplit(":", 1)
                api.import_image_from_file(str(path), repository=repository, tag=tag, changes=changes)
            finally:
                path.unlink()
    for image, stand_in in STAND_INS.items():
        if not api.images(name=image):
            continue
        repository, tag = stand_in.rsplit(":", 1)
        api.tag(image, repository, tag)

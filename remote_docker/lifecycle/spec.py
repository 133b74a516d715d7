"""The container to run: operator parameters -> one Engine API ``POST /containers/create`` body.

Everything the operator accepts about the container is turned into the request body here
and nowhere else, so it can be read, tested and reasoned about in one place. Bad values
raise ``SpecError`` with one line naming the parameter and the fix.
"""

from __future__ import annotations

import ast
import io
import re
import shlex
import tarfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from dotenv import dotenv_values

LABEL_PREFIX = "io.remote-docker."
TRY_LABEL = f"{LABEL_PREFIX}try_number"
# the labels that name a container's task instance and try (task_labels)
TASK_KEYS = frozenset({f"{LABEL_PREFIX}{name}" for name in ("dag_id", "task_id", "run_id", "map_index")} | {TRY_LABEL})
# The container's fields Airflow renders as templates (as the official DockerOperator does)
TEMPLATED_FIELDS = ("image", "command", "environment", "env_file", "container_name", "mounts")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


class SpecError(ValueError):
    """A container parameter is invalid; the message names it and the fix."""


def parse_command(value: str | list[str] | None, name: str = "command") -> list[str] | None:
    """A list stays a list; ``"[...]"`` is a Python list literal; other strings split like a shell."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise SpecError(f"{name} {text[:80]!r} looks like a list but is not a valid Python list literal") from None
            return parse_command(parsed, name)
        try:
            return shlex.split(text)
        except ValueError as err:
            raise SpecError(f"{name} can't be split like a shell command ({err}); pass a list instead") from None
    if isinstance(value, (list, tuple)):
        if not all(isinstance(part, (str, int, float)) for part in value):
            raise SpecError(f"{name} must be a string or a list of strings")
        return [str(part) for part in value]
    raise SpecError(f"{name} is a {type(value).__name__}; give a string or a list of strings")


def parse_size(value: int | float | str | None, name: str) -> int | None:
    """Bytes from ``1073741824``, ``"512m"``, ``"1g"``, ``"64k"``."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise SpecError(f"{name} is a bool; give bytes or a size like '512m'")
    if isinstance(value, (int, float)):
        size = int(value)
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise SpecError(f"{name} {value!r} is not a size; use bytes or a number with b, k, m or g (e.g. '512m')")
        size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise SpecError(f"{name} {value!r} must be positive")
    return size


def environment_list(layers: Iterable[tuple[str, Mapping[str, Any] | None]]) -> list[str]:
    """``["K=V", ...]`` from ``(parameter name, mapping)`` layers in order (later wins). As the official operator:
    a value of None leaves the variable unset, any other value arrives as ``str(value)`` (``True``, ``{'a': 1}``)."""
    merged: dict[str, str] = {}
    for layer_name, layer in layers:
        for key, value in (layer or {}).items():
            if not isinstance(key, str) or not key or "=" in key:
                raise SpecError(f"{layer_name} key {key!r} is not a valid variable name")
            if value is None:
                merged.pop(key, None)
                continue
            merged[key] = value if isinstance(value, str) else str(value)
    return [f"{key}={value}" for key, value in merged.items()]


def parse_env_file(content: str | None) -> dict[str, str]:
    """Variables from the rendered text of a ``.env`` file (``KEY=VALUE`` lines)."""
    if not content:
        return {}
    return {k: v or "" for k, v in dotenv_values(stream=io.StringIO(content)).items()}


def mount_body(mount: Any) -> dict:
    """One ``HostConfig.Mounts`` entry from a docker.types.Mount, a dict, or ``"src:dst[:ro]"``."""
    if isinstance(mount, str):
        parts = mount.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1] or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise SpecError(f"mount {mount!r} is not 'source:target[:ro|rw]'")
        source, target = parts[0], parts[1]
        return {
            "Type": "bind" if source.startswith("/") else "volume",
            "Source": source,
            "Target": target,
            "ReadOnly": len(parts) == 3 and parts[2] == "ro",
        }
    if isinstance(mount, Mapping):
        if "Target" in mount:  # docker.types.Mount (a dict) or an already rendered one
            return dict(mount)
        from docker.types import Mount

        try:
            return dict(Mount(**mount))
        except TypeError as err:
            raise SpecError(f"mount {dict(mount)!r} has bad keys ({err}); use target, source, type, read_only") from None
    raise SpecError(f"mount {mount!r} is a {type(mount).__name__}; use docker.types.Mount, a dict or 'src:dst[:ro]'")


def _port_key(port: Any) -> str:
    text = str(port)
    return text if "/" in text else f"{text}/tcp"


def _port_binding(value: Any) -> list[dict]:
    if isinstance(value, list):
        return [b for item in value for b in _port_binding(item)]
    if isinstance(value, tuple):
        host_ip, host_port = value if len(value) == 2 else (value[0], None)
        return [{"HostIp": str(host_ip), "HostPort": "" if host_port is None else str(host_port)}]
    return [{"HostIp": "", "HostPort": "" if value is None else str(value)}]


def _ulimit(value: Any) -> dict:
    if isinstance(value, Mapping):
        lowered = {k.lower(): v for k, v in value.items()}
        if "name" in lowered:
            return {"Name": lowered["name"], "Soft": lowered.get("soft"), "Hard": lowered.get("hard", lowered.get("soft"))}
    raise SpecError(f"ulimit {value!r} must be docker.types.Ulimit or a dict with name, soft, hard")


@dataclass
class ContainerSpec:
    """Everything about the container an operator asks for (names follow the official DockerOperator)."""

    image: str
    command: str | list[str] | None = None
    entrypoint: str | list[str] | None = None
    environment: Mapping[str, Any] | None = None
    private_environment: Mapping[str, Any] | None = None
    env_file: str | None = None
    working_dir: str | None = None
    user: str | int | None = None
    hostname: str | None = None
    mounts: list[Any] = field(default_factory=list)
    network_mode: str | None = None
    dns: list[str] | None = None
    dns_search: list[str] | None = None
    extra_hosts: Mapping[str, str] | list[str] | None = None
    port_bindings: Mapping[Any, Any] | None = None
    cpus: float | None = None
    mem_limit: int | str | None = None
    shm_size: int | str | None = None
    privileged: bool = False
    cap_add: Iterable[str] | None = None
    device_requests: list[Any] | None = None
    ulimits: list[Any] | None = None
    labels: Mapping[str, str] | list[str] | None = None
    ipc_mode: str | None = None
    tty: bool = False
    log_opts_max_size: str | None = None
    log_opts_max_file: str | int | None = None
    container_name: str | None = None  # not part of the body: the create call's name parameter

    def create_body(self, extra_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The ``POST /containers/create`` body. Docker's AutoRemove stays off: logs and files
        must remain readable after exit; the operator removes the container itself."""
        if not isinstance(self.image, str) or not self.image.strip():
            raise SpecError("image is empty; give an image reference such as 'python:3.12-slim'")
        if self.port_bindings and self.network_mode == "host":
            raise SpecError("port_bindings can't be used with network_mode='host'; drop one of them")
        host: dict[str, Any] = {
            "AutoRemove": False,
            "Mounts": [mount_body(m) for m in self.mounts or []],
            "Privileged": bool(self.privileged),
        }
        if self.network_mode:
            host["NetworkMode"] = self.network_mode
        if self.dns:
            host["Dns"] = list(self.dns)
        if self.dns_search:
            host["DnsSearch"] = list(self.dns_search)
        if self.extra_hosts:
            host["ExtraHosts"] = (
                [f"{name}:{ip}" for name, ip in self.extra_hosts.items()]
                if isinstance(self.extra_hosts, Mapping) else list(self.extra_hosts)
            )
        if self.port_bindings:
            host["PortBindings"] = {_port_key(p): _port_binding(v) for p, v in self.port_bindings.items()}
        if self.cpus is not None:
            if isinstance(self.cpus, bool) or not isinstance(self.cpus, (int, float)) or self.cpus <= 0:
                raise SpecError(f"cpus {self.cpus!r} must be a positive number of CPUs (e.g. 0.5)")
            host["NanoCpus"] = round(self.cpus * 1e9)  # a real quota, not just relative shares
        if (memory := parse_size(self.mem_limit, "mem_limit")) is not None:
            host["Memory"] = memory
        if (shm := parse_size(self.shm_size, "shm_size")) is not None:
            host["ShmSize"] = shm
        if self.cap_add:
            host["CapAdd"] = list(self.cap_add)
        if self.device_requests:
            host["DeviceRequests"] = [dict(d) for d in self.device_requests]
        if self.ulimits:
            host["Ulimits"] = [_ulimit(u) for u in self.ulimits]
        if self.ipc_mode:
            host["IpcMode"] = self.ipc_mode
        log_config = {}
        if self.log_opts_max_size is not None:
            log_config["max-size"] = str(self.log_opts_max_size)
        if self.log_opts_max_file is not None:
            log_config["max-file"] = str(self.log_opts_max_file)
        if log_config:
            host["LogConfig"] = {"Type": "", "Config": log_config}

        labels = dict.fromkeys(self.labels, "") if isinstance(self.labels, (list, tuple)) else dict(self.labels or {})
        labels.update(extra_labels or {})
        body: dict[str, Any] = {
            "Image": self.image.strip(),
            "Env": environment_list([
                ("env_file", parse_env_file(self.env_file)),
                ("environment", self.environment),
                ("private_environment", self.private_environment),
            ]),
            "Tty": bool(self.tty),
            "OpenStdin": False,
            "AttachStdin": False,
            "Labels": labels,
            "HostConfig": host,
        }
        if (command := parse_command(self.command)) is not None:
            body["Cmd"] = command
        if (entrypoint := parse_command(self.entrypoint, "entrypoint")) is not None:
            body["Entrypoint"] = entrypoint
        if self.working_dir:
            body["WorkingDir"] = self.working_dir
        if self.user is not None and self.user != "":
            body["User"] = str(self.user)
        if self.hostname:
            body["Hostname"] = self.hostname
        if self.port_bindings:
            body["ExposedPorts"] = {_port_key(p): {} for p in self.port_bindings}
        return body


def task_labels(dag_id: str, task_id: str, run_id: str, map_index: int, try_number: int) -> dict[str, str]:
    """Labels that tie a container to its task instance (for reattaching and clean-up)."""
    return {
        f"{LABEL_PREFIX}dag_id": dag_id,
        f"{LABEL_PREFIX}task_id": task_id,
        f"{LABEL_PREFIX}run_id": run_id,
        f"{LABEL_PREFIX}map_index": str(map_index),
        TRY_LABEL: str(try_number),
    }


def _arcname(target: str, what: str) -> str:
    path = PurePosixPath(target)
    if not path.is_absolute() or ".." in path.parts:
        raise SpecError(f"{what} {target!r} must be an absolute container path without '..'")
    return str(path.relative_to("/"))


def files_archive(files: Mapping[str, str | bytes | Path], folders: Mapping[str, int] | None = None) -> bytes:
    """A tar to extract at ``/`` holding ``files``: container path -> text, bytes, or a local ``Path``
    (file or folder, copied recursively). Missing parent folders are created by the daemon;
    ``folders`` (path -> mode) are created first with the given modes."""
    buffer = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder, mode in (folders or {}).items():
            info = tarfile.TarInfo(_arcname(folder, "folder"))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, int(now)
            tar.addfile(info)
        for target, source in files.items():
            arcname = _arcname(target, "files key")
            if isinstance(source, Path):
                if not source.exists():
                    raise SpecError(f"files[{target!r}] local path {source} does not exist")
                tar.add(str(source), arcname=arcname, recursive=True, filter=_owned_by_root)
                continue
            if isinstance(source, str):
                data = source.encode()
            elif isinstance(source, (bytes, bytearray)):
                data = bytes(source)
            else:
                raise SpecError(f"files[{target!r}] is a {type(source).__name__}; give text, bytes or a pathlib.Path")
            info = tarfile.TarInfo(arcname)
            info.size, info.mode, info.mtime = len(data), 0o644, int(now)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info

"""The one place operator parameters become an Engine API create body (pure function tests)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from docker.types import DeviceRequest, Mount, Ulimit

from remote_docker.lifecycle.spec import (
    ContainerSpec,
    SpecError,
    files_archive,
    mount_body,
    parse_command,
    parse_size,
    task_labels,
)


def test_minimal_body() -> None:
    body = ContainerSpec(image="busybox").create_body()
    assert body == {
        "Image": "busybox", "Env": [], "Tty": False, "OpenStdin": False, "AttachStdin": False, "Labels": {},
        "HostConfig": {"AutoRemove": False, "Mounts": [], "Privileged": False},
    }


def test_full_body() -> None:
    spec = ContainerSpec(
        image="python:3.12-slim", command="python -c 'print(1)'", entrypoint=["/bin/sh", "-c"],
        environment={"A": "1", "N": 5, "F": True}, private_environment={"A": "secret"}, env_file="B=2\n# c\nC='x y'\n",
        working_dir="/w", user=1000, hostname="h", mounts=["/data:/data:ro", "cache:/cache", {"target": "/t", "source": "v"},
                                                           Mount("/m", "vol2", type="volume", read_only=True)],
        network_mode="none", dns=["1.1.1.1"], dns_search=["lan"], extra_hosts={"db": "10.0.0.2"},
        port_bindings={8080: 80, "53/udp": ("127.0.0.1", 5353)}, cpus=1.5, mem_limit="512m", shm_size="64m",
        privileged=True, cap_add=["SYS_PTRACE"], device_requests=[DeviceRequest(count=-1, capabilities=[["gpu"]])],
        ulimits=[Ulimit(name="nofile", soft=1024, hard=2048), {"name": "nproc", "soft": 10}],
        labels=["l1"], ipc_mode="host", tty=True, log_opts_max_size="10m", log_opts_max_file=3,
    )
    body = spec.create_body({"io.remote-docker.task_id": "t"})
    host = body["HostConfig"]
    assert body["Cmd"] == ["python", "-c", "print(1)"]
    assert body["Entrypoint"] == ["/bin/sh", "-c"]
    # env_file < environment < private_environment
    assert body["Env"] == ["B=2", "C=x y", "A=secret", "N=5", "F=True"]
    assert body["User"] == "1000" and body["WorkingDir"] == "/w" and body["Hostname"] == "h" and body["Tty"] is True
    assert body["Labels"] == {"l1": "", "io.remote-docker.task_id": "t"}
    assert body["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "", "HostPort": "80"}],
                                    "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}]}
    assert host["Mounts"][0] == {"Type": "bind", "Source": "/data", "Target": "/data", "ReadOnly": True}
    assert host["Mounts"][1] == {"Type": "volume", "Source": "cache", "Target": "/cache", "ReadOnly": False}
    assert host["Mounts"][2]["Target"] == "/t" and host["Mounts"][2]["Source"] == "v"
    assert host["Mounts"][3]["ReadOnly"] is True
    assert host["NanoCpus"] == 1_500_000_000, "cpus is a quota, not CPU shares"
    assert "CpuShares" not in host
    assert host["Memory"] == 512 * 1024**2 and host["ShmSize"] == 64 * 1024**2
    assert host["Privileged"] is True and host["CapAdd"] == ["SYS_PTRACE"] and host["IpcMode"] == "host"
    assert host["DeviceRequests"][0]["Count"] == -1
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 2048}, {"Name": "nproc", "Soft": 10, "Hard": 10}]
    assert host["LogConfig"] == {"Type": "", "Config": {"max-size": "10m", "max-file": "3"}}
    assert host["Dns"] == ["1.1.1.1"] and host["DnsSearch"] == ["lan"] and host["ExtraHosts"] == ["db:10.0.0.2"]
    assert host["AutoRemove"] is False, "the operator removes containers itself after reading logs and files"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("echo hi", ["echo", "hi"]),
        ("['echo', 'a b']", ["echo", "a b"]),
        ("  [\"x\"]", ["x"]),
        (["a", 1], ["a", "1"]),
        (None, None),
        ("", None),
    ],
)
def test_parse_command(value, expected) -> None:
    assert parse_command(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[not a list", "looks like a list but is not a valid Python list literal"),
        ("echo 'unclosed", "can't be split like a shell command"),
        ({"a": 1}, "is a dict; give a string or a list of strings"),
        ([["nested"]], "must be a string or a list of strings"),
    ],
)
def test_parse_command_errors(value, message) -> None:
    with pytest.raises(SpecError, match=message):
        parse_command(value)


@pytest.mark.parametrize(("value", "expected"), [(1024, 1024), ("1k", 1024), ("1.5g", int(1.5 * 1024**3)), ("64MB", 64 * 1024**2), ("100b", 100)])
def test_parse_size(value, expected) -> None:
    assert parse_size(value, "mem_limit") == expected


@pytest.mark.parametrize(("value", "message"), [("lots", "is not a size"), (0, "must be positive"), (True, "is a bool")])
def test_parse_size_errors(value, message) -> None:
    with pytest.raises(SpecError, match=f"mem_limit .*{message}|mem_limit is a bool"):
        parse_size(value, "mem_limit")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ContainerSpec(image=""), "image is empty"),
        (ContainerSpec(image="x", private_environment={"A=B": "v"}), "private_environment key 'A=B' is not a valid variable name"),
        (ContainerSpec(image="x", cpus=0), "cpus 0 must be a positive number of CPUs"),
        (ContainerSpec(image="x", cpus="2"), "cpus '2' must be a positive number"),
        (ContainerSpec(image="x", port_bindings={80: 80}, network_mode="host"), "port_bindings can't be used with network_mode='host'"),
        (ContainerSpec(image="x", mounts=["onlyone"]), "mount 'onlyone' is not 'source:target"),
        (ContainerSpec(image="x", mounts=["/a:/b:rx"]), "mount '/a:/b:rx' is not"),
        (ContainerSpec(image="x", mounts=[{"tgt": "/x"}]), "has bad keys"),
        (ContainerSpec(image="x", mounts=[42]), "mount 42 is a int"),
        (ContainerSpec(image="x", ulimits=["nofile"]), "ulimit 'nofile' must be"),
    ],
)
def test_spec_errors_are_one_line(spec: ContainerSpec, message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        spec.create_body()
    assert "\n" not in str(info.value)


def test_rendered_mount_dict_passes_through() -> None:
    rendered = dict(Mount("/t", "/s", type="bind"))
    assert mount_body(rendered) == rendered


def test_task_labels() -> None:
    assert task_labels("d", "t", "r", -1, 2) == {
        "io.remote-docker.dag_id": "d", "io.remote-docker.task_id": "t", "io.remote-docker.run_id": "r",
        "io.remote-docker.map_index": "-1", "io.remote-docker.try_number": "2",
    }


def test_files_archive(tmp_path: Path) -> None:
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "f.txt").write_text("deep")
    (tmp_path / "tree" / "sub" / "f.txt").chmod(0o755)
    data = files_archive({"/a/text.txt": "héllo", "/b.bin": b"\x00\x01", "/c/tree": tmp_path / "tree"})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile("a/text.txt").read() == "héllo".encode()
        assert tar.extractfile("b.bin").read() == b"\x00\x01"
        assert tar.extractfile("c/tree/sub/f.txt").read() == b"deep"
    assert members["c/tree/sub/f.txt"].mode & 0o777 == 0o755, "local files keep their mode"
    assert members["c/tree/sub/f.txt"].uid == 0 and members["a/text.txt"].mode == 0o644
    assert "a" not in members and "c" not in members, "existing parents (e.g. /tmp) must keep their modes"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"relative/x": "a"}, "must be an absolute container path"),
        ({"/x/../etc/passwd": "a"}, "without '..'"),
        ({"/x": 42}, r"files\['/x'\] is a int"),
        ({"/x": Path("/no/such/local/file")}, "local path /no/such/local/file does not exist"),
    ],
)
def test_files_archive_errors(files, message) -> None:
    with pytest.raises(SpecError, match=message):
        files_archive(files)


def test_environment_values_as_the_official_operator_sends_them() -> None:
    """None leaves a variable unset (even one env_file set), anything else is str(value)."""
    spec = ContainerSpec(image="x", env_file="GONE=1\n", environment={"T": True, "F": False, "D": {"a": 1}, "L": [1, "b"],
                                                                    "N": None, "GONE": None, "I": 0})
    assert spec.create_body()["Env"] == ["T=True", "F=False", "D={'a': 1}", "L=[1, 'b']", "I=0"]

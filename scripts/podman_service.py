"""A rootful ``podman system service`` of its own (storage, run state, locks and events under STATE), for tests.

Its Docker-compatible API is served on STATE/docker.sock and, with mutual TLS, on 127.0.0.1:PORT: by
Podman itself where it can (5.x: ``--tls-cert`` / ``--tls-client-ca``), else by ``tls_proxy`` in front of
the socket (4.x has no TLS of its own). Containers get no network (``netns = "none"``); images are
imported, never pulled from outside (the closed proxy in the service's environment). Started and stopped
by ``engines.py``; only processes started here are ever stopped, by the PIDs recorded in STATE.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import tls_dockerd

READY_TIMEOUT = 60.0


def _files(root: Path, state: Path) -> dict[str, str]:
    """Podman's configuration for an instance at ``state``; the environment that points Podman at it."""
    own = state / "podman"
    for sub in ("storage", "run", "tmp", "home/.config/containers", "volumes"):
        (own / sub).mkdir(parents=True, exist_ok=True)
    share = root / "usr/share/containers"
    (own / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{own / "storage"}"\nrunroot = "{own / "run"}"\n')
    helpers = [str(root / "usr/libexec/podman"), str(root / "usr/lib/podman"), str(root / "usr/bin"), "/usr/libexec/podman", "/usr/bin"]
    (own / "containers.conf").write_text("\n".join([
        "[containers]",
        'netns = "none"',
        'log_driver = "k8s-file"',
        # buildah's RUN asks for more open files and processes than this machine's hard limits let even root have
        f"default_ulimits = {_hard_limits()}".replace("'", '"'),
        f'seccomp_profile = "{share / "seccomp.json"}"',
        "[engine]",
        'cgroup_manager = "cgroupfs"',
        'events_logger = "file"',
        f'events_logfile_path = "{own / "events.log"}"',
        'runtime = "runc"',
        f'conmon_path = ["{root / "usr/bin/conmon"}"]',
        f"helper_binaries_dir = {helpers!r}".replace("'", '"'),
        f'tmp_dir = "{own / "tmp"}"',
        f'volume_path = "{own / "volumes"}"',
        'lock_type = "file"',  # shm locks would be shared by every rootful Podman on the machine
        "[engine.runtimes]",
        'runc = ["/usr/sbin/runc", "/usr/bin/runc"]',
        "",
    ]))
    # Docker takes registries on 127.0.0.0/8 for plain HTTP by default (the tests' registry is one); Podman
    # needs it said. "127.0.0.1" also matches 127.0.0.1:PORT (containers/image's prefix match).
    (own / "registries.conf").write_text('unqualified-search-registries = ["docker.io"]\nshort-name-mode = "permissive"\n'
                                         '[[registry]]\nlocation = "127.0.0.1"\ninsecure = true\n')
    (own / "home/.config/containers/policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
    libraries = [str(root / "usr/lib/x86_64-linux-gnu"), str(root / "lib/x86_64-linux-gnu")]
    # bookworm's podman finds the few libraries it brought there; sid's carries an RPATH to its own glibc
    # (engines.py), which must not leak into the machine's runc through the environment
    own_glibc = any((Path(folder) / "libc.so.6").exists() for folder in libraries)
    return {
        "CONTAINERS_CONF": str(own / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(own / "storage.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(own / "registries.conf"),
        "HOME": str(own / "home"),
        "XDG_RUNTIME_DIR": str(own / "run"),
        "XDG_CONFIG_HOME": str(own / "home/.config"),
        **({} if own_glibc else {"LD_LIBRARY_PATH": ":".join(libraries)}),
        "PODMAN_IGNORE_CGROUPSV1_WARNING": "1",
    }


def _hard_limits() -> list[str]:
    import resource

    limits = {"nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[1], "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[1]}
    # Podman 4.3's service lowers its own nproc to pid_max, and a container may not have more than it has
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    limits["nproc"] = pid_max if limits["nproc"] == resource.RLIM_INFINITY else min(limits["nproc"], pid_max)
    return [f"{name}={hard}:{hard}" for name, hard in limits.items() if hard != resource.RLIM_INFINITY]


def _native_tls(podman: Path) -> bool:
    out = subprocess.run([str(podman), "system", "service", "--help"], capture_output=True, text=True).stdout
    return "--tls-client-ca" in out


def _spawn(args: list[str], env: dict[str, str], log: Path, pidfile: Path) -> subprocess.Popen:
    with open(log, "ab") as handle:
        proc = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    pidfile.write_text(str(proc.pid))
    return proc


def start(root: Path, state: Path, port: int | None, *, ca_from: Path | None, env: dict[str, str]) -> dict[str, str]:
    port = port or tls_dockerd.free_port()
    stop(state)
    tls_dockerd._generate_certs(state, ca_from)
    (state / "engine.root").write_text(str(root))
    server = state / "certs" / "server"
    podman = root / "usr/bin/podman"
    environment = {**os.environ, **_files(root, state), **env}
    socket_path = state / "docker.sock"
    socket_path.unlink(missing_ok=True)
    service = [str(podman), "system", "service", "--time=0"]
    procs = [_spawn([*service, f"unix://{socket_path}"], environment, state / "dockerd.log", state / "dockerd.ownpid")]
    if _native_tls(podman):
        procs.append(_spawn([*service, f"--tls-cert={server / 'cert.pem'}", f"--tls-key={server / 'key.pem'}",
                             f"--tls-client-ca={server / 'ca.pem'}", f"tcp://127.0.0.1:{port}"],
                            environment, state / "dockerd-tls.log", state / "tls.ownpid"))
    else:
        procs.append(_spawn([sys.executable, str(Path(__file__).with_name("tls_proxy.py")), str(port), str(socket_path),
                             str(server)], environment, state / "dockerd-tls.log", state / "tls.ownpid"))
    (state / "dockerd.port").write_text(str(port))
    _wait_ready(state, procs, port)
    environment = tls_dockerd.env_for(state, port)
    (state / "env").write_text("".join(f"export {k}={v}\n" for k, v in environment.items()))
    return environment


def _wait_ready(state: Path, procs: list[subprocess.Popen], port: int) -> None:
    import socket

    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                log = "".join(p.read_text(errors="replace") for p in state.glob("dockerd*.log"))[-3000:]
                raise SystemExit(f"podman exited with {proc.returncode}; its log ends with:\n{log}")
        if (state / "docker.sock").exists():
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
        time.sleep(0.05)
    raise SystemExit(f"podman did not listen on 127.0.0.1:{port} within {READY_TIMEOUT}s; see {state}/dockerd.log")


def stop(state: Path, timeout: float = 20.0) -> None:
    """Stop the service processes started here, then every container of this instance (the service leaves
    them running: each has its own conmon)."""
    for name in ("tls.ownpid", "dockerd.ownpid"):
        pidfile = state / name
        if not pidfile.exists():
            continue
        pid = int(pidfile.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and tls_dockerd.alive(pid):
                time.sleep(0.05)
            if tls_dockerd.alive(pid):
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        pidfile.unlink(missing_ok=True)
    conf = state / "podman" / "containers.conf"
    engine_root = (state / "engine.root")
    if conf.exists() and engine_root.exists():
        root = Path(engine_root.read_text())
        subprocess.run([str(root / "usr/bin/podman"), "rm", "--all", "--force", "--time=0"],
                       env={**os.environ, **_files(root, state)}, capture_output=True, timeout=120)

"""``RemoteDockerOperator``: run a container on a remote daemon while the task is deferred.

Lifecycle (the worker owns the container; the trigger only watches it):

1. ``execute`` (worker): resolve the daemon; reattach to a running container of an earlier
   try of this task instance, or pull per ``pull``, create, copy ``files`` in, start; then
   defer to ``ContainerTrigger`` with an absolute deadline from ``execution_timeout``.
2. ``ContainerTrigger.run`` (triggerer): stream the log, wait for the end, report it.
3. ``execute_complete`` (worker): re-inspect the container, turn its exit into the task's
   state, collect the result (decoded here only), remove the container per ``auto_remove``.

With ``deferrable=False`` the worker runs the same trigger code itself, so both modes behave
the same.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
import warnings
from collections.abc import Container, Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import docker
import requests
from airflow.sdk import BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException, AirflowTaskTimeout

from remote_docker.connection import DEFAULT_CONN_ID, DaemonConfigError
from remote_docker.errors import DaemonError, explain
from remote_docker.hook import HOOK_OVERRIDES, RemoteDockerHook
from remote_docker.logs import split_lines
from remote_docker.output import DEFAULT_MAX_OUTPUT_BYTES, OUTPUT_FORMATS, OutputError, decode, extract_single_file
from remote_docker.spec import LABEL_PREFIX, ContainerSpec, SpecError, files_archive, task_labels
from remote_docker.triggers import CHECKPOINT_KEY, ContainerTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

DEFAULT_MIN_DEFERRED_SECONDS = 10.0
AUTO_REMOVE_MODES = ("never", "success", "force")
PULL_POLICIES = ("missing", "always", "never")
_RUNNING_STATES = ("running", "paused", "restarting")
# task_state_store key (Airflow >= 3.3): which container this task instance runs, and how far the
# try got with it. It tells a crashed try (reattach) from one a user ended (start afresh).
STATE_KEY = "remote_docker_container"
_GO_MODE_DIR = 1 << 31  # os.ModeDir in the archive stat header
_TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout, ConnectionError, OSError)


def _choice(value: Any, allowed: Sequence[str], name: str) -> str:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not valid; use one of {', '.join(map(repr, allowed))}")
    return value


class RemoteDockerOperator(BaseOperator):
    """Run a command in a container on a (remote) Docker daemon, deferring while it runs.

    Accepts the parameters of the official ``DockerOperator`` (switch by changing the import)
    plus:

    :param remote_docker_conn_id: connection of type ``remote_docker`` for the daemon.
    :param docker_conn_id: an Airflow ``docker`` connection with registry credentials (as upstream).
    :param pull: ``"missing"`` (default), ``"always"`` or ``"never"``; ``force_pull=True`` means ``"always"``.
    :param auto_remove: ``"never"`` (default), ``"success"`` (only when the task succeeded) or ``"force"``.
    :param files: container path -> text, bytes or a local ``pathlib.Path`` (file or folder),
        copied in before the container starts: inputs without bind mounts.
    :param output_format: ``"pickle"`` (default, as upstream) or ``"json"`` for ``retrieve_output``.
    :param max_output_bytes: refuse a ``retrieve_output_path`` file larger than this.
    :param deferrable: free the worker slot while the container runs (default True).
    :param poll_interval: seconds between state checks when the log can't be followed.
    :param stop_timeout: seconds between SIGTERM and SIGKILL when the task is stopped.
    :param min_deferred_seconds: a deferred task resumes no sooner than this after deferring. It only
        delays containers that end within seconds of starting, and works around an Airflow 3.3 race
        that can fail such tasks (apache/airflow#72716); 0 turns it off. Default: the environment
        variable ``REMOTE_DOCKER_MIN_DEFERRED_SECONDS``, else 10.
    """

    template_fields: Sequence[str] = ("image", "command", "environment", "env_file", "container_name", "mounts")
    template_fields_renderers = {"env_file": "yaml", "command": "bash", "environment": "json"}
    template_ext: Sequence[str] = (".sh", ".bash", ".env")
    ui_color = "#d9ecfb"

    def __init__(
        self,
        *,
        image: str,
        command: str | list[str] | None = None,
        entrypoint: str | list[str] | None = None,
        environment: dict[str, Any] | None = None,
        private_environment: dict[str, Any] | None = None,
        env_file: str | None = None,
        container_name: str | None = None,
        working_dir: str | None = None,
        user: str | int | None = None,
        hostname: str | None = None,
        mounts: list[Any] | None = None,
        network_mode: str | None = None,
        dns: list[str] | None = None,
        dns_search: list[str] | None = None,
        extra_hosts: dict[str, str] | None = None,
        port_bindings: dict | None = None,
        cpus: float | None = None,
        mem_limit: int | str | None = None,
        shm_size: int | str | None = None,
        privileged: bool = False,
        cap_add: Iterable[str] | None = None,
        device_requests: list[Any] | None = None,
        ulimits: list[Any] | None = None,
        labels: dict[str, str] | list[str] | None = None,
        ipc_mode: str | None = None,
        tty: bool = False,
        log_opts_max_size: str | None = None,
        log_opts_max_file: str | None = None,
        api_version: str | None = None,
        auto_remove: Literal["never", "success", "force"] = "never",
        skip_on_exit_code: int | Container[int] | None = None,
        xcom_all: bool = False,
        retrieve_output: bool = False,
        retrieve_output_path: str | None = None,
        output_format: Literal["pickle", "json"] = "pickle",
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        files: Mapping[str, str | bytes | Path] | None = None,
        remote_docker_conn_id: str | None = DEFAULT_CONN_ID,
        docker_conn_id: str | None = None,
        docker_url: str | None = None,
        tls_ca_cert: str | None = None,
        tls_client_cert: str | None = None,
        tls_client_key: str | None = None,
        tls_verify: bool | None = None,
        tls_hostname: str | bool | None = None,
        timeout: float | None = None,
        pull: Literal["missing", "always", "never"] = "missing",
        force_pull: bool = False,
        deferrable: bool = True,
        poll_interval: float = 2.0,
        stop_timeout: int = 10,
        min_deferred_seconds: float | None = None,
        # Accepted for compatibility with the official DockerOperator; they have no effect here.
        mount_tmp_dir: bool = False,
        tmp_dir: str | None = None,
        host_tmp_dir: str | None = None,
        tls_ssl_version: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.image = image
        self.command = command
        self.entrypoint = entrypoint
        self.environment = dict(environment or {})
        self._private_environment = dict(private_environment or {})
        self.env_file = env_file
        self.container_name = container_name
        self.working_dir = working_dir
        self.user = user
        self.hostname = hostname
        self.mounts = list(mounts or [])
        self.network_mode = network_mode
        self.dns = dns
        self.dns_search = dns_search
        self.extra_hosts = extra_hosts
        self.port_bindings = port_bindings
        self.cpus = cpus
        self.mem_limit = mem_limit
        self.shm_size = shm_size
        self.privileged = privileged
        self.cap_add = cap_add
        self.device_requests = device_requests
        self.ulimits = ulimits
        self.labels = labels
        self.ipc_mode = ipc_mode
        self.tty = tty
        self.log_opts_max_size = log_opts_max_size
        self.log_opts_max_file = log_opts_max_file
        self.auto_remove = _choice(auto_remove, AUTO_REMOVE_MODES, "auto_remove")
        if skip_on_exit_code is None:
            self.skip_on_exit_code: Container[int] = ()
        elif isinstance(skip_on_exit_code, int):
            self.skip_on_exit_code = (skip_on_exit_code,)
        else:
            self.skip_on_exit_code = skip_on_exit_code
        self.xcom_all = xcom_all
        self.retrieve_output = retrieve_output
        self.retrieve_output_path = retrieve_output_path
        if retrieve_output and not retrieve_output_path:
            raise ValueError("retrieve_output=True needs retrieve_output_path, the file in the container to read")
        self.output_format = _choice(output_format, OUTPUT_FORMATS, "output_format")
        if max_output_bytes <= 0:
            raise ValueError(f"max_output_bytes={max_output_bytes} must be positive")
        self.max_output_bytes = max_output_bytes
        self.files = dict(files or {})
        self.folders: dict[str, int] = {}  # container folders to create first (path -> mode)
        self.remote_docker_conn_id = remote_docker_conn_id
        self.docker_conn_id = docker_conn_id
        self.docker_url = docker_url
        self.tls_ca_cert = tls_ca_cert
        self.tls_client_cert = tls_client_cert
        self.tls_client_key = tls_client_key
        self.tls_verify = tls_verify
        self.tls_hostname = tls_hostname
        self.api_version = api_version
        self.timeout = timeout
        self.pull = "always" if force_pull else _choice(pull, PULL_POLICIES, "pull")
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.stop_timeout = stop_timeout
        if min_deferred_seconds is None:
            min_deferred_seconds = float(os.environ.get("REMOTE_DOCKER_MIN_DEFERRED_SECONDS", DEFAULT_MIN_DEFERRED_SECONDS))
        self.min_deferred_seconds = min_deferred_seconds
        self.mount_tmp_dir = mount_tmp_dir
        if mount_tmp_dir or host_tmp_dir or tmp_dir or tls_ssl_version:
            warnings.warn(
                "mount_tmp_dir, tmp_dir, host_tmp_dir and tls_ssl_version are ignored: a remote daemon can't see "
                "the worker's folders (use files= or a named volume), and TLS is always 1.2 or newer",
                UserWarning, stacklevel=2,
            )
        self.container_id: str | None = None

    # ------------------------------------------------------------------ connection

    @property
    def hook_params(self) -> dict[str, Any]:
        """Overrides of the daemon connection, passed to the trigger as they are."""
        return {name: getattr(self, name) for name in HOOK_OVERRIDES if getattr(self, name) is not None}

    @cached_property
    def hook(self) -> RemoteDockerHook:
        return RemoteDockerHook(self.remote_docker_conn_id, **self.hook_params)

    @property
    def api(self) -> docker.APIClient:
        return self.hook.client.api

    def _daemon_call(self, doing: str, call, *args, **kwargs):
        """Run a docker-py call; transport failures become one retryable line naming the daemon."""
        try:
            return call(*args, **kwargs)
        except docker.errors.DockerException:
            raise  # the daemon answered; callers turn API errors into their own lines
        except _TRANSPORT_ERRORS as err:
            raise DaemonError(explain(err, self.hook.config, doing)) from None

    # ------------------------------------------------------------------ execute

    def container_spec(self) -> ContainerSpec:
        return ContainerSpec(
            image=self.image, command=self.command, entrypoint=self.entrypoint, environment=self.environment,
            private_environment=self._private_environment, env_file=self.env_file, working_dir=self.working_dir,
            user=self.user, hostname=self.hostname, mounts=self.mounts, network_mode=self.network_mode, dns=self.dns,
            dns_search=self.dns_search, extra_hosts=self.extra_hosts, port_bindings=self.port_bindings, cpus=self.cpus,
            mem_limit=self.mem_limit, shm_size=self.shm_size, privileged=self.privileged, cap_add=self.cap_add,
            device_requests=self.device_requests, ulimits=self.ulimits, labels=self.labels, ipc_mode=self.ipc_mode,
            tty=self.tty, log_opts_max_size=self.log_opts_max_size, log_opts_max_file=self.log_opts_max_file,
        )

    def execute(self, context: Context) -> Any:
        self._mask_private_environment()
        if self.deferrable and self.tls_client_key and "-----BEGIN" in self.tls_client_key:
            # Airflow 3.3 stores trigger kwargs (where overrides travel) unencrypted in its database
            raise AirflowFailException(
                "tls_client_key is PEM text: a deferred task would store it in clear in Airflow's trigger table; "
                "put the key in the remote_docker connection (remote_docker_conn_id) or pass a file path"
            )
        ti = context["ti"]
        labels = task_labels(ti.dag_id, ti.task_id, ti.run_id, ti.map_index, ti.try_number)
        try:
            body = self.container_spec().create_body(labels)
            self.container_id = self._reattach(labels, self._recall(context)) or self._start(body)
        except (SpecError, DaemonConfigError, OutputError) as err:
            raise AirflowFailException(str(err)) from None
        self._remember(context, "started")
        trigger = ContainerTrigger(
            container_id=self.container_id,
            remote_docker_conn_id=self.remote_docker_conn_id,
            hook_params=self.hook_params,
            deadline=self._deadline(ti),
            tty=self.tty,
            stop_timeout=self.stop_timeout,
            poll_interval=self.poll_interval,
            secret_env=sorted(self._private_environment),
        )
        if self.deferrable:
            self.log.info("Deferring while container %s runs; its output follows in this log.", self.container_id[:12])
            if self.min_deferred_seconds:
                trigger.not_before = time.time() + self.min_deferred_seconds
            self._remember(context, "deferred")
            ti.xcom_push(CHECKPOINT_KEY, {"container_id": self.container_id, "by": "worker"})
            self.defer(trigger=trigger, method_name="execute_complete")
        return self.execute_complete(context, self._watch_here(trigger))

    def _mask_private_environment(self) -> None:
        from airflow.sdk.log import mask_secret

        for key, value in self._private_environment.items():
            mask_secret(str(value), key)

    def _deadline(self, ti: Any) -> float | None:
        """``execution_timeout`` as an absolute time: Airflow does not enforce it while deferred."""
        if not self.execution_timeout:
            return None
        started = getattr(ti, "start_date", None) or dt.datetime.now(dt.timezone.utc)
        return (started + self.execution_timeout).timestamp()

    def _watch_here(self, trigger: ContainerTrigger) -> dict:
        """deferrable=False: run the trigger's own code in the worker; stop the container if interrupted."""

        async def first_event() -> dict:
            async for event in trigger.run():
                return event.payload
            raise AirflowException("the container watcher ended without an event")

        try:
            return asyncio.run(first_event())
        except BaseException:
            self._stop_container()
            raise

    def _remember(self, context: Context, phase: str) -> None:
        store = context.get("task_state_store")
        if store is None or not self.container_id:
            return
        try:
            store.set(STATE_KEY, {"container_id": self.container_id, "phase": phase})
        except Exception as err:  # the store is an aid to recovery, never a reason to fail the task
            self.log.warning("Could not record the container in task_state_store: %s", err)

    def _recall(self, context: Context) -> dict | None:
        store = context.get("task_state_store")
        if store is None:
            return None
        try:
            record = store.get(STATE_KEY)
        except Exception as err:
            self.log.warning("Could not read task_state_store: %s", err)
            return None
        return record if isinstance(record, dict) else None

    def _reattach(self, labels: dict[str, str], record: dict | None) -> str | None:
        """A running container of an earlier try of this task instance, so it is not started twice.

        Reattach when that try died before deferring (a worker crash). A container whose try had
        deferred is still running only because a user ended the try (clear) and its trigger's
        on_kill is stopping it: stop it here too and start afresh.
        """
        same_task = [f"{k}={v}" for k, v in labels.items() if not k.endswith("try_number")]
        found = self._daemon_call("listing containers on", self.api.containers, all=True, filters={"label": same_task})
        for leftover in (c for c in found if c["State"] == "created"):
            # created but never started: the earlier try died in between; it never ran
            self.log.info("Removing container %s left unstarted by an earlier try", leftover["Id"][:12])
            self._remove(leftover["Id"])
        running = sorted((c for c in found if c["State"] in _RUNNING_STATES), key=lambda c: c["Created"])
        if record and record.get("phase") == "deferred":
            for ended in (c for c in running if c["Id"] == record.get("container_id")):
                self.log.info("Container %s belongs to a try a user ended while it was deferred; stopping it and "
                              "starting a fresh one", ended["Id"][:12])
                self._stop(ended["Id"])
            running = [c for c in running if c["Id"] != record.get("container_id")]
        if not running:
            return None
        chosen = running[-1]
        try_number = chosen["Labels"].get(f"{LABEL_PREFIX}try_number", "?")
        self.log.info("Reattaching to container %s, started by try %s and still %s", chosen["Id"][:12], try_number, chosen["State"])
        return chosen["Id"]

    def _start(self, body: dict) -> str:
        self._ensure_image()
        container_id = self._create(body)
        try:
            if self.files or self.folders:
                archive = files_archive(self.files, self.folders)
                self._daemon_call("copying files to", self.api.put_archive, container_id, "/", archive)
                self.log.info("Copied %d file(s) into the container (%s bytes)", len(self.files), f"{len(archive):,}")
            self._daemon_call("starting a container on", self.api.start, container_id)
        except docker.errors.APIError as err:
            self._remove(container_id)
            raise AirflowFailException(self._api_error_line(err, "starting the container")) from None
        except BaseException:
            self._remove(container_id)
            raise
        self.log.info("Started container %s from %s on %s", container_id[:12], self.image, self.hook.config.url)
        return container_id

    def _create(self, body: dict) -> str:
        for attempt in (1, 2):
            try:
                created = self._daemon_call("creating a container on", self.api.create_container_from_config,
                                            body, name=self.container_name)
                for warning in created.get("Warnings") or []:
                    self.log.warning("Docker: %s", warning)
                return created["Id"]
            except docker.errors.APIError as err:
                if err.status_code == 409 and attempt == 1 and self._free_name_from_earlier_try(body["Labels"]):
                    continue
                raise AirflowFailException(self._api_error_line(err, "creating the container")) from None
        raise AssertionError("unreachable")

    def _free_name_from_earlier_try(self, labels: dict[str, str]) -> bool:
        """``container_name`` is taken: free it if an earlier, finished try of this task holds it."""
        try:
            holder = self.api.inspect_container(self.container_name)
        except docker.errors.NotFound:
            return True
        theirs = holder["Config"].get("Labels") or {}
        same_task = all(theirs.get(k) == v for k, v in labels.items() if k.startswith(LABEL_PREFIX) and not k.endswith("try_number"))
        if same_task and not holder["State"]["Running"]:
            self.log.info("Removing finished container %s of an earlier try to reuse its name", holder["Id"][:12])
            self._remove(holder["Id"])
            return True
        return False

    def _api_error_line(self, err: docker.errors.APIError, doing: str) -> str:
        message = (err.explanation or str(err)).strip()
        url = self.hook.config.url
        if err.status_code == 409 and self.container_name:
            return (f"{doing} on {url}: the name {self.container_name!r} is taken by a container that is not "
                    "a finished try of this task; choose another container_name or remove that container")
        if "bind source path does not exist" in message or ("no such file or directory" in message.lower() and "mount" in message.lower()):
            return (f"{doing} on {url}: a mount source does not exist on the daemon's host ({message}); on a remote "
                    "daemon a bind source is a path on that host: use a named volume or files= instead")
        if "executable file not found" in message:
            return f"{doing} on {url}: {self._missing_executable_line(message)}"
        if "memory" in message.lower() and err.status_code == 400:
            return f"{doing} on {url}: {message}; adjust mem_limit"
        return f"{doing} on {url}: {message}"

    def _missing_executable_line(self, message: str) -> str:
        return f"the image {self.image} has no such executable ({message}); check command and entrypoint"

    # ------------------------------------------------------------------ images

    def _ensure_image(self) -> None:
        url = self.hook.config.url
        if self.pull != "always":
            try:
                self._daemon_call("checking the image on", self.api.inspect_image, self.image)
                return
            except docker.errors.ImageNotFound:
                if self.pull == "never":
                    raise AirflowFailException(
                        f"image {self.image} is not on the daemon at {url} and pull='never'; "
                        "load or pull it there first, or use pull='missing'"
                    ) from None
        self._pull()

    def _registry_auth(self) -> dict | None:
        if not self.docker_conn_id:
            return None
        connection = BaseHook.get_connection(self.docker_conn_id)
        if not connection.login:
            raise AirflowFailException(f"docker_conn_id {self.docker_conn_id!r} has no login; set the registry user and password")
        registry = connection.host or ""
        if connection.port and ":" not in registry.split("/")[-1]:
            registry = f"{registry}:{connection.port}"
        return {"username": connection.login, "password": connection.password or "", "serveraddress": registry}

    def _pull(self) -> None:
        from docker.auth import resolve_repository_name
        from docker.utils import parse_repository_tag

        repository, tag = parse_repository_tag(self.image)
        registry, _ = resolve_repository_name(repository)
        auth = self._registry_auth()
        self.log.info("Pulling %s from %s", self.image, registry)
        layer_states: dict[str, str] = {}
        try:
            stream = self._daemon_call("pulling on", self.api.pull, repository, tag=tag or "latest", stream=True,
                                       decode=True, auth_config=auth)
            for item in stream:
                if "error" in item:  # errors inside a pull stream are not raised by the client
                    raise docker.errors.APIError(item["error"])
                layer, status = item.get("id"), item.get("status", "")
                if layer and layer_states.get(layer) != status and status not in ("Downloading", "Extracting"):
                    layer_states[layer] = status
                    self.log.info("%s: %s", layer, status)
                elif not layer and status:
                    self.log.info("%s", status)
        except docker.errors.APIError as err:
            message = (err.explanation or str(err)).strip()
            hint = "check docker_conn_id's login and password" if auth else "check the image name, or set docker_conn_id for a private registry"
            raise AirflowException(f"pulling {self.image} from {registry} failed: {message[:300]}; {hint}") from None
        except docker.errors.DockerException:
            raise
        except _TRANSPORT_ERRORS as err:
            raise DaemonError(explain(err, self.hook.config, "pulling on")) from None

    # ------------------------------------------------------------------ completion

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Back on a worker: judge the container by a fresh inspect, collect the result, clean up."""
        self._mask_private_environment()
        container_id = self.container_id = event["container_id"]
        if self.deferrable:  # resumed from a deferral: the trigger's log checkpoint is done with
            self._drop_log_checkpoint(context)
        succeeded = False
        try:
            status = event["status"]
            if status == "error":
                self._remember(context, "lost")  # the container may live on: a retry reattaches to it
                raise AirflowException(event["message"])
            if status == "gone":
                raise AirflowException(event["message"])
            try:
                info = self._daemon_call("inspecting the container on", self.api.inspect_container, container_id)
            except docker.errors.NotFound:
                raise AirflowException(f"container {container_id[:12]} was removed by someone else before its result was read") from None
            state = info["State"]
            if status == "timeout":
                if state.get("Running"):
                    self._stop_container(grace=0)
                raise AirflowTaskTimeout(
                    f"execution_timeout ({self.execution_timeout}) reached; container {container_id[:12]} was killed"
                    f"{self._tail_text(event)}"
                )
            exit_code = state.get("ExitCode")
            if exit_code in self.skip_on_exit_code:
                raise AirflowSkipException(f"container {container_id[:12]} exited with code {exit_code}, listed in skip_on_exit_code")
            if exit_code != 0 and event.get("ended_while_unreachable"):
                raise AirflowException(self._daemon_restart_line(container_id, exit_code, event["ended_while_unreachable"]))
            if exit_code != 0:
                cause = ""
                if state.get("OOMKilled"):
                    cause = ", OOMKilled: it ran out of memory (raise mem_limit)"
                elif event.get("kill_signal"):
                    cause = f", after a kill (signal {event['kill_signal']}) from outside the task: docker stop/kill on the daemon"
                raise AirflowException(
                    f"container {container_id[:12]} ({self.image}) exited with code {exit_code}{cause}{self._tail_text(event)}"
                )
            result = self._result(container_id, event)
            succeeded = True
            return result
        finally:
            self._clean_up(container_id, succeeded)

    def _daemon_restart_line(self, container_id: str, exit_code: int, outage: list[float]) -> str:
        began, ended = (dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%H:%M:%S") if t else "?" for t in outage)
        try:
            live_restore = self._daemon_call("asking", self.api.info).get("LiveRestoreEnabled")
        except (docker.errors.DockerException, DaemonError):
            live_restore = None
        if live_restore is True:
            why = "the daemon was restarted or stopped, and its containers with it; a retry starts a fresh container"
        else:
            why = ("live-restore is off there, so a daemon restart stops every container" if live_restore is False
                   else "the daemon was restarted")
            why += ("; a retry starts a fresh container (enable live-restore in the daemon's config to keep "
                    "containers running across restarts)")
        return (f"container {container_id[:12]} ({self.image}) stopped with code {exit_code} while the daemon at "
                f"{self.hook.config.url} was unreachable ({began}-{ended} UTC): {why}")

    def _drop_log_checkpoint(self, context: Context) -> None:
        """The trigger's log checkpoint (an XCom of this task instance) has served its purpose."""
        from airflow.sdk.execution_time.xcom import XCom

        ti = context["ti"]
        try:
            XCom.delete(key=CHECKPOINT_KEY, dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id, map_index=ti.map_index)
        except Exception as err:  # it only costs a stray XCom
            self.log.warning("Could not delete the log checkpoint XCom %s: %s", CHECKPOINT_KEY, err)

    @staticmethod
    def _tail_text(event: dict) -> str:
        tail = event.get("tail") or []
        if not tail:
            return ""
        return "; last lines of output:\n" + "\n".join(f"  [{stream}] {line}" for stream, line in tail)

    def _result(self, container_id: str, event: dict) -> Any:
        if self.retrieve_output:
            return self._read_output_file(container_id)
        if not self.do_xcom_push:
            return None
        if self.xcom_all or not event.get("last_line_in_event", False):
            chunks = self._daemon_call("reading the log on", self.api.logs, container_id, stdout=True, stderr=False, stream=True)
            lines = split_lines(chunks)
            return lines if self.xcom_all else (lines[-1] if lines else None)
        return event.get("last_stdout_line")

    def _read_output_file(self, container_id: str) -> Any:
        path = self.retrieve_output_path
        try:
            chunks, stat = self._daemon_call("reading the output file on", self.api.get_archive, container_id, path)
        except docker.errors.NotFound:
            self.log.warning("retrieve_output_path %s does not exist in the container; the result is None", path)
            return None
        try:
            if stat.get("mode", 0) & _GO_MODE_DIR:
                raise OutputError(f"retrieve_output_path {path} is a folder; point it at a file")
            if stat.get("size", 0) == 0:
                self.log.warning("retrieve_output_path %s is empty; the result is None", path)
                return None
            data = extract_single_file(chunks, path, self.max_output_bytes)
            return decode(data, self.output_format, path)
        except OutputError as err:
            raise AirflowFailException(str(err)) from None

    def _clean_up(self, container_id: str, succeeded: bool) -> None:
        if self.auto_remove == "force" or (self.auto_remove == "success" and succeeded):
            self._remove(container_id)

    def _remove(self, container_id: str) -> None:
        try:
            self.api.remove_container(container_id, v=True, force=True)
        except docker.errors.NotFound:
            pass
        except (docker.errors.APIError, *_TRANSPORT_ERRORS) as err:
            self.log.warning("Could not remove container %s: %s", container_id[:12], err)

    def _stop(self, container_id: str, grace: int | None = None) -> bool:
        try:
            self.api.stop(container_id, timeout=self.stop_timeout if grace is None else grace)
            return True
        except docker.errors.NotFound:
            return False
        except (docker.errors.APIError, *_TRANSPORT_ERRORS) as err:
            self.log.warning("Could not stop container %s: %s", container_id[:12], err)
            return False

    def _stop_container(self, grace: int | None = None) -> None:
        if self.container_id and self._stop(self.container_id, grace) and self.auto_remove == "force":
            self._remove(self.container_id)

    def on_kill(self) -> None:
        """The task was killed while its worker held it (deferrable=False, or before deferring)."""
        self._stop_container()

"""The decisions of a task's three paths, each a pure function of what it is given: no daemon, no Airflow run.

The behaviour they drive is tested end to end elsewhere (test_operator_dag, test_services, test_trust, test_pool);
here each choice is pinned case by case: how an end is judged, which tasks may end in the triggerer, what a new
try reattaches to, how a failure to reach a daemon is explained, and a start with no daemon answering.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import replace

import pytest

from remote_docker.compat import AirflowException, AirflowFailException, AirflowSkipException, AirflowTaskTimeout
from remote_docker.daemon.connection import DaemonConfig, TLSMaterial
from remote_docker.daemon.errors import explain
from remote_docker.lifecycle.finish import ContainerFailedException, ContainerFailedSkipException, Finish
from remote_docker.lifecycle.payloads import ContainerRecord, Ending, LogSummary, WatchEnd
from remote_docker.lifecycle.spec import TRY_LABEL, task_labels
from remote_docker.lifecycle.start import reattach_choice
from remote_docker.operators import RemoteDockerOperator

# ---------------------------------------------------------------------- judging an end (finish.Finish.verdict)

FINISH = Finish(image="busybox", skip_on_exit_code=(3,), execution_timeout="0:00:05")
TAIL = LogSummary(tail=[["stdout", "working"], ["stderr", "boom"]])


def inspected(exit_code: int, oom: bool = False) -> dict:
    return {"Id": "c" * 64, "State": {"Running": False, "ExitCode": exit_code, "OOMKilled": oom}}


def exited(exit_code: int, **details) -> WatchEnd:
    return WatchEnd("exited", "c" * 64, log=TAIL, exit_code=exit_code, **details)


def test_a_zero_exit_succeeds() -> None:
    assert FINISH.verdict(exited(0), inspected(0)) is None


@pytest.mark.parametrize(("end", "info", "kind", "words"), [
    (WatchEnd("error", None, message="no daemon answered", retryable=True), None, AirflowException, "no daemon answered"),
    (WatchEnd("error", None, message="bad spec", retryable=False), None, AirflowFailException, "bad spec"),
    (WatchEnd("gone", "c" * 64, message="removed by someone else"), None, AirflowException, "removed by someone else"),
    (exited(1), None, AirflowException, "was removed by someone else before its result was read"),
    (WatchEnd("timeout", "c" * 64, log=TAIL), inspected(137), AirflowTaskTimeout, "execution_timeout (0:00:05) reached"),
    (exited(3), inspected(3), ContainerFailedSkipException, "listed in skip_on_exit_code"),
    (exited(2), inspected(2), ContainerFailedException, "exited with code 2; last lines of output:\n  [stdout] working"),
    (exited(137), inspected(137, oom=True), ContainerFailedException, "OOMKilled: it ran out of memory (raise mem_limit)"),
    (exited(143, kill_signal="15"), inspected(143), ContainerFailedException, "after a kill (15) from outside the task"),
    (exited(137), inspected(137), ContainerFailedException, "killed by SIGKILL"),
])
def test_how_an_end_is_judged(end: WatchEnd, info: dict | None, kind: type, words: str) -> None:
    verdict = FINISH.verdict(end, info)
    assert type(verdict) is kind and words in str(verdict), verdict


def test_failures_carry_the_last_lines_and_skip_as_airflow_skips() -> None:
    failed = FINISH.verdict(exited(2), inspected(2))
    assert failed.logs == ["working", "boom"]
    assert isinstance(FINISH.verdict(exited(3), inspected(3)), AirflowSkipException)


def test_a_failure_during_a_daemon_outage_says_what_the_daemon_said() -> None:
    end = exited(137, ended_while_unreachable=[1.0, 2.0])
    verdict = FINISH.verdict(end, inspected(137), restart_line="the daemon was restarted")
    assert type(verdict) is AirflowException and str(verdict) == "the daemon was restarted"
    assert FINISH.failing(137) and not FINISH.failing(3) and not FINISH.failing(0), "a skip code is no failure to explain"


# ---------------------------------------------------------------------- ending in the triggerer (TaskPlan.ending)


def ending_of(**kwargs) -> Ending | None:
    ending = RemoteDockerOperator(task_id="t", image="busybox", **kwargs).plan().ending
    return ending and replace(ending, fail_here=False, image="")  # failures: test_which_failures_end_in_the_triggerer


@pytest.mark.parametrize(("kwargs", "ending"), [
    ({}, Ending("last", False, False, skip_here=True)),
    ({"xcom_all": True, "auto_remove": "success", "tty": True}, Ending("all", True, True, skip_here=True)),
    ({"do_xcom_push": False, "auto_remove": "force"}, Ending(None, True, False, skip_here=True, remove_always=True)),
    ({"retrieve_output": True, "retrieve_output_path": "/o"}, None),  # a file to decode: a worker only
    ({"skip_on_exit_code": 0}, None),  # exit 0 skips: a worker raises the skip
    ({"skip_on_exit_code": [7, 3], "auto_remove": "force"}, Ending("last", True, False, [3, 7], True, True)),
    ({"skip_on_exit_code": 7, "on_skipped_callback": print}, Ending("last", False, False, [7], False)),  # a worker runs it
    ({"multiple_outputs": True}, None),  # several XComs from a dict: a worker pushes them
])
def test_which_tasks_may_end_in_the_triggerer(kwargs: dict, ending: Ending | None) -> None:
    assert ending_of(**kwargs) == ending


@pytest.mark.parametrize(("kwargs", "fails_here"), [
    ({}, True),
    ({"retries": 3}, True),  # Airflow routes the retry (compat.FAIL_IN_TRIGGERER)
    ({"on_failure_callback": print}, False),  # the callback expects the exception a worker raises
    ({"on_retry_callback": print}, False),
    ({"email": "ops@example.com"}, False),
])
def test_which_failures_end_in_the_triggerer(kwargs: dict, fails_here: bool) -> None:
    from remote_docker import compat

    ending = RemoteDockerOperator(task_id="t", image="busybox", **kwargs).plan().ending
    assert ending.fail_here == (fails_here and compat.FAIL_IN_TRIGGERER) and ending.image == "busybox"


def test_a_subclass_that_explains_its_failures_fails_on_a_worker() -> None:
    class Explains(RemoteDockerOperator):
        def explain_failure(self, err, end):
            return err

    assert not Explains(task_id="t", image="busybox").plan().ending.fail_here


def test_a_subclass_with_its_own_completion_resumes_on_a_worker() -> None:
    class Mine(RemoteDockerOperator):
        def execute_complete(self, context, event):
            return super().execute_complete(context, event)

    assert Mine(task_id="t", image="busybox").plan().ending is None
    assert RemoteDockerOperator(task_id="t", image="busybox").plan().ending is not None


# ---------------------------------------------------------------------- what a new try reattaches to (start.reattach_choice)


def container(cid: str, state: str, try_number: int) -> dict:
    return {"Id": cid, "State": state, "Labels": {TRY_LABEL: str(try_number)}}


def test_a_new_try_reattaches_to_the_newest_running_earlier_try() -> None:
    earlier = [container("a", "exited", 1), container("b", "running", 2), container("c", "running", 3)]
    choice = reattach_choice(earlier, None)
    assert choice.chosen["Id"] == "c" and choice.remove == [] and choice.stop == []


def test_the_recorded_container_wins_and_unstarted_ones_are_removed() -> None:
    earlier = [container("a", "created", 1), container("b", "running", 2), container("c", "running", 3)]
    choice = reattach_choice(earlier, ContainerRecord("b", "started", "d0"))
    assert choice.chosen["Id"] == "b" and choice.remove == ["a"]


def test_a_try_a_user_ended_while_deferred_is_stopped_not_adopted() -> None:
    earlier = [container("b", "running", 2)]
    choice = reattach_choice(earlier, ContainerRecord("b", "deferred", "d0"))
    assert choice.stop == ["b"] and choice.chosen is None
    assert reattach_choice([], None).chosen is None


# ---------------------------------------------------------------------- a failure to reach a daemon, in one line (errors.explain)

TLS_DAEMON = DaemonConfig(url="https://docker.example:2376", source="connection 'd'",
                          tls=TLSMaterial(ca_pem=b"ca", cert_pem=b"cert", key_pem=b"key"), timeout=7)


def verify_error(message: str) -> ssl.SSLCertVerificationError:
    err = ssl.SSLCertVerificationError(1, message)
    err.verify_message = message
    return err


@pytest.mark.parametrize(("exc", "words"), [
    (verify_error("Hostname mismatch, certificate is not valid for 'docker.example'"),
     "the daemon's server certificate does not name 'docker.example'; connect by a name it carries"),
    (verify_error("certificate has expired"), "has expired; re-issue it (remote-docker generate-certs --force)"),
    (verify_error("unable to get local issuer certificate"), "is not signed by the configured ca_cert"),
    (ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca"), "the daemon rejected our client certificate"),
    (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "the daemon answered in plain HTTP, not TLS"),
    (ConnectionRefusedError(111, "Connection refused"), "connection refused; is dockerd listening there"),
    (socket.gaierror(-2, "Name or service not known"), "cannot resolve host 'docker.example'"),
    (asyncio.TimeoutError(), "no answer within 7s; is the daemon up and reachable?"),
])
def test_a_failure_to_reach_a_daemon_is_one_line_naming_it_and_the_fix(exc: BaseException, words: str) -> None:
    line = explain(exc, TLS_DAEMON, "connecting to")
    assert line.startswith("connecting to https://docker.example:2376: ") and words in line, line
    assert "\n" not in line


def test_a_daemon_that_wants_a_client_certificate_we_lack_says_so() -> None:
    no_client_cert = DaemonConfig(url="https://d:2376", source="connection 'd'", tls=TLSMaterial(ca_pem=b"ca", cert_pem=None, key_pem=None))
    line = explain(ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] certificate required"), no_client_cert)
    assert "requires a client certificate and none is configured; set client_cert and client_private_key" in line


# ---------------------------------------------------------------------- the start, when no daemon answers (real sockets, none listening)


def test_a_start_with_no_daemon_answering_names_each_one() -> None:
    from remote_docker.daemon.ownership import Deployment
    from remote_docker.lifecycle.launch import Launch
    from remote_docker.lifecycle.start import start
    from remote_docker.pool.members import build_pool
    from remote_docker.pool.placement import PlacementError, forget

    def closed_port() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    daemons = [{"url": f"http://127.0.0.1:{closed_port()}", "name": name} for name in ("a", "b")]
    pool = build_pool(host="", port=None, extras={"daemons": daemons, "tls": False}, source="connection 'p'")
    launch = Launch(image="busybox", body={"Image": "busybox"}, deployment=Deployment(b"test"))
    identity = task_labels("d", "t", "r", -1, 1)

    async def starting() -> None:
        from remote_docker.hook import RemoteDockerHook

        await start(pool, launch, identity, RemoteDockerHook(None).engine, None)

    forget()
    with pytest.raises(PlacementError, match=r"^no daemon of connection 'p' is reachable \(a \(.*connection refused.*; b "):
        asyncio.run(starting())

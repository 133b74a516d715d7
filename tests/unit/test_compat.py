"""Every version gate in remote_docker.compat, checked against the Airflow this suite runs with.

scripts/matrix runs this file under each supported Airflow minor, so each gate is tested on the
side of it that every release takes.
"""

from __future__ import annotations

import importlib
import inspect

import airflow
import pytest
from packaging.version import Version

from remote_docker import compat

AIRFLOW = Version(Version(airflow.__version__).base_version)
MINOR = (AIRFLOW.major, AIRFLOW.minor)


def test_this_airflow_is_one_the_package_supports() -> None:
    assert MINOR in {(3, 1), (3, 2), (3, 3)}, f"Airflow {AIRFLOW} is outside the support table (README.md)"


def test_the_task_exceptions_are_the_ones_airflow_raises_and_catches() -> None:
    home = "airflow.sdk.exceptions" if MINOR >= (3, 2) else "airflow.exceptions"
    module = importlib.import_module(home)
    for name in compat.__all__:
        assert getattr(compat, name) is getattr(module, name), name
    # Airflow's task runner treats these specially (skip, no retry, timeout): they must be its own classes
    from airflow.sdk.execution_time import task_runner

    source = inspect.getsource(task_runner)
    assert "AirflowSkipException" in source and "AirflowFailException" in source


def test_start_in_the_triggerer_follows_dagrun_scheduling() -> None:
    """3.1-3.2 comment out the branch of DagRun.schedule_tis that defers a task as it is scheduled
    (apache/airflow#66307); 3.3 calls ti.defer_task there (#55068)."""
    from airflow.models import dagrun

    source = inspect.getsource(dagrun.DagRun.schedule_tis)
    active = [line for line in source.splitlines() if "defer_task(" in line and not line.strip().startswith("#")]
    assert bool(active) == compat.START_IN_TRIGGERER


def test_trigger_xcoms_and_masking_need_the_async_sdk_calls() -> None:
    from airflow.sdk import log as sdk_log
    from airflow.sdk.execution_time.xcom import XCom

    has_async = all(hasattr(XCom, name) for name in ("aset", "aget_one"))
    assert has_async == compat.TRIGGER_XCOMS
    assert has_async == compat.END_IN_TRIGGERER  # the ending writes the return value with XCom.aset
    assert hasattr(sdk_log, "amask_secret") == compat.airflow_at_least("3.3.0")


def test_a_failure_ends_in_the_triggerer_only_where_airflow_routes_its_retries() -> None:
    """apache/airflow#69821 (3.3.1): the handler of a trigger's end event sends a FAILED one to UP_FOR_RETRY when the
    task may retry; before, it failed for good."""
    if not compat.END_IN_TRIGGERER:
        assert not compat.FAIL_IN_TRIGGERER
        return
    from airflow.models import trigger

    assert ("is_eligible_to_retry" in inspect.getsource(trigger)) == compat.FAIL_IN_TRIGGERER


def test_on_kill_while_deferred_follows_the_base_trigger() -> None:
    from airflow.triggers.base import BaseTrigger

    assert hasattr(BaseTrigger, "on_kill") == compat.ON_KILL_WHILE_DEFERRED


def test_on_kill_on_handover_holds_while_the_triggerer_cancels_every_dropped_trigger_as_a_user_action() -> None:
    """apache/airflow#73454: until it lands, update_triggers sends every trigger that left this triggerer's
    assignment (a user's action or a hand-over alike) to the cancel that runs on_kill."""
    if not compat.ON_KILL_WHILE_DEFERRED:
        assert not compat.ON_KILL_ON_HANDOVER
        return
    from airflow.jobs import triggerer_job_runner

    source = inspect.getsource(triggerer_job_runner.TriggerRunnerSupervisor.update_triggers)
    tells_apart = "assign_unassigned" in source or "reassigned" in source
    assert compat.ON_KILL_ON_HANDOVER is not tells_apart


def test_connection_form_fields_follow_the_providers_manager() -> None:
    from airflow import providers_manager

    assert ("conn-fields" in inspect.getsource(providers_manager)) == compat.CONNECTION_FORM_FIELDS


def test_task_state_store_is_in_the_task_context_from_3_3() -> None:
    from airflow.sdk.definitions import context

    assert ("task_state_store" in inspect.getsource(context)) == compat.TASK_STATE_STORE


@pytest.mark.parametrize("gate", ["START_IN_TRIGGERER", "TRIGGER_XCOMS", "END_IN_TRIGGERER", "ON_KILL_WHILE_DEFERRED",
                                  "ON_KILL_ON_HANDOVER", "TASK_STATE_STORE"])
def test_every_gate_of_3_3_is_on_exactly_from_3_3(gate: str) -> None:
    assert getattr(compat, gate) == (MINOR >= (3, 3))


def test_the_stale_event_guard_stays_until_a_release_fixes_it() -> None:
    assert compat.STALE_EVENT_FIXED_IN is None and compat.STALE_EVENT_GUARD_SECONDS == 10.0


def test_the_operator_and_decorator_import_on_this_airflow() -> None:
    """The failure a 3.1 user met: an ImportError at DAG parse time."""
    from remote_docker.decorators import remote_docker_task
    from remote_docker.operators import RemoteDockerOperator
    from remote_docker.triggers import ContainerTrigger

    assert RemoteDockerOperator and ContainerTrigger and remote_docker_task


def test_the_trigger_modules_import_no_engine_layer_on_the_triggerers_loop() -> None:
    """Airflow imports a trigger's module on the triggerer's event loop: ours stay light (the engine layer, ~0.4 s of
    aiodocker, aiohttp and docker-py, is imported in a thread when a trigger first runs: ``triggers.engine_layer``)."""
    import subprocess
    import sys

    probe = ("import sys, airflow.triggers.base\nimport remote_docker.triggers, remote_docker.capacity\n"
             "print(sorted(m for m in ('aiodocker', 'aiohttp', 'docker', 'remote_docker.engine') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"

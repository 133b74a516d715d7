"""What differs between the Airflow versions we support (3.1, 3.2, 3.3), decided here and nowhere else.

Each gate names the upstream change it follows; remove a gate when the release that fixed it
becomes the minimum this package allows (``pyproject.toml``). The support table in README.md
lists the behaviour each gate changes; ``tests/unit/test_compat.py`` checks every gate against the
installed Airflow.
"""

from __future__ import annotations

from airflow import __version__ as _airflow_version
from packaging.version import Version

_installed = Version(Version(_airflow_version).base_version)


def airflow_at_least(version: str) -> bool:
    return _installed >= Version(version)


# The task exceptions moved into the Task SDK in 3.2 (airflow.exceptions keeps deprecated aliases from 3.3).
if airflow_at_least("3.2.0"):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException, AirflowTaskTimeout
else:  # pragma: no cover - run by scripts/matrix on 3.1
    from airflow.exceptions import AirflowException, AirflowFailException, AirflowSkipException, AirflowTaskTimeout

__all__ = ["AirflowException", "AirflowFailException", "AirflowSkipException", "AirflowTaskTimeout"]

# A task can start in the triggerer (start_from_trigger + StartTriggerArgs, templates rendered there):
# off in 3.1-3.2 (commented out in dagrun.schedule_tis), back in 3.3.0 (apache/airflow#55068).
# Mapped tasks never: 3.3 does not expand start_trigger_args per map index (GH-52141).
START_IN_TRIGGERER = airflow_at_least("3.3.0")

# Templates rendered in the triggerer can't pull XComs in 3.3: ti.xcom_pull sends GetXComSequenceSlice, which
# the triggerer's supervisor can't decode, so the request is never answered and the trigger hangs (seen
# on 3.3.2; the same gap was closed for the dag-processor in apache/airflow#55542). No release fixes it yet.
TRIGGERER_TEMPLATES_PULL_XCOMS = False

# A trigger reads and writes its task instance's XComs without blocking its loop (XCom.aget_one / aset)
# from 3.3. Log checkpoints need that; on older triggerers a trigger that takes over after a triggerer
# restart replays the container's log from the start (no line lost, earlier lines repeated).
TRIGGER_XCOMS = airflow_at_least("3.3.0")

# A trigger can end its task (TaskSuccessEvent) after writing the XCom through the SDK, as a worker
# does (XCom.aset from a trigger), and call sync SDK methods through the triggerer's greenback portal.
# Verified on 3.3; older triggerers resume on a worker instead.
END_IN_TRIGGERER = airflow_at_least("3.3.0")

# A trigger's TaskFailedEvent respects the task's retries (UP_FOR_RETRY, on_retry_callback) from 3.3.1
# (apache/airflow#69821, backported to 3.3.1 in #71163); 3.3.0 fails the task for good, so a failure resumes on a
# worker there.
FAIL_IN_TRIGGERER = airflow_at_least("3.3.1")

# BaseTrigger.on_kill runs when a user marks or clears a deferred task (3.3.0). Before, a container
# keeps running after a user ends its deferred task (remote-docker prune removes such orphans).
ON_KILL_WHILE_DEFERRED = airflow_at_least("3.3.0")

# 3.3 also calls on_kill when a triggerer finds that another one took its trigger over (its heartbeat
# lapsed, Trigger.assign_unassigned handed the trigger on): cancel_triggers can't tell that from a user's
# action (apache/airflow#73454, open). The task is still deferred then, so the trigger asks before it
# stops anything. Set the release that merges the fix here.
ON_KILL_ON_HANDOVER_FIXED_IN: str | None = None
ON_KILL_ON_HANDOVER = ON_KILL_WHILE_DEFERRED and not (
    ON_KILL_ON_HANDOVER_FIXED_IN and airflow_at_least(ON_KILL_ON_HANDOVER_FIXED_IN))

# The connection form's extra fields come from the provider info's conn-fields from 3.2 (apache/airflow#60410).
# 3.1 reads them only from a hook's wtforms widgets, which need the FAB provider: there the TLS settings
# go in the connection's Extra JSON (same keys), and the form shows only host and port.
CONNECTION_FORM_FIELDS = airflow_at_least("3.2.0")

# task_state_store (a per-task-instance record that survives tries) is in the task context from 3.3:
# it tells a try that crashed before deferring from one a user ended. Older Airflow reattaches to any
# running container of an earlier try.
TASK_STATE_STORE = airflow_at_least("3.3.0")

# The Task SDK tells a task its previous task instance (``RuntimeTaskInstance.get_previous_ti``, with its
# duration) from 3.3: a task's earlier runs decide how long its worker follows it before deferring.
PREVIOUS_TASK_INSTANCE = airflow_at_least("3.3.0")

# The stale executor event: when a task defers, its worker exits and the executor reports SUCCESS for
# that try. If the trigger fired fast and the task is SCHEDULED / QUEUED / RUNNING again when the
# scheduler handles that stale event, the task is failed. Guarded for SCHEDULED from 3.2.2
# (apache/airflow#66431); QUEUED fixed on main (#68741); RUNNING open (#71580, #72716); 3.1 has no
# guard. Until a release guards all three, a task that resumes on a worker after a worker deferral
# fires no sooner than this after deferring. Tasks that end in the triggerer, start there, or never
# defer need no guard.
STALE_EVENT_FIXED_IN: str | None = None  # no release yet
STALE_EVENT_GUARD_SECONDS = 0.0 if STALE_EVENT_FIXED_IN and airflow_at_least(STALE_EVENT_FIXED_IN) else 10.0


async def mask_secret_in_trigger(value: str, name: str) -> None:
    """Tell Airflow's masker about a secret from inside a trigger.

    3.3 has ``amask_secret``; the sync ``mask_secret`` would block the triggerer's loop on its
    supervisor (and can deadlock), so older triggerers skip it: the trigger redacts the container's
    lines and its event itself either way (``LogFollower.keep_secret``).
    """
    if airflow_at_least("3.3.0"):
        from airflow.sdk.log import amask_secret

        await amask_secret(value, name)

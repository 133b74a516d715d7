"""What differs between the Airflow versions we support, decided here and nowhere else.

Each gate names the upstream change it follows; remove a gate when the release that fixed
it becomes the minimum this package allows.
"""

from __future__ import annotations

from airflow import __version__ as _airflow_version
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException, AirflowTaskTimeout
from packaging.version import Version

__all__ = ["AirflowException", "AirflowFailException", "AirflowSkipException", "AirflowTaskTimeout"]

_installed = Version(Version(_airflow_version).base_version)


def airflow_at_least(version: str) -> bool:
    return _installed >= Version(version)


# A task can start in the triggerer (start_from_trigger + StartTriggerArgs, templates rendered there):
# off in 3.1-3.2 (commented out in dagrun.schedule_tis), back in 3.3.0 (apache/airflow#55068).
# Mapped tasks never: 3.3 does not expand start_trigger_args per map index (GH-52141).
START_IN_TRIGGERER = airflow_at_least("3.3.0")

# Templates rendered in the triggerer can't pull XComs in 3.3: ti.xcom_pull sends GetXComSequenceSlice, which
# the triggerer's supervisor can't decode, so the request is never answered and the trigger hangs (seen
# on 3.3.2; the same gap was closed for the dag-processor in apache/airflow#55542). No release fixes it yet.
TRIGGERER_TEMPLATES_PULL_XCOMS = False

# A trigger can end its task (TaskSuccessEvent) after writing the XCom through the SDK, as a worker
# does (XCom.aset from a trigger), and call sync SDK methods through the triggerer's greenback portal.
# Verified on 3.3; older triggerers resume on a worker instead.
END_IN_TRIGGERER = airflow_at_least("3.3.0")

# BaseTrigger.on_kill runs when a user marks or clears a deferred task (3.3.0).
ON_KILL_WHILE_DEFERRED = airflow_at_least("3.3.0")

# The stale executor event: when a task defers, its worker exits and the executor reports SUCCESS for
# that try. If the trigger fired fast and the task is SCHEDULED / QUEUED / RUNNING again when the
# scheduler handles that stale event, the task is failed. Guarded for SCHEDULED from 3.2.2
# (apache/airflow#66431); QUEUED fixed on main (#68741); RUNNING open (#71580, #72716). Until a
# release guards all three, a task that resumes on a worker after a worker deferral fires no sooner
# than this after deferring. Tasks that end in the triggerer, start there, or never defer need no guard.
STALE_EVENT_FIXED_IN: str | None = None  # no release yet
STALE_EVENT_GUARD_SECONDS = 0.0 if STALE_EVENT_FIXED_IN and airflow_at_least(STALE_EVENT_FIXED_IN) else 10.0

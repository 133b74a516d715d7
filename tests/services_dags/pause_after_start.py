"""Test-only operator for the worker-crash tests (tests/services/test_services.py, tests/services/test_pool_ha.py):
no DAGs here."""

from __future__ import annotations

import os
import time
from pathlib import Path

from remote_docker.lifecycle import start
from remote_docker.operators import RemoteDockerOperator

MARKERS = Path(os.environ.get("REMOTE_DOCKER_TEST_MARKERS", "/tmp"))


class PauseAfterStartOnFirstTry(RemoteDockerOperator):
    """After starting its container on try 1, record the worker's PID and wait to be killed."""

    def execute(self, context):
        if context["ti"].try_number == 1:
            starting, task_id = start.start, self.task_id

            async def start_then_pause(*args, **kwargs):
                started = await starting(*args, **kwargs)
                (MARKERS / f"{task_id}.pid").write_text(str(os.getpid()))
                time.sleep(120)  # blocks the worker's loop on purpose: nothing else runs in it
                return started

            start.start = start_then_pause  # this task's own process only: it is killed before it returns
        return super().execute(context)

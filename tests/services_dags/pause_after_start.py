"""Test-only operator for the worker-crash tests (tests/test_services.py, tests/test_pool_ha.py): no DAGs here."""

from __future__ import annotations

import os
import time
from pathlib import Path

from remote_docker.operators import RemoteDockerOperator

MARKERS = Path(os.environ.get("REMOTE_DOCKER_TEST_MARKERS", "/tmp"))


class PauseAfterStartOnFirstTry(RemoteDockerOperator):
    """After starting its container on try 1, record the worker's PID and wait to be killed."""

    def execute(self, context):
        self._try_number = context["ti"].try_number
        return super().execute(context)

    async def _start(self, *args, **kwargs):
        started = await super()._start(*args, **kwargs)
        if self._try_number == 1:
            (MARKERS / f"{self.task_id}.pid").write_text(str(os.getpid()))
            time.sleep(120)  # blocks the worker's loop on purpose: nothing else runs in it
        return started

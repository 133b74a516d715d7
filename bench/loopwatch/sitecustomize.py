"""Loaded by every Python process started with this folder on PYTHONPATH (``bench/loop_blocking.py``): in a
triggerer (and the trigger runner it forks), each event-loop step that runs longer than
``REMOTE_DOCKER_LOOP_THRESHOLD`` seconds (default 0.05) is recorded in ``REMOTE_DOCKER_LOOP_REPORT`` (JSON lines),
with the frames of the task it ran, innermost last: asyncio's own slow-callback report names only the outermost
coroutine, which in a triggerer is always Airflow's."""

from __future__ import annotations

import os
import sys

_REPORT = os.environ.get("REMOTE_DOCKER_LOOP_REPORT")

if _REPORT and "triggerer" in sys.argv:
    import asyncio
    import asyncio.events
    import json
    import time

    _threshold = float(os.environ.get("REMOTE_DOCKER_LOOP_THRESHOLD", "0.05"))
    _original_run = asyncio.events.Handle._run

    def _frames(callback: object) -> list[list]:
        task = getattr(callback, "__self__", None)
        if isinstance(task, asyncio.Future) and hasattr(task, "get_stack"):
            return [[f.f_code.co_filename, f.f_lineno, f.f_code.co_name] for f in task.get_stack(limit=None)]
        code = getattr(callback, "__code__", None) or getattr(getattr(callback, "__func__", None), "__code__", None)
        return [[code.co_filename, code.co_firstlineno, code.co_name]] if code else [[repr(callback)[:200], 0, "?"]]

    def _timed_run(self: asyncio.events.Handle) -> None:
        began = time.perf_counter()
        try:
            _original_run(self)
        finally:
            took = time.perf_counter() - began
            if took > _threshold:
                try:
                    record = {"pid": os.getpid(), "at": time.time(), "took_s": round(took, 4),
                              "frames": _frames(self._callback)}
                    with open(_REPORT, "a") as out:
                        out.write(json.dumps(record) + "\n")
                except Exception:  # a measurement never breaks the triggerer
                    pass

    asyncio.events.Handle._run = _timed_run  # type: ignore[method-assign]

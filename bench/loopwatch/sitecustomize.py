"""Loaded by every Python process started with this folder on PYTHONPATH (``bench/loop_blocking.py``): in a
triggerer (and the trigger runner it forks), each event-loop step that runs longer than
``REMOTE_DOCKER_LOOP_THRESHOLD`` seconds (default 0.05) is recorded in ``REMOTE_DOCKER_LOOP_REPORT`` (JSON lines)
with what the loop's thread was running meanwhile: a sampler thread reads its stack every few milliseconds while a
step runs. asyncio's own slow-callback report names only the step's outermost coroutine, which in a triggerer is
always Airflow's, even when the time went to code it called (a trigger's constructor, an import)."""

from __future__ import annotations

import os
import sys

_REPORT = os.environ.get("REMOTE_DOCKER_LOOP_REPORT")

if _REPORT and "triggerer" in sys.argv:
    import asyncio.events
    import json
    import threading
    import time
    from collections import Counter

    _threshold = float(os.environ.get("REMOTE_DOCKER_LOOP_THRESHOLD", "0.05"))
    _SAMPLE_EVERY = 0.004
    _original_run = asyncio.events.Handle._run
    _steps: dict[int, tuple[float, Counter]] = {}  # loop thread -> (step start, places sampled meanwhile)

    def _place(frame) -> str:
        """``file:line function`` of the innermost remote-docker frame on the stack, else of the innermost frame."""
        innermost = frame
        while frame is not None:
            if f"{os.sep}remote_docker{os.sep}" in frame.f_code.co_filename:
                return f"ours {os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} {frame.f_code.co_name}"
            frame = frame.f_back
        code = innermost.f_code
        return f"other {code.co_filename}:{innermost.f_lineno} {code.co_name}"

    def _sample() -> None:
        while True:
            time.sleep(_SAMPLE_EVERY)
            frames = sys._current_frames()
            for thread, (began, places) in list(_steps.items()):
                if time.perf_counter() - began > _threshold / 2 and (frame := frames.get(thread)) is not None:
                    places[_place(frame)] += 1

    def _start_sampler() -> None:
        _steps.clear()
        threading.Thread(target=_sample, name="loopwatch", daemon=True).start()

    _start_sampler()
    os.register_at_fork(after_in_child=_start_sampler)  # the trigger runner is forked: threads don't follow a fork

    def _timed_run(self: asyncio.events.Handle) -> None:
        thread, began, places = threading.get_ident(), time.perf_counter(), Counter()
        _steps[thread] = (began, places)
        try:
            _original_run(self)
        finally:
            _steps.pop(thread, None)
            took = time.perf_counter() - began
            if took > _threshold:
                try:
                    record = {"pid": os.getpid(), "at": time.time(), "took_s": round(took, 4),
                              "callback": repr(self._callback)[:160], "samples": places.most_common(8)}
                    with open(_REPORT, "a") as out:
                        out.write(json.dumps(record) + "\n")
                except Exception:  # a measurement never breaks the triggerer
                    pass

    asyncio.events.Handle._run = _timed_run  # type: ignore[method-assign]

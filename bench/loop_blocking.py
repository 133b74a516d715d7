"""How long our code holds a real triggerer's event loop: the service tests run with every event-loop step of the
triggerer timed (``loopwatch/sitecustomize.py``); each step over 50 ms is attributed to the innermost
remote-docker frame of the task it ran, if any (else it is Airflow's, or the loop's own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from common import ROOT, Result

THRESHOLD_S = 0.05
TESTS = ["tests/test_services.py", "tests/test_fast_path.py"]


def run() -> Result:
    with tempfile.TemporaryDirectory(prefix="rd-loop-") as folder:
        report = Path(folder) / "steps.jsonl"
        env = {**os.environ, "CI": "true", "REMOTE_DOCKER_LOOP_REPORT": str(report),
               "REMOTE_DOCKER_LOOP_THRESHOLD": str(THRESHOLD_S),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "bench" / "loopwatch"), os.environ.get("PYTHONPATH")]))}
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=ROOT,
                               env=env, capture_output=True, text=True)
        steps = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    summary = tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else tests.stderr[-300:]
    ours = [(step, place) for step in steps if (place := _our_place(step["frames"]))]
    places = Counter(place for _, place in ours)
    worst = {place: max(step["took_s"] for step, p in ours if p == place) for place in places}
    others = sorted((step for step in steps if not _our_place(step["frames"])), key=lambda s: -s["took_s"])[:5]
    figures = {"tests": TESTS, "tests_result": summary, "threshold_s": THRESHOLD_S, "steps_over_threshold": len(steps),
               "ours_over_threshold": len(ours), "ours_worst_s": max(worst.values(), default=0.0),
               "ours_by_place": {place: {"steps": count, "worst_s": worst[place]} for place, count in places.most_common()},
               "others_worst": [{"took_s": s["took_s"], "innermost": s["frames"][-1] if s["frames"] else None} for s in others]}
    print(f"[loop] {figures}", flush=True)
    return Result(name="Loop blocking in a real triggerer", figures=figures,
                  met=tests.returncode == 0 and not ours,
                  target=f"no event-loop step of a real triggerer runs our code for more than {int(THRESHOLD_S * 1000)} ms, "
                         "across the service tests (they pass too)",
                  notes=["every step of the triggerer's loop timed (bench/loopwatch/sitecustomize.py); a step is ours "
                         "when the task it ran is suspended in remote_docker code after it (the code that ran last)",
                         "others_worst: the slowest steps that were not ours (Airflow's own, or the loop's)"])


def _our_place(frames: list) -> str | None:
    """``module.py:function`` of the innermost remote-docker frame, if the step's task was in our code."""
    for filename, _line, name in reversed(frames):
        if f"{os.sep}remote_docker{os.sep}" in filename:
            return f"{Path(filename).name}:{name}"
    return None

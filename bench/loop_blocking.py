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
TESTS = ["tests/services/test_services.py", "tests/services/test_fast_path.py"]


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
    ours: list[tuple[float, str]] = []  # (seconds of a step spent in our code, where most of it went)
    others = []
    for step in steps:
        samples = step["samples"]
        total = sum(count for _, count in samples) or 1
        mine = [(place, count) for place, count in samples if place.startswith("ours ")]
        share = step["took_s"] * sum(count for _, count in mine) / total
        if share > THRESHOLD_S:
            ours.append((round(share, 3), max(mine, key=lambda item: item[1])[0].removeprefix("ours ")))
        else:
            others.append({"took_s": step["took_s"], "mostly": samples[0][0].removeprefix("other ") if samples else "?"})
    places = Counter(place for _, place in ours)
    worst = {place: max(share for share, p in ours if p == place) for place in places}
    figures = {"tests": TESTS, "tests_result": summary, "threshold_s": THRESHOLD_S, "steps_over_threshold": len(steps),
               "ours_over_threshold": len(ours), "ours_worst_s": max(worst.values(), default=0.0),
               "ours_by_place": {place: {"steps": count, "worst_s": worst[place]} for place, count in places.most_common()},
               "others_worst": sorted(others, key=lambda step: -step["took_s"])[:6]}
    print(f"[loop] {figures}", flush=True)
    return Result(name="Loop blocking in a real triggerer", figures=figures,
                  met=tests.returncode == 0 and not ours,
                  target=f"no event-loop step of a real triggerer runs our code for more than {int(THRESHOLD_S * 1000)} ms, "
                         "across the service tests (they pass too)",
                  notes=["every step of the triggerer's loop timed, and its thread's stack sampled every 4 ms while a step "
                         "runs (bench/loopwatch/sitecustomize.py); a step is ours when more than 50 ms of it (by samples) "
                         "were spent with remote_docker code on the stack",
                         "others_worst: the slowest steps that were not ours (Airflow's own, or the loop's)"])


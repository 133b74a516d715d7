"""A default task's path through our code, per process: real scheduler + triggerer (LocalExecutor), every process
recording each remote-docker function it calls (``callwatch/sitecustomize.py``).

Two DAGs of one ``RemoteDockerOperator`` task at defaults: ``short`` (ends while the worker follows it) and ``long``
(6 s: the worker defers, the triggerer follows it and, on Airflow >= 3.3, ends the task). Counted per process
kind (the worker's task processes, the triggerer's), apart from the DAG processor (parsing is not the task's life):
the distinct functions and modules of ours called, and those of the main flow (the Airflow-facing modules and
``lifecycle/``, ``pool/``; the engine layer, log lines and daemon configuration are what they call).
``PYTHONPATH=<a checkout>`` in the environment measures another version of the code (the same DAGs).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from airflow_services import AirflowServices
from common import ROOT, Daemon, Result

DAGS = ROOT / "bench" / "callpath_dags"
MAIN_FLOW = ("operators.py", "triggers.py", "decorators.py", "capacity.py", "lifecycle/", "pool/",
             # the same modules before the redesign put them in folders
             "plan.py", "start.py", "launch.py", "watch.py", "outages.py", "finish.py", "outcome.py", "ending.py",
             "reattach.py", "trigger_start.py", "placement.py", "checkpoints.py", "history.py", "spec.py",
             "events.py", "payloads.py", "output.py", "pool.py")
TARGET = {"main_flow_modules_per_process": 3, "main_flow_functions_end_to_end": 40}


def _kind(argv: list[str]) -> str:
    if "triggerer" in argv:
        return "triggerer"
    if "dag-processor" in argv:
        return "dag_processor"
    if "scheduler" in argv:  # LocalExecutor's workers, and the task processes they start, are its children
        return "worker"
    return "other"


def _counted(records: list[dict]) -> dict:
    functions = sorted({(r["module"], r["function"]) for r in records})
    main = [(m, f) for m, f in functions if m.startswith(MAIN_FLOW)]
    return {"functions": len(functions), "modules": len({m for m, _ in functions}),
            "main_flow_functions": len(main), "main_flow_modules": sorted({m for m, _ in main}),
            "main_flow": [f"{m}:{f}" for m, f in main]}


def run(daemon: Daemon, home: Path) -> Result:
    with tempfile.TemporaryDirectory(prefix="rd-calls-") as folder:
        report = Path(folder) / "calls.jsonl"
        path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT / "bench" / "callwatch")]))
        services = AirflowServices(airflow=ROOT / ".venv" / "bin" / "airflow", home=home, dags=DAGS,
                                   connection_json=daemon.connection_json(), parallelism=2,
                                   extra_env={"REMOTE_DOCKER_CALL_REPORT": str(report), "PYTHONPATH": path})
        services.start()
        windows = {}
        try:
            for name in ("short", "long"):
                dag_id = f"callpath_{name}"
                services.wait_parsed(dag_id)
                begun = time.time()
                run_id = services.trigger(dag_id)
                state = services.wait_run(dag_id, run_id, timeout=180)
                windows[name] = (begun, time.time(), state)
        finally:
            services.stop()
        records = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    figures: dict = {"code": os.environ.get("PYTHONPATH") or str(ROOT)}
    for name, (begun, ended, state) in windows.items():
        inside = [r for r in records if begun <= r["at"] <= ended]
        per_kind = {kind: _counted([r for r in inside if _kind(r["argv"]) == kind]) for kind in ("worker", "triggerer")}
        end_to_end = sum(k["main_flow_functions"] for k in per_kind.values())
        figures[name] = {"state": state, **per_kind, "main_flow_functions_end_to_end": end_to_end}
    long = figures.get("long", {})
    worst_modules = max((len(long.get(k, {}).get("main_flow_modules", [])) for k in ("worker", "triggerer")), default=0)
    met = (worst_modules <= TARGET["main_flow_modules_per_process"]
           and long.get("main_flow_functions_end_to_end", 999) <= TARGET["main_flow_functions_end_to_end"])
    return Result("callpath", figures, target=f"main flow <= {TARGET['main_flow_modules_per_process']} modules per "
                  f"process, <= {TARGET['main_flow_functions_end_to_end']} functions end to end (the long task)", met=met)

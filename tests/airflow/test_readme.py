"""README.md's Python snippets run as written on a daemon like the demo's (the stand-in images, no network):
the test pastes them into a DAG file, as a reader would, and runs it."""

from __future__ import annotations

import re
import sqlite3
import textwrap
from pathlib import Path

from conftest import ROOT, AirflowEnv


def readme_dag(folder: Path) -> Path:
    snippets = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    body = "".join(textwrap.indent(snippet, "    ") for snippet in snippets)
    path = folder / "rd_readme.py"
    path.write_text("import datetime as dt\n\nfrom airflow.sdk import DAG\n\n"
                    'with DAG("rd_readme", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False):\n'
                    f"{body}"
                    "    transform([{'value': 1}, {'value': 2}])  # the decorator snippet defines the task; a DAG calls it\n")
    return path


def test_the_readmes_snippets_run_as_written(airflow_env: AirflowEnv, tmp_path: Path) -> None:
    readme_dag(tmp_path)
    run = airflow_env.dags_test("rd_readme", extra_env={"AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path)})
    assert run.returncode == 0, run.stdout[-3000:]
    assert run["transform"].state == "success" and run["transform"].xcom == "hello from a remote daemon"
    decorated = [task for task in run.tasks if task.startswith("transform__")]
    assert decorated and run[decorated[0]].state == "success" and run[decorated[0]].xcom == {"total": 6}
    with sqlite3.connect(airflow_env.home / "airflow.db") as db:
        mapped = db.execute("select map_index, state from task_instance where dag_id='rd_readme' and run_id=? "
                            "and task_id='total' order by map_index", (run.run_id,)).fetchall()
    assert mapped == [(0, "success"), (1, "success")], mapped

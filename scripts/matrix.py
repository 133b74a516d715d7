"""Test every version remote-docker claims, each in a fresh virtualenv (versions from scripts/versions.toml).

    scripts/matrix                   every Airflow minor x every Python, then the lowest aiodocker / docker-py
    scripts/matrix --quick           the oldest and newest corners only, with the short subset (CI)
    scripts/matrix --cell 3.2/3.12   one cell (Airflow minor / Python)
    scripts/matrix --lowest          the lowest aiodocker / docker-py cell only

A cell installs this package with its test extras, the Airflow release and that release's pins, and runs
the cell's tests against a real mutual-TLS dockerd (each test run starts its own): the import-time
compatibility checks, the operator's behaviour under `airflow dags test`, the example DAGs, and one
deferral through a real scheduler + triggerer. Results go to .matrix/results.json and a table on stdout;
the exit status is 1 if any cell failed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = tomllib.loads((ROOT / "scripts" / "versions.toml").read_text())
WORK = ROOT / ".matrix"

# the tests a cell runs: behaviour that depends on the Airflow version, the examples, one real deferral
CELL_TESTS = ["tests/unit/test_compat.py", "tests/unit/test_provider.py", "tests/unit/test_operator_args.py", "tests/unit/test_payloads.py",
              "tests/airflow/test_operator_dag.py", "tests/airflow/test_decorator.py", "tests/services/test_examples.py", "tests/services/test_deferral.py"]
# --quick: what differs by version, the decorator (its failure lines and pickles differ by Airflow and
# Python: 3.1 raises from airflow.exceptions, cloudpickle needs one Python minor), one example under
# `dags test`, and the real deferral
QUICK_TESTS = ["tests/unit/test_compat.py", "tests/unit/test_provider.py", "tests/unit/test_operator_args.py", "tests/airflow/test_decorator.py",
               "tests/services/test_examples.py::test_example_remote_docker", "tests/services/test_deferral.py"]


@dataclass
class Cell:
    airflow: str  # minor, a key of [airflow] in versions.toml
    python: str
    lowest: bool = False  # the lowest aiodocker / docker-py pyproject.toml allows

    @property
    def name(self) -> str:
        return f"airflow {self.airflow} / python {self.python}" + (" / lowest aiodocker+docker" if self.lowest else "")

    @property
    def folder(self) -> Path:
        return WORK / (f"af{self.airflow}-py{self.python}" + ("-lowest" if self.lowest else ""))


@dataclass
class Outcome:
    cell: str
    airflow: str
    python: str
    passed: bool
    seconds: float
    summary: str


def interpreter(python: str) -> str:
    """pyenv's interpreter for a Python minor (this machine has 3.10-3.13), else one on PATH."""
    found = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{python}.*/bin/python{python}")))
    if found:
        return found[-1]
    on_path = shutil.which(f"python{python}")
    if on_path:
        return on_path
    raise SystemExit(f"matrix: no Python {python} here; install it (pyenv install {python}) or drop it from "
                     "scripts/versions.toml")


def run(args: list[str], log: Path, env: dict[str, str] | None = None, timeout: float = 3600) -> int:
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(args)}\n")
        out.flush()
        return subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout, cwd=ROOT).returncode


def install(cell: Cell, log: Path) -> Path:
    """A fresh venv with this package, the cell's Airflow and its pins; returns its bin folder."""
    if cell.folder.exists():
        shutil.rmtree(cell.folder)
    if run([interpreter(cell.python), "-m", "venv", str(cell.folder)], log):
        raise RuntimeError("could not create the virtualenv")
    pip = [str(cell.folder / "bin" / "python"), "-m", "pip", "install", "-q"]
    if run([*pip, "--upgrade", "pip"], log):
        raise RuntimeError("could not upgrade pip")
    release = VERSIONS["airflow"][cell.airflow]
    constraints = cell.folder / "pins.txt"
    pins = list(release.get("pins", []))
    if cell.lowest:
        pins += [f"{name}=={version}" for name, version in VERSIONS["lowest"].items()]
    constraints.write_text("".join(f"{pin}\n" for pin in pins))
    if run([*pip, "-e", ".[test]", f"apache-airflow=={release['version']}", "-c", str(constraints)], log):
        raise RuntimeError(f"could not install apache-airflow=={release['version']} with {pins or 'no pins'}")
    return cell.folder / "bin"


def test(cell: Cell, tests: list[str]) -> Outcome:
    cell.folder.parent.mkdir(parents=True, exist_ok=True)
    log = WORK / f"{cell.folder.name}.log"
    log.write_text(f"# {cell.name}\n")
    began = time.monotonic()
    try:
        bin_dir = install(cell, log)
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        return Outcome(cell.name, cell.airflow, cell.python, False, round(time.monotonic() - began), f"install: {err} ({log})")
    env = {**os.environ, "CI": "true", "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    env.pop("AIRFLOW_HOME", None)  # each test run makes its own
    code = run([str(bin_dir / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], log, env=env)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    summary = next((line for line in reversed(lines) if " in " in line and ("passed" in line or "failed" in line)),
                   lines[-1] if lines else "")
    return Outcome(cell.name, cell.airflow, cell.python, code == 0, round(time.monotonic() - began), summary.strip("= "))


def cells(args: argparse.Namespace) -> list[tuple[Cell, list[str]]]:
    minors = sorted(VERSIONS["airflow"], key=lambda v: tuple(map(int, v.split("."))))
    pythons = VERSIONS["pythons"]
    if args.cell:
        airflow, _, python = args.cell.partition("/")
        if airflow not in VERSIONS["airflow"] or python not in pythons:
            raise SystemExit(f"matrix: --cell {args.cell} is not in scripts/versions.toml; "
                             f"use one of {', '.join(minors)} / {', '.join(pythons)}")
        return [(Cell(airflow, python), CELL_TESTS)]
    lowest = (Cell(VERSIONS["default"], "3.11", lowest=True), CELL_TESTS)
    if args.lowest:
        return [lowest]
    if args.quick:
        return [(Cell(minors[0], pythons[0]), QUICK_TESTS), (Cell(minors[-1], pythons[-1]), QUICK_TESTS)]
    every = [(Cell(airflow, python), CELL_TESTS) for airflow in minors for python in pythons]
    return [*every, lowest]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="the oldest and newest corners, short subset (CI)")
    group.add_argument("--cell", help="one cell, e.g. 3.2/3.12")
    group.add_argument("--lowest", action="store_true", help="the lowest aiodocker / docker-py cell only")
    args = parser.parse_args()
    outcomes = []
    for cell, tests in cells(args):
        print(f"matrix: {cell.name} ...", flush=True)
        outcome = test(cell, tests)
        outcomes.append(outcome)
        print(f"matrix: {cell.name}: {'ok' if outcome.passed else 'FAILED'} in {outcome.seconds}s ({outcome.summary})",
              flush=True)
        # after every cell, so a run stopped part-way keeps what it found
        (WORK / "results.json").write_text(json.dumps([asdict(o) for o in outcomes], indent=2))
    print("\n| Airflow | Python | result | time | tests |\n|---|---|---|---|---|")
    for o in outcomes:
        print(f"| {VERSIONS['airflow'][o.airflow]['version']}{' (lowest deps)' if 'lowest' in o.cell else ''} | "
              f"{o.python} | {'pass' if o.passed else 'FAIL'} | {o.seconds}s | {o.summary} |")
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Run the benchmarks and write BENCHMARKS.md (with charts beside it).

    bench/run            quick versions of P1-P5 (under 10 minutes on 2 cores)
    bench/run --full     the sizes the targets are stated for
    bench/run --only p3  one of them (results of the others are kept from earlier runs)
    bench/run --only loop  the service tests in a triggerer whose every loop step is timed (--full runs it too)
    bench/run --only callpath  a default task's path through our code, per process (--full runs it too)
    bench/run --only p5 --only short --engine docker-20.10 --engine docker-29
                         on these engines one after the other (scripts/engines.py list); figures of an
                         engine other than the default are kept beside the default's (p5@docker-29.json)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ROOT, Result, engine_of, engines, machine, start_daemon, stop_daemon

NAMES = ("p1", "p2", "p3", "p4", "p5", "p6", "short", "burst", "loop", "sweep", "callpath")
SIZES = {
    "quick": {"p1": (8, 10, 2), "p2": ([100, 300], [100]), "p3": 1_000_000, "p4": 100, "sweep": (3.0,)},
    "full": {"p1": (20, 20, 2), "p2": ([100, 300, 1000], [100, 300]), "p3": 10_000_000, "p4": 100,
             "sweep": (0.5, 3.0, 8.0, 20.0, 60.0)},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--only", action="append", choices=NAMES)
    parser.add_argument("--engine", action="append", choices=list(engines.ENGINES),
                        help="measure on this engine (repeat for several, one after the other in this run)")
    parser.add_argument("--executor", choices=("local", "celery"), default="local",
                        help="Airflow's executor where a benchmark runs real services (celery: a Redis broker, "
                             "PostgreSQL, two Celery workers); results are kept beside LocalExecutor's (burst-3.3+celery)")
    parser.add_argument("--sweep-lengths", type=lambda text: tuple(float(x) for x in text.split(",")),
                        help="the sweep's container lengths in seconds, comma-separated (default: 3 quick, "
                             "0.5,3,8,20,60 with --full)")
    args = parser.parse_args()
    mode = "full" if args.full else "quick"
    sizes = {**SIZES[mode], **({"sweep": args.sweep_lengths} if args.sweep_lengths else {})}
    wanted = args.only or [name for name in NAMES if args.full or name not in ("loop", "sweep", "callpath")]  # ~10 min each
    chosen = args.engine or [engines.DEFAULT_ENGINE]
    command = "bench/run" + (" --full" if args.full else "") + "".join(f" --only {w}" for w in args.only or []) \
        + "".join(f" --engine {e}" for e in args.engine or []) + (f" --executor {args.executor}" if args.executor != "local" else "") \
        + (f" --sweep-lengths {','.join(f'{x:g}' for x in args.sweep_lengths)}" if args.sweep_lengths else "")
    began = time.monotonic()
    for name in chosen:
        os.environ[engines.ENGINE_ENV] = name
        measure(name, wanted, sizes, command, args.executor)
    print(f"[bench] done in {time.monotonic() - began:.0f}s", flush=True)
    write_report()
    return 0


def measure(engine_name: str, wanted: list[str], sizes: dict, command: str, executor: str = "local") -> None:
    import on_airflow

    daemon = start_daemon()
    engine = engine_of(daemon)
    print(f"[bench] on {engine}", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="rd-bench-") as folder:
            work = Path(folder)
            for name in wanted:
                started = time.monotonic()
                if executor == "celery":
                    with on_airflow.celery_backing():
                        result = run_one(name, daemon, sizes, work)
                    result.name += " on CeleryExecutor"
                else:
                    result = run_one(name, daemon, sizes, work)
                result.figures["seconds_taken"] = round(time.monotonic() - started, 1)
                result.figures["command"] = command
                result.figures["machine"] = {**machine(), "engine": engine,
                                             "executor": "CeleryExecutor" if executor == "celery" else "LocalExecutor"}
                result.save(engine_name, executor)
    finally:
        stop_daemon(daemon)


def run_one(name: str, daemon, sizes: dict, work: Path) -> Result:
    import on_airflow

    if name == "p1":
        return on_airflow.p1(daemon, work / "p1-home", *sizes["p1"])
    if name == "p2":
        import p2_density

        return p2_density.run(daemon, *sizes["p2"])
    if name == "p3":
        import p3_logs

        return p3_logs.run(daemon, sizes["p3"], work)
    if name == "p4":
        import p4_output

        return p4_output.run(daemon, sizes["p4"])
    if name == "p5":
        return on_airflow.p5(daemon, work / "p5-home")
    if name == "p6":
        import p6_pool

        return p6_pool.run(daemon, work)
    if name == "short":
        return on_airflow.short_tasks(daemon, work / "short-home")
    if name == "sweep":
        import sweep

        return sweep.run(daemon, work / "sweep-home", sizes["sweep"])
    if name == "loop":
        import loop_blocking

        return loop_blocking.run()
    if name == "callpath":
        import callpath

        return callpath.run(daemon, work / "callpath-home")
    return on_airflow.burst(daemon, work / "burst-home")


def headline(key: str, figures: dict) -> str:
    """The one figure a reader compares with the target."""
    name = key.split("@")[0].split("+")[0].split("-")[0]
    if name == "p1":
        first = f", {figures['speedup_default_first_run']}x on its first run" if "speedup_default_first_run" in figures else ""
        floor = (f"; Airflow's floor for a worker-started deferral {figures['speedup_airflow_floor_worker_defers']}x"
                 if "speedup_airflow_floor_worker_defers" in figures else "")
        return (f"{figures['speedup_start_from_trigger']}x with start_from_trigger, {figures['speedup_default']}x at "
                f"defaults{first} (ideal {figures['ideal_speedup_n_over_w']}x){floor}")
    if name == "p2":
        top = max(figures["rows"], key=lambda row: row["n"])
        return (f"at {top['n']}: +{top['rss_over_baseline_mb']} MB, {top['cpu_percent_of_one_core_waiting']} % CPU, "
                f"p99 exit->event {top['exit_to_event_s']['p99']} s")
    if name == "p3":
        return f"{figures['trigger_vs_docker_logs_f']}x docker logs -f, +{figures['rss_growth_mb']} MB, {figures['lines_wrong']} lines wrong"
    if name == "p4":
        return f"{figures['ratio']}x docker cp"
    if name in ("p5", "short"):
        return (f"{figures['ratio_default_to_official']}x the official at defaults "
                f"({figures['ours_default']['makespan_s_median']} s vs {figures['official']['makespan_s_median']} s)")
    if name == "p6":
        return f"{figures['makespan_s']} s (bound {figures['bound_s']} s), {figures['failed']} failed"
    if name == "sweep":
        worst = figures["worst"]
        return (f"worst: {worst['steady']}x steady, {worst['first']}x first run, {worst['dags_test']}x dags test "
                f"(lengths {figures['lengths_s']} s)")
    if name == "loop":
        return (f"{figures['ours_over_threshold']} steps of ours over {int(figures['threshold_s'] * 1000)} ms "
                f"(worst {figures['ours_worst_s'] * 1000:.0f} ms) of {figures['steps_over_threshold']} over it; tests: "
                f"{figures['tests_result']}")
    if name == "callpath":
        long = figures["long"]
        return (f"a 6 s task at defaults: {long['main_flow_functions_end_to_end']} main-flow functions end to end; "
                f"worker {len(long['worker']['main_flow_modules'])} modules / {long['worker']['main_flow_functions']} "
                f"functions, triggerer {len(long['triggerer']['main_flow_modules'])} / {long['triggerer']['main_flow_functions']}")
    return f"{figures.get('failed')} failed of {figures.get('tasks')}, {figures.get('containers_left')} containers left"


def write_report() -> None:
    found = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
    # in the order of NAMES; a benchmark run once per Airflow minor (burst-3.1) or on another engine (p5@docker-29)
    # has a file each
    results = {key: found[key] for name in NAMES for key in found
               if key == name or key.startswith((f"{name}-", f"{name}@", f"{name}+"))}
    charts(results)
    verdicts = {True: "**met**", False: "**missed**", None: "not measured at the target size"}
    lines = ["# Benchmarks", "",
             "Reproduce with `bench/run` (quick, < 10 min) or `bench/run --full`; `--engine NAME` measures on another",
             "engine (`scripts/engines.py list`). Targets belong to the benchmarks, never to tests. The raw figures of",
             "each are in `bench/results/<name>.json`; each section below names the command, machine and versions.", "",
             "| benchmark | engine | target | result | verdict | measured | command |", "|---|---|---|---|---|---|---|"]
    for key, result in results.items():
        info = result["figures"].get("machine", {})
        engine = info.get("engine", "docker-20.10").split(" (")[0]
        if info.get("executor", "LocalExecutor") != "LocalExecutor":
            engine += f", {info['executor']}"
        lines.append(f"| [{result['name']}](#{anchor(key)}) | {engine} | {result['target']} | "
                     f"{headline(key, result['figures'])} | {verdicts[result['met']]} | {info.get('date', '-')[:10]} | "
                     f"`{result['figures'].get('command', '')}` |")
    lines.append("")
    for key, result in results.items():
        figures = dict(result["figures"])
        info = figures.pop("machine", {})
        lines += [f'<a id="{anchor(key)}"></a>', "", f"## {result['name']}", "",
                  f"- command: `{figures.get('command', '')}` ({figures.get('seconds_taken')}s) on {info.get('date')}",
                  f"- engine: {info.get('engine', 'docker-20.10 (Debian 12)')}",
                  f"- machine: {info.get('cores')} cores, {info.get('memory_gib')} GiB, Python {info.get('python')}, "
                  f"kernel {info.get('kernel')}; Airflow {info.get('airflow')}, aiodocker {info.get('aiodocker')}, "
                  f"docker-py {info.get('docker-py')}, official provider {info.get('apache-airflow-providers-docker', '-')}",
                  f"- target: {result['target']} — {verdicts[result['met']]}",
                  f"- result: {headline(key, result['figures'])}; every figure: [bench/results/{key}.json](bench/results/{key}.json)"]
        lines += [f"- {note}" for note in result.get("notes", [])]
        if Path(RESULTS.parent / f"{key}.png").exists():
            lines += ["", f"![{result['name']}](bench/{key}.png)"]
        lines.append("")
    (ROOT / "BENCHMARKS.md").write_text("\n".join(lines) + "\n" + analysis())


def anchor(key: str) -> str:
    return "bench-" + key.replace("@", "-on-").replace("+", "-").replace(".", "")


def analysis() -> str:
    path = ROOT / "bench" / "ANALYSIS.md"
    return path.read_text() if path.exists() else ""


def charts(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "p1" in results:
        figures = results["p1"]["figures"]
        fig, ax = plt.subplots(figsize=(5, 3))
        bars = {"ours, start_from_trigger": figures["ours_start_from_trigger"]["makespan_s"],
                "ours, defaults": figures["ours_default"]["makespan_s"], "DockerOperator": figures["official"]["makespan_s"]}
        ax.bar(list(bars), list(bars.values()), color=["#2a7ab0", "#7fb3d5", "#b0b0b0"])
        ax.set_ylabel("makespan (s)")
        ax.set_title(f"P1: {figures['n']} x {figures['t_s']} s containers, parallelism {figures['parallelism']}")
        fig.tight_layout()
        fig.savefig(RESULTS.parent / "p1.png", dpi=110)
        plt.close(fig)
    if "p2" in results:
        rows = results["p2"]["figures"]["rows"]
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
        series = ((True, "o-", "shared client"), (False, "s--", "client per trigger"))
        for shared, style, label in series:
            picked = sorted((r for r in rows if r["shared_client"] == shared), key=lambda r: r["n"])
            if not picked:
                continue
            left.plot([r["n"] for r in picked], [r["rss_over_baseline_mb"] for r in picked], style, label=label)
            right.plot([r["n"] for r in picked], [r["exit_to_event_s"]["p99"] for r in picked], style, label=label)
        left.set_xlabel("watched containers")
        left.set_ylabel("RSS over baseline (MB)")
        right.set_xlabel("watched containers")
        right.set_ylabel("p99 exit -> event (s)")
        left.legend()
        fig.suptitle("P2: one triggerer process")
        fig.tight_layout()
        fig.savefig(RESULTS.parent / "p2.png", dpi=110)
        plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())

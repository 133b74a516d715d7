"""Is the package ready to publish? Build it, check it, install the wheel into a clean venv, ask Airflow.

    scripts/release-check          (CI runs it)

1. ``python -m build``: a wheel and an sdist; ``twine check`` passes on both;
2. the wheel alone (no source tree) installed into a fresh venv with its dependencies;
3. Airflow there registers the provider: ``airflow providers get`` shows the version, the
   ``remote_docker`` connection type, the ``@task.remote_docker`` decorator and the triggers;
   ``airflow providers triggers`` lists the trigger module; ``remote-docker --version`` and the
   provider info report the same version as the wheel; the license metadata is Apache-2.0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PACKAGE = "airflow-provider-remote-docker"


def run(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> str:
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd)
    if done.returncode:
        raise SystemExit(f"release-check: `{' '.join(args)}` failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done.stdout


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"release-check: {what}")
    print(f"release-check: ok: {what}")


def main() -> int:
    from remote_docker import __version__

    with tempfile.TemporaryDirectory(prefix="rd-release-") as folder:
        work = Path(folder)
        dist = work / "dist"
        run(sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT))
        wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
        check(len(wheels) == 1 and len(sdists) == 1, f"build made one wheel and one sdist ({[p.name for p in dist.iterdir()]})")
        wheel = wheels[0]
        check(f"-{__version__}-" in wheel.name and f"-{__version__}.tar.gz" in sdists[0].name,
              f"both carry version {__version__}")
        run(sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdists[0]))
        print("release-check: ok: twine check --strict")
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        check("License-Expression: Apache-2.0" in metadata and any(n.endswith("licenses/LICENSE") for n in names),
              "license metadata: Apache-2.0 with the LICENSE file")
        check(not any(n.startswith(("tests/", "bench/", "scripts/")) for n in names), "the wheel holds the package only")

        venv = work / "venv"
        run(sys.executable, "-m", "venv", str(venv))
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        run(*pip, "--upgrade", "pip")
        run(*pip, str(wheel), cwd=work)  # from the wheel alone: the source tree is not on the path
        env = {**os.environ, "AIRFLOW_HOME": str(work / "airflow-home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
        airflow = str(venv / "bin" / "airflow")
        info = json.loads(run(airflow, "providers", "get", PACKAGE, "--full", "-o", "json", env=env, cwd=work))
        info = info[0] if isinstance(info, list) else info
        provider = info.get("Provider info") or info.get("provider_info") or info
        text = json.dumps(provider)
        check(__version__ in text, f"airflow providers get shows {PACKAGE} {__version__}")
        check('"remote_docker"' in text and "remote_docker.hook.RemoteDockerHook" in text,
              "it registers the remote_docker connection type")
        check("remote_docker.decorators.remote_docker_task" in text, "it registers the @task.remote_docker decorator")
        triggers = run(airflow, "providers", "triggers", "-o", "json", env=env, cwd=work)
        check("remote_docker.triggers" in triggers, "airflow providers triggers lists remote_docker.triggers")
        hooks = run(airflow, "providers", "hooks", "-o", "json", env=env, cwd=work)
        check("remote_docker" in hooks, "airflow providers hooks lists the connection type")
        version = run(str(venv / "bin" / "remote-docker"), "--version", env=env, cwd=work).strip()
        check(version == f"remote-docker {__version__}", f"remote-docker --version says {__version__} ({version!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

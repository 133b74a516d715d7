"""P4: a 100 MB pickled result: container exit -> decoded value on the worker, against `docker cp`."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

from common import Daemon, PeakRSS, Result, rss_mb

from remote_docker.operators import RemoteDockerOperator

PATH = "/tmp/result.pkl"


def run(daemon: Daemon, megabytes: int) -> Result:
    client = daemon.client()
    script = f"import os, pickle; pickle.dump({{'blob': os.urandom({megabytes} * 1024 * 1024)}}, open('{PATH}', 'wb'))"
    body = {"Image": "rd-test/python:3.11", "Cmd": ["python3", "-c", script], "HostConfig": {"NetworkMode": "none"}}
    container_id = client.api.create_container_from_config(body)["Id"]
    client.api.start(container_id)
    client.api.wait(container_id, timeout=600)
    operator = RemoteDockerOperator(
        task_id="p4", image="unused", remote_docker_conn_id=None, docker_url=daemon.url, retrieve_output=True,
        retrieve_output_path=PATH, max_output_bytes=(megabytes + 16) * 1024 * 1024,
        **{f"tls_{k}": v for k, v in daemon.extras().items()},
    )
    try:
        ours, peak, start_rss = [], 0.0, rss_mb()
        for _ in range(3):
            with PeakRSS() as sampler:
                started = time.monotonic()
                value = operator._read_output_file(container_id)
                ours.append(time.monotonic() - started)
            peak = max(peak, sampler.peak)
            assert len(value["blob"]) == megabytes * 1024 * 1024
            del value
        cli = shutil.which("docker")
        env = {**os.environ, "DOCKER_HOST": daemon.url, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(daemon.client_dir)}
        copies = []
        with tempfile.TemporaryDirectory() as folder:
            for _ in range(3):
                started = time.monotonic()
                subprocess.run([cli, "cp", f"{container_id}:{PATH}", f"{folder}/out.pkl"], env=env, check=True,
                               capture_output=True)
                copies.append(time.monotonic() - started)
    finally:
        client.api.remove_container(container_id, force=True)
        client.close()
    best_ours, best_cp = min(ours), min(copies)
    figures = {"megabytes": megabytes, "ours_s_best_of_3": round(best_ours, 2), "ours_all_s": [round(x, 2) for x in ours],
               "docker_cp_s_best_of_3": round(best_cp, 2), "docker_cp_all_s": [round(x, 2) for x in copies],
               "ratio": round(best_ours / best_cp, 2), "rss_before_mb": round(start_rss, 1), "rss_peak_mb": round(peak, 1)}
    print(f"[p4] {figures}", flush=True)
    return Result(name="P4 output retrieval", figures=figures,
                  target="exit -> decoded value <= 1.5 x docker cp (which only copies, no decoding)",
                  met=best_ours <= 1.5 * best_cp,
                  notes=["ours = get_archive over mutual TLS + tar extraction + pickle.loads, on the worker",
                         "docker cp = the docker CLI copying the same file to local disk over the same TLS daemon"])

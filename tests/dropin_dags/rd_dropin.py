"""The official provider's examples and the behaviours a switching user relies on, built twice from one
definition: with the official DockerOperator / @task.docker and with ours, the import being the only
difference. tests/airflow/test_dropin.py runs both DAGs of each pair on the test daemon and compares them.

Besides the import, only what this machine forces is changed from the official examples: the image (no
registry is reachable: local images stand in for centos and python:3.9-slim), network_mode="none" (no
bridge network here), and the virtualenv task of the TaskFlow example is a plain @task (its requirement
would be installed from PyPI).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

from airflow.providers.docker.operators.docker import DockerOperator
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import DAG, task
from docker.types import Mount

from remote_docker.operators import RemoteDockerOperator

IMAGE = os.environ.get("REMOTE_DOCKER_TEST_IMAGE", "rd-test/busybox:latest")
PYTHON = os.environ.get("REMOTE_DOCKER_TEST_PYTHON_IMAGE", "rd-test/python:3.11")
WITH_DILL = os.environ.get("REMOTE_DOCKER_TEST_CLOUDPICKLE_IMAGE", "rd-test/python-cloudpickle:3.11")
OUT = Path(os.environ.get("DROPIN_OUT", "/tmp/rd-dropin"))  # what callbacks saw, per DAG and task
CERTS = Path(os.environ.get("REMOTE_DOCKER_TEST_CERTS", "/tmp"))
URL = os.environ.get("REMOTE_DOCKER_TEST_URL", "tcp://127.0.0.1:2376")
CLOSED = os.environ.get("DROPIN_CLOSED_URL", "tcp://127.0.0.1:9")
START = dt.datetime(2021, 1, 1)
# how both reach the test daemon: the official operator's own arguments, which ours takes too
DAEMON = {"docker_url": URL, "tls_ca_cert": str(CERTS / "ca.pem"), "tls_client_cert": str(CERTS / "cert.pem"),
          "tls_client_key": str(CERTS / "key.pem"), "mount_tmp_dir": False}
FLAVOURS = {"official": DockerOperator, "ours": RemoteDockerOperator}


def seen(context, what: dict) -> None:
    """Write what a callback saw, for the test to compare."""
    ti = context["ti"]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{ti.dag_id}.{ti.task_id}.json").write_text(json.dumps(what))


def failure_seen(context) -> None:
    error = context.get("exception")
    seen(context, {"classes": [klass.__name__ for klass in type(error).__mro__], "logs": [str(line) for line in
                                                                                         getattr(error, "logs", None) or []]})


def surface_seen(context) -> None:
    """What a user's callback or subclass touches of the operator."""
    operator = context["task"]
    seen(context, {"format_command": operator.format_command("['echo', 'a b']"),
                   "hook": type(operator.hook).__name__ in ("DockerHook", "RemoteDockerHook"),
                   "env_file": operator.unpack_environment_variables("A=1\nB=two"),
                   "cli_api": bool(operator.cli.version()["ApiVersion"]),
                   "container_id": isinstance((operator.container or {}).get("Id"), str)})


for flavour, Operator in FLAVOURS.items():
    # ---- example_docker: the official "howto" DAG
    with DAG(f"docker_test_{flavour}", schedule=None, start_date=START, catchup=False, tags=["example", "docker"]):
        t1 = BashOperator(task_id="print_date", bash_command="date")
        t2 = BashOperator(task_id="sleep", bash_command="sleep 5", retries=3)
        t3 = Operator(command="/bin/sleep 30", image=IMAGE, network_mode="none", task_id="docker_op_tester", **DAEMON)
        t4 = BashOperator(task_id="print_hello", bash_command='echo "hello world!!!"')
        t1 >> [t2, t3] >> t4

    # ---- example_docker_copy_data: find a file, move it in a container with bind mounts, print it
    data = Path(os.environ.get("DROPIN_DATA", "/tmp/rd-dropin-data")) / flavour
    with DAG(f"docker_sample_copy_data_{flavour}", schedule=None, start_date=START, catchup=False,
             tags=["example", "docker"]):
        t_view = BashOperator(task_id="view_file", do_xcom_push=True, params={"source_location": str(data / "in")},
                              bash_command='find {{params.source_location}} -type f -printf "%f\\n" | head -1')
        t_is_data_available = ShortCircuitOperator(task_id="check_if_data_available",
                                                   python_callable=lambda task_output: task_output != "",
                                                   op_kwargs={"task_output": t_view.output})
        t_move = Operator(
            api_version="1.19", image=IMAGE, network_mode="none", task_id="move_data", do_xcom_push=True,
            mounts=[Mount(source=str(data / "in"), target="/your/input_dir/path", type="bind"),
                    Mount(source=str(data / "out"), target="/your/output_dir/path", type="bind")],
            command=["/bin/sh", "-c", f"/bin/mv {{{{ params.source_location }}}}/{t_view.output} {{{{ params.target_location }}}};"
                                      f"/bin/echo '{{{{ params.target_location }}}}/{t_view.output}';"],
            params={"source_location": "/your/input_dir/path", "target_location": "/your/output_dir/path"}, **DAEMON)
        t_print = Operator(image=IMAGE, network_mode="none", task_id="print", command=f"cat {t_move.output}",
                           mounts=[Mount(source=str(data / "out"), target="/your/output_dir/path", type="bind")], **DAEMON)
        t_is_data_available >> t_move >> t_print

    # ---- example_taskflow_api_docker_virtualenv: extract -> @task.docker transform (multiple_outputs) -> load
    with DAG(f"docker_taskflow_{flavour}", schedule=None, start_date=START, catchup=False, tags=["example", "docker"]):
        @task
        def extract():
            import json

            return json.loads('{"1001": 301.27, "1002": 433.21, "1003": 502.22}')

        # the decorator must be written out: Airflow strips that very line from the source it ships
        if flavour == "official":
            @task.docker(image=PYTHON, multiple_outputs=True, network_mode="none", **DAEMON)
            def transform(order_data_dict: dict):
                total_order_value = 0
                for value in order_data_dict.values():
                    total_order_value += value
                return {"total_order_value": total_order_value}
        else:
            @task.remote_docker(image=PYTHON, multiple_outputs=True, network_mode="none", **DAEMON)
            def transform(order_data_dict: dict):
                total_order_value = 0
                for value in order_data_dict.values():
                    total_order_value += value
                return {"total_order_value": total_order_value}

        @task()
        def load(total_order_value: float):
            print(f"Total order value is: {total_order_value:.2f}")

        order_summary = transform(extract())
        load(order_summary["total_order_value"])

    # ---- behaviours a switching user's DAGs rely on (tests/airflow/test_dropin.py, the table in docs/migrating.md)
    with DAG(f"dropin_{flavour}", schedule=None, start_date=START, catchup=False):
        def run(task_id: str, script: str, operator: type = Operator, **kwargs):
            return operator(task_id=task_id, image=IMAGE, network_mode="none", command=["sh", "-c", script],
                            **{**DAEMON, **kwargs})

        run("strip", "echo first; echo 'x   '")
        run("blank_last", "echo first; echo '   '")
        run("xcom_all", "echo 'a  '; echo b", xcom_all=True)
        run("xcom_all_empty", "true", xcom_all=True)
        run("environment", 'echo "$D|$L|$T|${N-unset}"', environment={"D": {"n": 1}, "L": [1, 2], "T": True, "N": None})
        run("fails", "echo before-failure; exit 3", on_failure_callback=failure_seen)
        run("skipped", "echo skipping; exit 42", skip_on_exit_code=42)
        run("bad_pickle", "echo not-a-pickle > /tmp/out", retrieve_output=True, retrieve_output_path="/tmp/out",
            retries=1, retry_delay=dt.timedelta(0))
        run("no_output_path", "echo x > /tmp/out", retrieve_output=True)
        run("timeout_trap", "trap 'echo cleaned-up; exit 143' TERM; echo started; while true; do sleep 0.1; done",
            execution_timeout=dt.timedelta(seconds=4))
        run("url_list", "echo reached", docker_url=[CLOSED, URL])
        run("fixed_name", "echo try-{{ ti.try_number }}; exit 1", container_name=f"rd-dropin-{flavour}-fixed",
            retries=1, retry_delay=dt.timedelta(0))
        run("surface", "echo surfaced", on_success_callback=surface_seen)

        if flavour == "official":
            @task.docker(image=WITH_DILL, network_mode="none", serializer="dill", **DAEMON)
            def with_dill(values: list[int]) -> int:
                return sum(values)

            @task.docker(image=PYTHON, network_mode="none", serializer=None, **DAEMON)
            def default_serializer(word: str) -> str:
                return word.upper()
        else:
            @task.remote_docker(image=WITH_DILL, network_mode="none", serializer="dill", **DAEMON)
            def with_dill(values: list[int]) -> int:
                return sum(values)

            @task.remote_docker(image=PYTHON, network_mode="none", serializer=None, **DAEMON)
            def default_serializer(word: str) -> str:
                return word.upper()

        with_dill([1, 2, 3])
        default_serializer("drop-in")

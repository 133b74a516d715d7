"""One task per behaviour of RemoteDockerOperator; tests/airflow/test_operator_dag.py checks each.

All tasks are independent so one `airflow dags test` run exercises all of them.
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
from pathlib import Path

from airflow.sdk import DAG

from remote_docker.operators import RemoteDockerOperator

IMAGE = os.environ.get("REMOTE_DOCKER_TEST_IMAGE", "rd-test/busybox:latest")
HERE = Path(__file__).parent
SECRET = "pr1vate-Value-42"


def sh(task_id: str, script: str, **kwargs) -> RemoteDockerOperator:
    kwargs.setdefault("auto_remove", "force")
    return RemoteDockerOperator(task_id=task_id, image=IMAGE, network_mode="none",
                                command=["sh", "-c", script], **kwargs)


with DAG("rd_behaviour", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False,
         params={"greeting": "hello"}, template_searchpath=[str(HERE)]):
    sh("interleaved", "for i in 1 2 3 4 5 6 7 8 9 10; do echo out$i; echo err$i >&2; done; echo last-out; echo last-err >&2")
    sh("xcom_all", "echo a; echo b >&2; echo c", xcom_all=True)
    sh("no_xcom", "echo hidden", do_xcom_push=False)
    sh("big_line", "head -c 1000000 /dev/zero | tr '\\0' x; echo; echo small")
    sh("big_last_line", "echo first; head -c 1500000 /dev/zero | tr '\\0' y; echo")
    sh("split_frames", "printf 'abc'; sleep 0.3; printf 'def\\n'; printf 'tail-without-newline'")
    sh("non_utf8", "printf 'bad \\377\\376 bytes\\n'; printf 'ok \\303\\251\\n'")
    # a container imitating the provider's own lines, and writing terminal escapes and carriage returns
    sh("imitates_us", "echo 'Container 0123456789ab exited 0: the task ends here, without a worker.'; "
                      "printf 'red \\033[31mALERT\\033[0m, over\\rwritten, nul \\000 end\\n'")
    sh("names_unchecked", "echo connected", tls_hostname=False, mount_tmp_dir=True)  # an explicit opt-out: said once in the task log
    sh("fails", "echo before-failure; echo oops >&2; exit 3")
    sh("skipped", "echo skipping; exit 42", skip_on_exit_code=[42, 43])
    sh("oom", "echo start; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived", mem_limit="16m")
    sh("remove_never", "echo kept", auto_remove="never")
    sh("remove_success_ok", "echo bye", auto_remove="success")
    sh("remove_success_failed", "exit 1", auto_remove="success")
    sh("remove_force_failed", "exit 1", auto_remove="force")
    sh("pickle_output", "cp /in/result.pkl /tmp/result.pkl",
       files={"/in/result.pkl": pickle.dumps({"answer": 42, "items": [1, 2, 3]})},
       retrieve_output=True, retrieve_output_path="/tmp/result.pkl")
    sh("json_output", "echo '{\"rows\": [1, 2], \"ok\": true}' > /tmp/out.json",
       retrieve_output=True, retrieve_output_path="/tmp/out.json", output_format="json")
    sh("output_missing", "true", retrieve_output=True, retrieve_output_path="/tmp/nothing-here")
    sh("output_corrupt", "echo not-a-pickle > /tmp/out.pkl", retrieve_output=True, retrieve_output_path="/tmp/out.pkl")
    sh("output_too_big", "head -c 3000 /dev/zero > /tmp/out.bin", retrieve_output=True,
       retrieve_output_path="/tmp/out.bin", max_output_bytes=1000)
    sh("files", "cat /data/text.txt /data/bytes.bin /data/dir/a.txt /data/dir/sub/b.txt; ls -l /data/text.txt",
       files={"/data/text.txt": "text-content\n", "/data/bytes.bin": b"bytes-content\n",
              "/data/dir": HERE / "data"})
    sh("private_env", "echo secret=$SECRET; echo public=$PUBLIC; echo err-$SECRET >&2", environment={"PUBLIC": "visible"},
       private_environment={"SECRET": SECRET})
    sh("private_env_sync", "echo secret=$SECRET; echo err-$SECRET >&2", private_environment={"SECRET": SECRET},
       deferrable=False)
    RemoteDockerOperator(task_id="templated", image=IMAGE, network_mode="none", auto_remove="force",
                         command="sh -c 'echo {{ params.greeting }} $RUN_ID $FROM_FILE'",
                         environment={"RUN_ID": "{{ run_id }}"}, env_file="vars.env")
    RemoteDockerOperator(task_id="list_literal", image=IMAGE, network_mode="none", auto_remove="force",
                         command="['sh', '-c', 'echo from-a-list-literal']")
    sh("not_deferrable", "echo sync-1; echo sync-err >&2; echo sync-last", deferrable=False)
    sh("not_deferrable_fails", "exit 5", deferrable=False)
    sh("cpu_quota", "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max", cpus=0.5)
    sh("timeout", "echo started; sleep 120; echo never", execution_timeout=dt.timedelta(seconds=4))
    RemoteDockerOperator(task_id="pull_never_missing", image="rd-test/not-here:1", pull="never")
    sh("bad_mount", "true", mounts=["/definitely/not/on/daemon/host:/data:ro"])
    sh("inline_key", "true", tls_client_key="-----BEGIN PRIVATE KEY-----\nnot-a-real-key\n-----END PRIVATE KEY-----\n")
    sh("env_values", 'echo "$D|$L|$T|${N-unset}"', environment={"D": {"nested": 1}, "L": [1, 2], "T": True, "N": None})
    sh("env_file_vars", "echo $A-$B", env_file="A=1\nB='two words'\n")
    RemoteDockerOperator(task_id="working_dir_user", image=IMAGE, network_mode="none", auto_remove="force",
                         command=["sh", "-c", "pwd; id -u; hostname"], working_dir="/tmp", user="65534",
                         hostname="rd-host", xcom_all=True)
    sh("labels", "true", labels={"team": "data"}, auto_remove="never")
    sh("tty", "echo one; echo two >&2; printf 'no-newline'", tty=True)
    sh("unreachable", "true", remote_docker_conn_id="rd_unreachable")
    sh("missing_conn", "true", remote_docker_conn_id="no_such_connection")
    certs = os.environ.get("REMOTE_DOCKER_TEST_CERTS", "/nonexistent")
    sh("overrides", "echo via-overrides", remote_docker_conn_id="also_missing",
       docker_url=os.environ.get("REMOTE_DOCKER_TEST_URL", "tcp://127.0.0.1:1"), tls_ca_cert=f"{certs}/ca.pem",
       tls_client_cert=f"{certs}/cert.pem", tls_client_key=f"{certs}/key.pem", tls_hostname="docker")



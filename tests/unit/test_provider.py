"""Airflow discovers the provider: package, connection type, and its form fields."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import VENV_BIN

from remote_docker import compat


def airflow_json(*args: str) -> list[dict]:
    result = subprocess.run([str(VENV_BIN / "airflow"), *args, "-o", "json"], capture_output=True, text=True,
                            env=os.environ, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_airflow_lists_the_provider() -> None:
    providers = {p["package_name"]: p for p in airflow_json("providers", "list")}
    assert "airflow-provider-remote-docker" in providers
    assert providers["airflow-provider-remote-docker"]["version"]


def test_connection_type_and_form_fields() -> None:
    hooks = {h["connection_type"]: h for h in airflow_json("providers", "hooks")}
    assert hooks["remote_docker"]["class"] == "remote_docker.hook.RemoteDockerHook"
    fields = {w["connection_parameter_name"] for w in airflow_json("providers", "widgets")}
    ours = {f"extra__remote_docker__{name}" for name in
            ("ca_cert", "client_cert", "client_private_key", "tls", "tls_verify", "tls_hostname", "api_version", "timeout")}
    if compat.CONNECTION_FORM_FIELDS:
        assert ours <= fields, ours - fields
    else:  # 3.1: form fields only from wtforms widgets (FAB); ours are read from Extra JSON alike
        assert not ours & fields

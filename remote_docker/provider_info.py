"""What Airflow's providers manager learns about this package (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from remote_docker import __version__

_PEM_HELP = "A file path readable on every worker and triggerer, or the PEM text itself."


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-remote-docker",
        "name": "Remote Docker",
        "description": "Run Airflow tasks as containers on remote Docker daemons over mutual TLS, deferrably.",
        "versions": [__version__],
        "integrations": [
            {"integration-name": "Remote Docker", "external-doc-url": "https://docs.docker.com/engine/security/protect-access/"}
        ],
        "hooks": [{"integration-name": "Remote Docker", "python-modules": ["remote_docker.hook"]}],
        "connection-types": [
            {
                "hook-class-name": "remote_docker.hook.RemoteDockerHook",
                "hook-name": "Remote Docker (mutual TLS)",
                "connection-type": "remote_docker",
                "conn-fields": {
                    # "multiline": a textarea, so a pasted PEM keeps its line breaks (Airflow >= 3.2's form)
                    "ca_cert": {"label": "CA certificate", "description": _PEM_HELP,
                                "schema": {"type": ["string", "null"], "format": "multiline"}},
                    "client_cert": {"label": "Client certificate", "description": _PEM_HELP,
                                    "schema": {"type": ["string", "null"], "format": "multiline"}},
                    # the name holds "private_key", which Airflow masks in its API, form and logs; "password":
                    # a hidden input (its line breaks are flattened by the browser: the PEM is rebuilt on use)
                    "client_private_key": {"label": "Client private key", "description": _PEM_HELP,
                                           "schema": {"type": ["string", "null"], "format": "password"}},
                    "tls": {"label": "TLS", "description": "Untick only for a plain-HTTP socket proxy.",
                            "schema": {"type": ["boolean", "null"], "default": True}},
                    "tls_verify": {"label": "Verify the daemon's certificate",
                                   "schema": {"type": ["boolean", "null"], "default": True}},
                    "tls_hostname": {"label": "TLS hostname", "description": "Name the daemon's certificate carries, if not the host's.",
                                     "schema": {"type": ["string", "null"]}},
                    "api_version": {"label": "Engine API version",
                                    "description": "Empty or auto: negotiated with the daemon (the default).",
                                    "schema": {"type": ["string", "null"]}},
                    "timeout": {"label": "API timeout (s)", "schema": {"type": ["number", "null"], "default": 60}},
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "password"],
                    "relabeling": {"host": "Daemon URL"},
                    "placeholders": {"host": "tcp://docker:2376", "port": "2376"},
                },
            }
        ],
        "triggers": [{"integration-name": "Remote Docker", "python-modules": ["remote_docker.triggers", "remote_docker.capacity"]}],
        "operators": [{"integration-name": "Remote Docker", "python-modules": ["remote_docker.operators", "remote_docker.build", "remote_docker.prune"]}],
        "task-decorators": [{"name": "remote_docker", "class-name": "remote_docker.decorators.remote_docker_task"}],
    }

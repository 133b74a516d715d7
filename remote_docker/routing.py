"""Routing tasks to daemons by DAG, as an Airflow cluster policy: a small YAML file -> ``task_policy``.

What users of one-Airflow-per-server setups kept in a routing file, as one policy for one Airflow::

    # $AIRFLOW_HOME/config/airflow_local_settings.py
    from remote_docker.routing import task_policy_from

    task_policy = task_policy_from("/opt/airflow/config/remote_docker_routes.yaml")

    # remote_docker_routes.yaml: the first route that matches a task wins
    routes:
      - dag_id: "billing_*"          # fnmatch patterns; dag_id and task_id default to "*"
        daemon: billing-host          # pin to a daemon of the task's pool connection
      - dag_id: "ml_*"
        task_id: "train_*"
        daemon_labels: {gpu: "true"}  # or keep to daemons with these labels

A route touches only ``RemoteDockerOperator`` tasks (and ``@task.remote_docker``) that set neither
``daemon`` nor ``daemon_labels`` themselves: what a DAG says wins over the file. A bad file fails at
import with one line naming the file, the route and the fix, so the scheduler refuses to start on it
rather than run tasks where they were not meant to go.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_KEYS = {"dag_id", "task_id", "daemon", "daemon_labels"}


class RoutingError(ValueError):
    """The routing file can't be used; the message names the file, the route and the fix."""


@dataclass(frozen=True)
class Route:
    dag_id: str = "*"
    task_id: str = "*"
    daemon: str | None = None
    daemon_labels: tuple[tuple[str, str], ...] = ()

    def matches(self, dag_id: str, task_id: str) -> bool:
        return fnmatch.fnmatchcase(dag_id, self.dag_id) and fnmatch.fnmatchcase(task_id, self.task_id)


def load_routes(path: str | Path) -> list[Route]:
    import yaml

    where = Path(path)
    try:
        data = yaml.safe_load(where.read_text())
    except FileNotFoundError:
        raise RoutingError(f"routing file {where} does not exist; create it or fix the path in airflow_local_settings.py") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise RoutingError(f"routing file {where} is not valid YAML{at}; fix its syntax") from None
    routes = (data or {}).get("routes") if isinstance(data, dict) else None
    if not isinstance(routes, list):
        raise RoutingError(f"routing file {where} needs a top-level 'routes:' list of {{dag_id, task_id, daemon | daemon_labels}}")
    return [_route(entry, f"routing file {where} route {i + 1}") for i, entry in enumerate(routes)]


def _route(entry: Any, where: str) -> Route:
    if not isinstance(entry, dict):
        raise RoutingError(f"{where} is {entry!r:.60}; give a mapping like {{dag_id: 'etl_*', daemon: host2}}")
    unknown = set(entry) - _KEYS
    if unknown:
        raise RoutingError(f"{where} has unknown key {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_KEYS))}")
    if bool(entry.get("daemon")) == bool(entry.get("daemon_labels")):
        raise RoutingError(f"{where} needs exactly one of daemon or daemon_labels")
    labels = entry.get("daemon_labels") or {}
    if not isinstance(labels, dict):
        raise RoutingError(f"{where} daemon_labels must be a mapping like {{gpu: 'true'}}")
    for key in ("dag_id", "task_id"):
        if not isinstance(entry.get(key, "*"), str):
            raise RoutingError(f"{where} {key} must be a text pattern such as 'etl_*'")
    return Route(dag_id=entry.get("dag_id", "*"), task_id=entry.get("task_id", "*"), daemon=entry.get("daemon"),
                 daemon_labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())))


def route_for(routes: list[Route], dag_id: str, task_id: str) -> Route | None:
    return next((route for route in routes if route.matches(dag_id, task_id)), None)


def task_policy_from(path: str | Path):
    """A ``task_policy`` for ``airflow_local_settings.py`` that applies the file's routes (read once)."""
    routes = load_routes(path)

    def task_policy(task: Any) -> None:
        from remote_docker.operators import RemoteDockerOperator

        if not isinstance(task, RemoteDockerOperator) or task.daemon or task.daemon_labels:
            return
        dag_id = task.dag.dag_id if getattr(task, "dag", None) else getattr(task, "dag_id", "")
        route = route_for(routes, dag_id, task.task_id)
        if route is not None:
            task.daemon = route.daemon
            task.daemon_labels = dict(route.daemon_labels)

    return task_policy

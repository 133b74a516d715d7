"""The parameter reference names every parameter the operator and the decorator take (no drift)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from remote_docker.decorators import _RemoteDockerDecoratedOperator
from remote_docker.operators import RemoteDockerOperator

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "parameters.md"


def documented() -> set[str]:
    names: set[str] = set()
    for row in REFERENCE.read_text().splitlines():
        if row.startswith("| `"):
            names.update(re.findall(r"`(\w+)`", row.split("|")[1]))
    return names


def test_every_operator_and_decorator_parameter_is_in_the_reference() -> None:
    taken = {name for cls in (RemoteDockerOperator, _RemoteDockerDecoratedOperator)
             for name, parameter in inspect.signature(cls.__init__).parameters.items()
             if name != "self" and parameter.kind is parameter.KEYWORD_ONLY}
    missing = taken - documented()
    assert not missing, f"docs/parameters.md has no row for {sorted(missing)}"
    assert {"multiple_outputs", "execution_timeout", "do_xcom_push"} <= documented()

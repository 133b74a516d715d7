"""Which Engine API version we speak: the negotiation rule and the user's settings (no daemon needed)."""

from __future__ import annotations

import pytest

from remote_docker.daemon.connection import DaemonConfigError, build_config, parse_api_version
from remote_docker.engine import versions
from remote_docker.engine.versions import DaemonFacts


def facts(oldest: str, newest: str, engine: str = "docker") -> DaemonFacts:
    return DaemonFacts(engine=engine, version="x", api_newest=newest, api_oldest=oldest)  # type: ignore[arg-type]


@pytest.mark.parametrize(("oldest", "newest", "spoken"), [
    ("1.12", "1.41", "1.41"),  # Docker 20.10
    ("1.24", "1.45", "1.45"),  # Docker 26.1
    ("1.24", "1.51", "1.51"),  # Docker 28.5
    ("1.44", "1.52", "1.51"),  # Docker 29: above its minimum, at our newest
    ("1.24", "1.44", "1.44"),  # Podman 5.8
])
def test_the_lower_of_both_newest_versions_is_spoken(oldest: str, newest: str, spoken: str) -> None:
    assert versions.choose(facts(oldest, newest), None, "https://d:2376") == spoken


def test_ranges_that_do_not_meet_are_one_line_naming_both() -> None:
    with pytest.raises(DaemonConfigError) as too_old:
        versions.choose(facts("1.12", "1.40"), None, "https://d:2376")
    assert str(too_old.value) == ("https://d:2376 is Docker x, Engine API 1.12-1.40; remote-docker speaks Engine API "
                                  f"{versions.OLDEST}-{versions.NEWEST} (Docker 20.10 or newer): upgrade the daemon, or "
                                  "set api_version to one it speaks at your own risk")
    with pytest.raises(DaemonConfigError, match=r"Engine API 1.60-1.62; remote-docker speaks .*: upgrade remote-docker, "
                                                r"or set api_version to 1.60 or newer"):
        versions.choose(facts("1.60", "1.62"), None, "https://d:2376")


def test_an_explicit_version_wins_over_negotiation() -> None:
    assert versions.choose(facts("1.44", "1.52"), "1.41", "https://d:2376") == "1.41"


@pytest.mark.parametrize(("given", "parsed"), [("1.44", "1.44"), ("v1.44", "1.44"), (" 1.41 ", "1.41"), ("auto", None),
                                               ("AUTO", None), ("", None), (None, None), (1.5, "1.5")])
def test_api_version_settings(given: object, parsed: str | None) -> None:
    assert parse_api_version(given, "api_version") == parsed


@pytest.mark.parametrize("bad", ["latest", "1", "1.x", "v2"])
def test_bad_api_version_is_one_line_with_the_fix(bad: str) -> None:
    with pytest.raises(DaemonConfigError, match=rf"^connection 'c' api_version is '{bad}'; give an Engine API version like "
                                                r"'1.44', or 'auto' to negotiate$"):
        build_config(host="unix:///x.sock", extras={"api_version": bad}, source="connection 'c'")


def test_docker_api_version_in_the_environment_counts_when_nothing_else_sets_one(monkeypatch: pytest.MonkeyPatch) -> None:
    config = build_config(host="unix:///x.sock", source="c")
    monkeypatch.setenv(versions.VERSION_ENV, "1.43")
    assert versions.explicit_for(config) == "1.43"
    assert versions.explicit_for(build_config(host="unix:///x.sock", extras={"api_version": "1.45"}, source="c")) == "1.45"
    monkeypatch.setenv(versions.VERSION_ENV, "auto")
    assert versions.explicit_for(config) is None


def test_engine_and_range_from_the_version_document() -> None:
    podman = DaemonFacts.from_document({"Version": "5.8.6", "ApiVersion": "1.44", "MinAPIVersion": "1.24",
                                        "Components": [{"Name": "Podman Engine"}, {"Name": "Conmon"}]})
    assert podman == DaemonFacts("podman", "5.8.6", "1.44", "1.24")
    docker = DaemonFacts.from_document({"Version": "28.5.2", "ApiVersion": "1.51", "MinAPIVersion": "1.44",
                                        "Components": [{"Name": "Engine"}, {"Name": "containerd"}]})
    assert docker.engine == "docker" and docker.describe() == "Docker 28.5.2, Engine API 1.44-1.51"


def test_an_explicit_version_older_than_ours_is_negotiated_instead(caplog: pytest.LogCaptureFixture) -> None:
    """The official operator's own examples pin api_version="1.19": sent as is, fields we send would be dropped."""
    old = build_config(host="unix:///x.sock", extras={"api_version": "1.19"}, source="c")
    with caplog.at_level("WARNING"):
        assert versions.explicit_for(old) is None
    assert "api_version 1.19 is older than 1.41, the oldest remote-docker speaks" in caplog.text


def test_podman_4_is_refused_in_one_line_before_any_task_hangs_on_it() -> None:
    facts = DaemonFacts.from_document({"Version": "4.3.1", "ApiVersion": "1.41", "MinAPIVersion": "1.24",
                                       "Components": [{"Name": "Podman Engine"}]})
    with pytest.raises(DaemonConfigError, match=r"^https://d:2376 is Podman 4\.3\.1, Engine API 1\.24-1\.41: Podman 4\.3\.1 "
                                                r"is not supported \(a task hangs after its container exits\); use Podman 5"):
        versions.choose(facts, None, "https://d:2376")
    newer = DaemonFacts.from_document({"Version": "5.8.6", "ApiVersion": "1.44", "MinAPIVersion": "1.24",
                                       "Components": [{"Name": "Podman Engine"}]})
    assert newer.unsupported is None and versions.choose(newer, None, "https://d:2376") == "1.44"

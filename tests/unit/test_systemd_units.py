"""The endpoint unit `fnserve endpoint enable-on-boot` writes, as text (no systemd needed)."""

from __future__ import annotations

import shlex

import pytest

from fnserve.cli.systemd_units import endpoint_unit, unit_name


def _lines(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(key + "=")]


def test_system_unit_runs_as_the_account_and_is_stopped_like_fnserve_endpoint_stop():
    text = endpoint_unit("hpc", ["/opt/venv/bin/python", "-m", "site_manager", "--config", "/home/a/.fnserve/endpoints/hpc/config.yaml"],
                         "/home/a/.fnserve", "/opt/venv/bin:/usr/bin", "alice", drain_timeout=30)
    assert _lines(text, "User") == ["alice"]
    assert _lines(text, "ExecStart") == ["/opt/venv/bin/python -m site_manager --config /home/a/.fnserve/endpoints/hpc/config.yaml"]
    assert _lines(text, "KillMode") == ["mixed"] and _lines(text, "TimeoutStopSec") == ["60"]
    assert _lines(text, "RestartPreventExitStatus") == ["2"] and _lines(text, "WantedBy") == ["multi-user.target"]
    assert _lines(text, "UMask") == ["0077"]


def test_user_unit_has_no_user_line_and_starts_with_the_users_session():
    text = endpoint_unit("hpc", ["/usr/bin/python3"], "/h", "/usr/bin", None, python_path="/src/fnserve")
    assert _lines(text, "User") == [] and _lines(text, "WantedBy") == ["default.target"]
    assert "PYTHONPATH=/src/fnserve" in _lines(text, "Environment")


def test_paths_with_spaces_and_percent_signs_survive_systemds_parsing():
    text = endpoint_unit("hpc", ["/opt/my venv/bin/python", "--config", "/data/100%/c.yaml"], "/home/a b/.fnserve", "/usr/bin", "a")
    argv = shlex.split(_lines(text, "ExecStart")[0])
    assert [a.replace("%%", "%") for a in argv] == ["/opt/my venv/bin/python", "--config", "/data/100%/c.yaml"]
    assert '"FNSERVE_HOME=/home/a b/.fnserve"' in _lines(text, "Environment")


@pytest.mark.parametrize("name", ["bad name", "a/b", "x;rm", ""])
def test_names_systemd_would_have_to_escape_are_refused(name):
    with pytest.raises(ValueError, match="systemd unit"):
        unit_name(name)


def test_unit_name():
    assert unit_name("my-cluster_1") == "fnserve-endpoint-my-cluster_1.service"

"""The shared stack harness (fnserve/testing/stack.py): what its commands run with (no stack started)."""

import sys

import pytest

from fnserve.testing.stack import SOURCE, Stack, StackCommandFailed


def test_commands_get_this_home_this_source_tree_and_no_token_from_outside(tmp_path, monkeypatch):
    monkeypatch.setenv("FNSERVE_TOKEN", "someone-elses")
    monkeypatch.setenv("FNSERVE_SERVICE_URL", "http://elsewhere:1")
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    stack = Stack(tmp_path / "home", port=23000, extra_env={"FNSERVE_X": "1"}, database_url="sqlite:///x.db")
    assert stack.env["FNSERVE_HOME"] == str(tmp_path / "home")
    assert "FNSERVE_TOKEN" not in stack.env and "FNSERVE_SERVICE_URL" not in stack.env
    assert stack.env["PYTHONPATH"].split(":") == [str(SOURCE), "/somewhere/else"]  # its processes run this fnserve
    assert stack.env["FNSERVE_X"] == "1" and stack.env["FNSERVE_DATABASE_URL"] == "sqlite:///x.db"
    assert stack.url == "http://127.0.0.1:23000" and stack.cwd == tmp_path / "home"
    assert (SOURCE / "fnserve" / "testing" / "stack.py").exists()


def test_a_failed_command_fails_with_its_output(tmp_path):
    stack = Stack(tmp_path, port=23000)
    argv = [sys.executable, "-c", "import sys; print('half done'); sys.exit('refused: port in use')"]
    with pytest.raises(StackCommandFailed, match="(?s)exited 1:\nhalf done\n.*refused: port in use"):
        stack.run(argv)
    assert stack.run(argv, check=False).returncode == 1

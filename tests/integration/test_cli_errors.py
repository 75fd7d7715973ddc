"""The CLI as a person meets it, on the real embedded stack (`fnserve up`): every error path
prints one line that says what to do (never a traceback), output is UTF-8, `fnserve token`
prints the token for scripts, and `fnserve watch` of a failed task says why it failed."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest
from fnserve.testing.stack import FNSERVE
from stack_support import REPO, running_stack

UNKNOWN = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("cli")) as stack:
        yield stack


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-files")
    (d / "good.py").write_text(
        'def greet(name):\n    return f"café for {name}"\n\n\n'
        'def refuse(x):\n    raise ValueError(f"no crème brûlée for {x}")\n\n\n'
        'def nap(s):\n    import time\n    time.sleep(s)\n    return s\n\n\n'
        'def progress(n):\n    import fnserve\n    fnserve.report(step=1)\n    raise RuntimeError("diverged at step 1")\n',
        encoding="utf-8")
    (d / "bad_syntax.py").write_text("def f(x)\n    return x\n")
    (d / "latin1.py").write_bytes("def f():\n    return 'caf\xe9'\n".encode("latin-1"))
    (d / "folder").mkdir()
    return d


@pytest.fixture(scope="module")
def ids(stack, files):
    def fid(name):
        return stack.cli("register", f"{files}/good.py:{name}").stdout.strip()

    return {name: fid(name) for name in ("greet", "refuse", "nap", "progress")}


def cli(stack, *args, env=None, timeout=120):
    return subprocess.run([*FNSERVE, *args], env={**stack.env, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, check=False, encoding="utf-8")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def error_cases(stack, files, ids):
    """(arguments, extra environment, exit code, what the one line must say)."""
    ep = stack.endpoint_id
    return [
        (["register", "good.py"], None, 2, "expected FILE.py:FUNC"),
        (["register", f"{files}/missing.py:f"], None, 2, "is not a file"),
        (["register", f"{files}/folder:f"], None, 2, "is not a file"),
        (["register", f"{files}/bad_syntax.py:f"], None, 1, "bad_syntax.py line 1"),
        (["register", f"{files}/latin1.py:f"], None, 1, "is not UTF-8 text (byte 0xe9 on line 2)"),
        (["register", f"{files}/good.py:nope"], None, 2, "defines no top-level function 'nope'"),
        (["run", ids["greet"]], None, 2, "Missing option '--endpoint'"),
        (["run", ids["greet"], "-e", ep, "--kwargs", "[1]"], None, 2, "--kwargs must be a JSON object"),
        (["run", UNKNOWN, "-e", ep, "1"], None, 1, "function_not_found"),
        (["run", ids["greet"], "-e", UNKNOWN, "1"], None, 1, "endpoint_not_found"),
        (["run", ids["refuse"], "-e", ep, '"tout"'], None, 1, "remote error: ValueError: no crème brûlée for tout"),
        (["run", ids["nap"], "-e", ep, "5", "--timeout", "0.2"], None, 2, "is still"),
        (["status", UNKNOWN], None, 1, "task_not_found"),
        (["result", UNKNOWN], None, 1, "task_not_found"),
        (["watch", UNKNOWN], None, 1, "task_not_found"),
        (["cancel", UNKNOWN], None, 1, "task_not_found"),
        (["functions"], {"FNSERVE_TOKEN": "fnst_not-a-token"}, 1, "fnserve login"),
        (["endpoints"], {"FNSERVE_SERVICE_URL": f"http://127.0.0.1:{closed_port()}"}, 1, "cannot reach the fnserve service"),
        (["no-such-command"], None, 2, "No such command 'no-such-command'"),
        (["runtime", "show", "no-such-runtime"], None, 1, "runtime_not_found"),
        (["share", "function", UNKNOWN, "--user", "bob"], None, 1, "function_not_found"),
        (["endpoint", "allow", UNKNOWN, ids["greet"]], None, 1, "endpoint_not_found"),
        (["usage", "--since", "last tuesday"], None, 1, "invalid_request"),
        (["endpoint", "start", "no-such-endpoint"], None, 1, "no endpoint 'no-such-endpoint'"),
    ]


def test_every_error_path_prints_one_line_a_person_can_act_on(stack, files, ids):
    failures = []
    for args, env, code, phrase in error_cases(stack, files, ids):
        out = cli(stack, *args, env=env)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        ok = out.returncode == code and len(lines) == 1 and phrase in lines[0] and "Traceback" not in out.stderr + out.stdout
        if not ok:
            failures.append((args, out.returncode, out.stdout[-300:], out.stderr[-600:]))
    assert not failures, "\n".join(map(str, failures))


def test_token_is_printed_for_scripts_and_refused_clearly_when_there_is_none(stack, tmp_path):
    out = cli(stack, "token")
    assert out.returncode == 0 and out.stdout == stack.token + "\n"
    empty = cli(stack, "token", env={"FNSERVE_HOME": str(tmp_path)})
    assert empty.returncode == 1 and empty.stderr.count("\n") == 1 and "fnserve login" in empty.stderr


def test_output_is_utf8_not_escaped(stack, ids):
    out = cli(stack, "run", ids["greet"], "-e", stack.endpoint_id, '"Zoë"')
    assert out.returncode == 0 and out.stdout == '"café for Zoë"\n'
    # Even when the locale says ASCII.
    task_id = cli(stack, "run", ids["refuse"], "-e", stack.endpoint_id, '"Zoë"', "--no-wait").stdout.strip()
    status = cli(stack, "result", task_id, env={"LC_ALL": "C", "LANG": "C", "PYTHONIOENCODING": "ascii"})
    assert "no crème brûlée for Zoë" in status.stderr and "\\u00e8" not in status.stderr
    shown = cli(stack, "status", task_id)
    assert json.loads(shown.stdout)["error"]["message"] == "no crème brûlée for Zoë" and "crème" in shown.stdout
    trace = cli(stack, "result", task_id, "--traceback")
    assert 'raise ValueError(f"no crème brûlée for {x}")' in trace.stderr


def test_watch_of_a_failed_task_says_why(stack, ids):
    task_id = cli(stack, "run", ids["progress"], "-e", stack.endpoint_id, "3", "--no-wait").stdout.strip()
    out = cli(stack, "watch", task_id)
    assert out.returncode == 1 and out.stdout == "[0] step=1\n"
    assert f"task {task_id}: failed: RuntimeError: diverged at step 1" in out.stderr

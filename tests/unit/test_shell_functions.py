"""Shell functions: the template rules and the output cut (pure), and one task run by the node
manager on a real /bin/sh (return code, both streams, the walltime's 124, the sandbox)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from fnserve import serialize, shell
from fnserve.messages import TaskMessage, decode_result, encode_task
from fnserve.shell import ShellArgumentError, ShellFunction, ShellTemplateError
from node_manager.execute import execute_task


def test_placeholders_are_plain_names_in_first_use_order():
    assert shell.placeholders("cp {src} {dst} && ls {dst} {{literal}}") == ["src", "dst"]
    assert shell.placeholders("no placeholders") == []
    for bad in ("echo {}", "echo {0}", "echo {a.b}", "echo {a[0]}", "echo {a!r}", "echo {a:>4}", "echo {a", "echo }"):
        with pytest.raises(ShellTemplateError):
            shell.placeholders(bad)


def test_render_quotes_every_argument_as_one_word():
    assert shell.render("grep -c {pattern} {files}", {"pattern": "a b", "files": ["x", "y z"]}) == "grep -c 'a b' x 'y z'"
    assert shell.render("echo {x}", {"x": "$(rm -rf ~); `id`"}) == "echo '$(rm -rf ~); `id`'"
    assert shell.render("sleep {s}", {"s": 1.5}) == "sleep 1.5"


@pytest.mark.parametrize("args, kwargs, code, placeholder", [
    ((), {"src": "a"}, "missing_placeholder", "dst"),
    ((), {}, "missing_placeholder", "src"),
    ((), {"src": "a", "dst": "b", "dts": "c"}, "unknown_placeholder", "dts"),
    (("a", "b"), {}, "invalid_shell_arguments", None),
    ((), {"src": None, "dst": "b"}, "invalid_shell_arguments", "src"),
    ((), {"src": True, "dst": "b"}, "invalid_shell_arguments", "src"),
    ((), {"src": {"k": 1}, "dst": "b"}, "invalid_shell_arguments", "src"),
    ((), {"src": "a\x00b", "dst": "b"}, "invalid_shell_arguments", "src"),
])
def test_bad_arguments_have_stable_codes_naming_the_placeholder(args, kwargs, code, placeholder):
    with pytest.raises(ShellArgumentError) as info:
        shell.check_arguments("cp {src} {dst}", args, kwargs)
    assert info.value.code == code and info.value.http_status == 400
    assert info.value.details.get("placeholder") == placeholder


def test_the_cut_keeps_the_end_and_says_how_much_went():
    assert shell.cut_output(b"all of it", 9) == ("all of it", 0)
    text, cut = shell.cut_output(b"6789", 10)
    assert cut == 6 and text == "[fnserve: first 6 bytes cut]\n6789"
    res = shell.result(0, (b"", 0), (b"tail", 1000), command="c", sandbox=None, timed_out=True)
    assert res["returncode"] == 124 and res["stderr_cut_bytes"] == 996 and res["stderr"].endswith("tail")


def test_spec_checks_and_buffer_round_trip():
    fn = ShellFunction("wc -l {path}", walltime=5, sandbox=True)
    buf = serialize.serialize_function(fn)  # the SDK path (Client.register_function, Executor.submit)
    assert serialize.parse_header(buf).strategy == "shell"
    back = serialize.deserialize_function(buf)
    assert isinstance(back, ShellFunction) and back.spec == fn.spec and fn.__name__ == "wc"
    with pytest.raises(TypeError, match="runs on an endpoint"):
        fn(path="x")
    for kwargs in ({"walltime": 0}, {"max_output_bytes": -1}, {"walltime": True}):
        with pytest.raises(ShellTemplateError):
            ShellFunction("ls", **kwargs)
    with pytest.raises(ShellTemplateError):
        shell.spec_from_json({"command": "ls", "unknown": 1})


def run_task(fn: ShellFunction, task_id: str = "t-1", walltime: float | None = None, **kwargs):
    buf = serialize.serialize_function(fn)
    # Workers cache functions by id: one id per distinct buffer, as the service gives them.
    task = TaskMessage(task_id=task_id, function_id=hashlib.sha256(buf).hexdigest(), function=buf,
                       payload=serialize.serialize_args((), kwargs, strategy="json-data"), walltime=walltime,
                       result_strategy="json-data")
    result = decode_result(execute_task(encode_task(task)))
    return result, (serialize.deserialize_data(result.data) if result.ok else None)


def test_a_real_command_gives_its_return_code_and_both_streams(tmp_path):
    data = tmp_path / "in put.txt"
    data.write_text("a\nb\nc\n")
    result, value = run_task(ShellFunction("wc -l < {path}; echo oops >&2; exit 3"), path=str(data))
    assert result.ok and serialize.parse_header(result.data).strategy == "json-data"  # curl reads it as JSON
    assert value["returncode"] == 3 and value["stdout"].strip() == "3" and value["stderr"] == "oops\n"
    assert value["command"] == f"wc -l < '{data}'; echo oops >&2; exit 3" and value["timed_out"] is False


def test_walltime_kills_the_command_and_its_children_with_124(tmp_path):
    marker = tmp_path / "late"
    fn = ShellFunction("(sleep 3; touch {marker}) & sleep 30", walltime=0.5)
    result, value = run_task(fn, marker=str(marker))
    assert result.ok and value["returncode"] == 124 and value["timed_out"]
    # The task's own walltime applies too, whichever is shorter.
    result, value = run_task(ShellFunction("sleep 30"), walltime=0.3)
    assert value["returncode"] == 124
    time.sleep(3.5)
    assert not marker.exists()  # the background child went with its group


def test_long_output_is_cut_from_the_start_and_stated(tmp_path):
    _, value = run_task(ShellFunction("seq 1 100000", max_output_bytes=100))
    whole = len("".join(f"{i}\n" for i in range(1, 100001)))
    assert value["stdout_cut_bytes"] == whole - 100
    assert value["stdout"].startswith(f"[fnserve: first {whole - 100} bytes cut]\n") and value["stdout"].endswith("100000\n")


def test_sandbox_is_a_fresh_private_folder_per_task(tmp_path, monkeypatch):
    monkeypatch.setenv("FNSERVE_SANDBOX_ROOT", str(tmp_path / "boxes"))
    fn = ShellFunction("pwd; echo {text} > out.txt; ls", sandbox=True)
    _, one = run_task(fn, task_id="task-a", text="first")
    _, two = run_task(fn, task_id="task-b", text="second")
    assert one["sandbox"] != two["sandbox"]
    for value, text in ((one, "first"), (two, "second")):
        box = value["sandbox"]
        assert value["stdout"].splitlines() == [box, "out.txt"]
        assert Path(box, "out.txt").read_text() == f"{text}\n"
        assert os.stat(box).st_mode & 0o077 == 0


def test_missing_placeholder_fails_the_task_with_its_code_when_not_checked_before():
    # Arguments the service could not read (dill) are checked by the worker: the same code.
    task = TaskMessage(task_id="t", function_id="f-x", function=serialize.serialize_function(ShellFunction("echo {a}")),
                       payload=serialize.serialize_args((), {}))
    result = decode_result(execute_task(encode_task(task)))
    assert not result.ok and result.error.code == "missing_placeholder" and "{a}" in result.error.message


def test_cancel_kills_the_command_with_its_worker(tmp_path):
    # A worker process (here a child Python) runs a shell task whose command starts a child of its own.
    control = tmp_path / "control"
    control.mkdir()
    task = TaskMessage(task_id="cancel-me", function_id="f-c", control_dir=str(control),
                       function=serialize.serialize_function(ShellFunction("sleep 120 & sleep 120")),
                       payload=serialize.serialize_args((), {}, strategy="json-data"))
    code = ("import sys; from node_manager.execute import execute_task; "
            "execute_task(sys.stdin.buffer.read())")
    import subprocess
    import sys

    worker = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, env={**os.environ})
    worker.stdin.write(encode_task(task))
    worker.stdin.close()
    deadline = time.monotonic() + 30
    while not any(p.name.startswith("g") for p in control.iterdir()):
        assert time.monotonic() < deadline and worker.poll() is None, "the command never started"
        time.sleep(0.05)
    pgid = int(next(p.name for p in control.iterdir() if p.name.startswith("g"))[1:])
    os.killpg(pgid, 0)  # alive

    from site_manager.cancel import kill_tasks

    kill_tasks(control, ("cancel-me",))
    assert worker.wait(10) == -9
    deadline = time.monotonic() + 10
    while True:  # every process of the command's group is gone (sleep and its background sleep)
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "the command outlived its cancelled worker"
        time.sleep(0.05)

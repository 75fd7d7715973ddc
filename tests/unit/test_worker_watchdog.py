"""The watchdog beside each worker process (node_manager.watchdog): a real worker process whose
task ignores SIGALRM and catches BaseException is SIGKILLed at walltime + grace by its helper,
in its own PID namespace; a task that returns in time disarms it and the worker lives on."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import msgspec

from fnserve import serialize
from fnserve.messages import TaskMessage, decode_result, encode_task

STUBBORN = '''
def stubborn(seconds):
    import signal, time
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            while time.monotonic() < end:
                sum(range(1000))
        except BaseException:
            pass
    return "finished"
'''


def _task(task_id: str, seconds: float, walltime: float, grace: float) -> bytes:
    return encode_task(TaskMessage(
        task_id=task_id, function_id="stubborn", function=serialize.serialize_source(STUBBORN, "stubborn"),
        payload=serialize.serialize_args([seconds], {}, serialize.JSON_DATA), walltime=walltime,
        walltime_grace=grace))


def _worker(conn, tasks: list[bytes]) -> None:
    from node_manager.execute import execute_task

    for t in tasks:
        conn.send_bytes(execute_task(t))
    conn.close()


def _run(tasks: list[bytes]) -> tuple[list, int, float, int]:
    parent, child = multiprocessing.get_context("fork").Pipe()
    proc = multiprocessing.get_context("fork").Process(target=_worker, args=(child, tasks))
    started = time.monotonic()
    proc.start()
    child.close()
    results = []
    while True:
        try:
            results.append(decode_result(parent.recv_bytes()))
        except EOFError:
            break
    proc.join(10)
    return results, proc.exitcode, time.monotonic() - started, proc.pid


def test_a_task_that_defeats_the_alarm_has_its_worker_killed_at_walltime_plus_grace():
    results, exitcode, took, _ = _run([_task("quick", 0.1, walltime=5.0, grace=0.5), _task("stuck", 60, walltime=0.5, grace=0.5)])
    # The first task returned in time (the watchdog was disarmed); the second never returned.
    assert [r.task_id for r in results] == ["quick"] and results[0].ok, [msgspec.to_builtins(r) for r in results]
    assert exitcode == -signal.SIGKILL
    assert 1.0 <= took < 6.0, took


def test_a_disarmed_watchdog_never_kills_and_follows_its_worker_out():
    results, exitcode, _, worker = _run([_task(f"t{i}", 0.05, walltime=0.3, grace=0.1) for i in range(5)])
    assert [r.ok for r in results] == [True] * 5 and exitcode == 0
    # The helper ends when its worker does (the pipe closes): none is left behind.
    deadline = time.monotonic() + 5
    while _helpers(worker):
        assert time.monotonic() < deadline, _helpers(worker)
        time.sleep(0.05)


def _helpers(worker: int) -> list[int]:
    """The watchdog helpers of ``worker`` (its pid is the helper's last argument)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"os.kill(worker, signal.SIGKILL)" in cmd and cmd.rstrip(b"\0").endswith(b"\0" + str(worker).encode()):
            found.append(int(pid))
    return found


# A worker running a shell function's command, which starts a background process of its own and
# writes both pids to a file; the command runs in a session of its own (as for a walltime kill).
_SHELL_WORKER = """
import sys
from fnserve.shell import ShellFunction
from node_manager import shell
shell.run(ShellFunction("sleep 60 & echo $$ $! > {path}; wait"), [], {"path": sys.argv[1]}, "t1")
"""


def test_a_killed_worker_takes_its_shell_commands_process_group_along(tmp_path):
    import subprocess
    import sys

    pids = tmp_path / "pids"
    worker = subprocess.Popen([sys.executable, "-c", _SHELL_WORKER, str(pids)],
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    command: list[int] = []
    try:
        deadline = time.monotonic() + 20
        while not (pids.exists() and len(pids.read_text().split()) == 2) and time.monotonic() < deadline:
            time.sleep(0.02)
        command = [int(p) for p in pids.read_text().split()]
        os.kill(worker.pid, signal.SIGKILL)  # the worker dies (its pool was killed, say)
        worker.wait()
        deadline = time.monotonic() + 3
        while any(_alive(p) for p in command) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [p for p in command if _alive(p)] == [], "the command outlived its worker"
    finally:
        for pid in command:
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL) if pid == command[0] else os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False

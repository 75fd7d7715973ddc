"""Walltime enforced from outside the task, on the embedded stack (real site manager, real Parsl
workers): a function that ignores SIGALRM and one that catches BaseException in a loop both
defeat the in-process limit; the site manager kills their workers past walltime + grace, the
tasks fail ``walltime_exceeded`` once each (a line per execution in a file counts them), and the
next task still runs.
"""

from __future__ import annotations

import time

import pytest
import yaml
from stack_support import running_stack

from fnserve.errors import TaskFailed

pytestmark = pytest.mark.integration

IGNORES_ALARM = '''
def ignores_alarm(path):
    import os, signal, time
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\\n")
    while True:
        time.sleep(0.05)
'''

CATCHES_EVERYTHING = '''
def catches_everything(path):
    import os, time
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\\n")
    while True:
        try:
            while True:
                time.sleep(0.05)
        except BaseException:
            pass
'''

GRACE = 2.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("walltime")
    with running_stack(tmp / "home") as st:
        config = tmp / "home/endpoints/local/config.yaml"
        data = yaml.safe_load(config.read_text())
        data["walltime_grace"] = GRACE
        # Parsl's worker pool restarts a dead worker at its heartbeat: keep that short here.
        data["engine"].update(heartbeat_period=2, heartbeat_threshold=10)
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        st.cli("endpoint", "restart", "local")
        yield st


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def test_tasks_that_defeat_the_in_process_limit_are_killed_from_outside_and_fail_once(stack):
    fc = stack.client()
    runs = {name: stack.tmp / f"{name}.runs" for name in ("ignores_alarm", "catches_everything")}
    fids = {"ignores_alarm": fc.register_source(IGNORES_ALARM, "ignores_alarm"),
            "catches_everything": fc.register_source(CATCHES_EVERYTHING, "catches_everything")}
    started = time.monotonic()
    tasks = {name: fc.submit(fids[name], stack.endpoint_id, [str(runs[name])], walltime=1.0, serializer="json-data")
             for name in fids}
    for name, task_id in tasks.items():
        with pytest.raises(TaskFailed) as failed:
            fc.get_result(task_id, timeout=60)
        assert failed.value.code == "walltime_exceeded", failed.value
        assert "walltime of 1 s" in str(failed.value) and "killed" in str(failed.value)
    # Ended after walltime + grace, not much later (the site manager checks every second).
    assert 1.0 + GRACE <= time.monotonic() - started < 1.0 + GRACE + 15
    pids = {name: [int(x) for x in path.read_text().split()] for name, path in runs.items()}
    # The worker processes that ran them are gone (killed, not left spinning).
    deadline = time.monotonic() + 5
    while any(_alive(p) for ps in pids.values() for p in ps):
        assert time.monotonic() < deadline, f"workers still running: {pids}"
        time.sleep(0.1)
    # Each ran exactly once: a walltime kill is not retried.
    time.sleep(3)
    assert {name: len(path.read_text().split()) for name, path in runs.items()} == {"ignores_alarm": 1, "catches_everything": 1}
    # The endpoint goes on: the next task runs (Parsl restarted the killed workers).
    double = fc.register_source("def double(x):\n    return 2 * x\n", "double")
    assert fc.get_result(fc.submit(double, stack.endpoint_id, [21], serializer="json-data"), timeout=60) == 42


def test_a_task_within_its_walltime_is_left_alone(stack):
    fc = stack.client()
    fid = fc.register_source("def nap(s):\n    import time\n    time.sleep(s)\n    return s\n", "nap")
    assert fc.get_result(fc.submit(fid, stack.endpoint_id, [1.5], walltime=3.0, serializer="json-data"), timeout=60) == 1.5

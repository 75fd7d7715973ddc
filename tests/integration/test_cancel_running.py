"""Cancelling a task that is already running, on a real `fnserve up` stack.

The task notes its worker's pid in a file and sleeps; the test cancels it through the SDK and
checks what the user relies on: the task ends `cancelled` at once, its worker process is killed
(so the endpoint's capacity comes back), it is not rerun, and the endpoint keeps working.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from stack_support import running_stack
from test_faults import _wait_for_pids, pid_recorder

from fnserve.errors import TaskCancelled


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("cancel")) as s:
        yield s


def _alive(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie waiting to be reaped counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_cancelling_a_running_task_kills_its_worker_and_the_endpoint_keeps_working(stack, tmp_path):
    client = stack.client()
    fid = client.register_function(pid_recorder())
    marker = tmp_path / "pids"
    task_id = client.submit(fid, stack.endpoint_id, (str(marker),))
    pid = _wait_for_pids(marker, 1)[0]  # running: it sleeps 300 s
    # The worker's start marker reaches the service a moment after the function began.
    deadline = time.monotonic() + 10
    while client.get_task(task_id)["state"] != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get_task(task_id)["state"] == "running"

    answer = client.cancel(task_id)
    assert answer["state"] == "cancelled"
    with pytest.raises(TaskCancelled):
        client.get_result(task_id, timeout=5)

    deadline = time.monotonic() + 15
    while _alive(pid) and time.monotonic() < deadline:  # the test's own wait for another process
        time.sleep(0.1)
    assert not _alive(pid), "the worker running the cancelled task was not stopped"

    # Not rerun (a kill after a cancel is not a lost worker), and the endpoint still serves:
    # the next run finds one earlier run in the file and returns 2.
    assert client.get_result(client.submit(fid, stack.endpoint_id, (str(marker),)), timeout=60) == 2
    assert client.get_task(task_id)["state"] == "cancelled"
    assert len(marker.read_text().split()) == 2

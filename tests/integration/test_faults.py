"""Faults at small scale on a real `fnserve up` stack: a worker process killed with SIGKILL.

The task reports its worker's pid through a file; the test kills that process with kill -9 and
checks what the user sees: the task is rerun (bounded by max_retries) and succeeds, or, out of
retries, fails with `worker_lost` naming the attempts. The endpoint keeps working afterwards.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from stack_support import running_stack

from fnserve.errors import TaskFailed


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("faults")) as s:
        yield s


def pid_recorder():
    """A function (nested, so dill ships it by value) that notes its worker's pid in a file and,
    on its first run, sleeps (the test kills it); later runs return the number of runs so far."""

    def record_pid_then_sleep(path: str) -> int:
        import os
        import time
        from pathlib import Path

        p = Path(path)
        runs = p.read_text().split() if p.exists() else []
        p.write_text(" ".join([*runs, str(os.getpid())]))
        if not runs:
            time.sleep(300)
        return len(runs) + 1

    return record_pid_then_sleep


def _wait_for_pids(path: Path, count: int, timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # the test's own wait for a process it does not control
        if path.exists():
            pids = [int(p) for p in path.read_text().split()]
            if len(pids) >= count:
                return pids
        time.sleep(0.05)
    raise AssertionError(f"the task did not start within {timeout} s")


def test_a_task_whose_worker_is_killed_is_rerun_and_succeeds(stack, tmp_path):
    client = stack.client()
    fid = client.register_function(pid_recorder())
    marker = tmp_path / "pids"
    task_id = client.submit(fid, stack.endpoint_id, (str(marker),))
    pid = _wait_for_pids(marker, 1)[0]
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    assert client.get_result(task_id, timeout=90) == 2  # ran twice: the kill cost one attempt
    second = _wait_for_pids(marker, 2)[1]
    assert second != pid
    # The endpoint keeps working.
    assert client.get_result(client.submit(fid, stack.endpoint_id, (str(marker),)), timeout=60) == 3


def test_a_task_out_of_retries_fails_with_worker_lost_and_the_attempts(stack, tmp_path):
    client = stack.client()
    fid = client.register_function(pid_recorder())
    marker = tmp_path / "pids"
    task_id = client.submit(fid, stack.endpoint_id, (str(marker),), max_retries=0)
    os.kill(_wait_for_pids(marker, 1)[0], signal.SIGKILL)
    with pytest.raises(TaskFailed) as info:
        client.get_result(task_id, timeout=90)
    task = client.get_task(task_id)
    assert task["state"] == "failed" and task["error"]["code"] == "worker_lost", task["error"]
    assert "lost" in task["error"]["message"] and "1 attempt(s)" in task["error"]["message"]
    assert "max_retries=0" in str(info.value) or "max_retries=0" in task["error"]["message"]
    assert len(marker.read_text().split()) == 1  # not rerun


def test_a_result_over_10_mib_comes_back_by_reference_and_the_worker_survives(stack):
    """Over the inline limit, a result goes through the object store (docs/data.md); without
    one it fails with result_too_large (tests/unit/test_result_limit.py)."""
    client = stack.client()

    def big_then_pid(n: int) -> tuple[int, bytes]:
        import os

        return os.getpid(), b"x" * n

    fid = client.register_function(big_then_pid)

    def worker_pids() -> set[int]:
        ids = [client.submit(fid, stack.endpoint_id, (10,)) for _ in range(6)]
        return {client.get_result(t, timeout=60)[0] for t in ids}

    before = worker_pids()
    task_id = client.submit(fid, stack.endpoint_id, (11 * 1024 * 1024,))
    pid, data = client.get_result(task_id, timeout=60)
    assert data == b"x" * (11 * 1024 * 1024)
    assert len(client.get_task(task_id)["result"]) < 1024  # a reference, not 11 MiB
    # No worker died for it: the one that sent it and the ones from before are alive, and the one
    # that sent it takes tasks again. (Which worker takes a task is the pool's choice, and a worker
    # killed by an earlier test may be replaced late, so the set of pids is not compared.)
    for alive in before | {pid}:
        os.kill(alive, 0)
    seen: set[int] = set()
    for _ in range(10):
        seen |= worker_pids()
        if pid in seen:
            break
    assert pid in seen, f"the worker {pid} that returned the large result took no task again: {seen}"
    assert client.get_result(client.submit(fid, stack.endpoint_id, (3,)), timeout=60)[1] == b"xxx"


def test_workers_load_only_the_parsl_modules_a_worker_pool_uses(stack):
    """A new engine's workers (spawned by the pool, each importing the pool's main module) start
    without Parsl's DataFlowKernel, providers and monitoring database (node_manager/light_parsl.py):
    five such imports (interchange, pool, Manager server, two workers) are what recovery from a dead
    interchange or pool waits for."""
    client = stack.client()

    def heavy_modules_here() -> list[str]:
        import sys

        return [m for m in ("parsl.dataflow.dflow", "parsl.monitoring.db_manager", "parsl.providers.slurm.slurm",
                            "sqlalchemy") if m in sys.modules]

    fid = client.register_function(heavy_modules_here)
    assert client.get_result(client.submit(fid, stack.endpoint_id), timeout=60) == []

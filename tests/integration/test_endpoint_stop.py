"""`fnserve endpoint stop` finishes what runs on workers and hands the rest back to the service.

Real stack (`fnserve up`), a real endpoint with a local block of 2 workers. Every execution
appends a line to a file, so a task run twice shows as two lines.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fnserve.testing.stack import Stack
from tests.integration.slurm_support import wait_for

WORKERS = 2
TASKS = 6
NAP = 2.0


def mark_and_nap(path: str, n: int, seconds: float) -> int:
    """Runs on a worker: one line per execution, then a nap."""
    import time

    with open(path, "a") as f:
        f.write(f"{n}\n")
    time.sleep(seconds)
    return n


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    s = Stack(tmp_path_factory.mktemp("fnserve-stop"))
    s.up()
    try:
        yield s
    finally:
        s.down(check=False)


def test_stop_finishes_the_running_tasks_and_hands_back_the_queued_ones_each_run_once(stack: Stack, tmp_path: Path) -> None:
    fc = stack.client()
    stack.configure("drainy", "local", engine={"max_workers_per_node": WORKERS, "heartbeat_period": 1,
                                               "heartbeat_threshold": 4})
    stack.cli("endpoint", "start", "drainy")
    endpoint_id = stack.id_of("drainy")
    marks = tmp_path / "executions.txt"
    marks.touch()
    marks.chmod(0o666)
    fid = fc.register_function(mark_and_nap, serializer="source")
    task_ids = [fc.submit(fid, endpoint_id, [str(marks), i, NAP]) for i in range(TASKS)]

    # Two tasks are on the workers; the others are queued at the endpoint.
    wait_for(lambda: len(marks.read_text().split()) >= WORKERS, 60, "the first tasks started")
    began = time.monotonic()
    stopped = stack.cli("endpoint", "stop", "drainy", timeout=120)
    took = time.monotonic() - began
    assert "stopped" in stopped.stdout
    ran = marks.read_text().split()
    # The running ones finished and no worker took another one meanwhile (a stop that ran every
    # dispatched task would have run all of them).
    assert WORKERS <= len(ran) <= 2 * WORKERS, ran
    log = stack.log("drainy")
    assert "handing" in log and "back to the service" in log, log[-2000:]
    finished = {t: fc.get_task(t) for t in task_ids}
    done = [t for t, rec in finished.items() if rec["state"] == "success"]
    assert len(done) == len(ran), {t: r["state"] for t, r in finished.items()}
    # The rest are back in the service's queue, for the next start.
    wait_for(lambda: all(fc.get_task(t)["state"] == "waiting-for-endpoint" for t in set(task_ids) - set(done)), 20,
             "the handed-back tasks waiting for the endpoint again")

    stack.cli("endpoint", "start", "drainy")
    try:
        results = [fc.get_result(t, timeout=120) for t in task_ids]
    finally:
        stack.cli("endpoint", "stop", "drainy", timeout=120)
    assert results == list(range(TASKS))
    # Each task ran exactly once across the stop and the restart.
    assert sorted(map(int, marks.read_text().split())) == list(range(TASKS))
    print(f"stop took {took:.1f} s with {len(ran)} task(s) on workers and {TASKS - len(ran)} handed back")

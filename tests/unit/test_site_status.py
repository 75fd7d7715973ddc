"""Status reports, block scaling, engine failure results and the result inbox."""

from __future__ import annotations

import threading

from parsl.executors.high_throughput.errors import ManagerLost, WorkerLost

from fnserve.messages import ResultMessage
from site_manager.failures import failure_result
from site_manager.inbox import ResultInbox
from site_manager.status import EngineStatus, blocks_to_add, summarize


def test_summary_counts_blocks_workers_and_splits_running_from_queued() -> None:
    managers = [
        {
            "worker_count": 4,
            "tasks": 6,
            "active": True,
        },  # 2 of its tasks are prefetched, not running
        {"worker_count": 2, "tasks": 1, "active": True},
        {
            "worker_count": 8,
            "tasks": 0,
            "active": False,
        },  # held/draining managers take no work
    ]
    status = summarize(
        ["PENDING", "RUNNING", "RUNNING", "COMPLETED"], managers, outstanding=9
    )
    assert status == EngineStatus(
        blocks_pending=1, blocks_running=2, workers=6, tasks_queued=4, tasks_running=5
    )


def test_summary_with_no_workers_has_every_task_queued() -> None:
    assert summarize([], [], outstanding=3) == EngineStatus(tasks_queued=3)


def test_blocks_keep_the_minimum_and_cold_start_one_for_waiting_tasks() -> None:
    assert blocks_to_add(live_blocks=0, outstanding=0, min_blocks=0, max_blocks=2) == 0
    assert blocks_to_add(live_blocks=0, outstanding=5, min_blocks=0, max_blocks=2) == 1
    assert blocks_to_add(live_blocks=1, outstanding=5, min_blocks=0, max_blocks=2) == 0
    assert blocks_to_add(live_blocks=0, outstanding=0, min_blocks=2, max_blocks=3) == 2
    assert blocks_to_add(live_blocks=0, outstanding=5, min_blocks=0, max_blocks=0) == 0


def test_lost_manager_or_worker_fails_the_task_with_worker_lost() -> None:
    result = failure_result("t", ManagerLost(b"abc", "node7"), {"site_received": 1.0})
    assert result.task_id == "t" and not result.ok and result.error is not None
    assert result.error.code == "worker_lost"
    assert "node7" in result.error.message and result.error.type.endswith("ManagerLost")
    assert result.timings == {"site_received": 1.0}
    assert failure_result("t", WorkerLost(3, "node8")).error.code == "worker_lost"  # type: ignore[union-attr]


def test_other_engine_failures_get_a_generic_code_naming_the_exception() -> None:
    error = failure_result("t", RuntimeError("interchange gone")).error
    assert (
        error is not None
        and error.code == "engine_error"
        and "RuntimeError: interchange gone" in error.message
    )


def test_inbox_hands_results_from_other_threads_and_signals_readiness() -> None:
    import select

    inbox = ResultInbox()
    try:
        assert select.select([inbox], [], [], 0)[0] == []
        threads = [
            threading.Thread(
                target=inbox.put, args=(ResultMessage(task_id=str(i), ok=True),)
            )
            for i in range(50)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert select.select([inbox], [], [], 1)[0] == [inbox]
        assert sorted(int(r.task_id) for r in inbox.drain()) == list(range(50))
        assert select.select([inbox], [], [], 0)[0] == []  # drained: no stale wake-ups
        assert inbox.drain() == []
    finally:
        inbox.close()


def test_ready_workers_counts_started_workers_per_pool_capped_at_its_worker_count():
    from site_manager.status import ready_workers

    managers = [{"block_id": "0", "manager": "a", "worker_count": 2}, {"block_id": "1", "manager": "b", "worker_count": 1},
                {"block_id": "2", "manager": "c", "worker_count": 4}]
    started = {("0", "a"): 1, ("1", "b"): 3, ("2", "c"): 0}  # b: logs of a replaced worker count once
    assert ready_workers(managers, lambda block, manager: started[(block, manager)]) == 2
    assert ready_workers([], lambda block, manager: 1) == 0

"""The Redis task store against a real redis-server."""

from __future__ import annotations

import threading
import time

from fnserve.messages import RemoteError, ResultMessage
from fnserve.states import TaskState
from web_service.task_store import NewTask, TaskStore


def _task(i: int, endpoint: str = "ep1", owner: str = "alice") -> NewTask:
    return NewTask(task_id=f"t{i}", owner=owner, function_id="f1", endpoint_id=endpoint, payload=b"P%d" % i)


def test_submitted_tasks_wait_for_endpoint_then_dispatch_in_order(redis_client):
    store = TaskStore(redis_client)
    store.cache_function("f1", b"FUNCTION")
    store.submit([_task(i) for i in range(5)])
    assert store.get("t0").state is TaskState.WAITING
    claimed = store.claim("ep1", 3)
    assert [t.task_id for t in claimed] == ["t0", "t1", "t2"]
    assert claimed[0].function == b"FUNCTION" and claimed[1].payload == b"P1"
    assert store.get("t0").state is TaskState.DISPATCHED
    assert store.inflight("ep1") == {"t0", "t1", "t2"}
    assert store.queue_length("ep1") == 2


def test_first_result_wins_and_is_published(redis_client):
    store = TaskStore(redis_client)
    store.submit([_task(1)])
    store.claim("ep1", 10)
    got: dict = {}

    def waiter() -> None:
        got.update(store.wait("alice", ["t1"], timeout=10))

    th = threading.Thread(target=waiter)
    th.start()
    time.sleep(0.1)  # let the waiter subscribe; the result must still reach it either way
    first = ResultMessage(task_id="t1", ok=True, data=b"first")
    second = ResultMessage(task_id="t1", ok=False, error=RemoteError(code="x", type="X", message="late"))
    assert store.record_results([first], "ep1") == ["t1"]
    assert store.record_results([second], "ep1") == []
    th.join(5)
    rec = got["t1"]
    assert rec.state is TaskState.SUCCESS and rec.result == b"first"
    assert store.inflight("ep1") == set()
    assert redis_client.ttl("fns:task:t1") > 0


def test_requeue_puts_inflight_tasks_back_first(redis_client):
    store = TaskStore(redis_client)
    store.submit([_task(i) for i in range(4)])
    store.claim("ep1", 2)
    assert store.requeue_inflight("ep1") == 2
    again = [t.task_id for t in store.claim("ep1", 10)]
    assert sorted(again[:2]) == ["t0", "t1"] and again[2:] == ["t2", "t3"]


def test_cancelled_task_is_not_dispatched_and_late_result_ignored(redis_client):
    store = TaskStore(redis_client)
    store.submit([_task(1), _task(2)])
    assert store.cancel("t1", "alice") == "waiting-for-endpoint"
    assert [t.task_id for t in store.claim("ep1", 10)] == ["t2"]
    assert store.record_results([ResultMessage(task_id="t1", ok=True)], "ep1") == []
    assert store.get("t1").state is TaskState.CANCELLED


def test_wait_times_out_with_pending_tasks(redis_client):
    store = TaskStore(redis_client)
    store.submit([_task(1)])
    t0 = time.monotonic()
    recs = store.wait("alice", ["t1"], timeout=0.3)
    assert recs["t1"].state is TaskState.WAITING
    assert 0.25 < time.monotonic() - t0 < 2


def test_running_never_moves_a_finished_task_back(redis_client):
    store = TaskStore(redis_client)
    store.submit([_task(1)])
    store.claim("ep1", 1)
    store.record_results([ResultMessage(task_id="t1", ok=True)], "ep1")
    store.mark_running(["t1"])
    assert store.get("t1").state is TaskState.SUCCESS

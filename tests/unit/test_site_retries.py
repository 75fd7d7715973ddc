"""Retry decisions after a lost worker, and the site manager session carrying them out."""

from __future__ import annotations

from fnserve.messages import (
    Registered,
    RemoteError,
    ResultMessage,
    TaskBatch,
    TaskMessage,
)
from site_manager.retries import final_result, should_retry
from site_manager.session import Send, Session, Submit


def lost(task_id: str = "t1") -> ResultMessage:
    return ResultMessage(task_id=task_id, ok=False, error=RemoteError(
        code="worker_lost", type="parsl.WorkerLost", message="the worker running this task was lost"))


def user_error(task_id: str = "t1") -> ResultMessage:
    return ResultMessage(task_id=task_id, ok=False, error=RemoteError(code="user_exception", type="ValueError", message="x"))


def test_only_system_failures_with_retries_left_are_retried():
    assert should_retry(lost(), attempts=1, max_retries=2)
    assert should_retry(lost(), attempts=2, max_retries=2)
    assert not should_retry(lost(), attempts=3, max_retries=2)
    assert not should_retry(lost(), attempts=1, max_retries=0)
    assert not should_retry(user_error(), attempts=1, max_retries=5)
    assert not should_retry(ResultMessage(task_id="t1", ok=True, data=b"x"), attempts=1, max_retries=5)


def test_a_task_out_of_retries_names_what_was_lost_and_the_attempts():
    final = final_result(lost(), attempts=3, max_retries=2)
    assert final.error.code == "worker_lost"
    assert "worker running this task was lost" in final.error.message
    assert "3 attempt(s)" in final.error.message and "max_retries=2" in final.error.message
    assert final_result(user_error(), 1, 2) == user_error()


def ready_session(max_retries: int = 2) -> Session:
    s = Session("ep", "secret", {}, heartbeat_period=1, heartbeat_threshold=5, max_retries=max_retries)
    s.connected(0.0)
    s.received(Registered(heartbeat_period=1, heartbeat_threshold=5), 0.0, 0.0)
    return s


def task(max_retries: int | None = None) -> TaskMessage:
    return TaskMessage(task_id="t1", function_id="f", function=b"", payload=b"", max_retries=max_retries)


def test_session_resubmits_a_lost_task_until_its_endpoint_limit_then_reports_it():
    s = ready_session(max_retries=2)
    s.received(TaskBatch(tasks=[task()]), 0.0, 0.0)
    for _ in range(2):
        actions = s.results_ready([lost()])
        assert [type(a) for a in actions] == [Submit] and "t1" in s.running
        assert not len(s.ledger)  # nothing reported while retrying
    actions = s.results_ready([lost()])
    sent = [a.message for a in actions if isinstance(a, Send)]
    assert len(sent) == 1 and "3 attempt(s)" in sent[0].results[0].error.message
    assert "t1" not in s.running and "t1" in s.ledger


def test_per_task_max_retries_overrides_the_endpoint_and_success_after_a_retry_is_reported():
    s = ready_session(max_retries=5)
    s.received(TaskBatch(tasks=[task(max_retries=0)]), 0.0, 0.0)
    assert not any(isinstance(a, Submit) for a in s.results_ready([lost()]))
    s = ready_session(max_retries=0)
    s.received(TaskBatch(tasks=[task(max_retries=1)]), 0.0, 0.0)
    assert isinstance(s.results_ready([lost()])[0], Submit)
    sent = s.results_ready([ResultMessage(task_id="t1", ok=True, data=b"v")])
    assert sent[-1].message.results[0].ok


def test_no_retry_while_draining():
    s = ready_session()
    s.received(TaskBatch(tasks=[task()]), 0.0, 0.0)
    s.start_drain()
    assert not any(isinstance(a, Submit) for a in s.results_ready([lost()]))

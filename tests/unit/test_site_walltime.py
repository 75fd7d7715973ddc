"""Walltime enforced from outside the task: which tasks are overdue, and what the session does
with them (pure: no sockets, no clock, no processes)."""

from __future__ import annotations

from fnserve.messages import RemoteError, ResultBatch, ResultMessage, TaskBatch, TaskMessage
from site_manager.session import Backoff, Kill, Registered, Send, Session
from site_manager.walltime import overdue

NOW = 1000.0


def ready_session() -> Session:
    s = Session("ep-1", "secret", {}, heartbeat_period=2.0, heartbeat_threshold=10.0, backoff=Backoff(0.5, 4.0))
    s.connected(NOW)
    s.received(Registered(heartbeat_period=2.0, heartbeat_threshold=10.0), NOW, 0.0)
    return s


def test_only_tasks_past_walltime_plus_grace_are_overdue():
    started = {"a": 100.0, "b": 100.0, "c": 100.0}
    walltimes = {"a": 1.0, "b": 10.0}  # c has no walltime
    assert overdue(started, walltimes, now=105.5, grace=5.0) == []
    assert overdue(started, walltimes, now=106.5, grace=5.0) == ["a"]
    assert overdue(started, walltimes, now=200.0, grace=5.0) == ["a", "b"]
    assert overdue({}, walltimes, now=200.0, grace=5.0) == []  # not started by a worker yet


def test_an_overdue_task_is_killed_reported_walltime_exceeded_at_once_and_never_retried():
    s = ready_session()
    s.received(TaskBatch(tasks=[TaskMessage(task_id="t", function_id="f", function=b"", payload=b"", walltime=1.0),
                                TaskMessage(task_id="u", function_id="f", function=b"", payload=b"")]), NOW, 0.0)
    assert s.walltimes() == {"t": 1.0}
    actions = s.walltime_passed(["t"], grace=5.0)
    assert Kill(("t",)) in actions
    [sent] = [a.message for a in actions if isinstance(a, Send) and isinstance(a.message, ResultBatch)]
    [res] = sent.results
    assert res.task_id == "t" and not res.ok and res.error.code == "walltime_exceeded"
    assert "walltime of 1 s" in res.error.message
    assert s.walltimes() == {} and "t" not in s.running
    # The killed worker's 'lost' report comes later: dropped, not retried, not sent again.
    lost = ResultMessage(task_id="t", ok=False, error=RemoteError(code="worker_lost", type="WorkerLost", message="x"))
    assert s.results_ready([lost]) == []
    assert s.walltime_passed(["t"], grace=5.0) == []  # once only
    assert "u" in s.running  # other tasks untouched


def _lost(task_id: str) -> ResultMessage:
    return ResultMessage(task_id=task_id, ok=False, error=RemoteError(code="worker_lost", type="WorkerLost", message="x"))


def test_a_worker_lost_after_its_task_ran_past_walltime_plus_grace_is_walltime_exceeded_not_retried():
    """The watchdog beside a worker in a container or on another node killed it: the site
    manager sees only 'worker lost', and tells it from other losses by the task's start time."""
    from fnserve.messages import TaskOutput
    from site_manager.session import Submit

    s = ready_session()
    s.received(TaskBatch(tasks=[
        TaskMessage(task_id="t", function_id="f", function=b"", payload=b"", walltime=1.0, walltime_grace=2.0),
        TaskMessage(task_id="early", function_id="f", function=b"", payload=b"", walltime=60.0),
        TaskMessage(task_id="nostart", function_id="f", function=b"", payload=b"", walltime=1.0)]), NOW, 0.0)
    s.outputs_ready([TaskOutput(task_id="t", seq=-1, time=500.0, kind="start"),
                     TaskOutput(task_id="early", seq=-1, time=500.0, kind="start")])
    actions = s.results_ready([_lost("t"), _lost("early"), _lost("nostart")], wall_time=503.1)
    [sent] = [a.message for a in actions if isinstance(a, Send) and isinstance(a.message, ResultBatch)]
    [res] = sent.results
    assert res.task_id == "t" and res.error.code == "walltime_exceeded" and "within 2 s" in res.error.message
    # Lost well within its walltime, or with no known start: an ordinary loss, retried.
    assert {a.task.task_id for a in actions if isinstance(a, Submit)} == {"early", "nostart"}
    assert "t" not in s.running and {"early", "nostart"} <= s.running


def test_a_worker_lost_before_walltime_plus_grace_is_retried():
    from fnserve.messages import TaskOutput
    from site_manager.session import Submit

    s = ready_session()
    s.received(TaskBatch(tasks=[TaskMessage(task_id="t", function_id="f", function=b"", payload=b"",
                                            walltime=10.0, walltime_grace=5.0)]), NOW, 0.0)
    s.outputs_ready([TaskOutput(task_id="t", seq=-1, time=500.0, kind="start")])
    assert [a.task.task_id for a in s.results_ready([_lost("t")], wall_time=505.0) if isinstance(a, Submit)] == ["t"]

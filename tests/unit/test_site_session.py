"""The site manager's protocol decisions, fed as events with no sockets and no clock."""

from __future__ import annotations

from fnserve.messages import (
    Ack,
    Disconnect,
    EndpointStatus,
    Heartbeat,
    Refused,
    Register,
    Registered,
    RemoteError,
    ResultBatch,
    ResultMessage,
    TaskBatch,
    TaskMessage,
    TaskOutput,
    TaskOutputBatch,
    TaskStatusBatch,
)
from site_manager.session import (
    RESEND_CHUNK,
    Backoff,
    Exit,
    Reconnect,
    ResultLedger,
    Send,
    Session,
    State,
    Submit,
)
from site_manager.status import EngineStatus

NOW = 1000.0


def make_session(**kw: float) -> Session:
    return Session(
        "ep-1",
        "secret",
        {"fnserve": "0.1.0"},
        heartbeat_period=2.0,
        heartbeat_threshold=10.0,
        backoff=Backoff(0.5, 4.0),
        **kw,
    )


def ready_session() -> Session:
    s = make_session()
    s.connected(NOW)
    s.received(Registered(heartbeat_period=2.0, heartbeat_threshold=10.0), NOW, 0.0)
    return s


def task(task_id: str) -> TaskMessage:
    return TaskMessage(task_id=task_id, function_id="f", function=b"", payload=b"")


def result(task_id: str) -> ResultMessage:
    return ResultMessage(task_id=task_id, ok=True, data=task_id.encode())


def sent(actions: list) -> list:
    return [a.message for a in actions if isinstance(a, Send)]


def no_status() -> EngineStatus:
    raise AssertionError("status must not be asked for")


def test_connecting_sends_register_with_identity_and_software() -> None:
    s = make_session()
    (msg,) = sent(s.connected(NOW))
    assert isinstance(msg, Register)
    assert (msg.endpoint_id, msg.secret, msg.software) == (
        "ep-1",
        "secret",
        {"fnserve": "0.1.0"},
    )
    assert s.state is State.REGISTERING


def test_refused_exits_non_zero_with_code_and_reason() -> None:
    s = make_session()
    s.connected(NOW)
    (action,) = s.received(
        Refused(code="bad_secret", reason="secret does not match"), NOW, 0.0
    )
    assert isinstance(action, Exit) and action.code != 0
    assert "[bad_secret] secret does not match" in action.reason


def test_registered_adopts_the_forwarders_heartbeat_cadence() -> None:
    s = make_session()
    s.connected(NOW)
    s.received(Registered(heartbeat_period=0.5, heartbeat_threshold=3.0), NOW, 0.0)
    assert s.state is State.READY and (s.heartbeat_period, s.heartbeat_threshold) == (
        0.5,
        3.0,
    )


def test_heartbeat_and_status_are_sent_when_due_and_not_before() -> None:
    s = ready_session()
    status = EngineStatus(blocks_running=1, workers=4, tasks_queued=2, tasks_running=3)
    hb, st = sent(s.tick(NOW, 5.0, lambda: status))
    assert isinstance(hb, Heartbeat) and hb.sent_at == 5.0
    assert st == EndpointStatus(
        blocks_running=1, workers=4, tasks_queued=2, tasks_running=3
    )
    assert s.tick(NOW + 1.0, 6.0, no_status) == []
    assert len(sent(s.tick(NOW + 2.0, 7.0, lambda: status))) == 2


def test_no_heartbeats_before_registration() -> None:
    s = make_session()
    s.connected(NOW)
    assert s.tick(NOW + 5, 0.0, no_status) == []


def test_silence_past_the_threshold_means_reconnect_with_growing_capped_backoff() -> (
    None
):
    s = ready_session()
    s.received(Heartbeat(sent_at=0.0), NOW + 5, 0.0)
    (action,) = s.tick(NOW + 15.5, 0.0, no_status)  # 10.5 s after the last message
    assert isinstance(action, Reconnect) and "nothing heard" in action.reason
    assert s.state is State.DISCONNECTED
    delays = [action.delay]
    t = NOW + 16
    for _ in range(4):
        s.connected(t)
        (action,) = s.tick(t + 10.5, 0.0, no_status)
        delays.append(action.delay)
        t += 11
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]


def test_a_message_within_the_threshold_keeps_the_connection() -> None:
    s = ready_session()
    s.tick(NOW, 0.0, lambda: EngineStatus())
    s.received(Heartbeat(sent_at=0.0), NOW + 9, 0.0)
    actions = s.tick(NOW + 15, 0.0, lambda: EngineStatus())
    assert not any(isinstance(a, Reconnect) for a in actions)


def test_an_unanswered_registration_also_times_out() -> None:
    s = make_session()
    s.connected(NOW)
    (action,) = s.tick(NOW + 10.5, 0.0, no_status)
    assert isinstance(action, Reconnect)


def test_registration_resets_the_backoff() -> None:
    s = ready_session()
    s.connection_lost("x")
    s.connection_lost("x")
    s.connected(NOW)
    s.received(Registered(heartbeat_period=2.0, heartbeat_threshold=10.0), NOW, 0.0)
    (action,) = s.connection_lost("y")
    assert isinstance(action, Reconnect) and action.delay == 0.5


def test_forwarder_disconnect_means_reconnect() -> None:
    s = ready_session()
    (action,) = s.received(Disconnect(reason="restarting"), NOW, 0.0)
    assert isinstance(action, Reconnect) and "restarting" in action.reason


def test_a_burst_of_disconnects_is_one_reconnect_at_the_first_delay() -> None:
    # A restarted forwarder answers each message queued while it was away with 'register
    # again': one reconnect, soon, not a backoff grown by every queued answer.
    s = ready_session()
    actions = [a for _ in range(20) for a in s.received(Disconnect(reason="register again"), NOW, 0.0)]
    assert len(actions) == 1 and isinstance(actions[0], Reconnect) and actions[0].delay == 0.5
    (register,) = sent(s.connected(NOW + 1))
    assert isinstance(register, Register)


def test_a_task_batch_submits_each_task_and_reports_running_only_when_a_worker_starts_it() -> None:
    s = ready_session()
    actions = s.received(TaskBatch(tasks=[task("a"), task("b"), task("c")]), NOW, 42.0)
    assert [a.task.task_id for a in actions if isinstance(a, Submit)] == ["a", "b", "c"]
    assert sent(actions) == []  # queued for the workers is not running yet
    assert s.running == {"a", "b", "c"}
    started = [TaskOutput(task_id=t, seq=-1, time=50.0 + i, kind="start") for i, t in enumerate("ab")]
    report = TaskOutput(task_id="a", seq=0, time=52.0, values={"step": 1})
    stray = TaskOutput(task_id="not-ours", seq=-1, time=53.0, kind="start")
    status, outputs = sent(s.outputs_ready([*started, report, stray]))
    assert status == TaskStatusBatch(running=["a", "b"], started_at=50.0)  # before the outputs
    assert outputs == TaskOutputBatch(outputs=[report])  # markers are not relayed


def test_results_are_sent_in_one_batch_and_kept_until_acked() -> None:
    s = ready_session()
    s.received(TaskBatch(tasks=[task("a"), task("b")]), NOW, 0.0)
    s.outputs_ready([TaskOutput(task_id=t, seq=-1, time=1.0, kind="start") for t in "ab"])
    (batch,) = sent(s.results_ready([result("a"), result("b")]))
    assert isinstance(batch, ResultBatch) and [r.task_id for r in batch.results] == [
        "a",
        "b",
    ]
    assert s.running == set() and len(s.ledger) == 2
    s.received(Ack(task_ids=["a"]), NOW, 0.0)
    assert [r.task_id for r in s.ledger.pending()] == ["b"]


def test_a_result_that_overtakes_its_start_marker_is_not_reported_running_and_the_late_marker_is_dropped() -> None:
    """The start marker comes on the worker's outputs channel, the result through Parsl: a quick
    task's result can arrive first. No "running" goes out for it (its record takes the start time
    from the result's worker_started timing: record.lua), and the marker arriving later is dropped."""
    s = ready_session()
    s.received(TaskBatch(tasks=[task("a"), task("b")]), NOW, 0.0)
    s.outputs_ready([TaskOutput(task_id="a", seq=-1, time=1.0, kind="start")])
    quick = ResultMessage(task_id="b", ok=True, data=b"v", timings={"worker_started": 7.5})
    (batch,) = sent(s.results_ready([result("a"), quick]))
    assert [r.task_id for r in batch.results] == ["a", "b"] and batch.results[1].timings == {"worker_started": 7.5}
    assert sent(s.outputs_ready([TaskOutput(task_id="b", seq=-1, time=7.5, kind="start")])) == []


def held_session() -> Session:
    s = make_session(running_after=0.05)
    s.connected(NOW)
    s.received(Registered(heartbeat_period=2.0, heartbeat_threshold=10.0), NOW, 0.0)
    s.tick(NOW, 0.0, lambda: EngineStatus())  # the first heartbeat, out of the way
    return s


def test_a_start_is_reported_running_only_if_the_task_still_runs_a_moment_later() -> None:
    """A warm task ends about a millisecond after it starts: reporting each start cost a message,
    a Redis script and two forwarder wakeups per task. A start marker waits ``running_after``
    seconds; a task still running then is reported with its worker's start time, one that
    ended meanwhile never is."""
    s = held_session()
    s.received(TaskBatch(tasks=[task("quick"), task("long")]), NOW, 0.0)
    starts = [TaskOutput(task_id=t, seq=-1, time=50.0 + i, kind="start") for i, t in enumerate(["quick", "long"])]
    assert sent(s.outputs_ready(starts, NOW)) == []
    assert s.next_deadline() == NOW + 0.05  # the loop wakes for the held markers
    (batch,) = sent(s.results_ready([result("quick")]))
    assert isinstance(batch, ResultBatch)
    assert sent(s.tick(NOW + 0.04, 0.0, no_status)) == []
    (status,) = sent(s.tick(NOW + 0.05, 0.0, no_status))
    assert status == TaskStatusBatch(running=["long"], started_at=51.0)
    assert sent(s.tick(NOW + 0.1, 0.0, no_status)) == [] and s.next_deadline() != NOW + 0.05


def test_a_held_start_is_reported_at_once_when_its_task_sends_outputs() -> None:
    """An output of a running task must not reach a client before its state says running."""
    s = held_session()
    s.received(TaskBatch(tasks=[task("a")]), NOW, 0.0)
    assert sent(s.outputs_ready([TaskOutput(task_id="a", seq=-1, time=5.0, kind="start")], NOW)) == []
    report = TaskOutput(task_id="a", seq=0, time=5.1, values={"step": 1})
    status, outputs = sent(s.outputs_ready([report], NOW + 0.01))
    assert status == TaskStatusBatch(running=["a"], started_at=5.0) and outputs == TaskOutputBatch(outputs=[report])
    assert sent(s.tick(NOW + 0.1, 0.0, no_status)) == []  # reported once


def test_results_while_disconnected_wait_and_every_unacked_one_is_resent_after_registering() -> (
    None
):
    s = ready_session()
    s.received(TaskBatch(tasks=[task("a"), task("b")]), NOW, 0.0)
    s.results_ready([result("a")])  # sent but never acked
    s.connection_lost("forwarder gone")
    assert s.results_ready([result("b")]) == []  # no connection: kept for later
    s.connected(NOW + 1)
    (batch,) = sent(
        s.received(
            Registered(heartbeat_period=2.0, heartbeat_threshold=10.0), NOW + 1, 0.0
        )
    )
    assert [r.task_id for r in batch.results] == ["a", "b"]


def test_a_big_backlog_is_resent_in_bounded_batches() -> None:
    s = make_session()
    s.results_ready([result(str(i)) for i in range(RESEND_CHUNK * 2 + 1)])
    s.connected(NOW)
    batches = sent(
        s.received(Registered(heartbeat_period=2.0, heartbeat_threshold=10.0), NOW, 0.0)
    )
    assert [len(b.results) for b in batches] == [RESEND_CHUNK, RESEND_CHUNK, 1]


def test_redispatched_tasks_are_not_run_twice() -> None:
    s = ready_session()
    s.received(TaskBatch(tasks=[task("running"), task("done")]), NOW, 0.0)
    s.results_ready([result("done")])
    actions = s.received(
        TaskBatch(tasks=[task("running"), task("done"), task("new")]), NOW, 0.0
    )
    assert [a.task.task_id for a in actions if isinstance(a, Submit)] == ["new"]
    (batch,) = sent(actions)
    assert [r.task_id for r in batch.results] == [
        "done"
    ]  # answered from the unacked result


def test_a_second_result_for_a_task_does_not_replace_the_first() -> None:
    ledger = ResultLedger()
    ledger.add(result("a"))
    ledger.add(ResultMessage(task_id="a", ok=False))
    assert ledger.get("a") == result("a")
    assert ledger.ack(["a", "unknown"]) == 1 and len(ledger) == 0


def test_draining_takes_no_new_tasks_and_is_done_when_results_are_acked() -> None:
    s = ready_session()
    s.received(TaskBatch(tasks=[task("a")]), NOW, 0.0)
    s.start_drain()
    assert s.received(TaskBatch(tasks=[task("b")]), NOW, 0.0) == []
    assert not s.drained
    s.results_ready([result("a")])
    assert not s.drained  # sent but not yet acked
    s.received(Ack(task_ids=["a"]), NOW, 0.0)
    assert s.drained


def test_a_stop_waits_for_started_tasks_only_and_hands_the_others_back() -> None:
    s = ready_session()
    s.received(TaskBatch(tasks=[task("a"), task("b"), task("c")]), NOW, 0.0)
    s.outputs_ready([TaskOutput(task_id="a", seq=-1, time=1.0, kind="start")])
    s.start_drain()
    assert not s.started_done and s.handed_back() == ["b", "c"]  # "a" runs on a worker
    s.results_ready([result("a")])
    assert not s.started_done  # its result is not acked yet
    s.received(Ack(task_ids=["a"]), NOW, 0.0)
    assert s.started_done and not s.drained and s.handed_back() == ["b", "c"]


def test_a_retried_task_is_not_started_until_a_worker_starts_it_again() -> None:
    s = ready_session()
    s.received(TaskBatch(tasks=[task("a")]), NOW, 0.0)
    s.outputs_ready([TaskOutput(task_id="a", seq=-1, time=1.0, kind="start")])
    lost = ResultMessage(task_id="a", ok=False, error=RemoteError(code="worker_lost", type="WorkerLost", message="gone"))
    assert any(isinstance(a, Submit) for a in s.results_ready([lost]))
    assert s.handed_back() == ["a"]


def test_next_deadline_is_the_earlier_of_heartbeat_and_silence_limit() -> None:
    s = make_session()
    assert s.next_deadline() is None  # disconnected: nothing to time
    s.connected(NOW)
    assert s.next_deadline() == NOW + 10.0
    s.received(Registered(heartbeat_period=2.0, heartbeat_threshold=10.0), NOW, 0.0)
    s.tick(NOW, 0.0, lambda: EngineStatus())
    assert s.next_deadline() == NOW + 2.0


def test_a_cancel_kills_only_tasks_running_here_and_their_results_are_dropped_not_retried() -> None:
    from fnserve.messages import CancelTasks, RemoteError
    from site_manager.session import Kill

    s = ready_session()
    s.received(TaskBatch(tasks=[task("t1"), task("t2")]), NOW, 0.0)
    s.results_ready([result("t2")])  # t2 already finished
    actions = s.received(CancelTasks(task_ids=["t1", "t2", "unknown"]), NOW, 0.0)
    assert actions == [Kill(("t1",))]
    assert s.received(CancelTasks(task_ids=["t1"]), NOW, 0.0) == []  # once is enough
    # The killed worker's report comes back as a lost worker: not retried, not sent.
    lost = ResultMessage(task_id="t1", ok=False, error=RemoteError(code="worker_lost", type="WorkerLost", message="gone"))
    assert s.results_ready([lost]) == []
    assert "t1" not in s.running and "t1" not in s.ledger and not s.cancelled


def test_file_events_are_sent_kept_until_acked_and_resent_after_a_reconnect():
    from fnserve.messages import FileEvent, FileEventBatch, FileEventsAck, FolderWatch, WatchFolders
    from site_manager.session import FILE_EVENT_CHUNK, Watch

    s = ready_session()
    watch = FolderWatch(trigger_id="t", folder="/d")
    assert s.received(WatchFolders(watches=[watch]), NOW, 0.0) == [Watch((watch,))]
    events = [FileEvent(trigger_id="t", path=f"/d/{i}", size=1, mtime=1.0, key=f"k{i}") for i in range(FILE_EVENT_CHUNK + 5)]
    sent = s.files_ready(events)
    assert [len(a.message.events) for a in sent] == [FILE_EVENT_CHUNK, 5]  # a burst goes as a few batches
    assert s.files_ready(events[:3]) == []  # already held: not sent twice
    s.received(FileEventsAck(keys=[f"k{i}" for i in range(FILE_EVENT_CHUNK)]), NOW, 0.0)
    s.connection_lost("test")
    assert s.files_ready([FileEvent(trigger_id="t", path="/d/x", size=1, mtime=1.0, key="kx")]) == []  # disconnected: kept
    s.connected(NOW + 1)
    again = s.received(Registered(heartbeat_period=2.0, heartbeat_threshold=10.0), NOW + 1, 0.0)
    resent = [e.key for a in again if isinstance(a, Send) and isinstance(a.message, FileEventBatch) for e in a.message.events]
    assert resent == [f"k{i}" for i in range(FILE_EVENT_CHUNK, FILE_EVENT_CHUNK + 5)] + ["kx"]


def test_registration_names_the_folders_file_triggers_may_watch():
    s = Session("ep-1", "secret", {}, heartbeat_period=2.0, heartbeat_threshold=10.0, watch_folders=["/data/beamline"])
    (send,) = s.connected(NOW)
    assert isinstance(send.message, Register) and send.message.watch_folders == ["/data/beamline"]


# -- several forwarders (web_service/forwarder_pool.py) ------------------------------------------


def test_a_forwarder_that_serves_another_forwarders_endpoint_sends_it_there_at_once():
    s = make_session(forwarder="tcp://a:1")
    s.connected(NOW)
    actions = s.received(Disconnect(reason="served by another forwarder", connect_to="tcp://b:1"), NOW, 0.0)
    assert actions == [Reconnect(actions[0].reason, 0.0, "tcp://b:1")]
    assert s.state is State.DISCONNECTED and s.forwarder == "tcp://b:1"


def test_being_sent_on_again_before_registering_waits_the_backoff():
    s = make_session(forwarder="tcp://a:1")
    s.connected(NOW)
    s.received(Disconnect(connect_to="tcp://b:1"), NOW, 0.0)
    s.connected(NOW)
    again = s.received(Disconnect(connect_to="tcp://a:1"), NOW, 0.0)
    assert isinstance(again[0], Reconnect) and again[0].delay > 0 and again[0].address == "tcp://a:1"


def test_a_silent_forwarder_is_left_for_the_next_one_the_last_registration_named():
    s = make_session(forwarder="tcp://a:1")
    s.connected(NOW)
    s.received(Registered(heartbeat_period=2.0, heartbeat_threshold=10.0, forwarders=["tcp://a:1", "tcp://b:1"]), NOW, 0.0)
    actions = s.tick(NOW + 10.5, 0.0, EngineStatus)
    assert [type(a) for a in actions] == [Reconnect] and actions[0].address == "tcp://b:1"


def test_with_one_forwarder_a_silent_one_is_tried_again():
    s = make_session(forwarder="tcp://a:1")
    s.connected(NOW)
    s.received(Registered(heartbeat_period=2.0, heartbeat_threshold=10.0), NOW, 0.0)
    actions = s.tick(NOW + 10.5, 0.0, EngineStatus)
    assert actions[0].address == "tcp://a:1"


def test_registering_after_a_move_still_says_what_it_holds():
    s = ready_session()
    s.received(TaskBatch(tasks=[task("t1")]), NOW, 0.0)
    s.received(Disconnect(connect_to="tcp://b:1"), NOW, 0.0)
    [send] = s.connected(NOW + 1)
    assert isinstance(send, Send) and send.message.holding == ["t1"]

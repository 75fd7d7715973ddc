"""The task store's rules (web_service/store/rules.py) and the task's shape (store/record.py).

The case tables here are run through the Lua scripts against a real redis-server too
(tests/integration/test_store_scripts.py): each script must answer as the rule does.
"""

from __future__ import annotations

import msgspec
import pytest

from fnserve.messages import TaskMessage
from fnserve.states import TERMINAL, TaskState, may_move
from web_service.store import record, rules
from web_service.store.record import NewTask, StoredTask, TaskOptions, TaskRecord

S = TaskState

# (capacity, in flight, wanted) -> tasks a claim may take
CLAIM_ROOM_CASES = [
    ((0, 0, 10), 10), ((0, 10_000, 7), 7),  # no limit
    ((100, 0, 50), 50), ((100, 70, 50), 30), ((100, 75, 50), 25), ((100, 76, 50), 0), ((100, 100, 5), 0),
    ((100, 120, 5), 0),  # over capacity (it shrank on a reconnect)
    ((1, 0, 10), 1), ((1, 1, 10), 0), ((3, 2, 10), 1), ((4, 3, 10), 1), ((8, 7, 10), 0),
]

# (state, task's endpoint, reporter, held, dispatched before) -> verdict
VERDICT_CASES = [
    ((S.RUNNING, "a", "a", True, True), "record"),
    ((S.DISPATCHED, "a", "a", True, True), "record"),
    ((S.WAITING, "a", "a", False, True), "record"),  # requeued; the earlier dispatch's result, replayed
    ((S.WAITING, "a", "a", False, False), "reject"),  # never dispatched
    ((S.RUNNING, "a", "b", False, True), "reject"),  # another endpoint's task
    ((S.RUNNING, "a", "a", False, True), "reject"),  # not in its in-flight set (and not requeued)
    ((S.SUCCESS, "a", "a", False, True), "duplicate"),
    ((S.FAILED, "a", "a", True, True), "duplicate"),
    ((S.CANCELLED, "a", "a", False, True), "duplicate"),
    ((S.SUCCESS, "a", "b", False, True), "reject"),
    ((None, None, "a", False, False), "reject"),  # unknown or expired
]

# One bucket (rate, burst) asked at successive times for a cost: the waits (ms) it answers.
BUCKET_RATE, BUCKET_BURST = 2.0, 3.0
BUCKET_CALLS = [(100.0, 1), (100.0, 1), (100.0, 1), (100.0, 1), (100.2, 1), (100.5, 1), (101.0, 0), (101.0, 2),
                (103.0, 1), (103.0, 5), (200.0, 0)]
BUCKET_WAITS = [0, 0, 0, 500, 300, 0, 0, 500, 0, 1500, 0]

# (counter before, tasks asked, max tasks) -> reserved
QUOTA_CASES = [((0, 5, 10), True), ((5, 5, 10), True), ((6, 5, 10), False), ((10, 1, 10), False), ((0, 11, 10), False)]


def test_transitions_are_may_move_and_terminal_states_are_final():
    table = rules.transitions()
    assert set(table) == set(TaskState)
    for a, targets in table.items():
        assert targets == {b for b in TaskState if may_move(a, b)}
        if a in TERMINAL:
            assert not targets
    assert S.WAITING in table[S.RUNNING]  # a lost endpoint's task is requeued
    assert S.DISPATCHED not in table[S.RUNNING]  # never backwards otherwise


@pytest.mark.parametrize("state", list(TaskState))
def test_every_change_a_script_makes_is_an_allowed_move(state):
    assert not rules.claimable(state) or may_move(state, S.DISPATCHED)
    assert not rules.startable(state) or may_move(state, S.RUNNING)
    assert not rules.requeueable(state) or may_move(state, S.WAITING)
    assert not rules.finishable(state) or (may_move(state, S.CANCELLED) and may_move(state, S.FAILED)
                                           and may_move(state, S.SUCCESS))


def test_which_states_each_rule_moves():
    assert {s for s in S if rules.claimable(s)} == {S.WAITING}
    assert {s for s in S if rules.startable(s)} == {S.DISPATCHED}  # a late report never moves a requeued task
    assert {s for s in S if rules.requeueable(s)} == {S.DISPATCHED, S.RUNNING}
    assert {s for s in S if rules.finishable(s)} == set(S) - TERMINAL  # the first end wins


@pytest.mark.parametrize("args, room", CLAIM_ROOM_CASES)
def test_claim_room(args, room):
    assert rules.claim_room(*args) == room


@pytest.mark.parametrize("args, verdict", VERDICT_CASES)
def test_first_result_wins_and_only_from_the_holder(args, verdict):
    state, *rest = args
    assert rules.result_verdict(state.value if state else None, *rest) == verdict


def test_bucket_refills_at_rate_up_to_burst_and_says_how_long_to_wait():
    tokens, ts, waits = None, None, []
    for now, cost in BUCKET_CALLS:
        tokens, wait = rules.bucket_take(tokens, ts, now, BUCKET_RATE, BUCKET_BURST, cost)
        ts = now
        waits.append(wait)
        assert 0 <= tokens <= BUCKET_BURST
    assert waits == BUCKET_WAITS


@pytest.mark.parametrize("args, reserved", QUOTA_CASES)
def test_quota_reservation(args, reserved):
    before, n, limit = args
    assert rules.quota_allows(before + n, limit) is reserved


def test_lua_preamble_names_every_state_and_rule_set_from_python():
    text = rules.lua_preamble()
    for s in S:
        assert f"local S_{s.name} = '{s.value}'" in text
    claimable = next(line for line in text.splitlines() if line.startswith("local CLAIMABLE"))
    assert claimable == "local CLAIMABLE = {['waiting-for-endpoint'] = true}"


# -- the task's shape ----------------------------------------------------------------------------

SERVICE_ONLY = {"task_group_id"}  # options the service keeps and the endpoint never needs


def test_every_task_option_reaches_the_endpoint_or_is_named_service_only():
    options = set(TaskOptions.__struct_fields__)
    message = set(TaskMessage.__struct_fields__)
    assert options - message == SERVICE_ONLY
    assert {name for name, _ in record.DISPATCHED} == (options - SERVICE_ONLY) | {"function_id", "payload"}
    assert record.DISPATCH_FIELDS[-1] == "t_submitted"


def test_stored_task_extends_the_spec_and_task_record_reads_every_option_back():
    assert set(NewTask.__struct_fields__) - set(StoredTask.__struct_fields__) == {"task_id"}
    record_fields = set(TaskRecord.__dataclass_fields__)
    assert set(TaskOptions.__struct_fields__) - {"walltime", "result_strategy"} <= record_fields


def _as_redis(value):
    """What redis-py writes for a value (numbers with repr) and reads back (bytes)."""
    if isinstance(value, bytes):
        return value
    return (value if isinstance(value, str) else repr(value)).encode()


def test_hash_fields_claim_unpack_and_record_read_round_trip_every_option():
    spec = record.TaskSpec(function_id="f", endpoint_id="e", payload=b"fns1 json-data 2\n{}", runtime="rt",
                           walltime=2.5, result_strategy="json-data", max_retries=0, task_group_id="g",
                           resource_specification=b'{"num_nodes": 2}')
    task = record.new_task(spec, "t1", "u1", runtime="rt2")
    written = record.hash_fields(task, 123.5, "obj1")
    assert set(written) == {f.encode_name for f in msgspec.structs.fields(StoredTask)}  # every field, each by its stored name
    msgspec.convert({k: v.value if hasattr(v, "value") else v for k, v in written.items()}, StoredTask)  # and of its type
    fields = {k: _as_redis(v) for k, v in written.items()}
    assert fields["state"] == b"waiting-for-endpoint" and fields["task_group"] == b"g"
    assert fields["resource_spec"] == b'{"num_nodes": 2}' and fields["arg_ref"] == b"obj1"
    assert fields["max_retries"] == b"0" and fields["arg_bytes"] == str(len(spec.payload)).encode()
    msg, submitted = record.task_message("t1", [fields.get(k) for k in record.DISPATCH_FIELDS], b"BODY")
    assert submitted == 123.5
    assert msg == TaskMessage(task_id="t1", function_id="f", function=b"BODY", payload=spec.payload, runtime="rt2",
                              walltime=2.5, result_strategy="json-data", max_retries=0,
                              resource_specification={"num_nodes": 2})
    rec = record.task_record("t1", [fields.get(k) for k in record.RECORD_FIELDS])
    assert rec is not None and rec.runtime == "rt2" and rec.max_retries == 0 and rec.task_group_id == "g"
    assert rec.resource_specification == {"num_nodes": 2} and rec.timestamps == {"submitted": 123.5}


def test_unset_options_are_not_written():
    task = NewTask(task_id="t", owner="u", function_id="f", endpoint_id="e", payload=b"x", runtime="")
    fields = record.hash_fields(task, 1.0)
    assert set(fields) == {"function_id", "endpoint_id", "payload", "owner", "state", "t_submitted", "arg_bytes"}
    msg, _ = record.task_message("t", [_as_redis(fields[k]) if k in fields else None for k in record.DISPATCH_FIELDS], b"")
    assert msg.runtime is None and msg.walltime is None and msg.max_retries is None


def test_a_recorded_result_reads_back_as_sent():
    from fnserve.messages import RemoteError, ResultMessage

    res = ResultMessage(task_id="t", ok=False, data=b"", error=RemoteError(code="user_exception", type="ValueError", message="no"),
                        stdout="out", stderr="err", timings={"worker_start": 1.5}, resources={"wall_time": 0.25},
                        placement={"node": "n1"})
    fields = {"owner": b"u", "function_id": b"f", "endpoint_id": b"e", "state": b"failed", "t_finished": b"9.0"}
    fields.update({k: _as_redis(v) for k, v in zip(record.RESULT_FIELDS, record.result_values(res))})
    rec = record.task_record("t", [fields.get(k) for k in record.RECORD_FIELDS])
    assert rec is not None and rec.state is S.FAILED and rec.timestamps == {"finished": 9.0}
    assert rec.error == {"code": "user_exception", "type": "ValueError", "message": "no"}
    assert (rec.stdout, rec.stderr, rec.timings) == ("out", "err", {"worker_start": 1.5})
    assert (rec.resources, rec.placement) == ({"wall_time": 0.25}, {"node": "n1"})

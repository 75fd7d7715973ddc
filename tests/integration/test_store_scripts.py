"""Each task store Lua script answers as its pure rule does (web_service/store/rules.py): the
case tables of tests/unit/test_store_rules.py, run through the scripts on a real redis-server."""

from __future__ import annotations

import hashlib

import msgspec
import pytest

from fnserve.messages import ResultMessage
from fnserve.states import TaskState, may_move
from tests.unit.test_store_rules import (
    BUCKET_BURST, BUCKET_CALLS, BUCKET_RATE, BUCKET_WAITS, CLAIM_ROOM_CASES, QUOTA_CASES, VERDICT_CASES,
)
from web_service.store import rules
from web_service.store.keys import USAGE_STREAM, inflight_key, queue_key, task_key
from web_service.store.scripts import register
from web_service.task_store import NewTask, TaskStore
from web_service.usage import encode_entry, result_entries

S = TaskState


@pytest.fixture
def store(redis_client):
    return TaskStore(redis_client)


def _task(store: TaskStore, task_id: str, state: TaskState, endpoint: str = "ep", dispatched: bool = True,
          inflight: bool = False) -> None:
    """A task of owner ``u`` in ``state`` (written as submit writes it, then moved there)."""
    store.submit([NewTask(task_id=task_id, owner="u", function_id="f", endpoint_id=endpoint, payload=b"x")])
    store.r.lrem(queue_key(endpoint), 0, task_id)
    store.r.hset(task_key(task_id), "state", state.value)
    if dispatched:
        store.r.hset(task_key(task_id), "t_dispatched", "1.0")
    if inflight:
        store.r.sadd(inflight_key(endpoint), task_id)


def _state(store: TaskStore, task_id: str) -> TaskState:
    return TaskState(store.r.hget(task_key(task_id), "state").decode())


@pytest.mark.parametrize("state", list(TaskState))
def test_claim_takes_only_claimable_tasks(store, state):
    _task(store, "t", state, dispatched=False)
    store.r.rpush(queue_key("ep"), "t")
    claimed = [t.task_id for t in store.claim("ep", 10)]
    assert (claimed == ["t"]) is rules.claimable(state)
    assert _state(store, "t") == (S.DISPATCHED if claimed else state)
    assert store.r.sismember(inflight_key("ep"), "t") == bool(claimed)


@pytest.mark.parametrize("args, room", CLAIM_ROOM_CASES)
def test_claim_room_in_lua_is_the_rule(store, args, room):
    capacity, inflight, want = args
    if inflight:
        store.r.sadd(inflight_key("ep"), *(f"busy{i}" for i in range(inflight)))
    store.submit([NewTask(task_id=f"t{i}", owner="u", function_id="f", endpoint_id="ep", payload=b"x")
                  for i in range(want + 3)])
    assert len(store.claim("ep", want, capacity)) == room == rules.claim_room(capacity, inflight, want)


@pytest.mark.parametrize("state", list(TaskState))
def test_running_moves_only_startable_tasks(store, state):
    _task(store, "t", state, inflight=True)
    store.mark_running(["t"])
    assert _state(store, "t") == (S.RUNNING if rules.startable(state) else state)


@pytest.mark.parametrize("state", list(TaskState))
def test_requeue_moves_only_requeueable_tasks(store, state):
    _task(store, "t", state, inflight=True)
    moved = store.requeue_inflight("ep")
    assert moved == int(rules.requeueable(state))
    assert _state(store, "t") == (S.WAITING if moved else state)
    assert store.r.lrange(queue_key("ep"), 0, -1) == ([b"t"] if moved else [])
    assert not store.r.sismember(inflight_key("ep"), "t")  # it leaves the set either way


@pytest.mark.parametrize("state", list(TaskState))
def test_cancel_ends_only_finishable_tasks(store, state):
    _task(store, "t", state, inflight=state is not S.WAITING)
    before = store.cancel("t", "u")
    assert before == state.value
    ended = rules.finishable(state)
    assert _state(store, "t") == (S.CANCELLED if ended else state)
    assert not ended or may_move(state, S.CANCELLED)


@pytest.mark.parametrize("args, verdict", VERDICT_CASES)
def test_record_applies_the_result_verdict(store, args, verdict):
    state, endpoint, reporter, held, dispatched = args
    if state is not None:
        _task(store, "t", state, endpoint=endpoint, dispatched=dispatched)
        if held:
            store.r.sadd(inflight_key(reporter), "t")
    recorded, rejected = store.record_results_from([ResultMessage(task_id="t", ok=True, data=b"R")], reporter)
    assert (recorded, rejected) == {"record": (["t"], []), "duplicate": ([], []), "reject": ([], ["t"])}[verdict]
    if state is not None:
        assert _state(store, "t") == (S.SUCCESS if verdict == "record" else state)
        assert not store.r.sismember(inflight_key(reporter), "t") or verdict == "reject"


def test_a_result_recorded_before_its_start_was_reported_keeps_when_it_started(store):
    """The site manager holds a start marker a moment (site_manager/start_reports.py): a quick task
    goes dispatched -> success with no "running" script. Its record still says when it started
    (the result's worker_started); a start already recorded is kept, and a result that never
    started (no worker_started) leaves none."""
    for task_id, state in (("quick", S.DISPATCHED), ("slow", S.RUNNING), ("lost", S.DISPATCHED)):
        _task(store, task_id, state, inflight=True)
    store.r.hset(task_key("slow"), "t_running", "5.5")
    results = [ResultMessage(task_id="quick", ok=True, data=b"R", timings={"worker_started": 1234.5678905}),
               ResultMessage(task_id="slow", ok=True, data=b"R", timings={"worker_started": 6.0}),
               ResultMessage(task_id="lost", ok=False, timings={})]
    usage = [encode_entry("ep", r, 0.0) for r in results]
    recorded, _, _ = store.record_and_log_usage(results, "ep", usage)
    assert sorted(recorded) == ["lost", "quick", "slow"]
    running = {t: store.r.hget(task_key(t), "t_running") for t in ("quick", "slow", "lost")}
    assert running == {"quick": b"1234.567890", "slow": b"5.5", "lost": None}
    assert store.get("quick").state is S.SUCCESS


def test_bucket_script_is_the_rule(redis_client):
    bucket = register(redis_client, "bucket")
    waits = [int(bucket(keys=["fns:rl:test"], args=[BUCKET_RATE, BUCKET_BURST, repr(now), cost]))
             for now, cost in BUCKET_CALLS]
    assert waits == BUCKET_WAITS


@pytest.mark.parametrize("args, reserved", QUOTA_CASES)
def test_reserve_script_is_the_rule(redis_client, args, reserved):
    before, n, limit = args
    redis_client.set("fns:quota:test", before)
    count, ok = register(redis_client, "reserve")(keys=["fns:quota:test"], args=[n, 4_000_000_000, limit])
    assert (count, bool(ok)) == (before + n, rules.quota_allows(before + n, limit)) and bool(ok) is reserved
    assert int(redis_client.get("fns:quota:test")) == (before + n if reserved else before)


@pytest.mark.parametrize("n", [3, 20])  # 20: past msgpack's one-byte array header (16)
def test_record_logs_usage_of_exactly_the_recorded_results_in_the_same_run(store, n):
    """The forwarder's record (one script run) appends the usage of the results recorded now, as
    log_usage would have written it after the record, and says how many tasks still wait."""
    for i in range(n):
        _task(store, f"t{i}", S.DISPATCHED, inflight=True)
    _task(store, "done", S.SUCCESS)  # a duplicate: not billed again
    _task(store, "other", S.DISPATCHED, endpoint="ep2", inflight=True)  # not this endpoint's: rejected
    store.submit([NewTask(task_id=f"q{i}", owner="u", function_id="f", endpoint_id="ep", payload=b"x") for i in range(2)])
    results = [ResultMessage(task_id=f"t{i}", ok=i % 2 == 0, resources={"cpu_time": 0.5 + i, "wall_time": 1.0, "max_rss_kb": 7.0})
               for i in range(n)]
    results += [ResultMessage(task_id="done", ok=True), ResultMessage(task_id="other", ok=True)]
    usage = [encode_entry("ep", r, 123.0) for r in results]
    recorded, rejected, queued = store.record_and_log_usage(results, "ep", usage)
    assert recorded == [f"t{i}" for i in range(n)] and rejected == ["other"] and queued == 2
    (_, fields), = store.r.xrange(USAGE_STREAM)
    expected = msgspec.msgpack.encode(result_entries("ep", results, recorded, 123.0))
    assert fields == {b"e": expected}
    # A second delivery of the same results records nothing and logs nothing more.
    assert store.record_and_log_usage(results, "ep", usage)[:2] == ([], ["other"])
    assert store.r.xlen(USAGE_STREAM) == 1


def test_recording_a_result_releases_the_tasks_argument_object_and_the_next_upload_deletes_it(store, tmp_path):
    """A task's arguments passed by reference are read by its worker only: once its result is
    recorded the object expires (the owner's next upload sweeps its bytes off the disk, so the
    service reuses that room and page cache). The owner's other objects keep their lifetime."""
    import io

    from web_service.object_rules import Gone, Principal
    from web_service.object_store import LocalDiskBackend, ObjectStore
    from fnserve.data_refs import ObjectRef

    objects = ObjectStore(store.r, LocalDiskBackend(tmp_path), quota_bytes=10**9, max_object_bytes=10**6,
                          chunk_bytes=10**6)
    owner = Principal("u")

    def upload(data: bytes) -> str:
        oid = objects.create(owner, len(data), hashlib.sha256(data).hexdigest(), ttl=3600).object_id
        objects.write_chunk(oid, owner, 0, len(data), io.BytesIO(data))
        return oid

    args, other = upload(b"arguments"), upload(b"kept")
    payload = ObjectRef(args, 9, hashlib.sha256(b"arguments").hexdigest(), "dill-data").to_buffer("3.11")
    store.submit([NewTask(task_id="t", owner="u", function_id="f", endpoint_id="ep", payload=payload)])
    assert [t.task_id for t in store.claim("ep", 1)] == ["t"]
    assert objects.get(args, owner).complete  # while the task runs, its arguments are there
    assert store.record_results([ResultMessage(task_id="t", ok=True, data=b"R")], "ep") == ["t"]

    with pytest.raises(Gone) as err:
        objects.get(args, owner)
    assert err.value.details["released"] and "finished" in err.value.message
    assert objects.backend.exists(args)  # the bytes go with the owner's next upload
    upload(b"next")
    assert not objects.backend.exists(args) and objects.used("u") == len(b"kept") + len(b"next")
    assert objects.get(other, owner).complete and objects.backend.exists(other)


def _script_exists_calls(r) -> int:
    return int(r.info("commandstats").get("cmdstat_script|exists", {}).get("calls", 0))


def test_a_pass_of_claims_and_records_for_many_endpoints_survives_one_endpoints_failing_script(store):
    """The forwarder claims for many endpoints, and records many endpoints' result batches, in one
    pipelined round trip each (claim_many / record_many): a script failing for one endpoint (its
    queue key holds the wrong type) leaves the others' claims and records standing, and answers
    None for that one alone (tests/integration/test_forwarder.py: its site manager is asked to
    register again, which requeues its claim and has it resend its unacked results)."""
    for ep in ("a", "b", "c"):
        store.submit([NewTask(task_id=f"{ep}1", owner="u", function_id="f", endpoint_id=ep, payload=b"x")])
    _task(store, "b2", S.DISPATCHED, endpoint="b", inflight=True)
    store.r.delete(queue_key("b"))
    store.r.set(queue_key("b"), "not a list")  # WRONGTYPE inside b's claim script
    claims = store.claim_many([("a", 10, 0), ("b", 10, 0), ("c", 10, 0)])
    assert claims[1] is None  # failed: the forwarder has b's site manager register again
    assert [[t.task_id for t, _ in c] for c in (claims[0], claims[2]) if c is not None] == [["a1"], ["c1"]]
    assert _state(store, "a1") == _state(store, "c1") == S.DISPATCHED
    # Records: b's batch fails (its queue key, read for "tasks still waiting", is the wrong type).
    batches = [(ep, [ResultMessage(task_id=tid, ok=True)], [encode_entry(ep, ResultMessage(task_id=tid, ok=True), 1.0)])
               for ep, tid in (("a", "a1"), ("b", "b2"), ("c", "c1"))]
    answers = store.record_many(batches)
    assert answers[0] is not None and answers[0][0] == ["a1"]
    assert answers[1] is None
    assert answers[2] is not None and answers[2][0] == ["c1"]
    assert _state(store, "a1") == _state(store, "c1") == S.SUCCESS
    # b's batch was not acked, so its site manager sends it again; the resend answers normally
    # and b2 ends recorded once (a script's writes before its error stay: first result wins).
    store.r.delete(queue_key("b"))
    again = store.record_many([batches[1]])[0]
    assert again is not None and again[1] == [] and _state(store, "b2") == S.SUCCESS
    assert store.r.xlen(USAGE_STREAM) == 3  # a, c and b once each: the resend is not billed again


def test_one_endpoints_claim_or_record_alone_costs_no_script_exists_round_trip(store):
    """The warm path claims for one endpoint and records one batch: run directly, not through a
    pipeline (redis-py's pipeline sends SCRIPT EXISTS before every execute that holds scripts)."""
    store.submit([NewTask(task_id="t1", owner="u", function_id="f", endpoint_id="ep", payload=b"x")])
    store.claim_many([("other", 1, 0)])  # scripts loaded, as in a running forwarder
    before = _script_exists_calls(store.r)
    assert [t.task_id for t, _ in store.claim_many([("ep", 10, 0)])[0]] == ["t1"]
    res = ResultMessage(task_id="t1", ok=True)
    assert store.record_many([("ep", [res], [encode_entry("ep", res, 1.0)])])[0][0] == ["t1"]
    assert _script_exists_calls(store.r) == before
    # Several endpoints go through the pipeline (one SCRIPT EXISTS for the whole pass).
    store.claim_many([("x", 1, 0), ("y", 1, 0)])
    assert _script_exists_calls(store.r) == before + 1

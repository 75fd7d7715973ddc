"""REST: submitting batches, reading results (with long-poll), cancelling."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from fnserve import serialize
from fnserve.messages import RemoteError, ResultMessage
from rest_support import MAX_BATCH, MAX_PAYLOAD, assert_error, b64, register_endpoint, register_function, state
from web_service.task_store import function_key, queue_key


SOME_ID = "0b7f1c2e-1d2a-4c3b-9e8f-0123456789ab"  # the form of a task id, of no task


@pytest.fixture
def fid(client, alice):
    return register_function(client, alice)


@pytest.fixture
def eid(client, alice):
    return register_endpoint(client, alice)["endpoint_id"]


def submit(client, headers, *tasks):
    return client.post("/v1/tasks", json={"tasks": list(tasks)}, headers=headers)


def atomic(client, headers, *tasks):
    """A batch that is refused whole if any task is bad (the behaviour before per-task answers)."""
    return client.post("/v1/tasks", json={"tasks": list(tasks), "atomic": True}, headers=headers)


def finish(store, task_id, endpoint_id, value=None, error=None):
    """What the forwarder does when a result arrives."""
    store.claim(endpoint_id, 100)
    if error:
        res = ResultMessage(task_id=task_id, ok=False, error=error, stderr="boom")
    else:
        res = ResultMessage(task_id=task_id, ok=True, data=serialize.serialize_data(value, "json-data"), stdout="hi\n")
    assert store.record_results([res], endpoint_id) == [task_id]


def test_batch_is_queued_durably_in_order(client, alice, fid, eid, store):
    payload = serialize.serialize_args([1], strategy="dill-data")
    resp = submit(client, alice, *({"function_id": fid, "endpoint_id": eid, "payload": b64(payload)} for _ in range(3)))
    assert resp.status_code == 202
    ids = resp.json["task_ids"]
    assert len(set(ids)) == 3
    assert [i.decode() for i in store.r.lrange(queue_key(eid), 0, -1)] == ids
    for tid in ids:
        rec = store.get(tid)
        assert rec.state.value == "waiting-for-endpoint" and rec.function_id == fid and rec.endpoint_id == eid
    claimed = store.claim(eid, 10)
    assert claimed[0].payload == payload and claimed[0].function == serialize.serialize_source("def double(x):\n    return 2 * x\n", "double")
    assert claimed[0].result_strategy is None  # dill payload: Python result


def test_json_arguments_are_wrapped_and_ask_for_json_results(client, alice, fid, eid, store):
    client.post("/v1/runtimes", json={"name": "py311", "type": "host"}, headers=alice)
    ids = submit(
        client, alice,
        {"function_id": fid, "endpoint_id": eid, "args": [2], "kwargs": {"k": "v"}, "walltime": 3, "runtime": "py311"},
        {"function_id": fid, "endpoint_id": eid, "args": [2], "result_format": "python"},
        {"function_id": fid, "endpoint_id": eid, "payload": b64(serialize.serialize_args([1], strategy="dill-data")), "result_format": "json"},
    ).json["task_ids"]
    first, second, third = store.claim(eid, 10)
    assert serialize.deserialize_args(first.payload) == ([2], {"k": "v"})
    assert serialize.parse_header(first.payload).strategy == "json-data"
    assert (first.result_strategy, first.walltime, first.runtime) == ("json-data", 3.0, "py311")
    assert second.result_strategy is None and third.result_strategy == "json-data"
    assert [first.task_id, second.task_id, third.task_id] == ids


def test_result_is_returned_as_base64_and_json(client, alice, fid, eid, store):
    tid = submit(client, alice, {"function_id": fid, "endpoint_id": eid, "args": [21]}).json["task_ids"][0]
    pending = client.get(f"/v1/tasks/{tid}", headers=alice).json
    assert pending["state"] == "waiting-for-endpoint" and pending["result"] is None and "result_json" not in pending
    assert "submitted" in pending["timestamps"]
    finish(store, tid, eid, {"answer": 42})
    task = client.get(f"/v1/tasks/{tid}", headers=alice).json
    assert task["state"] == "success" and task["result_json"] == {"answer": 42}
    assert serialize.deserialize_data(__import__("base64").b64decode(task["result"])) == {"answer": 42}
    assert task["stdout"] == "hi\n" and task["error"] is None
    assert task["function_id"] == fid and task["endpoint_id"] == eid
    assert {"submitted", "dispatched", "finished"} <= set(task["timestamps"])


def test_remote_failure_is_reported_with_its_traceback(client, alice, fid, eid, store):
    tid = submit(client, alice, {"function_id": fid, "endpoint_id": eid, "args": [1]}).json["task_ids"][0]
    finish(store, tid, eid, error=RemoteError(code="user_exception", type="ValueError", message="bad", traceback="Traceback..."))
    task = client.get(f"/v1/tasks/{tid}", headers=alice).json
    assert task["state"] == "failed" and task["result"] is None
    assert task["error"] == {"code": "user_exception", "type": "ValueError", "message": "bad", "traceback": "Traceback..."}
    assert task["stderr"] == "boom"


def test_long_poll_returns_as_soon_as_the_result_is_recorded(client, alice, fid, eid, store):
    tid = submit(client, alice, {"function_id": fid, "endpoint_id": eid, "args": [1]}).json["task_ids"][0]
    timer = threading.Timer(0.3, finish, (store, tid, eid, 2))
    timer.start()
    t0 = time.monotonic()
    task = client.get(f"/v1/tasks/{tid}?wait=4", headers=alice).json
    elapsed = time.monotonic() - t0
    timer.join()
    assert task["state"] == "success" and task["result_json"] == 2
    assert 0.25 < elapsed < 2


def test_long_poll_times_out_with_the_task_still_pending(client, alice, fid, eid):
    tid = submit(client, alice, {"function_id": fid, "endpoint_id": eid, "args": [1]}).json["task_ids"][0]
    t0 = time.monotonic()
    task = client.get(f"/v1/tasks/{tid}?wait=0.4", headers=alice).json
    assert task["state"] == "waiting-for-endpoint"
    assert 0.35 < time.monotonic() - t0 < 2


def test_long_poll_is_capped_by_max_wait(client, alice, fid, eid, settings):
    from web_service.app import create_app

    tid = submit(client, alice, {"function_id": fid, "endpoint_id": eid, "args": [1]}).json["task_ids"][0]
    capped = create_app(dataclasses.replace(settings, max_wait=0.3))
    try:
        t0 = time.monotonic()
        task = capped.test_client().get(f"/v1/tasks/{tid}?wait=30", headers=alice).json
        assert task["state"] == "waiting-for-endpoint"
        assert 0.25 < time.monotonic() - t0 < 2
    finally:
        state(capped).engine.dispose()


def test_bad_wait_values_are_400(client, alice, fid, eid):
    tid = submit(client, alice, {"function_id": fid, "endpoint_id": eid, "args": [1]}).json["task_ids"][0]
    for wait in ("soon", "-1", "nan", "inf"):
        assert_error(client.get(f"/v1/tasks/{tid}?wait={wait}", headers=alice), 400, "invalid_request")


def test_results_call_waits_for_all_or_first(client, alice, fid, eid, store):
    ids = submit(client, alice, *({"function_id": fid, "endpoint_id": eid, "args": [i]} for i in range(3))).json["task_ids"]
    threading.Timer(0.2, finish, (store, ids[1], eid, "one")).start()
    t0 = time.monotonic()
    resp = client.post("/v1/tasks/results", json={"task_ids": ids, "wait": 3, "return_when": "FIRST_COMPLETED"}, headers=alice)
    assert time.monotonic() - t0 < 2
    tasks = resp.json["tasks"]
    assert [t["task_id"] for t in tasks] == ids
    # finish() dispatched all three (as a forwarder would); only the second has finished.
    assert [t["state"] for t in tasks] == ["dispatched", "success", "dispatched"]

    for tid in (ids[0], ids[2]):
        threading.Timer(0.2, finish, (store, tid, eid, tid)).start()
    resp = client.post("/v1/tasks/results", json={"task_ids": ids, "wait": 3}, headers=alice)
    assert [t["state"] for t in resp.json["tasks"]] == ["success"] * 3
    assert resp.json["tasks"][2]["result_json"] == ids[2]

    now = client.post("/v1/tasks/results", json={"task_ids": ids}, headers=alice)
    assert now.status_code == 200 and len(now.json["tasks"]) == 3


def test_results_call_refuses_unknown_or_foreign_ids_as_a_whole(client, alice, bob, fid, eid):
    mine = submit(client, alice, {"function_id": fid, "endpoint_id": eid, "args": [1]}).json["task_ids"][0]
    err = assert_error(client.post("/v1/tasks/results", json={"task_ids": [mine, "nope"]}, headers=alice), 404, "task_not_found")
    assert err["details"]["task_id"] == "nope"
    assert_error(client.post("/v1/tasks/results", json={"task_ids": [mine]}, headers=bob), 403, "forbidden")


def test_bad_results_requests(client, alice):
    cases = [({}, "task_ids"), ({"task_ids": []}, "task_ids"), ({"task_ids": [1]}, "task_ids[0]"),
             ({"task_ids": [SOME_ID], "wait": "x"}, "wait"), ({"task_ids": [SOME_ID], "return_when": "SOMETIME"}, "return_when")]
    for body, field in cases:
        err = assert_error(client.post("/v1/tasks/results", json=body, headers=alice), 400, "invalid_request")
        assert err["details"]["field"] == field


def test_cancel_stops_a_waiting_task_and_leaves_finished_ones(client, alice, bob, fid, eid, store):
    a, b = submit(client, alice, *({"function_id": fid, "endpoint_id": eid, "args": [i]} for i in range(2))).json["task_ids"]
    assert_error(client.post(f"/v1/tasks/{a}/cancel", headers=bob), 403, "forbidden")
    cancelled = client.post(f"/v1/tasks/{a}/cancel", headers=alice).json
    assert cancelled["state"] == "cancelled" and cancelled["error"]["code"] == "cancelled"
    assert [t.task_id for t in store.claim(eid, 10)] == [b]
    finish(store, b, eid, 1)
    assert client.post(f"/v1/tasks/{b}/cancel", headers=alice).json["state"] == "success"
    assert_error(client.post("/v1/tasks/nope/cancel", headers=alice), 404, "task_not_found")


def test_tasks_are_private_to_their_owner(client, alice, bob, fid, eid):
    tid = submit(client, alice, {"function_id": fid, "endpoint_id": eid, "args": [1]}).json["task_ids"][0]
    assert_error(client.get(f"/v1/tasks/{tid}", headers=bob), 403, "forbidden")
    assert_error(client.get("/v1/tasks/unknown", headers=alice), 404, "task_not_found")


def test_others_functions_and_endpoints_cannot_be_used(client, alice, bob, fid, eid):
    bob_fid = register_function(client, bob)
    bob_eid = register_endpoint(client, bob)["endpoint_id"]
    err = assert_error(atomic(client, alice, {"function_id": fid, "endpoint_id": eid, "args": []},
                              {"function_id": bob_fid, "endpoint_id": eid, "args": []}), 403, "forbidden")
    assert err["details"] == {"function_id": bob_fid, "index": 1}
    # Judged task by task (the default), only the task using bob's function is refused.
    resp = submit(client, alice, {"function_id": fid, "endpoint_id": eid, "args": []},
                  {"function_id": bob_fid, "endpoint_id": eid, "args": []})
    assert resp.status_code == 207 and resp.json["task_ids"][0] and resp.json["task_ids"][1] is None
    assert resp.json["errors"] == [{"index": 1, "status": 403, "code": "forbidden", "message": resp.json["errors"][0]["message"],
                                    "details": {"function_id": bob_fid}}]
    err = assert_error(submit(client, alice, {"function_id": fid, "endpoint_id": bob_eid, "args": []}), 403, "forbidden")
    assert err["details"]["endpoint_id"] == bob_eid


def bad_task_cases(fid, eid):
    """(bad task, status, code, field) for a task placed at index 1 of a batch."""
    good = {"function_id": fid, "endpoint_id": eid, "args": [1]}
    dill_code = serialize.serialize_source("def f():\n    pass\n", "f")
    return [
        ({**good, "walltime": 0}, 400, "invalid_request", "tasks[1].walltime"),
        ({**good, "walltime": True}, 400, "invalid_request", "tasks[1].walltime"),
        ({**good, "runtime": 7}, 400, "invalid_request", "tasks[1].runtime"),
        ({**good, "result_format": "xml"}, 400, "invalid_request", "tasks[1].result_format"),
        ({**good, "args": {"a": 1}}, 400, "invalid_request", "tasks[1].args"),
        ({**good, "kwargs": [1]}, 400, "invalid_request", "tasks[1].kwargs"),
        ({"endpoint_id": eid, "args": []}, 400, "invalid_request", "tasks[1].function_id"),
        ({"function_id": fid, "endpoint_id": 5}, 400, "invalid_request", "tasks[1].endpoint_id"),
        ({**good, "payload": b64(b"fns1 json-data 3.11\n{}")}, 400, "invalid_request", "tasks[1].payload"),  # and args
        ({"function_id": fid, "endpoint_id": eid, "payload": "@@@"}, 400, "invalid_request", "tasks[1].payload"),
        ({"function_id": fid, "endpoint_id": eid, "payload": b64(b"raw pickle")}, 400, "not_fnserve_format", "tasks[1].payload"),
        ({"function_id": fid, "endpoint_id": eid, "payload": b64(b"fns1 yaml 3.11\n")}, 400, "unknown_strategy", "tasks[1].payload"),
        ({"function_id": fid, "endpoint_id": eid, "payload": b64(dill_code)}, 400, "wrong_strategy", "tasks[1].payload"),
        ({"function_id": fid, "endpoint_id": eid, "payload": b64(b"fns1 json-data 3.11\n" + b"1" * MAX_PAYLOAD)}, 413, "payload_too_large", "tasks[1].payload"),
        ({**good, "args": ["x" * MAX_PAYLOAD]}, 413, "payload_too_large", "tasks[1].args"),
        ("not an object", 400, "invalid_request", "tasks[1]"),
        ({**good, "function_id": "00000000-0000-4000-8000-000000000000"}, 404, "function_not_found", None),
        ({**good, "endpoint_id": "00000000-0000-4000-8000-000000000000"}, 404, "endpoint_not_found", None),
        ({**good, "resource_specification": [1]}, 400, "invalid_request", "tasks[1].resource_specification"),
        ({**good, "resource_specification": {"k": "x" * 5000}}, 400, "invalid_request", "tasks[1].resource_specification"),
        ({**good, "task_group_id": "g" * 65}, 400, "invalid_request", "tasks[1].task_group_id"),
        ({**good, "runtime": "no-such-runtime"}, 404, "runtime_not_found", None),
    ]


def test_an_atomic_batch_with_a_bad_task_is_refused_whole_and_names_its_index(client, alice, fid, eid, store):
    good = {"function_id": fid, "endpoint_id": eid, "args": [1]}
    for bad, status, code, field in bad_task_cases(fid, eid):
        err = assert_error(atomic(client, alice, good, bad, good), status, code)
        assert err["details"]["index"] == 1, (bad, err)
        if field:
            assert err["details"]["field"] == field, (bad, err)
    assert store.queue_length(eid) == 0
    assert store.r.keys("fns:task:*") == []


def test_a_bad_task_fails_alone_with_its_code_and_the_others_are_queued(client, alice, fid, eid, store):
    good = {"function_id": fid, "endpoint_id": eid, "args": [1]}
    cases = bad_task_cases(fid, eid)
    for bad, status, code, field in cases:
        resp = submit(client, alice, good, bad, good)
        assert resp.status_code == 207, (bad, resp.json)
        first, refused, third = resp.json["task_ids"]
        assert first and third and refused is None
        [err] = resp.json["errors"]
        assert (err["index"], err["status"], err["code"]) == (1, status, code), (bad, err)
        assert err["message"] and "index" not in err.get("details", {})
        if field:
            assert err["details"]["field"] == field, (bad, err)
        assert [t.task_id for t in store.claim(eid, 10)] == [first, third]
    assert store.queue_length(eid) == 0 and len(store.r.keys("fns:task:*")) == 2 * len(cases)


def test_a_batch_with_no_good_task_answers_the_first_error_with_every_task_named(client, alice, fid, eid, store):
    unknown = "00000000-0000-4000-8000-000000000000"
    resp = submit(client, alice, {"function_id": fid, "endpoint_id": unknown, "args": [1]},
                  {"function_id": fid, "endpoint_id": eid, "walltime": -1})
    err = assert_error(resp, 404, "endpoint_not_found")
    assert err["details"]["index"] == 0
    assert [(e["index"], e["status"], e["code"]) for e in err["details"]["errors"]] == [
        (0, 404, "endpoint_not_found"), (1, 400, "invalid_request")]
    # One bad task alone answers as it always did: its own error, nothing more.
    err = assert_error(submit(client, alice, {"function_id": fid, "endpoint_id": unknown}), 404, "endpoint_not_found")
    assert err["details"] == {"endpoint_id": unknown, "index": 0}
    assert store.r.keys("fns:task:*") == []
    assert_error(client.post("/v1/tasks", json={"tasks": [{"function_id": fid, "endpoint_id": eid}], "atomic": "yes"},
                             headers=alice), 400, "invalid_request")


def test_batch_shape_errors(client, alice, fid, eid):
    for body in ({}, {"tasks": []}, {"tasks": {"a": 1}}):
        err = assert_error(client.post("/v1/tasks", json=body, headers=alice), 400, "invalid_request")
        assert err["details"]["field"] == "tasks"
    too_many = [{"function_id": fid, "endpoint_id": eid, "args": []}] * (MAX_BATCH + 1)
    err = assert_error(submit(client, alice, *too_many), 413, "batch_too_large")
    assert err["details"]["limit"] == MAX_BATCH


def test_function_bodies_lost_from_redis_are_recached_at_submit(client, alice, fid, eid, store):
    store.r.flushdb()  # e.g. Redis restarted without persistence
    assert submit(client, alice, {"function_id": fid, "endpoint_id": eid, "args": [1]}).status_code == 202
    assert store.r.get(function_key(fid)).startswith(b"fns1 source")
    assert store.claim(eid, 1)[0].function.startswith(b"fns1 source")


def test_deleted_function_cannot_be_submitted(client, alice, fid, eid):
    body = {"function_id": fid, "endpoint_id": eid, "args": [1]}
    assert submit(client, alice, body).status_code == 202  # ownership now cached in-process
    client.delete(f"/v1/functions/{fid}", headers=alice)
    err = assert_error(submit(client, alice, body), 404, "function_not_found")
    assert err["details"] == {"function_id": fid, "index": 0}


def test_function_deleted_by_another_process_is_refused_despite_cached_ownership(client, alice, fid, eid, settings):
    from web_service.app import create_app

    body = {"function_id": fid, "endpoint_id": eid, "args": [1]}
    assert submit(client, alice, body).status_code == 202
    other = create_app(settings)
    try:
        assert other.test_client().delete(f"/v1/functions/{fid}", headers=alice).status_code == 200
    finally:
        state(other).engine.dispose()
    assert_error(submit(client, alice, body), 404, "function_not_found")


def test_submit_with_wait_answers_with_the_finished_task(client, alice, fid, eid, store):
    """Client.call's single round trip: the submit answer carries the result."""

    def finish_when_queued() -> None:
        deadline = time.monotonic() + 5
        while store.queue_length(eid) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        [task] = store.claim(eid, 10)
        store.record_results([ResultMessage(task_id=task.task_id, ok=True, data=serialize.serialize_data(42, "json-data"))], eid)

    threading.Thread(target=finish_when_queued).start()
    resp = client.post("/v1/tasks", json={"tasks": [{"function_id": fid, "endpoint_id": eid, "args": [1]}], "wait": 5}, headers=alice)
    assert resp.status_code == 202
    [task] = resp.json["tasks"]
    assert task["task_id"] == resp.json["task_ids"][0]
    assert task["state"] == "success" and task["result_json"] == 42


def test_submit_with_wait_times_out_with_the_task_still_accepted(client, alice, fid, eid, store):
    resp = client.post("/v1/tasks", json={"tasks": [{"function_id": fid, "endpoint_id": eid, "args": [1]}], "wait": 0.2}, headers=alice)
    assert resp.status_code == 202
    [task] = resp.json["tasks"]
    assert task["state"] == "waiting-for-endpoint"
    assert store.get(task["task_id"]).state.value == "waiting-for-endpoint"


def test_retries_task_group_and_resource_specification_are_kept_and_forwarded(client, alice, fid, eid, store):
    spec = {"num_nodes": 2, "ranks_per_node": 4, "partition": "debug"}
    ids = submit(client, alice, *({"function_id": fid, "endpoint_id": eid, "args": [i], "max_retries": 0,
                                   "task_group_id": "tg-1", "resource_specification": spec} for i in range(3)),
                 {"function_id": fid, "endpoint_id": eid, "args": [9]}).json["task_ids"]
    task = client.get(f"/v1/tasks/{ids[0]}", headers=alice).json
    assert (task["max_retries"], task["task_group_id"], task["resource_specification"]) == (0, "tg-1", spec)
    plain = client.get(f"/v1/tasks/{ids[3]}", headers=alice).json
    assert not {"max_retries", "task_group_id", "resource_specification"} & set(plain)
    sent = store.claim(eid, 10)  # what the forwarder puts in the TaskMessages to the endpoint
    assert [(m.max_retries, m.resource_specification) for m in sent] == [(0, spec)] * 3 + [(None, None)]


def test_a_task_group_lists_its_tasks_in_order_for_its_owner_only(client, alice, bob, fid, eid, store):
    first = submit(client, alice, *({"function_id": fid, "endpoint_id": eid, "args": [i], "task_group_id": "runs"}
                                    for i in range(3))).json["task_ids"]
    second = submit(client, alice, {"function_id": fid, "endpoint_id": eid, "args": [3], "task_group_id": "runs"},
                    {"function_id": fid, "endpoint_id": eid, "args": [4], "task_group_id": "other"}).json["task_ids"]
    page = client.get("/v1/task_groups/runs/tasks", query_string={"limit": 3}, headers=alice).json
    assert [t["task_id"] for t in page["tasks"]] == first and page["total"] == 4 and page["next_offset"] == 3
    rest = client.get("/v1/task_groups/runs/tasks", query_string={"offset": 3}, headers=alice).json
    assert [t["task_id"] for t in rest["tasks"]] == second[:1] and rest["next_offset"] is None
    assert rest["tasks"][0]["state"] == "waiting-for-endpoint"
    # Bob's group of the same name is his own: he sees none of alice's tasks.
    assert client.get("/v1/task_groups/runs/tasks", headers=bob).json == {"task_group_id": "runs", "tasks": [], "total": 0,
                                                                          "next_offset": None}
    assert_error(client.get("/v1/task_groups/runs/tasks", query_string={"limit": 0}, headers=alice), 400, "invalid_request")
    assert_error(client.get("/v1/task_groups/runs/tasks", query_string={"offset": "x"}, headers=alice), 400, "invalid_request")


def test_submit_and_wait_reuses_its_redis_subscription_connection(client, alice, fid, eid, store, redis_client):
    """Each Client.call used to open a new Redis connection (connect, HELLO/AUTH) for its wait."""

    def call() -> dict:
        threading.Thread(target=_finish_next, args=(store, eid, 7)).start()
        resp = client.post("/v1/tasks", json={"tasks": [{"function_id": fid, "endpoint_id": eid, "args": [1]}], "wait": 5}, headers=alice)
        return resp.json["tasks"][0]

    assert call()["result_json"] == 7  # the first wait may open the connection
    before = redis_client.info("stats")["total_connections_received"]
    for _ in range(5):
        assert call()["result_json"] == 7
    # One new connection per call before (5 here); at most one now: the shared pool's second
    # connection, opened the first time the test's forwarder thread and the request overlap.
    assert redis_client.info("stats")["total_connections_received"] - before <= 1


def test_a_kept_subscription_connection_redis_closed_is_replaced_not_answered_503(client, alice, fid, eid, store, redis_client):
    """Redis restarting (or failing over) closes the pub/sub connections a process keeps for its
    next waits; the next submit-and-wait used to answer 503 on the dead one (the CI run where a
    file trigger's tasks were waited for after Redis was restarted)."""

    def call() -> dict:
        threading.Thread(target=_finish_next, args=(store, eid, 7)).start()
        resp = client.post("/v1/tasks", json={"tasks": [{"function_id": fid, "endpoint_id": eid, "args": [1]}], "wait": 5}, headers=alice)
        assert resp.status_code == 202, resp.json
        return resp.json["tasks"][0]

    assert call()["result_json"] == 7
    assert store.idle_subscribers
    # What a restart does to every connection the service holds: the server closes it.
    assert redis_client.client_kill_filter(skipme=True) >= len(store.idle_subscribers)
    assert call()["result_json"] == 7
    assert call()["result_json"] == 7  # and the new connection is kept in turn


def test_a_reused_subscription_ignores_the_previous_owners_messages(store):
    """A message of the previous owner's channel still unread on a reused connection wakes nobody."""
    from web_service.task_store import done_channel

    bob = store.completions("bob")
    store.r.publish(done_channel("bob"), SOME_ID)  # queued on bob's connection before it unsubscribes
    bob.__exit__(None, None, None)
    t0 = time.monotonic()
    with store.completions("alice") as alice:
        assert alice.pubsub is bob.pubsub
        alice.wait([SOME_ID], 0.5, fresh=True)
    assert time.monotonic() - t0 >= 0.5  # still waited: bob's message was not taken for alice's task


def _finish_next(store, eid, value) -> None:
    """The forwarder's part for the next task queued: claim it, record its result."""
    deadline = time.monotonic() + 5
    while store.queue_length(eid) == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    [task] = store.claim(eid, 10)
    store.record_results([ResultMessage(task_id=task.task_id, ok=True, data=serialize.serialize_data(value, "json-data"))], eid)

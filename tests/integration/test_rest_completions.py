"""REST: GET /v1/tasks/completions, the per-user completion log read with one long-poll."""

from __future__ import annotations

import threading
import time

import pytest

from fnserve import serialize
from fnserve.messages import ResultMessage
from rest_support import assert_error, register_endpoint, register_function
from web_service.task_store import completed_key


@pytest.fixture
def fid(client, alice):
    return register_function(client, alice)


@pytest.fixture
def eid(client, alice):
    return register_endpoint(client, alice)["endpoint_id"]


def submit(client, headers, fid, eid, n):
    tasks = [{"function_id": fid, "endpoint_id": eid, "args": [i]} for i in range(n)]
    return client.post("/v1/tasks", json={"tasks": tasks}, headers=headers).json["task_ids"]


def finish(store, eid, *task_ids):
    """What the forwarder does with a batch of results from the endpoint."""
    store.claim(eid, 100)
    results = [ResultMessage(task_id=t, ok=True, data=serialize.serialize_data(t, "json-data")) for t in task_ids]
    store.record_results(results, eid)


def read(client, headers, **params):
    resp = client.get("/v1/tasks/completions", query_string=params, headers=headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.json


def test_cursor_then_long_poll_returns_each_finished_task_once_with_its_result(client, alice, fid, eid, store):
    cursor = read(client, alice)["cursor"]
    ids = submit(client, alice, fid, eid, 3)
    threading.Timer(0.2, finish, (store, eid, ids[0], ids[1])).start()
    t0 = time.monotonic()
    page = read(client, alice, cursor=cursor, wait=5)
    assert time.monotonic() - t0 < 3  # woken by the completion, not by the timeout
    assert {t["task_id"]: t["result_json"] for t in page["tasks"]} == {ids[0]: ids[0], ids[1]: ids[1]}
    assert page["gap"] is False

    finish(store, eid, ids[2])
    nxt = read(client, alice, cursor=page["cursor"], wait=5)
    assert [t["task_id"] for t in nxt["tasks"]] == [ids[2]] and nxt["tasks"][0]["state"] == "success"
    empty = read(client, alice, cursor=nxt["cursor"], wait=0.2)
    assert empty["tasks"] == [] and empty["cursor"] == nxt["cursor"]


def test_cancelled_tasks_are_in_the_log_and_other_users_see_nothing(client, alice, bob, fid, eid, store):
    mine, bobs = read(client, alice)["cursor"], read(client, bob)["cursor"]
    tid = submit(client, alice, fid, eid, 1)[0]
    assert client.post(f"/v1/tasks/{tid}/cancel", headers=alice).json["state"] == "cancelled"
    page = read(client, alice, cursor=mine, wait=2)
    assert [(t["task_id"], t["state"]) for t in page["tasks"]] == [(tid, "cancelled")]
    assert read(client, bob, cursor=bobs, wait=0.2)["tasks"] == []


def test_max_tasks_splits_at_batch_boundaries(client, alice, fid, eid, store):
    cursor = read(client, alice)["cursor"]
    ids = submit(client, alice, fid, eid, 4)
    for tid in ids:
        finish(store, eid, tid)
    first = read(client, alice, cursor=cursor, max_tasks=2)
    rest = read(client, alice, cursor=first["cursor"], max_tasks=2)
    assert [t["task_id"] for t in first["tasks"] + rest["tasks"]] == ids
    assert len(first["tasks"]) == 2


def test_min_tasks_gathers_batches_for_up_to_linger(client, alice, fid, eid, store):
    cursor = read(client, alice)["cursor"]
    ids = submit(client, alice, fid, eid, 3)
    finish(store, eid, ids[0])
    threading.Timer(0.2, finish, (store, eid, ids[1])).start()
    page = read(client, alice, cursor=cursor, wait=5, min_tasks=2, linger=1)
    assert [t["task_id"] for t in page["tasks"]] == ids[:2]  # waited for the second batch
    t0 = time.monotonic()
    alone = read(client, alice, cursor=page["cursor"], wait=0.1, min_tasks=5, linger=0.3)
    assert alone["tasks"] == [] and time.monotonic() - t0 < 1  # nothing arrived: no linger
    finish(store, eid, ids[2])
    t0 = time.monotonic()
    last = read(client, alice, cursor=page["cursor"], wait=5, min_tasks=5, linger=0.3)
    assert [t["task_id"] for t in last["tasks"]] == [ids[2]] and 0.25 < time.monotonic() - t0 < 2


def test_a_reader_behind_a_trimmed_log_is_told_of_the_gap(client, alice, fid, eid, store):
    cursor = read(client, alice)["cursor"]
    ids = submit(client, alice, fid, eid, 3)
    for tid in ids:
        finish(store, eid, tid)
    key = next(k for k in store.r.scan_iter(completed_key("*")))
    store.r.xtrim(key, maxlen=1, approximate=False)  # what the MAXLEN cap does to a reader that fell behind
    page = read(client, alice, cursor=cursor)
    assert page["gap"] is True and [t["task_id"] for t in page["tasks"]] == [ids[2]]


def test_bad_cursor_and_max_tasks_are_400(client, alice):
    # A cursor shaped right but past Redis's 64-bit stream ids is refused too (schemathesis found a 500).
    for params, field in (({"cursor": "yesterday"}, "cursor"), ({"cursor": "09708-72356291205755132818"}, "cursor"),
                          ({"cursor": "1-0", "max_tasks": "0"}, "max_tasks"),
                          ({"cursor": "1-0", "wait": "soon"}, "wait"), ({"cursor": "1-0", "min_tasks": "x"}, "min_tasks"),
                          ({"cursor": "1-0", "linger": "5"}, "linger")):
        err = assert_error(client.get("/v1/tasks/completions", query_string=params, headers=alice), 400, "invalid_request")
        assert err["details"]["field"] == field
    assert_error(client.get("/v1/tasks/completions"), 401, "missing_token")


def test_running_tasks_come_only_to_readers_that_ask_and_do_not_end_other_long_polls(client, alice, fid, eid, store):
    cursor = read(client, alice)["cursor"]
    ids = submit(client, alice, fid, eid, 2)
    store.claim(eid, 10)
    threading.Timer(0.2, store.mark_running, ([ids[0]],)).start()
    t0 = time.monotonic()
    page = read(client, alice, cursor=cursor, wait=5, running="true")
    assert time.monotonic() - t0 < 3  # answered when the task started, not at the timeout
    assert [(t["task_id"], t["state"]) for t in page["tasks"]] == [(ids[0], "running")]
    # A reader that did not ask passes over the running entry and keeps waiting for a result.
    threading.Timer(0.3, finish, (store, eid, ids[1])).start()
    t0 = time.monotonic()
    plain = read(client, alice, cursor=cursor, wait=5)
    assert 0.25 < time.monotonic() - t0 < 3
    assert [(t["task_id"], t["state"]) for t in plain["tasks"]] == [(ids[1], "success")]
    # A task that already finished when the running entry is read is left to its own entry.
    finish(store, eid, ids[0])
    after = read(client, alice, cursor=cursor, wait=1, running="true")
    assert [(t["task_id"], t["state"]) for t in after["tasks"]] == [(ids[1], "success"), (ids[0], "success")]
    # Each long-poll gave its place back (in the round trip that read its tasks, or on its own
    # when it answered nothing): none is left counting against the user's cap.
    assert sum(store.r.zcard(k) for k in store.r.scan_iter("fns:waits:*")) == 0
    assert_error(client.get("/v1/tasks/completions", query_string={"cursor": cursor, "running": "maybe"}, headers=alice),
                 400, "invalid_request")

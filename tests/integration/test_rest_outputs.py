"""Live outputs in the service: the forwarder's writer (real Redis) and ``GET /v1/tasks/<id>/outputs``."""

from __future__ import annotations

import threading
import time

import msgspec
import pytest
from rest_support import assert_error, register_endpoint, register_function

from fnserve import serialize
from fnserve.messages import ResultMessage, TaskOutput
from web_service.services.outputs import END_GRACE
from web_service.task_outputs import OutputWriter, info_key, outputs_key


@pytest.fixture
def eid(client, alice):
    return register_endpoint(client, alice)["endpoint_id"]


@pytest.fixture
def task_id(client, alice, eid, store):
    fid = register_function(client, alice)
    resp = client.post("/v1/tasks", json={"tasks": [{"function_id": fid, "endpoint_id": eid, "args": [1]}]}, headers=alice)
    [tid] = resp.json["task_ids"]
    store.claim(eid, 10)
    store.mark_running([tid])
    return tid


def out(task_id, seq, kind="output", **values):
    return TaskOutput(task_id=task_id, seq=seq, time=1000.0 + seq, kind=kind, values=values)


def finish(store, task_id, eid):
    assert store.record_results([ResultMessage(task_id=task_id, ok=True, data=serialize.serialize_data(7, "json-data"))], eid) == [task_id]


def get(client, headers, task_id, **params):
    return client.get(f"/v1/tasks/{task_id}/outputs", query_string=params, headers=headers)


def test_outputs_read_in_order_with_a_cursor_until_complete(client, alice, eid, task_id, store):
    writer = OutputWriter(store.r, store.result_ttl)
    assert writer.append(eid, [out(task_id, 0, step=0, temperature=12.5), out(task_id, 1, step=1, temperature=80.0)]) == 2
    page = get(client, alice, task_id).json
    assert page["state"] == "running" and page["complete"] is False and page["truncated"] is False
    assert [(o["seq"], o["values"]) for o in page["outputs"]] == [(0, {"step": 0, "temperature": 12.5}), (1, {"step": 1, "temperature": 80.0})]
    assert page["outputs"][1]["time"] == 1001.0

    writer.append(eid, [out(task_id, 2, step=2, nested={"a": [1, None, "x"]}), out(task_id, 3, kind="end")])
    finish(store, task_id, eid)
    page = get(client, alice, task_id, since=page["cursor"]).json
    assert [o["values"] for o in page["outputs"]] == [{"step": 2, "nested": {"a": [1, None, "x"]}}]
    assert page["state"] == "success" and page["complete"] is True  # the end marker arrived
    again = get(client, alice, task_id, since=page["cursor"], wait=3).json
    assert again["outputs"] == [] and again["complete"] is True and again["cursor"] == page["cursor"]


def test_long_poll_wakes_when_an_output_arrives(client, alice, eid, task_id, store):
    writer = OutputWriter(store.r, store.result_ttl)
    timer = threading.Timer(0.3, lambda: writer.append(eid, [out(task_id, 0, progress=0.5)]))
    timer.start()
    started = time.monotonic()
    page = get(client, alice, task_id, wait=5).json
    timer.join()
    assert [o["values"] for o in page["outputs"]] == [{"progress": 0.5}]
    assert time.monotonic() - started < 5  # answered by the output, not by the wait running out


def test_long_poll_wakes_when_a_task_without_outputs_finishes(client, alice, eid, task_id, store):
    timer = threading.Timer(0.3, finish, (store, task_id, eid))
    timer.start()
    page = get(client, alice, task_id, wait=5 + END_GRACE).json
    timer.join()
    # No end marker (it never reported): complete once the grace for late outputs has passed.
    assert page == {"task_id": task_id, "state": "success", "outputs": [], "cursor": "0-0", "complete": True, "truncated": False}


def test_outputs_past_the_limit_leave_one_truncated_marker(client, alice, eid, task_id, store):
    writer = OutputWriter(store.r, store.result_ttl, limit=60)
    kept = writer.append(eid, [out(task_id, i, step=i, label="abcdefghij") for i in range(10)])
    assert 0 < kept < 10
    page = get(client, alice, task_id).json
    assert page["truncated"] is True
    *values, marker = page["outputs"]
    assert [o["values"]["step"] for o in values] == list(range(kept))
    assert marker["truncated"] is True and marker["seq"] == kept and "limit of 60 bytes" in marker["message"]
    writer.append(eid, [out(task_id, 11, step=11)])  # later outputs are dropped
    assert len(get(client, alice, task_id).json["outputs"]) == kept + 1


def test_an_endpoint_cannot_write_into_another_endpoints_task(client, alice, task_id, store):
    other = register_endpoint(client, alice, name="other")["endpoint_id"]
    assert OutputWriter(store.r, store.result_ttl).append(other, [out(task_id, 0, forged=True)]) == 0
    assert get(client, alice, task_id).json["outputs"] == []
    assert not store.r.exists(outputs_key(task_id))


def test_outputs_expire_with_their_task(client, alice, eid, task_id, store):
    writer = OutputWriter(store.r, store.result_ttl)
    writer.append(eid, [out(task_id, 0, a=1)])
    finish(store, task_id, eid)
    writer.append(eid, [out(task_id, 1, kind="end")])
    task_ttl = store.r.ttl(f"fns:task:{task_id}")
    assert 0 < task_ttl <= store.result_ttl
    assert abs(store.r.ttl(outputs_key(task_id)) - task_ttl) <= 1
    assert abs(store.r.ttl(info_key(task_id)) - task_ttl) <= 1


def test_only_the_owner_reads_outputs_and_bad_input_gets_stable_codes(client, alice, bob, task_id):
    assert_error(get(client, bob, task_id), 403, "forbidden")
    assert_error(get(client, alice, "no-such-task"), 404, "task_not_found")
    assert_error(get(client, alice, task_id, since="yesterday"), 400, "invalid_request")
    # Shaped like a cursor but past Redis's 64-bit stream ids (schemathesis found a 500 here).
    assert_error(get(client, alice, task_id, since="49073887762875798708-1"), 400, "invalid_request")
    assert get(client, alice, task_id, since=f"{2**64 - 1}-0").status_code == 200
    assert_error(get(client, alice, task_id, wait="soon"), 400, "invalid_request")
    assert_error(client.get(f"/v1/tasks/{task_id}/outputs"), 401, "missing_token")


def test_a_long_poll_outlasts_the_redis_clients_socket_timeout(eid, task_id, store, redis_url):
    import redis

    from web_service.auth import Identity
    from web_service.services.outputs import read_outputs
    from web_service.task_store import TaskStore

    # A blocked XREAD longer than the client's socket timeout would fail as a Redis timeout.
    short = TaskStore(redis.Redis.from_url(redis_url, socket_timeout=1.0), store.result_ttl)
    owner = Identity(user_id=store.get(task_id).owner, username="alice")
    timer = threading.Timer(2.5, lambda: OutputWriter(store.r, store.result_ttl).append(eid, [out(task_id, 0, late=True)]))
    timer.start()
    page = read_outputs(short, owner, task_id, wait=10)
    timer.join()
    short.r.close()
    assert [msgspec.json.decode(o["values"]) for o in page["outputs"]] == [{"late": True}]  # JSON text, served as is

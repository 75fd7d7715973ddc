"""Sharing, groups, endpoint allowlists, quotas, the rate limit and usage accounting, through
the REST API (real Flask app, real Redis, SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import time

import pytest

from fnserve.messages import ResultMessage
from tests.integration.rest_support import assert_error, bearer, register_endpoint, register_function, state
from web_service.admin import add_user, set_user_quota
from web_service.app import create_app
from web_service.usage import UsageWriter, log_usage, result_entries


@pytest.fixture
def carol(app, settings):
    return bearer(add_user(settings, "carol"))


def _submit(client, headers, fid, eid, n=1):
    return client.post("/v1/tasks", json={"tasks": [{"function_id": fid, "endpoint_id": eid, "args": [i]} for i in range(n)]}, headers=headers)


def test_function_and_endpoint_shared_with_a_user_and_a_group_run_for_them_only(client, alice, bob, carol):
    fid = register_function(client, alice)
    eid = register_endpoint(client, alice)["endpoint_id"]
    assert_error(_submit(client, bob, fid, eid), 403, "forbidden")
    # Function to bob directly; endpoint to a group bob is in.
    assert client.put(f"/v1/functions/{fid}/sharing", json={"users": ["bob"]}, headers=alice).json == {"public": False, "users": ["bob"], "groups": []}
    assert_error(_submit(client, bob, fid, eid), 403, "forbidden")  # the endpoint is not shared yet
    assert client.post("/v1/groups", json={"name": "lab"}, headers=alice).status_code == 201
    assert client.post("/v1/groups/lab/members", json={"add": ["bob"]}, headers=alice).json["members"] == ["alice", "bob"]
    assert client.put(f"/v1/endpoints/{eid}/sharing", json={"groups": ["lab"]}, headers=alice).status_code == 200
    resp = _submit(client, bob, fid, eid)
    assert resp.status_code == 202
    # bob sees them among what is shared with him, not among his own; he cannot manage them.
    assert [f["function_id"] for f in client.get("/v1/functions?shared=true", headers=bob).json["functions"]] == [fid]
    assert client.get("/v1/functions", headers=bob).json["functions"] == []
    assert client.get(f"/v1/endpoints/{eid}", headers=bob).status_code == 200
    assert_error(client.delete(f"/v1/functions/{fid}", headers=bob), 403, "owner_only")
    assert_error(client.put(f"/v1/endpoints/{eid}/sharing", json={"public": True}, headers=bob), 403, "owner_only")
    assert_error(client.post("/v1/groups/lab/members", json={"add": ["carol"]}, headers=bob), 403, "owner_only")
    # bob's task is his: alice cannot read it.
    assert_error(client.get(f"/v1/tasks/{resp.json['task_ids'][0]}", headers=alice), 403, "forbidden")
    # carol: refused at every step.
    assert_error(client.get(f"/v1/functions/{fid}", headers=carol), 403, "forbidden")
    assert_error(client.get(f"/v1/endpoints/{eid}", headers=carol), 403, "forbidden")
    assert_error(_submit(client, carol, fid, eid), 403, "forbidden")
    assert client.get("/v1/functions?shared=true", headers=carol).json["functions"] == []
    # Public: now carol may use the function (but still not the endpoint).
    client.put(f"/v1/functions/{fid}/sharing", json={"users": ["bob"], "public": True}, headers=alice)
    assert client.get(f"/v1/functions/{fid}", headers=carol).status_code == 200
    err = assert_error(_submit(client, carol, fid, eid), 403, "forbidden")
    assert err["details"]["endpoint_id"] == eid


def test_unsharing_takes_effect_and_unknown_names_are_404(app, client, alice, bob):
    fid = register_function(client, alice)
    eid = register_endpoint(client, alice)["endpoint_id"]
    client.put(f"/v1/functions/{fid}/sharing", json={"users": ["bob"]}, headers=alice)
    client.put(f"/v1/endpoints/{eid}/sharing", json={"users": ["bob"]}, headers=alice)
    assert _submit(client, bob, fid, eid).status_code == 202
    client.put(f"/v1/functions/{fid}/sharing", json={}, headers=alice)
    state(app).ownership.clear()  # other workers' caches expire after cache_seconds
    assert_error(_submit(client, bob, fid, eid), 403, "forbidden")
    assert_error(client.put(f"/v1/functions/{fid}/sharing", json={"users": ["nobody"]}, headers=alice), 404, "user_not_found")
    assert_error(client.put(f"/v1/functions/{fid}/sharing", json={"groups": ["nogroup"]}, headers=alice), 404, "group_not_found")
    assert_error(client.put(f"/v1/functions/{fid}/sharing", json={"users": "bob"}, headers=alice), 400, "invalid_request")


def test_restricted_endpoint_runs_only_allowlisted_functions_for_everyone(client, alice, bob):
    allowed = register_function(client, alice, name="allowed")
    other = register_function(client, alice, name="other")
    eid = register_endpoint(client, alice)["endpoint_id"]
    put = client.put(f"/v1/endpoints/{eid}/allowed_functions", json={"function_ids": [allowed]}, headers=alice)
    assert put.json == {"endpoint_id": eid, "restricted": True, "function_ids": [allowed]}
    assert _submit(client, alice, allowed, eid).status_code == 202
    err = assert_error(_submit(client, alice, other, eid), 403, "function_not_allowed")
    assert other in err["message"] and "allowlist" in err["message"]
    # In a batch, the offending task is named by its index.
    batch = client.post("/v1/tasks", json={"tasks": [
        {"function_id": allowed, "endpoint_id": eid, "args": [1]}, {"function_id": other, "endpoint_id": eid, "args": [2]}]}, headers=alice)
    assert batch.status_code == 207 and batch.json["task_ids"][0] and batch.json["task_ids"][1] is None  # the allowed one runs
    assert [(e["index"], e["code"]) for e in batch.json["errors"]] == [(1, "function_not_allowed")]
    assert client.get(f"/v1/endpoints/{eid}", headers=alice).json["restricted"] is True
    assert_error(client.get(f"/v1/endpoints/{eid}/allowed_functions", headers=bob), 403, "forbidden")
    assert_error(client.put(f"/v1/endpoints/{eid}/allowed_functions", json={"function_ids": ["nope"]}, headers=alice), 404, "function_not_found")
    # An empty allowlist keeps the endpoint restricted; lifting it lets everything run again.
    client.put(f"/v1/endpoints/{eid}/allowed_functions", json={"function_ids": []}, headers=alice)
    assert_error(_submit(client, alice, allowed, eid), 403, "function_not_allowed")
    client.put(f"/v1/endpoints/{eid}/allowed_functions", json={"restricted": False}, headers=alice)
    assert _submit(client, alice, other, eid).status_code == 202


def test_task_quota_answers_429_naming_the_quota_and_its_reset(client, alice, settings):
    fid = register_function(client, alice)
    eid = register_endpoint(client, alice)["endpoint_id"]
    set_user_quota(settings, "alice", "day", 5, None)
    assert _submit(client, alice, fid, eid, n=3).status_code == 202
    err = assert_error(_submit(client, alice, fid, eid, n=3), 429, "quota_exceeded")
    assert "tasks quota per day exceeded" in err["message"] and "resets at" in err["message"]
    assert err["details"]["quota"] == "tasks" and err["details"]["resets_at"].endswith("T00:00:00+00:00")
    assert _submit(client, alice, fid, eid, n=2).status_code == 202  # the refused batch did not count
    resp = _submit(client, alice, fid, eid)
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) > 0


def test_core_hour_quota_counts_recorded_usage(app, client, alice, settings, store):
    fid = register_function(client, alice)
    eid = register_endpoint(client, alice)["endpoint_id"]
    set_user_quota(settings, "alice", "month", None, 1.0)
    tid = _submit(client, alice, fid, eid).json["task_ids"][0]
    store.claim(eid, 10)
    res = ResultMessage(task_id=tid, ok=True, data=b"x", resources={"wall_time": 3700.0, "cpu_time": 3601.0, "max_rss_kb": 2048.0})
    log_usage(store.r, result_entries(eid, [res], store.record_results([res], eid), time.time()))
    assert UsageWriter(store.r, state(app).sessions).drain_once(block_ms=100) == 1
    state(app).quotas._core_hours.clear()  # the cached sum expires after cache_seconds
    err = assert_error(_submit(client, alice, fid, eid), 429, "quota_exceeded")
    assert err["details"]["quota"] == "core-hours" and "1.000 of 1 core-hours" in err["message"]


def test_rate_limit_answers_429_with_retry_after(settings, redis_client):
    app = create_app(dataclasses.replace(settings, rate_limit=1.0, rate_burst=3))
    try:
        client = app.test_client()
        headers = bearer(add_user(settings, "dave"))
        codes = [client.get("/v1/whoami", headers=headers).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
        resp = client.get("/v1/whoami", headers=headers)
        assert_error(resp, 429, "rate_limited")
        assert resp.headers["Retry-After"] == "1"
        # Other users have their own bucket.
        assert client.get("/v1/whoami", headers=bearer(add_user(settings, "erin"))).status_code == 200
    finally:
        state(app).engine.dispose()


def test_usage_totals_per_user_and_per_endpoint_for_its_owner(app, client, alice, bob, store):
    fid = register_function(client, alice)
    eid = register_endpoint(client, alice)["endpoint_id"]
    client.put(f"/v1/functions/{fid}/sharing", json={"users": ["bob"]}, headers=alice)
    client.put(f"/v1/endpoints/{eid}/sharing", json={"users": ["bob"]}, headers=alice)
    mine = _submit(client, alice, fid, eid, n=2).json["task_ids"]
    bobs = _submit(client, bob, fid, eid, n=3).json["task_ids"]
    cancelled = bobs.pop()
    assert client.post(f"/v1/tasks/{cancelled}/cancel", headers=bob).json["state"] == "cancelled"
    store.claim(eid, 10)
    results = [ResultMessage(task_id=t, ok=i != 0, resources={"wall_time": 2.0, "cpu_time": 1.5, "max_rss_kb": 1000.0 * (i + 1)})
               for i, t in enumerate(mine + bobs)]
    log_usage(store.r, result_entries(eid, results, store.record_results(results, eid), time.time()))
    # A result delivered twice is one usage row.
    log_usage(store.r, result_entries(eid, results[:1], [results[0].task_id], time.time()))
    writer = UsageWriter(store.r, state(app).sessions)
    while writer.drain_once(block_ms=50):
        pass
    alice_view = client.get("/v1/usage", headers=alice).json
    assert {k: alice_view["user"][k] for k in ("tasks", "succeeded", "failed", "cancelled")} == {"tasks": 2, "succeeded": 1, "failed": 1, "cancelled": 0}
    assert alice_view["user"]["cpu_time_s"] == pytest.approx(3.0) and alice_view["user"]["core_hours"] == pytest.approx(3.0 / 3600)
    ep = alice_view["endpoints"][0]
    assert ep["endpoint_id"] == eid and ep["tasks"] == 5 and ep["cpu_time_s"] == pytest.approx(6.0)
    assert ep["by_user"]["bob"]["tasks"] == 3 and ep["by_user"]["bob"]["cancelled"] == 1 and ep["peak_memory_kb"] == 4000.0
    bob_view = client.get("/v1/usage", headers=bob).json
    assert bob_view["user"]["tasks"] == 3 and bob_view["endpoints"] == []  # bob owns no endpoint
    # A period before the tasks ran is empty; bad times are 400s.
    assert client.get("/v1/usage?since=2000-01-01T00:00:00Z&until=2000-02-01", headers=alice).json["user"]["tasks"] == 0
    for bad in ("since=yesterday", "until=Inf", "since=nan", "until=1e30"):
        assert_error(client.get(f"/v1/usage?{bad}", headers=alice), 400, "invalid_request")

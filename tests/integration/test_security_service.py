"""The web service's smaller holes (issue 12, item 9), each closed with a stable code.

Real Redis and SQLite/PostgreSQL throughout; the Flask app in-process where the HTTP server adds
nothing, the real gunicorn server (and another OS account) for the unauthenticated flood, a real
forwarder over ZMQ for the result size limit, and the operator CLI as a subprocess.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from fnserve import messages as m
from fnserve import serialize
from fnserve.messages import TaskOutput
from os_accounts import as_account, readable_copy, unprivileged_account
from rest_support import assert_error, bearer, register_endpoint, register_function, state
from test_forwarder import _registered_site
from web_server_support import web_server
from web_service.admin import add_user
from web_service.app import create_app
from web_service.task_outputs import OutputWriter
from web_service.task_store import NewTask

REPO = Path(__file__).resolve().parents[2]


def _submit(client, headers, fid, eid, **extra):
    return client.post("/v1/tasks", json={"tasks": [{"function_id": fid, "endpoint_id": eid, "args": [1], **extra}]}, headers=headers)


# -- input that gave 500s ------------------------------------------------------------------------


def test_json_nested_a_thousand_deep_is_400_json_too_deep(client, alice):
    deep = b"[" * 1000 + b"]" * 1000
    for path in ("/v1/tasks", "/v1/functions", "/v1/tasks/results"):
        resp = client.post(path, data=b'{"tasks": ' + deep + b"}", headers={**alice, "Content-Type": "application/json"})
        assert_error(resp, 400, "json_too_deep")


def test_task_ids_naming_other_redis_keys_are_404_not_500(client, alice, store):
    fid, eid = register_function(client, alice), register_endpoint(client, alice)["endpoint_id"]
    tid = _submit(client, alice, fid, eid).json["task_ids"][0]
    # The task has live outputs: its `:out` stream and `:outinfo` hash exist in Redis.
    OutputWriter(store.r).append(eid, [TaskOutput(task_id=tid, seq=0, time=time.time(), values={"step": 1})])
    for suffix in (":out", ":outinfo"):
        bad = tid + suffix
        assert_error(client.get(f"/v1/tasks/{bad}", headers=alice), 404, "task_not_found")
        assert_error(client.get(f"/v1/tasks/{bad}?wait=1", headers=alice), 404, "task_not_found")
        assert_error(client.get(f"/v1/tasks/{bad}/outputs", headers=alice), 404, "task_not_found")
        assert_error(client.post(f"/v1/tasks/{bad}/cancel", headers=alice), 404, "task_not_found")
        err = assert_error(client.post("/v1/tasks/results", json={"task_ids": [tid, bad]}, headers=alice), 404, "task_not_found")
        assert err["details"]["index"] == 1
    assert client.get(f"/v1/tasks/{tid}", headers=alice).json["state"] == "waiting-for-endpoint"


def test_walltime_is_bounded_by_the_configured_maximum(app, client, alice, settings):
    fid, eid = register_function(client, alice), register_endpoint(client, alice)["endpoint_id"]
    err = assert_error(_submit(client, alice, fid, eid, walltime=1e308), 400, "invalid_request")
    assert err["details"]["field"] == "tasks[0].walltime" and "FNSERVE_MAX_WALLTIME" in err["message"]
    assert _submit(client, alice, fid, eid, walltime=3600).status_code == 202
    short = create_app(dataclasses.replace(settings, max_walltime=60.0))
    try:
        assert_error(_submit(short.test_client(), alice, fid, eid, walltime=61), 400, "invalid_request")
    finally:
        state(short).engine.dispose()


# -- unauthenticated requests: limited per address before SQL, bad tokens remembered -------------


def test_bad_tokens_cost_no_sql_once_remembered_and_a_flood_is_429_before_any_sql(settings, alice):
    limited = create_app(dataclasses.replace(settings, anon_rate_limit=1.0, anon_rate_burst=20.0))
    queries: list[str] = []
    sa.event.listen(state(limited).engine, "before_cursor_execute", lambda *a: queries.append(a[2]))
    client = limited.test_client()
    try:
        assert client.get("/v1/functions", headers=alice).status_code == 200  # verified: cached
        bad = bearer("fns_" + "B" * 43)
        assert_error(client.get("/v1/functions", headers=bad), 401, "invalid_token")
        first = len(queries)
        for _ in range(5):  # the same bad token again: remembered, no SQL
            assert_error(client.get("/v1/functions", headers=bad), 401, "invalid_token")
        assert len(queries) == first
        answers = [client.get("/v1/functions", headers=bearer(f"fns_guess{i:039d}")) for i in range(60)]
        codes = [a.json["error"]["code"] for a in answers]
        assert codes.count("rate_limited") >= 35 and set(codes) == {"invalid_token", "rate_limited"}
        limited_answer = answers[codes.index("rate_limited")]
        assert limited_answer.status_code == 429 and int(limited_answer.headers["Retry-After"]) >= 1
        # At most one token lookup per refused request the bucket let through.
        assert len(queries) - first <= 20 + 2, len(queries) - first
        before = len(queries)
        for i in range(10):
            assert_error(client.get("/v1/functions", headers=bearer(f"fns_more{i:040d}")), 429, "rate_limited")
        assert len(queries) == before  # refused before any SQL
        # A user whose token this worker verified goes on working from the flooded address.
        assert client.get("/v1/functions", headers=alice).status_code == 200
    finally:
        state(limited).engine.dispose()


@pytest.fixture(scope="module")
def attacker():
    with unprivileged_account() as name:
        yield name


def test_a_bad_token_flood_from_another_account_is_rate_limited_on_the_real_port(redis_url, tmp_path, attacker):
    folder = Path(tempfile.mkdtemp(prefix="fnserve-attacks-"))
    folder.chmod(0o755)
    script = readable_copy(Path(__file__).parent / "attacks" / "bad_token_flood.py", folder)
    # A Redis database of its own: the per-address bucket of 127.0.0.1 is this test's alone.
    db3 = redis_url.replace("?db=0", "?db=3")  # the session's Redis is reached by its unix socket
    assert db3 != redis_url
    with web_server(db3, tmp_path / "web", ANON_RATE_LIMIT="2", ANON_RATE_BURST="30") as server:
        out = subprocess.run(as_account(attacker, str(script), server.url, "120"), capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        answers = json.loads(out.stdout)
        log = server.log()
    codes = [a["code"] for a in answers]
    assert set(codes[:25]) == {"invalid_token"}
    assert codes.count("rate_limited") >= 80, codes
    assert all(a["status"] == 429 and int(a["retry_after"]) >= 1 for a in answers if a["code"] == "rate_limited")
    assert "401" in log and "429" in log  # the access log shows the flood
    script.unlink()
    folder.rmdir()


# -- sharing with strangers' groups -----------------------------------------------------------------


def test_sharing_with_a_group_you_neither_own_nor_belong_to_is_403(client, alice, bob):
    assert client.post("/v1/groups", json={"name": "lab"}, headers=bob).status_code == 201
    fid = register_function(client, alice)
    err = assert_error(client.put(f"/v1/functions/{fid}/sharing", json={"groups": ["lab"]}, headers=alice), 403, "not_group_member")
    assert err["details"]["group"] == "lab"
    assert client.get(f"/v1/functions/{fid}/sharing", headers=alice).json["groups"] == []
    # Once bob adds alice, she may share with it; and bob, its owner, always could.
    assert client.post("/v1/groups/lab/members", json={"add": ["alice"]}, headers=bob).status_code == 200
    assert client.put(f"/v1/functions/{fid}/sharing", json={"groups": ["lab"]}, headers=alice).json["groups"] == ["lab"]
    bob_fid = register_function(client, bob)
    assert client.put(f"/v1/functions/{bob_fid}/sharing", json={"groups": ["lab"]}, headers=bob).status_code == 200


# -- the operator disables, enables and deletes users -----------------------------------------------


def _operator(settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FNSERVE_DATABASE_URL": settings.database_url, "FNSERVE_REDIS_URL": settings.redis_url,
           "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "fnserve.cli.main", "service", "user", *args], env=env,
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def test_operator_disables_enables_and_deletes_a_user_within_the_cache_time(settings, redis_client):
    settings = dataclasses.replace(settings, cache_seconds=1.0)
    app = create_app(settings)
    client = app.test_client()
    try:
        ann, bob = bearer(add_user(settings, "ann")), bearer(add_user(settings, "bob"))
        fid = register_function(client, ann)
        ann_ep = register_endpoint(client, ann)["endpoint_id"]
        bob_ep = register_endpoint(client, bob, "bobs")["endpoint_id"]
        bob_fid = register_function(client, bob)
        client.put(f"/v1/endpoints/{bob_ep}/sharing", json={"users": ["ann"]}, headers=bob)
        client.put(f"/v1/functions/{bob_fid}/sharing", json={"users": ["ann"]}, headers=bob)
        client.post("/v1/groups", json={"name": "anns-lab"}, headers=ann)
        on_bobs = _submit(client, ann, bob_fid, bob_ep).json["task_ids"][0]
        on_hers = _submit(client, ann, fid, ann_ep).json["task_ids"][0]
        assert client.get("/v1/functions", headers=ann).status_code == 200  # now cached

        assert _operator(settings, "disable", "ann").returncode == 0
        time.sleep(1.2)  # the token cache time: the documented delay
        assert_error(client.get("/v1/functions", headers=ann), 403, "user_disabled")
        assert client.get("/v1/functions", headers=bob).status_code == 200
        assert _operator(settings, "enable", "ann").returncode == 0
        time.sleep(1.2)
        assert client.get("/v1/functions", headers=ann).status_code == 200

        out = _operator(settings, "delete", "ann", "--yes")
        assert out.returncode == 0, out.stderr
        done = json.loads(out.stdout)
        assert done["functions"] == 1 and done["endpoints"] == 1 and done["groups"] == 1 and done["tasks_cancelled"] == 2
        time.sleep(1.2)
        assert client.get("/v1/functions", headers=ann).status_code in (401, 403)
        assert client.get(f"/v1/tasks/{on_bobs}", headers=bob).status_code == 403  # still hers, and cancelled:
        assert state(app).store.get(on_bobs).state.value == "cancelled"
        # On her own endpoint, deleted with her: failed with endpoint_deleted, as any deleted endpoint's.
        hers = state(app).store.get(on_hers)
        assert hers.state.value == "failed" and hers.error["code"] == "endpoint_deleted"
        assert client.get(f"/v1/endpoints/{bob_ep}/sharing", headers=bob).json["users"] == []
        assert_error(client.get(f"/v1/functions/{fid}", headers=bob), 404, "function_not_found")
        assert _operator(settings, "delete", "ann", "--yes").returncode == 1  # gone: user_not_found
        # The name is free again, for a new account that inherits nothing.
        new_ann = bearer(add_user(settings, "ann"))
        assert client.get("/v1/functions?shared=true", headers=new_ann).json["functions"] == []
    finally:
        state(app).engine.dispose()


# -- the forwarder bounds what an endpoint sends back --------------------------------------------------


def test_the_forwarder_records_a_result_over_the_services_limit_as_result_too_large(forwarder):
    fwd, store = forwarder
    fwd.traffic.max_result_bytes = 1000  # FNSERVE_MAX_RESULT_BYTES, small for the test (checked where results are recorded)
    store.cache_function("f", b"FN")
    store.submit([NewTask(task_id=t, owner="u", function_id="f", endpoint_id="ep1", payload=b"x") for t in ("big", "ok")])
    site = _registered_site(fwd)
    try:
        site.send(m.ResultBatch(results=[
            m.ResultMessage(task_id="big", ok=True, data=b"x" * 5000, stdout="y" * 300_000),
            m.ResultMessage(task_id="ok", ok=True, data=serialize.serialize_data(1, serialize.JSON_DATA)),
        ]))
        assert sorted(site.recv_type(m.Ack).task_ids) == ["big", "ok"]
    finally:
        site.close()
    big, ok = store.get("big"), store.get("ok")
    assert big.state.value == "failed" and big.error["code"] == "result_too_large" and not big.result
    assert "1000 bytes" in big.error["message"] and "FNSERVE_MAX_RESULT_BYTES" in big.error["message"]
    assert len(big.stdout) < 300_000 and "cut by the service" in big.stdout
    assert ok.state.value == "success"

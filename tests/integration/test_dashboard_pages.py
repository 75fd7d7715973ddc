"""What the dashboard's pages and live streams show, from the real task store, Redis channels
and registry (SQLite and PostgreSQL): the user's task index, the live events, usage over time
and quotas, and the operators' figures."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

from fnserve import serialize
from fnserve.messages import EndpointStatus, RemoteError, ResultMessage
from tests.integration.dashboard_support import log_in, read_events, token_of
from tests.integration.rest_support import register_endpoint, register_function, state
from web_service.admin import set_operator, set_user_quota
from web_service.dashboard.operator_stats import operator_view
from web_service.dashboard.task_list import PAGE_SIZE, parse_cursor, recent_tasks
from web_service.dashboard.usage_series import usage_series
from web_service.quotas import quota_usage
from web_service.task_store import SUBMIT_LOG_ENTRIES, submit_log_key, task_key
from web_service.usage import UsageEntry, insert_entries


def _submit(client, headers, fid, eid, n: int) -> list[str]:
    resp = client.post("/v1/tasks", json={"tasks": [{"function_id": fid, "endpoint_id": eid, "args": [i]} for i in range(n)]},
                       headers=headers)
    assert resp.status_code == 202, resp.json
    return resp.json["task_ids"]


def test_the_task_list_is_the_users_own_newest_first_paged_by_cursor_and_skips_expired_tasks(app, client, alice, bob):
    fid, eid = register_function(client, alice), register_endpoint(client, alice)["endpoint_id"]
    ids = _submit(client, alice, fid, eid, 30) + _submit(client, alice, fid, eid, 40) + _submit(client, alice, fid, eid, 50)
    bob_fid, bob_eid = register_function(client, bob), register_endpoint(client, bob, "bobs")["endpoint_id"]
    bob_ids = _submit(client, bob, bob_fid, bob_eid, 3)
    r = state(app).store.r
    uid = r.hget(task_key(ids[0]), "owner").decode()
    newest_first = ids[::-1]
    pages, cursor = [], None
    for _ in range(4):
        page = recent_tasks(r, uid, cursor)
        pages.append([row.task_id for row in page.rows])
        cursor = page.older
        if cursor is None:
            break
        assert parse_cursor(str(cursor)) == cursor
    # 120 tasks in three batches: pages of 50 across the batches' edges, in submission order.
    assert pages == [newest_first[:50], newest_first[50:100], newest_first[100:]]
    assert not set(bob_ids) & {i for p in pages for i in p}
    assert r.xlen(submit_log_key(uid)) == 3 and r.ttl(submit_log_key(uid)) > state(app).settings.result_ttl
    assert SUBMIT_LOG_ENTRIES >= 10_000
    # A task past its result TTL is gone from Redis: the list skips it and fills the page.
    r.delete(task_key(ids[-1]), task_key(ids[-3]))
    page = recent_tasks(r, uid)
    assert [row.task_id for row in page.rows] == [i for i in newest_first if i not in (ids[-1], ids[-3])][:50]
    # Malformed cursors mean the newest page, never an error.
    assert parse_cursor("1-0:x") is None and parse_cursor("../../") is None and parse_cursor(None) is None
    # The page itself: rows link to the tasks; an older page has no live stream (only the newest moves).
    log_in(client, token_of(alice))
    html = client.get("/dashboard/tasks").get_data(as_text=True)
    assert html.count('<tr data-id="') == PAGE_SIZE and f'href="/dashboard/tasks/{ids[-2]}"' in html and "data-stream" in html
    older = html.split('rel="next" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    second = client.get(older).get_data(as_text=True)
    assert "data-stream" not in second and second.count('<tr data-id="') == PAGE_SIZE and newest_first[52] in second
    assert client.get("/dashboard/tasks?before=nonsense").status_code == 200


def test_the_task_page_shows_argument_size_traceback_output_and_the_hop_timeline(app, client, alice):
    fid, eid = register_function(client, alice), register_endpoint(client, alice)["endpoint_id"]
    ok, bad = _submit(client, alice, fid, eid, 2)
    store = state(app).store
    claimed = store.claim(eid, 10)
    arg_bytes = len(serialize.serialize_args([0], strategy=serialize.JSON_DATA))
    t = time.time()
    timings = {"forwarder_dispatched": t, "site_received": t + 0.01, "worker_received": t + 0.02, "worker_started": t + 0.03,
               "worker_finished": t + 1.03, "site_result": t + 1.04}
    store.record_results([
        ResultMessage(task_id=ok, ok=True, data=serialize.serialize_data({"x": "<b>bold</b>"}, serialize.JSON_DATA),
                      stdout="hello <i>world</i>\n", timings=timings),
        ResultMessage(task_id=bad, ok=False, timings=timings, error=RemoteError(
            code="user_exception", type="ValueError", message="bad <input>",
            traceback='Traceback (most recent call last):\n  File "f.py", line 2, in double\nValueError: bad <input>\n')),
    ], eid)
    assert len(claimed) == 2
    log_in(client, token_of(alice))
    page = client.get(f"/dashboard/tasks/{ok}").get_data(as_text=True)
    assert f"{arg_bytes} B" in page and "hello &lt;i&gt;world&lt;/i&gt;" in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert page.count('class="hop hop-') == 7 and ">running</text>" in page and ">1.0 s</text>" in page
    failed = client.get(f"/dashboard/tasks/{bad}/detail").get_data(as_text=True)
    assert "Remote error: ValueError" in failed and "ValueError: bad &lt;input&gt;" in failed and "line 2, in double" in failed
    assert client.get(f"/dashboard/tasks/{ok}:out").status_code == 404  # a key beside the task, not a task
    missing = client.get("/dashboard/tasks/no-such-task")
    assert missing.status_code == 404 and "task_not_found" in missing.get_data(as_text=True)


def test_the_task_stream_sends_new_tasks_and_finished_ones_as_they_happen(app, client, alice):
    fid, eid = register_function(client, alice), register_endpoint(client, alice)["endpoint_id"]
    old = _submit(client, alice, fid, eid, 1)[0]
    log_in(client, token_of(alice))
    stream = client.get("/dashboard/stream/tasks", buffered=False)
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    opening = read_events(stream, "reset")
    assert old in opening and "retry: 1000" in opening
    new = _submit(client, alice, fid, eid, 1)[0]
    rows = _event_data(read_events(stream, "rows"), "rows")
    assert [r["id"] for r in rows] == [new] and 'data-state="waiting-for-endpoint"' in rows[0]["html"]
    store = state(app).store
    store.claim(eid, 10)
    store.record_results([ResultMessage(task_id=old, ok=True, data=serialize.serialize_data(1, serialize.JSON_DATA))], eid)
    rows = _event_data(read_events(stream, "rows"), "rows")
    assert [r["id"] for r in rows] == [old] and 'data-state="success"' in rows[0]["html"]
    # The endpoint's heartbeat shows the other task running (the stream follows its endpoint).
    store.mark_running([new])
    store.touch(eid)
    rows = _event_data(read_events(stream, "rows"), "rows")
    assert [r["id"] for r in rows] == [new] and 'data-state="running"' in rows[0]["html"]
    stream.close()


def _event_data(text: str, name: str) -> list[dict[str, str]]:
    block = text[text.rindex(f"event: {name}\n"):]
    return json.loads(block.split("data: ", 1)[1].split("\n", 1)[0])  # type: ignore[no-any-return]


def test_the_endpoint_stream_follows_connects_disconnects_and_reports(app, client, alice):
    eid = register_endpoint(client, alice)["endpoint_id"]
    store = state(app).store
    log_in(client, token_of(alice))
    stream = client.get(f"/dashboard/stream/endpoints?id={eid}", buffered=False)
    assert 'data-connected="no"' in _event_data(read_events(stream, "rows"), "rows")[0]["html"]
    store.set_connected(eid, True)
    store.touch(eid, EndpointStatus(blocks_running=2, workers=8, runtimes={"host": {"workers": 8, "blocks": 2, "tasks": 1}}))
    html = _event_data(read_events(stream, "rows"), "rows")[0]["html"]
    assert 'data-connected="yes"' in html and "2 running, 0 pending" in html and "<td>host</td><td>8</td>" in html
    store.set_connected(eid, False, reason="site manager disconnected")
    assert 'data-connected="no"' in _event_data(read_events(stream, "rows"), "rows")[0]["html"]
    stream.close()


def test_usage_series_per_endpoint_and_bucket_are_the_users_own(app, client, alice, bob):
    ep1, ep2 = register_endpoint(client, alice, "one")["endpoint_id"], register_endpoint(client, alice, "two")["endpoint_id"]
    bobs = register_endpoint(client, bob, "bobs")["endpoint_id"]
    r = state(app).store.r
    alice_id = client.get("/v1/whoami", headers=alice).json["user_id"]
    bob_id = client.get("/v1/whoami", headers=bob).json["user_id"]
    day = datetime.now(timezone.utc).replace(hour=10, minute=0, second=0, microsecond=0) - timedelta(days=2)

    def entry(i: int, user: str, ep: str, when: datetime, state_: str = "success") -> UsageEntry:
        return UsageEntry(task_id=f"t{i}", user_id=user, function_id="f", endpoint_id=ep, runtime="", state=state_, wall_time=1.0,
                          cpu_time=1800.0, max_rss_kb=1000.0 * (i + 1), submitted_at=when.timestamp(), finished_at=when.timestamp())

    with state(app).sessions() as session:
        insert_entries(session, [
            entry(0, alice_id, ep1, day), entry(1, alice_id, ep1, day + timedelta(minutes=30), "failed"),
            entry(2, alice_id, ep1, day + timedelta(days=1)), entry(3, alice_id, ep2, day + timedelta(hours=1)),
            entry(4, bob_id, bobs, day), entry(5, alice_id, ep1, day - timedelta(days=20)),
        ])
        until = datetime.now(timezone.utc)
        week = usage_series(session, alice_id, until - timedelta(days=7), until)
        hours = usage_series(session, alice_id, day - timedelta(hours=1), day + timedelta(hours=2))
    assert not week.hourly and len(week.labels) == 8 and hours.labels == [(day + timedelta(hours=h)).strftime("%Y-%m-%d %H:00") for h in (-1, 0, 1)]
    by_ep = {s.endpoint_id: s for s in week.endpoints}
    assert set(by_ep) == {ep1, ep2}
    i = week.labels.index(day.strftime("%Y-%m-%d"))
    # Bob's task of the same day, and alice's task from 20 days ago, are not counted.
    assert by_ep[ep1].tasks[i] == 2 and by_ep[ep1].tasks[i + 1] == 1 and by_ep[ep1].total_tasks == 3 and by_ep[ep1].failed == 1
    assert by_ep[ep1].core_hours[i] == 1.0 and by_ep[ep1].peak_memory_kb[i] == 2000.0
    assert {s.endpoint_id: s.tasks for s in hours.endpoints} == {ep1: [0, 2, 0], ep2: [0, 0, 1]}
    # The page: three charts per endpoint; bob's page has none of alice's endpoints.
    log_in(client, token_of(alice))
    html = client.get("/dashboard/usage?days=7").get_data(as_text=True)
    assert html.count("<figure class=\"chart\">") == 6 and "one" in html and "two" in html
    bob_client = app.test_client()
    log_in(bob_client, token_of(bob))
    bob_html = bob_client.get("/dashboard/usage?days=7").get_data(as_text=True)
    assert ep1 not in bob_html and ep2 not in bob_html and bob_html.count("<figure class=\"chart\">") == 3 and "bobs" in bob_html
    assert r.ping()


def test_quota_usage_counts_the_window_against_the_limits(app, client, alice, settings):
    fid, eid = register_function(client, alice), register_endpoint(client, alice)["endpoint_id"]
    set_user_quota(settings, "alice", "day", 100, 2.0)
    _submit(client, alice, fid, eid, 7)
    uid = client.get("/v1/whoami", headers=alice).json["user_id"]
    with state(app).sessions() as session:
        insert_entries(session, [UsageEntry(task_id="u1", user_id=uid, function_id=fid, endpoint_id=eid, runtime="", state="success",
                                            wall_time=1.0, cpu_time=1800.0, max_rss_kb=1.0, submitted_at=time.time(),
                                            finished_at=time.time())])
        q = quota_usage(session, state(app).store.r, uid)
    assert q is not None and q.tasks == 7 and q.core_hours == 0.5 and q.limits.max_tasks == 100
    assert q.window_start <= datetime.now(timezone.utc) < q.window_end
    log_in(client, token_of(alice))
    html = client.get("/dashboard/usage").get_data(as_text=True)
    assert "7 of 100" in html and "0.500 of 2.000" in html


def test_operators_see_every_endpoints_queue_connections_and_error_rates(app, client, alice, bob, settings):
    fid, eid = register_function(client, alice), register_endpoint(client, alice)["endpoint_id"]
    bob_eid = register_endpoint(client, bob, "bobs")["endpoint_id"]
    store = state(app).store
    _submit(client, alice, fid, eid, 5)
    store.claim(eid, 2)
    store.set_connected(bob_eid, True)
    store.touch(bob_eid)
    uid = client.get("/v1/whoami", headers=alice).json["user_id"]
    now = time.time()
    with state(app).sessions() as session:
        insert_entries(session, [UsageEntry(task_id=f"e{i}", user_id=uid, function_id=fid, endpoint_id=eid, runtime="",
                                            state="failed" if i < 1 else "success", wall_time=0.1, cpu_time=0.1, max_rss_kb=1.0,
                                            submitted_at=now, finished_at=now - 60) for i in range(4)])
    with app.test_request_context():
        view = operator_view(state(app))
    assert view.health == {"redis": True, "database": True}
    assert (view.endpoint_count, view.connected, view.waiting, view.in_flight, view.users) == (2, 1, 3, 2, 2)
    assert view.endpoints[0].endpoint_id == eid  # disconnected with work waiting: first
    assert [(r.window, r.tasks, r.failed) for r in view.error_rates] == [("last hour", 4, 1), ("last 24 hours", 4, 1)]
    assert view.failing == [(eid, "laptop", 4, 1)]
    set_operator(settings, "alice")
    log_in(client, token_of(alice))
    html = client.get("/dashboard/operators").get_data(as_text=True)
    assert "25.0%" in html and "bobs" in html

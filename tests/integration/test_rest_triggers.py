"""Triggers over REST, on the real Flask app, Redis and SQLite / PostgreSQL: webhooks signed and
refused, events recorded once, each rule firing one task per event (crashes and concurrent
runners included), schedules through the runner, concurrency limits, bad configs."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from fnserve import serialize, webhooks
from tests.integration.rest_support import assert_error, register_endpoint, register_function, state
from web_service.registry.models import Trigger, TriggerFiring
from web_service.services import triggers as trigger_service
from web_service.triggers import events
from web_service.triggers.runner import Runner


@pytest.fixture
def world(client, alice) -> dict[str, str]:
    return {"function_id": register_function(client, alice), "endpoint_id": register_endpoint(client, alice)["endpoint_id"]}


def make_trigger(client: Any, headers: dict[str, str], world: dict[str, str], kind: str = "webhook", config: Any = None,
                 **rule: Any) -> dict[str, Any]:
    body = {"name": "scan-done", "kind": kind, "rules": [{**world, **rule}]}
    if config is not None:
        body["config"] = config
    resp = client.post("/v1/triggers", json=body, headers=headers)
    assert resp.status_code == 201, resp.json
    return resp.json  # type: ignore[no-any-return]


def deliver(client: Any, trig: dict[str, Any], data: Any, secret: str | None = None, event_id: str | None = None) -> Any:
    raw = json.dumps(data).encode()
    headers = webhooks.sign(secret or trig["secret"], raw, event_id=event_id)
    return client.post(f"/v1/hooks/{trig['trigger_id']}", data=raw, headers=headers)


def args_of(store: Any, task_id: str) -> Any:
    payload = store.r.hget(f"fns:task:{task_id}", "payload")
    return json.loads(serialize.json_body(payload))


def test_a_signed_webhook_fires_its_rule_once_per_event(app, client, alice, world):
    st = state(app)
    trig = make_trigger(client, alice, world, args_template={"args": ["$data.path"], "kwargs": {"scan": "$data.scan"}})
    assert trig["secret"] and trig["webhook_path"] == f"/v1/hooks/{trig['trigger_id']}"
    assert "secret" not in client.get(f"/v1/triggers/{trig['trigger_id']}", headers=alice).json  # shown once only

    first = deliver(client, trig, {"path": "/data/scan7.h5", "scan": 7}, event_id="scan-7")
    assert first.status_code == 202, first.json
    (firing,) = first.json["firings"]
    assert firing["state"] == "submitted"
    task = client.get(f"/v1/tasks/{firing['task_id']}", headers=alice).json
    assert task["state"] == "waiting-for-endpoint" and task["function_id"] == world["function_id"]
    assert args_of(st.store, firing["task_id"]) == {"args": ["/data/scan7.h5"], "kwargs": {"scan": 7}}

    # The sender retries (its own event id): the same event, no second task.
    again = deliver(client, trig, {"path": "/data/scan7.h5", "scan": 7}, event_id="scan-7")
    assert again.status_code == 200 and again.json["duplicate"] is True
    assert again.json["event_id"] == first.json["event_id"] and again.json["firings"][0]["task_id"] == firing["task_id"]
    # An exact re-send without an event id (same signature) is one event too.
    raw = b'{"path": "/data/scan8.h5", "scan": 8}'
    headers = webhooks.sign(trig["secret"], raw)
    second = client.post(trig["webhook_path"], data=raw, headers=headers)
    assert second.status_code == 202 and second.json["firings"][0]["state"] == "submitted", second.json
    assert client.post(trig["webhook_path"], data=raw, headers=headers).json["duplicate"] is True
    assert st.store.queue_length(world["endpoint_id"]) == 2

    hist = client.get(f"/v1/triggers/{trig['trigger_id']}/events", headers=alice).json["events"]
    assert len(hist) == 2 and {e["kind"] for e in hist} == {"webhook"}
    assert {e["data"].get("scan") for e in hist} == {7, 8}
    assert all(len(e["firings"]) == 1 and e["firings"][0]["state"] == "submitted" for e in hist)


@pytest.mark.parametrize("how", ["wrong secret", "stale", "unsigned", "unknown trigger", "tampered"])
def test_a_webhook_without_a_valid_signature_is_refused_and_records_nothing(app, client, alice, world, how):
    st = state(app)
    trig = make_trigger(client, alice, world)
    raw = b'{"scan": 1}'
    url = trig["webhook_path"]
    headers = webhooks.sign(trig["secret"], raw)
    if how == "wrong secret":
        headers = webhooks.sign("not-the-secret", raw)
    elif how == "stale":
        headers = webhooks.sign(trig["secret"], raw, now=datetime.now().timestamp() - webhooks.MAX_SKEW - 60)
    elif how == "unsigned":
        headers = {"Content-Type": "application/json"}
    elif how == "unknown trigger":
        url = "/v1/hooks/00000000-0000-4000-8000-000000000000"
    elif how == "tampered":
        raw = b'{"scan": 2}'
    err = assert_error(client.post(url, data=raw, headers=headers), 401, "bad_signature")
    assert trig["secret"] not in json.dumps(err)
    assert client.get(f"/v1/triggers/{trig['trigger_id']}/events", headers=alice).json["events"] == []
    assert st.store.queue_length(world["endpoint_id"]) == 0


def test_a_webhook_body_must_be_a_json_object_of_bounded_size(app, client, alice, world):
    trig = make_trigger(client, alice, world)
    raw = b"[1, 2"
    assert_error(client.post(trig["webhook_path"], data=raw, headers=webhooks.sign(trig["secret"], raw)), 400, "malformed_json")
    raw = json.dumps({"x": "y" * (state(app).settings.max_event_bytes + 10)}).encode()
    assert_error(client.post(trig["webhook_path"], data=raw, headers=webhooks.sign(trig["secret"], raw)), 413, "payload_too_large")


@pytest.mark.parametrize("body, status, code, field", [
    ({"name": "n", "kind": "cron"}, 400, "invalid_request", "kind"),
    ({"name": "n", "kind": "schedule", "config": {"cron": "every day"}}, 400, "invalid_request", "config.cron"),
    ({"name": "n", "kind": "schedule", "config": {"every": 2, "timezone": "Nowhere/City"}}, 400, "invalid_request", "config.timezone"),
    ({"name": "n", "kind": "schedule"}, 400, "invalid_request", "config"),
    ({"kind": "webhook"}, 400, "invalid_request", "name"),
    ({"name": "n", "kind": "webhook", "rules": [{"function_id": "f"}]}, 400, "invalid_request", "rules[0].endpoint_id"),
    ({"name": "n", "kind": "webhook", "rules": [{"function_id": "f", "endpoint_id": "e", "filters": [{"field": "x", "op": "~"}]}]},
     400, "invalid_request", "rules[0].filters[0].op"),
])
def test_a_bad_trigger_config_gets_a_clear_error_and_creates_nothing(client, alice, body, status, code, field):
    err = assert_error(client.post("/v1/triggers", json=body, headers=alice), status, code)
    assert err["details"]["field"] == field
    assert client.get("/v1/triggers", headers=alice).json["triggers"] == []


def test_rules_bind_only_functions_and_endpoints_the_owner_may_use(app, client, alice, bob, world):
    bobs = {"function_id": register_function(client, bob), "endpoint_id": register_endpoint(client, bob)["endpoint_id"]}
    for rule in ({**world, "function_id": bobs["function_id"]}, {**world, "endpoint_id": bobs["endpoint_id"]}):
        assert_error(client.post("/v1/triggers", json={"name": "n", "kind": "webhook", "rules": [rule]}, headers=alice), 403, "forbidden")
    assert_error(client.post("/v1/triggers", json={"name": "n", "kind": "webhook", "rules": [{**world, "function_id": "nope"}]},
                             headers=alice), 404, "function_not_found")
    # A restricted endpoint takes only functions on its allowlist.
    other = register_function(client, alice, name="other")
    assert client.put(f"/v1/endpoints/{world['endpoint_id']}/allowed_functions", json={"function_ids": [other]},
                      headers=alice).status_code == 200
    assert_error(client.post("/v1/triggers", json={"name": "n", "kind": "webhook", "rules": [world]}, headers=alice), 403,
                 "function_not_allowed")
    # Access revoked after binding: the firing is refused (with the reason in the history), no task runs.
    trig = make_trigger(client, alice, {**world, "function_id": other})
    assert client.delete(f"/v1/functions/{other}", headers=alice).status_code == 200
    resp = deliver(client, trig, {"n": 1})
    assert resp.json["firings"][0]["state"] == "refused"
    assert resp.json["firings"][0]["error"]["code"] == "function_not_found"
    assert state(app).store.queue_length(world["endpoint_id"]) == 0


def test_filters_choose_rules_and_a_template_error_is_recorded_not_run(app, client, alice, world):
    trig = make_trigger(client, alice, world, filters=[{"field": "data.path", "op": "glob", "value": "*.h5"}],
                        args_template={"args": ["$data.path"]})
    rule2 = client.post(f"/v1/triggers/{trig['trigger_id']}/rules", json={**world, "args_template": {"args": ["$data.size"]}},
                        headers=alice)
    assert rule2.status_code == 201, rule2.json
    tif = deliver(client, trig, {"path": "/d/a.tif"}).json["firings"]
    assert [(f["rule_id"], f["state"]) for f in tif] == [(rule2.json["rule_id"], "refused")]
    assert tif[0]["error"]["code"] == "template_field_missing" and "$data.size" in tif[0]["error"]["message"]
    h5 = deliver(client, trig, {"path": "/d/a.h5", "size": 10}).json["firings"]
    assert sorted(f["state"] for f in h5) == ["submitted", "submitted"]
    assert state(app).store.queue_length(world["endpoint_id"]) == 2
    assert client.delete(f"/v1/triggers/{trig['trigger_id']}/rules/{rule2.json['rule_id']}", headers=alice).status_code == 200
    assert len(deliver(client, trig, {"path": "/d/b.h5"}).json["firings"]) == 1


def test_an_event_recorded_before_a_crash_is_submitted_once_however_often_it_is_retried(app, client, alice, world):
    """The crash windows: after the event is recorded (no task yet), and after the task is
    written but before the firing is marked submitted. Retried by several runners at once."""
    st = state(app)
    trig_id = make_trigger(client, alice, world)["trigger_id"]
    with st.sessions() as session:
        trig = session.get(Trigger, trig_id)
        rec = events.record_event(session, trig, "id:crash-1", "webhook", {"n": 1})  # the process dies here
        task_id = rec.firings[0].task_id
    assert st.store.get(task_id) is None
    old = datetime.now(timezone.utc) + timedelta(seconds=60)  # past the runner's grace period
    runners = [Runner(st.sessions, st.store, tick=0.05, grace=5) for _ in range(4)]
    threads = [threading.Thread(target=r.submit_pending, args=(st.sessions(), old)) for r in runners]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert st.store.queue_length(world["endpoint_id"]) == 1
    with st.sessions() as session:
        assert session.get(TriggerFiring, (rec.event.id, rec.firings[0].rule_id)).state == "submitted"
        # Second window: the task is there but the firing was never marked.
        session.execute(sa.update(TriggerFiring).values(state="pending"))
        session.commit()
    runners[0].submit_pending(st.sessions(), old)
    assert st.store.queue_length(world["endpoint_id"]) == 1
    assert client.get(f"/v1/tasks/{task_id}", headers=alice).json["state"] == "waiting-for-endpoint"


def test_schedule_times_fire_once_each_with_several_runners(app, client, alice, world):
    st = state(app)
    trig = make_trigger(client, alice, world, kind="schedule", config={"every": 2}, args_template={"args": ["$data.scheduled_at"]})
    with st.sessions() as session:
        created = session.get(Trigger, trig["trigger_id"]).created_at
    start = (created if created.tzinfo else created.replace(tzinfo=timezone.utc))
    runners = [Runner(st.sessions, st.store) for _ in range(3)]
    # Three replicas step through the same 20 seconds, each at its own moments.
    for step in range(40):
        now = start + timedelta(seconds=step * 0.5)
        threads = [threading.Thread(target=r.step, args=(now + timedelta(milliseconds=37 * i),)) for i, r in enumerate(runners)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
    hist = client.get(f"/v1/triggers/{trig['trigger_id']}/events?limit=1000", headers=alice).json["events"]
    times = sorted(e["data"]["scheduled_at"] for e in hist)
    assert len(times) == len(set(times))
    expected = int((start + timedelta(seconds=19.5 + 0.074)).timestamp() // 2) - int(start.timestamp() // 2)
    assert len(times) == expected
    assert st.store.queue_length(world["endpoint_id"]) == expected
    parsed = [datetime.fromisoformat(t) for t in times]
    assert all((b - a) == timedelta(seconds=2) for a, b in zip(parsed, parsed[1:]))  # no gap, no repeat


def test_a_concurrency_limit_holds_firings_until_tasks_finish(app, client, alice, world):
    st = state(app)
    trig = make_trigger(client, alice, world, max_concurrency=1)
    fired = [deliver(client, trig, {"n": i}).json["firings"][0] for i in range(3)]
    assert [f["state"] for f in fired] == ["pending"] * 3
    runner = Runner(st.sessions, st.store)
    for _ in range(3):
        runner.submit_pending(st.sessions(), datetime.now(timezone.utc))
    assert st.store.queue_length(world["endpoint_id"]) == 1
    hist = client.get(f"/v1/triggers/{trig['trigger_id']}/events", headers=alice).json["events"]
    running = [e["firings"][0]["task_id"] for e in hist if e["firings"][0]["state"] == "submitted"]
    assert len(running) == 1
    client.post(f"/v1/tasks/{running[0]}/cancel", headers=alice)  # it finishes
    runner.submit_pending(st.sessions(), datetime.now(timezone.utc))
    states = sorted(e["firings"][0]["state"] for e in client.get(f"/v1/triggers/{trig['trigger_id']}/events", headers=alice).json["events"])
    assert states == ["done", "pending", "submitted"]


def test_an_idle_runner_backs_off_and_a_schedule_trigger_brings_it_back(app, client, alice, world):
    """Idle, the runner took two database connections every tick (two fresh SQLite connections
    every 0.25 s: 2.3 % of a core): now one a pass, and passes back off to ``idle_tick`` apart
    while it watches nothing; a new schedule trigger makes it pass every tick again."""
    st = state(app)
    engine = st.sessions.kw["bind"]
    checkouts: list[float] = []

    def checkout(*_: Any) -> None:
        checkouts.append(time.monotonic())

    sa.event.listen(engine, "checkout", checkout)
    runner = Runner(st.sessions, st.store, tick=0.05, idle_tick=0.4)
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        time.sleep(1.5)
        idle = len(checkouts)  # passes at 0, 0.05, 0.15, 0.35, 0.75, 1.15 s (60 checkouts before)
        make_trigger(client, alice, world, kind="schedule", config={"every": 3600})
        seen = len(checkouts)
        time.sleep(1.5)
        busy = len(checkouts) - seen
    finally:
        runner.stopping.set()
        thread.join(10)
        sa.event.remove(engine, "checkout", checkout)
    assert idle <= 8, idle
    assert busy >= 10, busy  # seen within idle_tick, then a pass every 0.05 s


def test_fire_by_hand_and_delete(app, client, alice, world):
    trig = make_trigger(client, alice, world, kind="schedule", config={"cron": "0 3 * * *", "timezone": "Europe/Berlin"})
    assert trig["next_time"]
    first = client.post(f"/v1/triggers/{trig['trigger_id']}/fire", json={"data": {"x": 1}, "event_id": "manual-1"}, headers=alice)
    assert first.status_code == 202 and first.json["firings"][0]["state"] == "submitted"
    again = client.post(f"/v1/triggers/{trig['trigger_id']}/fire", json={"data": {"x": 1}, "event_id": "manual-1"}, headers=alice)
    assert again.status_code == 200 and again.json["duplicate"]
    assert [t["trigger_id"] for t in client.get("/v1/triggers", headers=alice).json["triggers"]] == [trig["trigger_id"]]
    assert client.delete(f"/v1/triggers/{trig['trigger_id']}", headers=alice).status_code == 200
    assert_error(client.get(f"/v1/triggers/{trig['trigger_id']}", headers=alice), 404, "trigger_not_found")
    assert client.get("/v1/triggers", headers=alice).json["triggers"] == []


def test_another_users_trigger_is_forbidden(client, alice, bob, world):
    trig = make_trigger(client, alice, world)
    for method, url in (("GET", ""), ("DELETE", ""), ("GET", "/events"), ("POST", "/fire"), ("POST", "/rules")):
        resp = client.open(f"/v1/triggers/{trig['trigger_id']}{url}", method=method, json={}, headers=bob)
        assert_error(resp, 403, "forbidden")
    assert trigger_service.MAX_RULES >= 1


def test_a_site_manager_fires_only_its_own_endpoints_file_triggers_for_files_they_watch(app, client, alice, bob, world):
    """What the forwarder does with a FileEventBatch (web_service.triggers.files): a hostile or
    confused site manager cannot fire another endpoint's trigger, nor one of its own for a file
    outside the trigger's folder or pattern; the same file version twice is one event."""
    from fnserve.messages import FileEvent
    from web_service.task_store import status_key
    from web_service.triggers.files import record_file_events

    st = state(app)
    bobs_ep = register_endpoint(client, bob)["endpoint_id"]
    for ep in (world["endpoint_id"], bobs_ep):
        st.store.r.hset(status_key(ep), "watch_folders", json.dumps(["/data"]))  # as the forwarder notes at registration
    resp = client.post("/v1/triggers", json={"name": "det", "kind": "file", "rules": [world],
                                             "config": {"endpoint_id": world["endpoint_id"], "folder": "/data/scans", "pattern": "*.h5"}},
                       headers=alice)
    assert resp.status_code == 201, resp.json
    trig = resp.json["trigger_id"]
    assert_error(client.post("/v1/triggers", json={"name": "x", "kind": "file", "config": {
        "endpoint_id": world["endpoint_id"], "folder": "/home/alice"}}, headers=alice), 403, "folder_not_allowed")
    assert_error(client.post("/v1/triggers", json={"name": "x", "kind": "file", "config": {
        "endpoint_id": bobs_ep, "folder": "/data"}}, headers=alice), 403, "forbidden")

    def ev(path: str, trigger_id: str = trig, key: str = "forged") -> FileEvent:
        return FileEvent(trigger_id=trigger_id, path=path, size=10, mtime=1.5, key=key)

    batch = [ev("/data/scans/a.h5"), ev("/data/scans/a.h5", key="other-key"), ev("/data/scans/b.tif"),
             ev("/data/scans/sub/c.h5"), ev("/data/scans/../secret/d.h5"), ev("/etc/passwd")]
    with st.sessions() as session:
        assert record_file_events(session, st.store, bobs_ep, [ev("/data/scans/x.h5")]) == ["forged"]  # acked, not recorded
        acked = record_file_events(session, st.store, world["endpoint_id"], batch)
        assert len(acked) == len(batch)  # everything acked: nothing is resent forever
        record_file_events(session, st.store, world["endpoint_id"], batch[:1])  # resent after a reconnect
    hist = client.get(f"/v1/triggers/{trig}/events", headers=alice).json["events"]
    assert [e["data"]["path"] for e in hist] == ["/data/scans/a.h5"]
    assert hist[0]["firings"][0]["state"] == "submitted"
    assert st.store.queue_length(world["endpoint_id"]) == 1

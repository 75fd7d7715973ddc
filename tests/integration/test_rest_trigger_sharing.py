"""Sharing a trigger, over REST on the real Flask app, Redis and SQLite / PostgreSQL, with two
users: the owner shares it the way functions and endpoints are shared; the user it is shared
with binds rules with their own functions and endpoints (tasks run as them) and reads the history
of their rules; nobody else may, and unsharing stops their rules firing."""

from __future__ import annotations

from tests.integration.rest_support import assert_error, register_endpoint, register_function, state
from tests.integration.test_rest_triggers import deliver, make_trigger


def test_a_shared_trigger_takes_the_other_users_rules_and_runs_them_as_that_user(app, client, alice, bob):
    st = state(app)
    alices = {"function_id": register_function(client, alice), "endpoint_id": register_endpoint(client, alice)["endpoint_id"]}
    bobs = {"function_id": register_function(client, bob, name="his"), "endpoint_id": register_endpoint(client, bob, "bobs")["endpoint_id"]}
    trig = make_trigger(client, alice, alices)
    tid = trig["trigger_id"]
    bob_id = client.get("/v1/whoami", headers=bob).json["user_id"]

    # Not shared yet: bob may not bind, read or manage it; an unknown id is a 404 as for anyone.
    assert_error(client.post(f"/v1/triggers/{tid}/rules", json=bobs, headers=bob), 403, "forbidden")
    assert_error(client.get(f"/v1/triggers/{tid}/events", headers=bob), 403, "forbidden")
    assert_error(client.get(f"/v1/triggers/{tid}/sharing", headers=bob), 403, "forbidden")
    assert_error(client.post("/v1/triggers/no-such-trigger/rules", json=bobs, headers=bob), 404, "trigger_not_found")
    assert client.get("/v1/triggers?shared=true", headers=bob).json["triggers"] == []

    shared = client.put(f"/v1/triggers/{tid}/sharing", json={"users": ["bob"]}, headers=alice)
    assert shared.status_code == 200 and shared.json == {"public": False, "users": ["bob"], "groups": []}
    assert_error(client.put(f"/v1/triggers/{tid}/sharing", json={"users": []}, headers=bob), 403, "owner_only")

    # Bob binds only what he himself may use: alice's function and endpoint are not shared with him.
    assert_error(client.post(f"/v1/triggers/{tid}/rules", json={**bobs, "function_id": alices["function_id"]}, headers=bob),
                 403, "forbidden")
    assert_error(client.post(f"/v1/triggers/{tid}/rules", json={**bobs, "endpoint_id": alices["endpoint_id"]}, headers=bob),
                 403, "forbidden")
    rule = client.post(f"/v1/triggers/{tid}/rules", json={**bobs, "args_template": {"args": ["$data.scan"]}}, headers=bob)
    assert rule.status_code == 201 and rule.json["owner_id"] == bob_id, rule.json
    # He sees the trigger with his rule only; its owner sees both; managing stays the owner's.
    assert [r["rule_id"] for r in client.get(f"/v1/triggers/{tid}", headers=bob).json["rules"]] == [rule.json["rule_id"]]
    assert len(client.get(f"/v1/triggers/{tid}", headers=alice).json["rules"]) == 2
    assert [t["trigger_id"] for t in client.get("/v1/triggers?shared=true", headers=bob).json["triggers"]] == [tid]
    assert client.get("/v1/triggers", headers=bob).json["triggers"] == []
    alices_rule = trig["rules"][0]["rule_id"]
    assert_error(client.delete(f"/v1/triggers/{tid}/rules/{alices_rule}", headers=bob), 404, "rule_not_found")
    assert_error(client.delete(f"/v1/triggers/{tid}", headers=bob), 403, "owner_only")
    assert_error(client.post(f"/v1/triggers/{tid}/fire", json={}, headers=bob), 403, "owner_only")

    # One event fires both rules once: alice's task on her endpoint, bob's task (his) on his.
    first = deliver(client, trig, {"scan": 1}, event_id="scan-1")
    assert first.status_code == 202 and [f["state"] for f in first.json["firings"]] == ["submitted", "submitted"], first.json
    task_of = {f["rule_id"]: f["task_id"] for f in first.json["firings"]}
    bobs_task = client.get(f"/v1/tasks/{task_of[rule.json['rule_id']]}", headers=bob)
    assert bobs_task.status_code == 200 and bobs_task.json["function_id"] == bobs["function_id"]
    assert_error(client.get(f"/v1/tasks/{task_of[rule.json['rule_id']]}", headers=alice), 403, "forbidden")
    assert st.store.queue_length(bobs["endpoint_id"]) == 1 and st.store.queue_length(alices["endpoint_id"]) == 1

    # History: bob sees the events that fired his rule, with his firing only; alice sees all.
    (seen,) = client.get(f"/v1/triggers/{tid}/events", headers=bob).json["events"]
    assert [f["rule_id"] for f in seen["firings"]] == [rule.json["rule_id"]] and seen["data"] == {"scan": 1}
    (full,) = client.get(f"/v1/triggers/{tid}/events", headers=alice).json["events"]
    assert len(full["firings"]) == 2

    # Unshared: bob's rule no longer fires (refused, visible to alice), alice's still does.
    assert client.put(f"/v1/triggers/{tid}/sharing", json={"users": []}, headers=alice).status_code == 200
    second = deliver(client, trig, {"scan": 2}, event_id="scan-2")
    states = {f["rule_id"]: (f["state"], f.get("error", {}).get("code")) for f in second.json["firings"]}
    assert states == {alices_rule: ("submitted", None), rule.json["rule_id"]: ("refused", "forbidden")}
    assert st.store.queue_length(bobs["endpoint_id"]) == 1
    assert_error(client.get(f"/v1/triggers/{tid}/events", headers=bob), 403, "forbidden")


def test_a_trigger_shared_with_a_group_and_a_member_removing_their_own_rule(client, alice, bob):
    alices = {"function_id": register_function(client, alice), "endpoint_id": register_endpoint(client, alice)["endpoint_id"]}
    bobs = {"function_id": register_function(client, bob, name="his"), "endpoint_id": register_endpoint(client, bob, "bobs")["endpoint_id"]}
    tid = make_trigger(client, alice, alices)["trigger_id"]
    assert client.post("/v1/groups", json={"name": "beamline"}, headers=alice).status_code == 201
    assert client.post("/v1/groups/beamline/members", json={"add": ["bob"]}, headers=alice).status_code == 200
    assert client.put(f"/v1/triggers/{tid}/sharing", json={"groups": ["beamline"]}, headers=alice).status_code == 200
    rule = client.post(f"/v1/triggers/{tid}/rules", json=bobs, headers=bob)
    assert rule.status_code == 201, rule.json
    assert client.delete(f"/v1/triggers/{tid}/rules/{rule.json['rule_id']}", headers=bob).status_code == 200
    assert [r["rule_id"] for r in client.get(f"/v1/triggers/{tid}", headers=alice).json["rules"]] != [rule.json["rule_id"]]
    assert len(client.get(f"/v1/triggers/{tid}", headers=alice).json["rules"]) == 1

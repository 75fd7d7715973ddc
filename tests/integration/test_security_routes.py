"""Every REST route, enumerated from Flask's url_map (so new routes are covered without editing
this file), against callers who must be refused: no token, a malformed one, an expired one, a
revoked one, and another user's token. Real Flask app over real Redis and SQLite/PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, Iterator

import pytest
import sqlalchemy as sa

from tests.integration.rest_support import b64, bearer, register_endpoint, register_function, state
from web_service.auth import issue_token, revoke_token
from web_service.registry.models import User

# Routes that need no token (ARCHITECTURE.md: version / health / OpenAPI).
PUBLIC = {"version.version", "version.health", "version.openapi"}
# Routes authenticated by a signature instead of a token (webhook deliveries): refused with 401
# ``bad_signature`` unless signed with the trigger's secret (test_signed_routes_refuse_...).
SIGNED = {"hooks.deliver"}
# Routes that name no other user's resource: another user's token gets their own view, which
# must not contain anything of the first user's.
OWN_VIEW = {
    "functions.list_", "endpoints.list_", "functions.register", "endpoints.register", "access.list_groups",
    "access.create_group", "identity.whoami", "identity.usage", "completions.completions",
    "runtimes.list_", "runtimes.register", "triggers.list_", "triggers.create", "objects.create_object",
}
# Routes whose argument names something in the caller's own namespace (task group ids are per
# user): another user's token, given the first user's id, gets their own (empty) view.
OWN_NAMESPACE = {"tasks.group_tasks"}


def _routes(flask_app: Any) -> list[tuple[str, str, Any]]:
    out = []
    for rule in flask_app.url_map.iter_rules():
        # The dashboard (session cookies, HTML) has its own: tests/integration/test_dashboard_access.py.
        if not rule.rule.startswith("/v1/"):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((rule.endpoint, method, rule))
    return out


@pytest.fixture
def world(app, client, alice) -> dict[str, Any]:
    """Alice owns one of everything; returns the ids to put into route arguments."""
    fid = register_function(client, alice)
    eid = register_endpoint(client, alice)["endpoint_id"]
    group = "alices-runs"
    task = client.post("/v1/tasks", json={"tasks": [{"function_id": fid, "endpoint_id": eid, "args": [1], "task_group_id": group}]},
                       headers=alice)
    assert task.status_code == 202, task.json
    assert client.post("/v1/groups", json={"name": "alices-lab"}, headers=alice).status_code == 201
    ids = {"function_id": fid, "endpoint_id": eid, "task_id": task.json["task_ids"][0], "name": "alices-lab",
           "task_group_id": group}
    if any(r.rule == "/v1/runtimes" for r in app.url_map.iter_rules()):
        rt = client.post("/v1/runtimes", json={"name": "alices-env", "type": "host"}, headers=alice)
        assert rt.status_code == 201, rt.json
        ids["runtime_id"] = rt.json["runtime_id"]
    if any(r.rule == "/v1/triggers" for r in app.url_map.iter_rules()):
        trig = client.post("/v1/triggers", json={"name": "alices-scans", "kind": "webhook",
                                                 "rules": [{"function_id": fid, "endpoint_id": eid}]}, headers=alice)
        assert trig.status_code == 201, trig.json
        ids["trigger_id"] = trig.json["trigger_id"]
        ids["rule_id"] = trig.json["rules"][0]["rule_id"]
        ids["trigger_secret"] = trig.json["secret"]
    if any(r.rule == "/v1/objects" for r in app.url_map.iter_rules()):
        import hashlib

        obj = client.post("/v1/objects", json={"size": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}, headers=alice)
        assert obj.status_code == 201, obj.json
        ids["object_id"] = obj.json["object_id"]
        put = client.put(f"/v1/objects/{ids['object_id']}/data", data=b"abc", headers=alice)
        assert put.status_code == 200 and put.json["complete"], put.json
    return ids


def _urls(rule: Any, ids: dict[str, str]) -> Iterator[str]:
    """Concrete URLs for ``rule`` naming alice's resources (``<ident>`` is the id of the
    resource kind the URL is under; ``<any(...):collection>`` yields one URL per kind)."""
    import re

    any_ = re.search(r"<any\(([^)]*)\):collection>", rule.rule)
    collections = [c.strip() for c in any_.group(1).split(",")] if any_ else [None]
    for collection in collections:
        url = rule.rule if any_ is None else rule.rule.replace(any_.group(0), collection)
        for arg in rule.arguments - {"collection"}:
            key = arg
            if arg == "ident":
                key = (collection or url.split("/")[2]).rstrip("s") + "_id"
            url = url.replace(f"<{arg}>", ids[key])
        yield url


def _call(client: Any, method: str, url: str, headers: dict[str, str], ids: dict[str, str]) -> Any:
    body: dict[str, Any] = {}
    if url.endswith("/v1/tasks") and method == "POST":
        body = {"tasks": [{"function_id": ids["function_id"], "endpoint_id": ids["endpoint_id"], "args": [2]}]}
    elif url.endswith("/v1/tasks/results"):
        body = {"task_ids": [ids["task_id"]]}
    elif url.endswith("/members"):
        body = {"add": ["bob"]}
    elif url.endswith("/allowed_functions") and method == "PUT":
        body = {"function_ids": []}
    elif url.endswith("/v1/functions") and method == "POST":
        body = {"name": "f", "function": b64(b"not checked before auth")}
    elif method in ("POST", "PUT"):
        body = {"name": "x"}
    return client.open(url, method=method, headers={**headers, "Content-Type": "application/json"}, data=json.dumps(body))


def test_every_protected_route_refuses_missing_malformed_expired_and_revoked_tokens(app, client, world, settings):
    st = state(app)
    with st.sessions() as session:
        uid = session.scalar(sa.select(User.id).where(User.username == "alice"))
        _, expired = issue_token(session, uid, label="old", expires_in=timedelta(seconds=-1))
        _, revoked = issue_token(session, uid, label="gone")
        revoke_token(session, revoked)
    callers = [
        ({}, 401, "missing_token"),
        ({"Authorization": "Basic YWxpY2U6cHc="}, 401, "missing_token"),
        ({"Authorization": "Bearer"}, 401, "missing_token"),
        ({"Authorization": "Bearer not-a-token"}, 401, "invalid_token"),
        ({"Authorization": "Bearer fns_" + "A" * 43}, 401, "invalid_token"),
        (bearer(expired), 401, "invalid_token"),
        (bearer(revoked), 401, "invalid_token"),
    ]
    checked = 0
    for endpoint, method, rule in _routes(app):
        if endpoint in PUBLIC or endpoint in SIGNED:
            continue
        for url in _urls(rule, world):
            for headers, status, code in callers:
                resp = _call(client, method, url, headers, world)
                assert resp.status_code == status, (method, url, headers, resp.get_data(as_text=True))
                assert resp.json["error"]["code"] == code, (method, url, resp.json)
                assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer")
                checked += 1
    assert checked >= 7 * 20  # every route was exercised, not skipped


def test_public_routes_answer_without_a_token(app, client):
    for endpoint, method, rule in _routes(app):
        if endpoint in PUBLIC:
            assert client.open(rule.rule, method=method).status_code == 200


def test_another_users_token_is_refused_on_every_route_naming_a_resource(app, client, world, alice, bob):
    unclassified = []
    for endpoint, method, rule in _routes(app):
        if endpoint in PUBLIC or endpoint in SIGNED:
            continue
        if endpoint in OWN_VIEW:
            if method == "GET":
                resp = _call(client, method, rule.rule, bob, world)
                assert resp.status_code == 200, (rule.rule, resp.json)
                text = resp.get_data(as_text=True)
                assert not any(v in text for v in world.values()), (rule.rule, text)
            continue
        if endpoint in OWN_NAMESPACE:
            for url in _urls(rule, world):
                resp = _call(client, method, url, bob, world)
                assert resp.status_code == 200, (method, url, resp.get_data(as_text=True))
                text = resp.get_data(as_text=True)
                assert not any(v in text for k, v in world.items() if k != "task_group_id"), (url, text)
                mine = _call(client, method, url, alice, world)
                assert world["task_id"] in mine.get_data(as_text=True), (url, mine.json)  # the check can fail
            continue
        if not rule.arguments and endpoint not in ("tasks.submit", "tasks.results"):
            unclassified.append(endpoint)
            continue
        for url in _urls(rule, world):
            resp = _call(client, method, url, bob, world)
            assert resp.status_code == 403, (method, url, resp.get_data(as_text=True))
            assert resp.json["error"]["code"] in ("forbidden", "owner_only"), (method, url, resp.json)
    assert not unclassified, f"classify these routes in OWN_VIEW or give them a resource argument: {unclassified}"
    # Nothing bob tried changed alice's things: her function, endpoint, task and group are intact.
    assert client.get(f"/v1/functions/{world['function_id']}", headers=alice).status_code == 200
    assert client.get(f"/v1/endpoints/{world['endpoint_id']}", headers=alice).status_code == 200
    assert client.get(f"/v1/tasks/{world['task_id']}", headers=alice).json["state"] == "waiting-for-endpoint"
    assert client.get("/v1/groups", headers=alice).json["groups"][0]["members"] == ["alice"]


def test_signed_routes_refuse_every_caller_without_the_triggers_signature(app, client, world, alice, bob):
    """A bearer token (even the owner's) is no signature; another trigger's secret is not this
    one's; an unsigned call learns nothing (the same 401 as for a trigger that does not exist)."""
    from fnserve import webhooks

    raw = json.dumps({"scan": 1}).encode()
    assert SIGNED, "no signed routes left: drop this test"
    for endpoint, method, rule in _routes(app):
        if endpoint not in SIGNED:
            continue
        for url in _urls(rule, world):
            for headers in ({}, alice, bob, webhooks.sign("a-guessed-secret", raw),
                            {**alice, **webhooks.sign(world["trigger_secret"] + "x", raw)}):
                resp = client.open(url, method=method, headers={**headers, "Content-Type": "application/json"}, data=raw)
                assert resp.status_code == 401, (method, url, resp.get_data(as_text=True))
                assert resp.json["error"]["code"] == "bad_signature", resp.json
                assert world["trigger_secret"] not in resp.get_data(as_text=True)
            good = client.open(url, method=method, headers=webhooks.sign(world["trigger_secret"], raw), data=raw)
            assert good.status_code == 202, good.json  # the check can pass

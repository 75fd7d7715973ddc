"""Who gets which dashboard page: every route enumerated from Flask's url_map (so a new page is
covered without editing this file) without a session, with a dead one and with another user's;
CSRF, cookies, security headers, escaping, and the Globus login against its stand-in
(tests/integration/globus_standin.py). The real Flask app over real Redis and SQLite/PostgreSQL."""

from __future__ import annotations

import dataclasses
import re
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import responses

from tests.integration import globus_standin as standin
from tests.integration.dashboard_support import form_csrf, log_in, page_csrf, read_events, token_of
from tests.integration.rest_support import register_endpoint, register_function, state
from web_service.admin import set_operator
from web_service.app import create_app
from web_service.auth import revoke_token
from web_service.dashboard.sessions import COOKIE, LOGIN_COOKIE, OAUTH_COOKIE, session_key

# Pages anyone may open (logging in).
PUBLIC = {"dashboard.login", "dashboard.login_submit", "dashboard.globus_login", "dashboard.globus_callback", "dashboard.static"}
# Pages that name no resource: another user sees their own (empty) view there.
OWN_VIEW = {"dashboard.home", "dashboard.endpoints", "dashboard.tasks", "dashboard.functions", "dashboard.usage",
            "dashboard.endpoint_stream", "dashboard.task_stream", "dashboard.logout"}
OPERATOR_ONLY = {"dashboard.operators", "dashboard.operator_stream"}
XSS = '<script>alert("fn")</script>'


def _routes(flask_app: Any) -> list[tuple[str, str, Any]]:
    out = []
    for rule in flask_app.url_map.iter_rules():
        if rule.endpoint.startswith("dashboard."):
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                out.append((rule.endpoint, method, rule))
    return out


@pytest.fixture
def world(client, alice) -> dict[str, str]:
    """Alice owns a function (named like a script), an endpoint and a task."""
    fid = register_function(client, alice, name=XSS)
    eid = register_endpoint(client, alice)["endpoint_id"]
    resp = client.post("/v1/tasks", json={"tasks": [{"function_id": fid, "endpoint_id": eid, "args": [1]}]}, headers=alice)
    assert resp.status_code == 202, resp.json
    return {"function_id": fid, "endpoint_id": eid, "task_id": resp.json["task_ids"][0]}


def _url(rule: Any, ids: dict[str, str]) -> str:
    url = rule.rule
    for arg in rule.arguments:
        url = url.replace(f"<{arg}>", ids[arg])
    return url


def _open(client: Any, method: str, url: str, csrf: str = "") -> Any:
    data = {"csrf_token": csrf} if method == "POST" else None
    resp = client.open(url, method=method, data=data, buffered=False)
    resp.close()  # streams: only the status and headers matter here
    return resp


def test_without_a_session_pages_send_to_the_login_form_and_the_rest_is_401(app, client, world):
    checked = 0
    for endpoint, method, rule in _routes(app):
        if endpoint in PUBLIC or endpoint == "dashboard.home":
            continue
        url = _url(rule, world)
        resp = _open(client, method, url)
        if method == "GET" and "/api/" not in url and "/stream/" not in url:
            assert resp.status_code == 302 and "/dashboard/login?next=" in resp.headers["Location"], (url, resp.status_code)
        else:
            assert resp.status_code == 401 and resp.json["error"]["code"] == "login_required", (method, url)
        checked += 1
    assert checked >= 15


def test_another_users_session_gets_403_on_every_page_naming_a_resource_and_sees_nothing_in_lists(app, client, world, bob):
    log_in(client, token_of(bob))
    csrf = page_csrf(client)
    unclassified = []
    for endpoint, method, rule in _routes(app):
        if endpoint in PUBLIC or endpoint in OPERATOR_ONLY or endpoint == "dashboard.logout":
            continue
        if endpoint in OWN_VIEW:
            resp = client.get(rule.rule, buffered=False)
            text = resp.get_data(as_text=True) if "/stream/" not in rule.rule else _first_event(resp)
            assert resp.status_code in (200, 302), (rule.rule, resp.status_code)
            assert not any(v in text for v in world.values()) and "alert" not in text, (rule.rule, text[:500])
            continue
        if not rule.arguments:
            unclassified.append(endpoint)
            continue
        url = _url(rule, world)
        resp = _open(client, method, url, csrf)
        assert resp.status_code == 403, (method, url, resp.status_code)
    assert not unclassified, f"classify these dashboard routes: {unclassified}"
    # An endpoint page's live stream, asked for alice's endpoint, is refused too.
    assert _open(client, "GET", f"/dashboard/stream/endpoints?id={world['endpoint_id']}").status_code == 403
    # Bob tried to cancel alice's task: it still waits.
    assert state(app).store.get(world["task_id"]).state.value == "waiting-for-endpoint"


def _first_event(resp: Any) -> str:
    """A live stream's opening snapshot."""
    try:
        return read_events(resp, "reset" if "/tasks" in resp.request.path else "rows")
    finally:
        resp.close()


def test_operators_page_is_for_operators_only(alice, settings):
    app = create_app(dataclasses.replace(settings, cache_seconds=0))  # the flag is re-read on every request
    client = app.test_client()
    log_in(client, token_of(alice))
    assert client.get("/dashboard/operators").status_code == 403
    assert _open(client, "GET", "/dashboard/stream/operators").status_code == 403
    assert "Operators" not in client.get("/dashboard/endpoints").get_data(as_text=True)
    set_operator(settings, "alice")
    resp = client.get("/dashboard/operators")
    assert resp.status_code == 200 and "Service health" in resp.get_data(as_text=True)
    assert "Operators" in client.get("/dashboard/endpoints").get_data(as_text=True)
    set_operator(settings, "alice", on=False)
    assert client.get("/dashboard/operators").status_code == 403
    state(app).engine.dispose()


def test_state_changing_requests_need_the_sessions_csrf_token(app, client, world, alice):
    log_in(client, token_of(alice))
    cancel = f"/dashboard/tasks/{world['task_id']}/cancel"
    for data, headers in (({}, {}), ({"csrf_token": "forged"}, {}), ({}, {"X-CSRF-Token": "forged"})):
        resp = client.post(cancel, data=data, headers=headers)
        assert resp.status_code == 403 and "csrf_failed" in resp.get_data(as_text=True)
    assert state(app).store.get(world["task_id"]).state.value == "waiting-for-endpoint"
    resp = client.post(cancel, data={"csrf_token": page_csrf(client)})
    assert resp.status_code == 302
    assert state(app).store.get(world["task_id"]).state.value == "cancelled"
    assert client.post("/dashboard/logout", data={}).status_code == 403  # logging out is a change too


def test_the_login_form_has_its_own_csrf_and_never_puts_the_token_in_a_url(app, client, alice):
    token = token_of(alice)
    html = client.get("/dashboard/login").get_data(as_text=True)
    bad = client.post("/dashboard/login", data={"csrf_token": "x" + form_csrf(html), "token": token})
    assert bad.status_code == 403 and client.get_cookie(COOKIE, path="/dashboard") is None
    resp = log_in(client, token, next_path="/dashboard/tasks")
    assert resp.headers["Location"] == "/dashboard/tasks" and token not in resp.headers["Location"]
    cookie = client.get_cookie(COOKIE, path="/dashboard")
    assert token not in cookie.value
    # Redis keeps the session under the sha256 of its id: the id itself is nowhere.
    keys = [k.decode() for k in state(app).store.r.keys("fns:dash:*")]
    assert keys == [session_key(cookie.value)] and cookie.value not in keys[0]
    stored = state(app).store.r.hgetall(keys[0])
    assert not any(token.encode() in v for v in stored.values())


def test_a_wrong_token_is_a_clear_401_on_the_form_and_an_off_site_next_is_ignored(client, alice):
    csrf = form_csrf(client.get("/dashboard/login").get_data(as_text=True))
    resp = client.post("/dashboard/login", data={"csrf_token": csrf, "token": "fns_" + "A" * 43})
    assert resp.status_code == 401 and "unknown, expired or revoked" in resp.get_data(as_text=True)
    resp = log_in(client, token_of(alice), next_path="https://evil.example/dashboard/")
    assert resp.headers["Location"] == "/dashboard/endpoints"


def test_session_cookie_is_httponly_strict_and_secure_only_over_https(app, alice):
    headers = []
    for base in ("http://localhost", "https://localhost"):
        c = app.test_client()
        csrf = form_csrf(c.get("/dashboard/login", base_url=base).get_data(as_text=True))
        resp = c.post("/dashboard/login", data={"csrf_token": csrf, "token": token_of(alice)}, base_url=base)
        headers.append(next(h for h in resp.headers.getlist("Set-Cookie") if h.startswith(COOKIE + "=")))
    for h in headers:
        assert "HttpOnly" in h and "SameSite=Strict" in h and "Path=/dashboard" in h
    assert "Secure" not in headers[0] and "Secure" in headers[1]


def test_logout_and_a_revoked_token_end_the_session(app, client, alice, settings):
    log_in(client, token_of(alice))
    assert client.post("/dashboard/logout", data={"csrf_token": page_csrf(client)}).status_code == 302
    assert client.get("/dashboard/tasks").status_code == 302  # back to the login form
    fresh = create_app(dataclasses.replace(settings, cache_seconds=0)).test_client()
    log_in(fresh, token_of(alice))
    assert fresh.get("/dashboard/tasks").status_code == 200
    with state(app).sessions() as session:
        assert revoke_token(session, token_of(alice))
    resp = fresh.get("/dashboard/tasks")
    assert resp.status_code == 302 and "/dashboard/login" in resp.headers["Location"]
    assert not state(app).store.r.keys("fns:dash:*")  # the dead session was dropped


def test_every_page_has_a_csp_without_inline_script_and_escapes_what_users_wrote(app, client, world, alice):
    log_in(client, token_of(alice))
    pages = ["/dashboard/endpoints", f"/dashboard/endpoints/{world['endpoint_id']}", "/dashboard/tasks",
             f"/dashboard/tasks/{world['task_id']}", "/dashboard/functions", f"/dashboard/functions/{world['function_id']}",
             "/dashboard/usage", "/dashboard/login"]
    for path in pages:
        resp = client.get(path)
        assert resp.status_code in (200, 302), path
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff" and resp.headers["Cache-Control"] == "no-store"
        html = resp.get_data(as_text=True)
        # The only script is the static file; the function's name is text.
        assert re.findall(r"<script[^>]*>", html) in ([], ['<script src="/dashboard/static/dashboard.js" defer>']), path
        assert XSS not in html, path
    functions = client.get("/dashboard/functions").get_data(as_text=True)
    assert "&lt;script&gt;alert(&#34;fn&#34;)&lt;/script&gt;" in functions


def test_globus_login_runs_the_authorization_code_flow_against_the_stand_in(settings, redis_client):
    app = create_app(dataclasses.replace(
        settings, auth_mode="globus", globus_client_id=standin.SERVICE_CLIENT_ID, globus_client_secret="s",
        globus_scope=standin.SCOPE, globus_native_client_id=standin.NATIVE_CLIENT_ID))
    client = app.test_client()
    assert "Log in with Globus" in client.get("/dashboard/login").get_data(as_text=True)
    start = client.get("/dashboard/login/globus")
    authorize = urlparse(start.headers["Location"])
    query = parse_qs(authorize.query)
    assert authorize.netloc == "auth.globus.org" and authorize.path == "/v2/oauth2/authorize"
    assert query["client_id"] == [standin.SERVICE_CLIENT_ID] and query["scope"] == [standin.SCOPE]
    assert query["redirect_uri"] == ["http://localhost/dashboard/login/globus/callback"]
    state_value = query["state"][0]
    oauth_cookie = next(h for h in start.headers.getlist("Set-Cookie") if h.startswith(OAUTH_COOKIE))
    assert "SameSite=Lax" in oauth_cookie and "HttpOnly" in oauth_cookie
    # A callback that this browser did not start is refused before any code is exchanged.
    forged = app.test_client().get(f"/dashboard/login/globus/callback?code=c&state={state_value}")
    assert forged.status_code == 403
    with responses.RequestsMock() as mock:
        standin.token_grant("globus-access-token").add(requests_mock=mock)
        standin.introspection("globus-access-token", "ann@uni.example.org").add(requests_mock=mock)
        done = client.get(f"/dashboard/login/globus/callback?code=the-code&state={state_value}")
        exchange = mock.calls[0].request
        assert "code=the-code" in exchange.body and exchange.headers["Authorization"].startswith("Basic ")
    assert done.status_code == 200 and 'http-equiv="refresh"' in done.get_data(as_text=True)
    assert client.get_cookie(COOKIE, path="/dashboard") is not None
    page = client.get("/dashboard/endpoints")
    assert page.status_code == 200 and "ann@uni.example.org" in page.get_data(as_text=True)
    # The token form is not the way in here.
    other = app.test_client()
    other.get("/dashboard/login")
    csrf = other.get_cookie(LOGIN_COOKIE, path="/dashboard").value
    resp = other.post("/dashboard/login", data={"csrf_token": csrf, "token": "fns_whatever"})
    assert resp.status_code == 400 and "use_globus_login" in resp.get_data(as_text=True)
    state(app).engine.dispose()


def test_the_root_sends_browsers_to_the_dashboard(client):
    resp = client.get("/")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/dashboard/")


def test_a_disabled_users_session_ends_and_wrong_logins_spend_the_address_bucket(alice, settings):
    from web_service.admin import disable_user

    app = create_app(dataclasses.replace(settings, cache_seconds=0, anon_rate_limit=0.01, anon_rate_burst=3))
    client = app.test_client()
    log_in(client, token_of(alice))
    assert client.get("/dashboard/tasks").status_code == 200
    disable_user(settings, "alice")
    assert client.get("/dashboard/tasks").status_code == 302  # back to the login form
    other = app.test_client()
    statuses = []
    for _ in range(4):
        csrf = form_csrf(other.get("/dashboard/login").get_data(as_text=True))
        statuses.append(other.post("/dashboard/login", data={"csrf_token": csrf, "token": "fns_" + "B" * 43}).status_code)
    # The refused session above took one: two wrong tokens are refused, then the address waits.
    assert statuses == [401, 401, 429, 429], statuses
    state(app).engine.dispose()


def test_live_streams_count_as_long_polls_and_give_their_place_back(alice, settings):
    app = create_app(dataclasses.replace(settings, max_waits_per_user=1))
    client = app.test_client()
    log_in(client, token_of(alice))
    first = client.get("/dashboard/stream/tasks", buffered=False)
    assert first.status_code == 200
    second = client.get("/dashboard/stream/endpoints", buffered=False)
    assert second.status_code == 429 and second.json["error"]["code"] == "too_many_waits"
    assert second.headers.get("Retry-After")
    first.close()
    third = client.get("/dashboard/stream/endpoints", buffered=False)
    assert third.status_code == 200
    third.close()
    state(app).engine.dispose()

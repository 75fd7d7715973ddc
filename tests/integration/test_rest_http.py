"""REST: authentication, error format, health, and what reaches the logs."""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta

import pytest

from fnserve import serialize
from fnserve._redis_server import free_port
from fnserve.version import PROTOCOL_VERSION, __version__
from rest_support import MAX_BATCH, MAX_PAYLOAD, MAX_REQUEST, assert_error, b64, bearer, register_endpoint, register_function, state
from web_service.app import create_app
from web_service.auth import issue_token, revoke_token
from web_service.registry.models import User

PROTECTED = [("get", "/v1/functions"), ("post", "/v1/functions"), ("get", "/v1/endpoints"), ("post", "/v1/tasks"),
             ("get", "/v1/tasks/x"), ("post", "/v1/tasks/results"), ("post", "/v1/tasks/x/cancel"), ("delete", "/v1/endpoints/x")]


def test_version_and_health_need_no_token(client):
    assert client.get("/v1/version").json == {"version": __version__, "protocol_version": PROTOCOL_VERSION, "api": "v1",
                                             "auth": {"mode": "local"},
                                             "limits": {"max_payload_bytes": MAX_PAYLOAD, "max_request_bytes": MAX_REQUEST,
                                                        "max_batch": MAX_BATCH}}
    health = client.get("/v1/health")
    assert health.status_code == 200 and health.json == {"status": "ok", "redis": True, "database": True}


def test_health_is_503_when_redis_is_down(settings):
    down = create_app(dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    try:
        resp = down.test_client().get("/v1/health")
        assert resp.status_code == 503 and resp.json["redis"] is False and resp.json["database"] is True
    finally:
        state(down).engine.dispose()


def test_requests_while_redis_is_down_get_503_not_500(settings, alice):
    down = create_app(dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    try:
        assert_error(down.test_client().get("/v1/tasks/0b7f1c2e-1d2a-4c3b-9e8f-0123456789ab", headers=alice), 503, "service_unavailable")
    finally:
        state(down).engine.dispose()


def test_every_other_route_needs_a_token(client):
    for method, path in PROTECTED:
        assert_error(getattr(client, method)(path), 401, "missing_token")
        assert_error(getattr(client, method)(path, headers={"Authorization": "Basic abc"}), 401, "missing_token")
        assert_error(getattr(client, method)(path, headers=bearer("fns_not-a-real-token")), 401, "invalid_token")


def test_revoked_and_expired_tokens_are_refused(app, client, alice):
    with state(app).sessions() as session:
        user_id = session.query(User.id).filter_by(username="alice").scalar()
        _, expired = issue_token(session, user_id, expires_in=timedelta(seconds=-1))
        _, revoked = issue_token(session, user_id)
        _, short = issue_token(session, user_id, expires_in=timedelta(hours=1))
        assert revoke_token(session, revoked) and not revoke_token(session, revoked)
    assert_error(client.get("/v1/functions", headers=bearer(expired)), 401, "invalid_token")
    assert_error(client.get("/v1/functions", headers=bearer(revoked)), 401, "invalid_token")
    assert client.get("/v1/functions", headers=bearer(short)).status_code == 200


def test_revocation_is_immediate_without_the_cache(settings, alice):
    uncached = create_app(dataclasses.replace(settings, cache_seconds=0))
    try:
        client = uncached.test_client()
        with state(uncached).sessions() as session:
            user_id = session.query(User.id).filter_by(username="alice").scalar()
            _, token = issue_token(session, user_id)
            assert client.get("/v1/functions", headers=bearer(token)).status_code == 200
            revoke_token(session, token)
        assert_error(client.get("/v1/functions", headers=bearer(token)), 401, "invalid_token")
    finally:
        state(uncached).engine.dispose()


def test_malformed_and_non_object_json_bodies(client, alice):
    for path in ("/v1/functions", "/v1/endpoints", "/v1/tasks", "/v1/tasks/results"):
        assert_error(client.post(path, data=b"{not json", headers=alice), 400, "malformed_json")
        assert_error(client.post(path, data=b"", headers=alice), 400, "malformed_json")
        err = assert_error(client.post(path, json=[1, 2], headers=alice), 400, "invalid_request")
        assert err["details"]["field"] == "(body)"


def test_unknown_route_and_wrong_method_are_json(client, alice):
    assert_error(client.get("/v1/nothing-here", headers=alice), 404, "not_found")
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(client.put("/v1/functions", headers=alice), 405, "method_not_allowed")


def test_huge_request_body_is_a_json_413(client, alice):
    resp = client.post("/v1/tasks", data=b"x" * (MAX_REQUEST + 1), headers={**alice, "Content-Type": "application/json"})
    assert_error(resp, 413, "payload_too_large")


def test_unexpected_errors_are_500_without_details_and_logged(app, client, caplog):
    def broken() -> None:
        raise RuntimeError("internal detail the caller must not see")

    app.add_url_rule("/v1/broken", view_func=broken)
    with caplog.at_level(logging.ERROR, logger="fnserve.web"):
        resp = client.get("/v1/broken")
    assert_error(resp, 500, "internal_error")
    text = resp.get_data(as_text=True)
    assert "internal detail" not in text and "Traceback" not in text and "RuntimeError" not in text
    assert "internal detail the caller must not see" in caplog.text  # the operator sees it


def test_tokens_secrets_and_payloads_never_reach_the_logs(client, alice, caplog):
    caplog.set_level(logging.DEBUG)
    token = alice["Authorization"].split()[1]
    marker = "PAYLOAD-MARKER-7f3a"
    fid = register_function(client, alice)
    ep = register_endpoint(client, alice)
    payload = b64(serialize.serialize_args([marker], strategy="json-data"))
    ids = client.post("/v1/tasks", json={"tasks": [
        {"function_id": fid, "endpoint_id": ep["endpoint_id"], "payload": payload},
        {"function_id": fid, "endpoint_id": ep["endpoint_id"], "args": [marker]},
    ]}, headers=alice).json["task_ids"]
    client.post("/v1/tasks/results", json={"task_ids": ids}, headers=alice)
    client.get("/v1/functions", headers=bearer(token + "x"))  # a refused token
    client.post("/v1/tasks", json={"tasks": [{"function_id": fid, "endpoint_id": ep["endpoint_id"], "payload": b64(marker.encode())}]}, headers=alice)
    assert caplog.records  # the service did log something
    for secret in (token, ep["secret"], marker, payload):
        assert secret not in caplog.text


@pytest.mark.parametrize("path", ["/v1/version", "/v1/health"])
def test_public_routes_ignore_bad_tokens(client, path):
    assert client.get(path, headers=bearer("garbage")).status_code == 200

"""Globus mode against the stand-in for Globus Auth (globus-sdk's testing responses; see
tests/integration/globus_standin.py): token introspection, scope, caching, first-sight users,
headless client credentials, logout. The fnserve service runs for real (Flask, Redis, SQL)."""

from __future__ import annotations

import dataclasses

import pytest
import responses
from globus_sdk.testing import load_response

from fnserve.config import ClientConfig
from fnserve.login import logout
from tests.integration import globus_standin as standin
from tests.integration.rest_support import assert_error, bearer, state
from web_service.app import create_app


@pytest.fixture
def globus_app(settings, redis_client):
    app = create_app(dataclasses.replace(
        settings, auth_mode="globus", globus_client_id=standin.SERVICE_CLIENT_ID, globus_client_secret="s",
        globus_scope=standin.SCOPE, globus_native_client_id=standin.NATIVE_CLIENT_ID))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield app, app.test_client(), mock
    state(app).engine.dispose()


def _introspections(mock) -> int:
    return sum(c.request.url.endswith("/introspect") for c in mock.calls)


def test_active_token_with_the_scope_maps_to_a_user_created_on_first_sight_and_is_cached(globus_app):
    app, client, mock = globus_app
    standin.introspection("tok-1", "ann@uni.example.org", sub="aaaaaaaa-0000-0000-0000-000000000001").add(requests_mock=mock)
    standin.introspection("tok-2", "ann@uni.example.org", sub="aaaaaaaa-0000-0000-0000-000000000001").add(requests_mock=mock)
    me = client.get("/v1/whoami", headers=bearer("tok-1")).json
    assert me["username"] == "ann@uni.example.org" and me["auth_mode"] == "globus"
    assert client.get("/v1/whoami", headers=bearer("tok-1")).json == me
    assert _introspections(mock) == 1  # the second call was answered from the cache
    # Another token of the same Globus identity is the same fnserve user.
    assert client.get("/v1/whoami", headers=bearer("tok-2")).json["user_id"] == me["user_id"]
    # The service's confidential client authenticated the introspection (HTTP basic auth).
    assert mock.calls[0].request.headers["Authorization"].startswith("Basic ")


def test_inactive_expired_and_wrong_scope_tokens_are_refused(globus_app):
    app, client, mock = globus_app
    # globus-sdk's own canned introspection answer: active, but expired in 2024 and without our scope.
    load_response("auth.oauth2_token_introspect", requests_mock=mock)
    assert_error(client.get("/v1/whoami", headers=bearer("canned")), 401, "invalid_token")
    mock.reset()
    standin.introspection("dead", "x@y", active=False).add(requests_mock=mock)
    assert_error(client.get("/v1/functions", headers=bearer("dead")), 401, "invalid_token")
    assert_error(client.get("/v1/functions", headers=bearer("dead")), 401, "invalid_token")
    assert _introspections(mock) == 1  # dead tokens are remembered briefly
    standin.introspection("other-scope", "x@y", scope="openid email").add(requests_mock=mock)
    err = assert_error(client.get("/v1/functions", headers=bearer("other-scope")), 403, "insufficient_scope")
    assert "fnserve login" in err["message"]


def test_globus_auth_failing_is_503_not_the_callers_fault(globus_app):
    app, client, mock = globus_app
    mock.add(responses.POST, "https://auth.globus.org/v2/oauth2/token/introspect", status=500, json={"errors": []})
    assert_error(client.get("/v1/whoami", headers=bearer("t")), 503, "service_unavailable")


def test_same_username_as_a_local_user_gets_a_distinct_account(globus_app, settings):
    from web_service.admin import add_user

    app, client, mock = globus_app
    add_user(settings, "ann@uni.example.org")
    standin.introspection("tok", "ann@uni.example.org", sub="bbbbbbbb-0000-0000-0000-000000000002").add(requests_mock=mock)
    assert client.get("/v1/whoami", headers=bearer("tok")).json["username"] == "ann@uni.example.org#bbbbbbbb"


def test_headless_client_credentials_need_no_login_and_logout_revokes(monkeypatch, tmp_path):
    """The SDK side: FNSERVE_CLIENT_ID/SECRET get a token by client credentials (no prompt);
    `fnserve logout` revokes stored tokens at Globus Auth and forgets them."""
    from fnserve import login as sdk_login

    monkeypatch.setenv("FNSERVE_HOME", str(tmp_path))
    monkeypatch.setenv("FNSERVE_CLIENT_ID", "pipeline-client")
    monkeypatch.setenv("FNSERVE_CLIENT_SECRET", "pipeline-secret")
    cfg = ClientConfig(service_url="http://fnserve.example", auth="globus",
                       globus={"scope": standin.SCOPE, "resource_server": standin.SERVICE_CLIENT_ID, "native_client_id": standin.NATIVE_CLIENT_ID})
    with responses.RequestsMock() as mock:
        standin.token_grant("cc-token", expires_in=3600).add(requests_mock=mock)
        assert sdk_login.globus_access_token(cfg) == "cc-token"
        grant = mock.calls[0].request
        assert "grant_type=client_credentials" in grant.body and grant.headers["Authorization"].startswith("Basic ")
        # Stored: the next call needs no HTTP at all.
        assert sdk_login.globus_access_token(cfg) == "cc-token" and len(mock.calls) == 1
    assert (tmp_path / "globus_tokens.json").stat().st_mode & 0o077 == 0  # owner-only
    cfg.save()
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, "https://auth.globus.org/v2/oauth2/token/revoke", json={"active": False})
        assert logout() is True
        assert any("cc-token" in (c.request.body or "") for c in mock.calls)
    assert ClientConfig.load().token is None and ClientConfig.load().auth == "local"
    monkeypatch.delenv("FNSERVE_CLIENT_ID")
    monkeypatch.delenv("FNSERVE_CLIENT_SECRET")
    with pytest.raises(Exception, match="fnserve login"):
        sdk_login.globus_access_token(cfg)


def test_expired_stored_token_is_refreshed_with_the_refresh_token(monkeypatch, tmp_path):
    from fnserve import login as sdk_login
    from fnserve.globus_tokens import token_storage

    monkeypatch.setenv("FNSERVE_HOME", str(tmp_path))
    cfg = ClientConfig(service_url="http://fnserve.example", auth="globus",
                       globus={"scope": standin.SCOPE, "resource_server": standin.SERVICE_CLIENT_ID, "native_client_id": standin.NATIVE_CLIENT_ID})
    with responses.RequestsMock() as mock:
        standin.token_grant("old", refresh_token="refresh-1", expires_in=10).add(requests_mock=mock)  # about to expire
        standin.token_grant("new", refresh_token="refresh-1").add(requests_mock=mock)
        from globus_sdk import NativeAppAuthClient

        # What `fnserve login` left behind: a token about to expire, with a refresh token.
        token_storage(cfg.service_url).store_token_response(NativeAppAuthClient(standin.NATIVE_CLIENT_ID).oauth2_refresh_token("bootstrap"))
        assert sdk_login.globus_access_token(cfg) == "new"
        assert "refresh_token=refresh-1" in mock.calls[-1].request.body

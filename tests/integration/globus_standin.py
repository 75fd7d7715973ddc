"""The stand-in for Globus Auth's servers, which cannot be reached from here.

Built on globus-sdk's own testing machinery (``globus_sdk.testing.RegisteredResponse``, served
by the ``responses`` package, which intercepts the HTTP calls globus-sdk makes through
``requests``): canned answers of ``/v2/oauth2/token`` (code exchange, client credentials) and
``/v2/oauth2/token/introspect``, shaped like the real ones. Everything else (fnserve's
service, SDK, forwarder, site manager) runs for real; only Globus Auth is canned.
"""

from __future__ import annotations

import time
import uuid

from globus_sdk.testing import RegisteredResponse
from responses import matchers

# What an fnserve deployment registers with Globus Auth: its resource server (the service's
# client id) and the scope SDK tokens must carry.
SERVICE_CLIENT_ID = "11111111-2222-3333-4444-555555555555"
SCOPE = f"https://auth.globus.org/scopes/{SERVICE_CLIENT_ID}/all"
NATIVE_CLIENT_ID = "66666666-7777-8888-9999-000000000000"


def token_grant(access_token: str, *, scope: str = SCOPE, refresh_token: str | None = None, expires_in: int = 172800) -> RegisteredResponse:
    """An answer of ``POST /v2/oauth2/token`` (code exchange, refresh or client credentials)."""
    return RegisteredResponse(service="auth", path="/v2/oauth2/token", method="POST", json={
        "access_token": access_token, "scope": scope, "expires_in": expires_in, "token_type": "Bearer",
        "resource_server": SERVICE_CLIENT_ID, "refresh_token": refresh_token, "state": "_default", "other_tokens": [],
    })


def introspection(access_token: str, username: str, *, sub: str | None = None, scope: str = SCOPE, active: bool = True,
                  exp: float | None = None) -> RegisteredResponse:
    """An answer of ``POST /v2/oauth2/token/introspect`` for exactly ``access_token``."""
    now = int(time.time())
    body = {"active": active}
    if active:
        body.update({
            "token_type": "Bearer", "scope": scope, "client_id": NATIVE_CLIENT_ID, "username": username,
            "name": username.split("@")[0].title(), "email": username, "sub": sub or str(uuid.uuid5(uuid.NAMESPACE_DNS, username)),
            "exp": int(exp if exp is not None else now + 3600), "iat": now, "nbf": now,
            "aud": [SERVICE_CLIENT_ID], "iss": "https://auth.globus.org",
        })
    return RegisteredResponse(service="auth", path="/v2/oauth2/token/introspect", method="POST", json=body,
                              match=[matchers.urlencoded_params_matcher({"token": access_token})])

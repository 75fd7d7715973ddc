"""Globus tokens for the SDK: where globus-sdk keeps them, a valid access token for a service
(refreshed, or fresh from client credentials in headless mode), and the token source a
:class:`~fnserve.client.Client` renews its token from. ``fnserve.login`` (the login and
logout steps) and the client both use this module; neither imports the other for it.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from fnserve.config import ClientConfig, home
from fnserve.errors import Unauthorized
from fnserve.transport import Transport

CLIENT_ID_ENV = "FNSERVE_CLIENT_ID"
CLIENT_SECRET_ENV = "FNSERVE_CLIENT_SECRET"
# Refresh a little before expiry so a request in flight does not carry a dying token.
_EXPIRY_MARGIN = 60


def tokens_path() -> Any:
    return home() / "globus_tokens.json"


def token_storage(service_url: str, path: Any = None) -> Any:
    from globus_sdk.token_storage import JSONTokenStorage

    path = path or tokens_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # globus-sdk writes the file with an owner-only umask (tokens are secrets).
    return JSONTokenStorage(path, namespace=service_url.rstrip("/"))


def service_auth(service_url: str) -> dict[str, Any]:
    """How ``service_url`` authenticates: ``{"mode": "local"}`` or Globus details."""
    return dict(Transport(service_url, None).get("/v1/version").get("auth") or {"mode": "local"})


def headless_credentials() -> tuple[str, str] | None:
    cid, secret = os.environ.get(CLIENT_ID_ENV), os.environ.get(CLIENT_SECRET_ENV)
    return (cid, secret) if cid and secret else None


def our_token(response: Any, scope: str) -> Any:
    """The token data in a globus-sdk token response that carries ``scope``."""
    for data in response.by_resource_server.values():
        if scope in str(data.get("scope", "")).split():
            return data
    raise Unauthorized(f"Globus Auth did not grant the fnserve scope {scope}", code="login_failed")


def globus_access_token(cfg: ClientConfig, path: Any = None) -> str:
    """A valid access token for ``cfg``'s service: stored in ``path`` (default
    :func:`tokens_path`; refreshed if needed), or fresh from client credentials in headless mode."""
    import globus_sdk

    g = cfg.globus or {}
    scope, rs = g.get("scope", ""), g.get("resource_server", "")
    storage = token_storage(cfg.service_url, path)
    data = storage.get_token_data(rs) if rs else None
    if data is not None and data.expires_at_seconds > time.time() + _EXPIRY_MARGIN:
        return str(data.access_token)
    creds = headless_credentials()
    response: Any
    if creds is not None:
        response = globus_sdk.ConfidentialAppAuthClient(*creds).oauth2_client_credentials_tokens(requested_scopes=scope)
    elif data is not None and data.refresh_token:
        response = globus_sdk.NativeAppAuthClient(g.get("native_client_id") or "").oauth2_refresh_token(data.refresh_token)
    else:
        raise Unauthorized("not logged in (or the login expired): run `fnserve login`", code="not_logged_in")
    storage.store_token_response(response)
    return str(our_token(response, scope)["access_token"])


def headless() -> bool:
    """Whether ``FNSERVE_CLIENT_ID`` / ``FNSERVE_CLIENT_SECRET`` name a confidential client."""
    return headless_credentials() is not None


def token_source(cfg: ClientConfig, service_url: str) -> Callable[[], str]:
    """What a client calls for a valid Globus access token for ``service_url``."""
    path = tokens_path()  # fixed now: the token store of the home this client was made in

    def token() -> str:
        current = cfg
        if not current.globus:  # headless with no login: ask the service which scope it needs
            auth = service_auth(service_url)
            current = ClientConfig(service_url=service_url, auth="globus", globus={
                "scope": auth.get("scope", ""), "native_client_id": auth.get("native_client_id", "")})
        else:
            current = ClientConfig(service_url=service_url, auth="globus", globus=cfg.globus)
        return globus_access_token(current, path)

    return token

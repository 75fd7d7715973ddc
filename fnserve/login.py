"""Logging in to an fnserve service: local tokens, or Globus Auth through globus-sdk.

What the service expects comes from its ``GET /v1/version`` (``auth.mode``, and for Globus the
scope and the native-app client id), so ``fnserve login`` needs only the service URL.

Globus mode, three ways to get a token:

- interactive (``fnserve login``): globus-sdk's native-app flow prints a URL, the user logs in
  and pastes the code back (``input()``: works in a terminal and in Jupyter);
- headless (pipelines, CI): ``FNSERVE_CLIENT_ID`` / ``FNSERVE_CLIENT_SECRET`` name a Globus
  confidential client; the SDK gets tokens with client credentials whenever it needs one,
  without any login step;
- tokens are kept with globus-sdk's token storage (``JSONTokenStorage``,
  ``$FNSERVE_HOME/globus_tokens.json``, 0600), refreshed with the refresh token when expired.
"""

from __future__ import annotations

from typing import Any

from fnserve.client import Client
from fnserve.config import ClientConfig
from fnserve.errors import Unauthorized
# What the login steps share with the client (globus_access_token, service_auth and tokens_path
# stay importable from here too).
from fnserve.globus_tokens import globus_access_token, headless_credentials, our_token, service_auth, token_storage, tokens_path

__all__ = ["globus_access_token", "login", "login_globus", "logout", "service_auth", "tokens_path"]


def login_globus(service_url: str, auth: dict[str, Any], login_flow_manager: Any = None) -> dict[str, Any]:
    """Get a Globus token for the service and keep it; returns the ``globus`` part of the
    client config. Uses client credentials when ``FNSERVE_CLIENT_ID/SECRET`` are set, else the
    native-app flow (prints a URL, reads the code)."""
    import globus_sdk
    from globus_sdk.gare import GlobusAuthorizationParameters
    from globus_sdk.login_flows import CommandLineLoginFlowManager

    scope = auth.get("scope") or ""
    if not scope:
        raise Unauthorized("the service does not say which Globus scope it needs; ask its operator", code="login_failed")
    creds = headless_credentials()
    response: Any
    if creds is not None:
        response = globus_sdk.ConfidentialAppAuthClient(*creds).oauth2_client_credentials_tokens(requested_scopes=scope)
    else:
        native = globus_sdk.NativeAppAuthClient(auth.get("native_client_id") or "")
        manager = login_flow_manager or CommandLineLoginFlowManager(native, request_refresh_tokens=True,
                                                                   native_prefill_named_grant="fnserve")
        response = manager.run_login_flow(GlobusAuthorizationParameters(required_scopes=[scope]))
    data = our_token(response, scope)
    storage = token_storage(service_url)
    storage.store_token_response(response)
    return {"scope": scope, "resource_server": data["resource_server"], "native_client_id": auth.get("native_client_id", "")}


def login(service_url: str | None = None, token: str | None = None, login_flow_manager: Any = None) -> ClientConfig:
    """Log in to ``service_url`` (default: the configured one) and save the client config.

    Local mode needs ``token`` (from the operator's ``fnserve service user add``)."""
    cfg = ClientConfig.load()
    url = (service_url or cfg.service_url).rstrip("/")
    auth = service_auth(url)
    if auth.get("mode") == "globus":
        new = ClientConfig(service_url=url, token=None, auth="globus", globus=login_globus(url, auth, login_flow_manager))
    else:
        if not token:
            raise Unauthorized("this service uses local tokens: pass the token your operator gave you", code="token_required")
        new = ClientConfig(service_url=url, token=token, auth="local")
    Client(url, new.token, config=new).whoami()  # refuses a bad token before it is saved
    new.save()
    return new


def logout() -> bool:
    """Forget the saved token(s); Globus tokens are also revoked at Globus Auth (best effort).
    Returns whether there was anything to forget."""
    cfg = ClientConfig.load()
    had = bool(cfg.token or cfg.auth == "globus")
    if cfg.auth == "globus" and cfg.globus:
        import globus_sdk

        storage = token_storage(cfg.service_url)
        data = storage.get_token_data(cfg.globus.get("resource_server", ""))
        if data is not None:
            native = globus_sdk.NativeAppAuthClient(cfg.globus.get("native_client_id") or "")
            for t in (data.access_token, data.refresh_token):
                if t:
                    try:
                        native.oauth2_revoke_token(t)
                    except globus_sdk.GlobusError:
                        pass  # forgetting it locally is what matters
            storage.remove_token_data(data.resource_server)
    ClientConfig(service_url=cfg.service_url).save()
    return had

"""Logging in and out of the dashboard.

Local mode: a form takes a token (``fnserve`` tokens, as the CLI and SDK use) and checks it with
the service's own authenticator; the token itself is not kept, only the session. Globus mode:
the OAuth2 authorization-code flow with the service's confidential client (the same client that
introspects SDK tokens): ``/dashboard/login/globus`` sends the browser to Globus Auth, which
sends it back to ``/dashboard/login/globus/callback`` with a code; the code is exchanged for a
token of the fnserve scope, which the authenticator introspects like any other.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import globus_sdk
import sqlalchemy as sa
from flask import Response, g, make_response, redirect, render_template, request, url_for

from fnserve.errors import BadRequest, FnserveError, Forbidden
from web_service.auth import hash_secret
from web_service.dashboard.blueprint import (
    bp, clear_session_cookie, dashboard_state, safe_next, secure_request, set_session_cookie, utc_seconds,
)
from web_service.dashboard.sessions import (
    COOKIE, CSRF_FIELD, LOGIN_COOKIE, OAUTH_COOKIE, cookie_options, new_secret, tokens_match,
)
from web_service.registry.models import Token
from web_service.routes._http import check_address
from web_service.state import current

log = logging.getLogger("fnserve.web.dashboard")

OAUTH_SECONDS = 600  # a Globus login must come back within this


def _login_form(error: str | None = None, status: int = 200) -> Response:
    csrf = request.cookies.get(LOGIN_COOKIE) or new_secret()
    page = render_template("dashboard/login.html", login_csrf=csrf, error=error, next=request.args.get("next", ""))
    resp = make_response(page, status)
    resp.set_cookie(LOGIN_COOKIE, csrf, **cookie_options(secure_request(), max_age=3600))
    return resp


@bp.get("/login")
def login() -> Response:
    if dashboard_state().sessions.load(request.cookies.get(COOKIE), time.time()) is not None:
        return redirect(safe_next(request.args.get("next")))  # type: ignore[return-value]
    return _login_form()


@bp.post("/login")
def login_submit() -> Response:
    state = current()
    # Login CSRF: the form's token must match the cookie set with the form (double submit).
    if not tokens_match(request.cookies.get(LOGIN_COOKIE), request.form.get(CSRF_FIELD)):
        raise Forbidden("the login form is stale; reload it and try again", code="csrf_failed")
    if state.settings.auth_mode != "local":
        raise BadRequest("this service uses Globus login: use the 'Log in with Globus' button", code="use_globus_login")
    token = (request.form.get("token") or "").strip()
    try:
        if not token:
            raise BadRequest("paste a token to log in", code="missing_token")
        check_address(cost=0)  # an address that spent its refusals gets 429 before any SQL
        identity = state.authenticator.authenticate(token)
    except FnserveError as exc:
        if exc.http_status in (400, 401):
            check_address()  # a refused login takes from the address's bucket, as a bad bearer token does
        return _login_form(exc.message, exc.http_status)
    with state.sessions() as db:
        row = db.execute(sa.select(Token.id, Token.expires_at).where(Token.token_hash == hash_secret(token))).one()
    expires = utc_seconds(row.expires_at) if row.expires_at is not None else None
    session = dashboard_state().sessions.create(identity, time.time(), expires, token_id=row.id)
    log.info("dashboard login of user %s", identity.user_id)
    resp = redirect(safe_next(request.form.get("next")))
    set_session_cookie(resp, session)  # type: ignore[arg-type]
    resp.delete_cookie(LOGIN_COOKIE, path=cookie_options(False)["path"])
    return resp  # type: ignore[return-value]


@bp.post("/logout")
def logout() -> Response:
    dashboard_state().sessions.destroy(g.dashboard_session.sid)
    resp = redirect(url_for("dashboard.login"))
    clear_session_cookie(resp)  # type: ignore[arg-type]
    return resp  # type: ignore[return-value]


# -- Globus ----------------------------------------------------------------------------------------


def _globus_client(state: str = "_default") -> globus_sdk.ConfidentialAppAuthClient:
    settings = current().settings
    if settings.auth_mode != "globus":
        raise BadRequest("this service uses local tokens: paste one into the login form", code="use_token_login")
    # A client per login: the flow it starts is state held on the client object.
    client = globus_sdk.ConfidentialAppAuthClient(settings.globus_client_id, settings.globus_client_secret)
    client.oauth2_start_flow(url_for("dashboard.globus_callback", _external=True), settings.globus_scope, state=state)
    return client


@bp.get("/login/globus")
def globus_login() -> Response:
    state = new_secret()
    resp = redirect(_globus_client(state).oauth2_get_authorize_url())
    # Lax, not Strict: this cookie must come back on the redirect from Globus Auth (cross-site).
    resp.set_cookie(OAUTH_COOKIE, state, **cookie_options(secure_request(), max_age=OAUTH_SECONDS, same_site="Lax"))
    return resp  # type: ignore[return-value]


@bp.get("/login/globus/callback")
def globus_callback() -> Any:
    settings = current().settings
    if request.args.get("error"):
        return _login_form(f"Globus login did not complete: {request.args.get('error_description') or request.args['error']}", 401)
    if not tokens_match(request.cookies.get(OAUTH_COOKIE), request.args.get("state")):
        raise Forbidden("this Globus login was not started here, or took too long; log in again", code="csrf_failed")
    code = request.args.get("code", "")
    if not code:
        raise BadRequest("Globus Auth sent no code; log in again", code="missing_code")
    client = _globus_client()
    try:
        tokens = client.oauth2_exchange_code_for_tokens(code)
    except globus_sdk.GlobusAPIError as exc:
        log.warning("globus code exchange failed: HTTP %s", exc.http_status)
        return _login_form("Globus Auth refused the login; try again", 401)
    data = tokens.by_resource_server.get(settings.globus_client_id)
    if not data:
        return _login_form("Globus Auth did not grant the fnserve scope; try again and allow it", 403)
    try:
        identity = current().authenticator.authenticate(data["access_token"])
    except FnserveError as exc:
        return _login_form(exc.message, exc.http_status)
    session = dashboard_state().sessions.create(identity, time.time(), float(data.get("expires_at_seconds") or 0) or None)
    log.info("dashboard Globus login of user %s", identity.user_id)
    # An HTML hop instead of a redirect: after a cross-site redirect chain the browser would not
    # send the SameSite=Strict cookie on the next request; a navigation from our own page does.
    resp = make_response(render_template("dashboard/logged_in.html", target=url_for("dashboard.endpoints")))
    set_session_cookie(resp, session)
    resp.delete_cookie(OAUTH_COOKIE, path=cookie_options(False)["path"])
    return resp

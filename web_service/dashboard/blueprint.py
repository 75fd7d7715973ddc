"""The dashboard's blueprint and what every one of its requests goes through.

- the session cookie is read and checked (the token it came from still valid, the user still
  there; cached for ``cache_seconds`` like the REST authenticator), then the per-user rate limit;
- a request that changes something must carry the session's CSRF token;
- every answer carries a Content-Security-Policy without inline scripts or styles, and is not
  cached or framed;
- errors become HTML pages (401: back to the login form), never a traceback.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import redis
import sqlalchemy as sa
from flask import Blueprint, Response, current_app, g, make_response, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse  # (what redirect() returns)

from fnserve.errors import FnserveError, Forbidden, Unauthorized
from web_service.auth import Identity
from web_service.dashboard.sessions import (
    COOKIE, CSRF_FIELD, CSRF_HEADER, DashboardSession, SessionStore, cookie_options, needs_csrf, tokens_match,
)
from web_service.registry.models import Token, User
from web_service.routes._http import check_address
from web_service.state import ServiceState, current
from web_service.ttl_cache import TTLCache

log = logging.getLogger("fnserve.web.dashboard")

EXTENSION = "fnserve.dashboard"

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates",
               static_folder="static", static_url_path="/static")

# No inline script or style anywhere: scripts and styles come from /dashboard/static only.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_PUBLIC = frozenset({"dashboard.login", "dashboard.login_submit", "dashboard.globus_login",
                     "dashboard.globus_callback", "dashboard.static"})


@dataclass(frozen=True)
class SessionCheck:
    valid: bool
    operator: bool


@dataclass
class DashboardState:
    sessions: SessionStore
    checks: TTLCache[tuple[str, str], SessionCheck]


def dashboard_state() -> DashboardState:
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]


def init_state(app: Any, state: ServiceState) -> None:
    app.extensions[EXTENSION] = DashboardState(SessionStore(state.store.r), TTLCache(state.settings.cache_seconds))


def who() -> Identity:
    """The logged-in user of this request."""
    return g.identity  # type: ignore[no-any-return]


def is_operator() -> bool:
    return bool(getattr(g, "operator", False))


def require_operator() -> None:
    if not is_operator():
        raise Forbidden("this page is for operators (python -m web_service.admin set-operator NAME)", code="operator_only")


def secure_request() -> bool:
    """Served over https (directly, or by a proxy that says so)."""
    return request.is_secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def _check_session(state: ServiceState, session: DashboardSession) -> SessionCheck:
    """The user still exists and is not disabled (nor deleted), and a local login's token is
    neither revoked nor expired: what the REST authenticator checks of a bearer token."""
    key = (session.user_id, session.token_id or "")
    hit = dashboard_state().checks.get(key)
    if hit is not None:
        return hit
    with state.sessions() as db:
        user = db.execute(sa.select(User.is_operator, User.disabled_at).where(User.id == session.user_id)).first()
        operator = user is not None and bool(user.is_operator)
        valid = user is not None and user.disabled_at is None
        if valid and session.token_id:
            row = db.execute(sa.select(Token.revoked_at, Token.expires_at).where(Token.id == session.token_id)).first()
            valid = row is not None and row.revoked_at is None and (
                row.expires_at is None or utc_seconds(row.expires_at) > time.time())
    check = SessionCheck(valid, operator)
    dashboard_state().checks.put(key, check)
    return check


def utc_seconds(ts: datetime) -> float:
    """Unix seconds of a registry time (SQLite hands back naive datetimes, all in UTC)."""
    return (ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)).timestamp()


def _wants_html() -> bool:
    return request.method == "GET" and not request.path.startswith(("/dashboard/api/", "/dashboard/stream/"))


@bp.before_request
def authenticate() -> BaseResponse | None:
    if request.endpoint in _PUBLIC:
        return None
    state = current()
    session = dashboard_state().sessions.load(request.cookies.get(COOKIE), time.time())
    check = _check_session(state, session) if session is not None else None
    if session is None or check is None or not check.valid:
        # A refused request takes from the caller's address bucket, as a bad bearer token does.
        check_address()
        if session is not None:
            dashboard_state().sessions.destroy(session.sid)
        if _wants_html():
            return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))
        raise Unauthorized("log in to the dashboard first", code="login_required")
    g.dashboard_session = session
    g.identity = session.identity
    g.operator = check.operator
    state.limiter.check(session.user_id)
    if needs_csrf(request.method):
        given = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)
        if not tokens_match(session.csrf, given):
            raise Forbidden("this form is stale or did not come from the dashboard; reload the page and try again",
                            code="csrf_failed")
    return None


@bp.after_request
def security_headers(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "dashboard.static":
        resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.app_context_processor
def template_globals() -> dict[str, Any]:
    session = getattr(g, "dashboard_session", None)
    return {
        "me": getattr(g, "identity", None),
        "operator": is_operator(),
        "csrf_token": session.csrf if session is not None else "",
        "csrf_field": CSRF_FIELD,
        "auth_mode": current().settings.auth_mode,
    }


def set_session_cookie(resp: Response, session: DashboardSession) -> None:
    resp.set_cookie(COOKIE, session.sid, **cookie_options(secure_request(), max_age=int(session.expires_at - time.time())))


def clear_session_cookie(resp: Response) -> None:
    resp.delete_cookie(COOKIE, path=cookie_options(False)["path"])


def error_page(status: int, code: str, message: str) -> tuple[str, int]:
    return render_template("dashboard/error.html", status=status, code=code, message=message), status


@bp.errorhandler(FnserveError)
def fnserve_error(exc: FnserveError) -> Any:
    if exc.http_status == 401 and _wants_html():
        return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))
    body, status = ({"error": exc.to_dict()}, exc.http_status) if not _wants_html() else error_page(exc.http_status, exc.code, exc.message)
    resp = make_response(body, status)
    if status in (429, 503) and "retry_after" in exc.details:
        resp.headers["Retry-After"] = str(exc.details["retry_after"])
    return resp


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Any:
    status = exc.code or 500
    return error_page(status, (exc.name or "error").lower().replace(" ", "_"), exc.description or exc.name or "error")


@bp.errorhandler(Exception)
def unexpected(exc: Exception) -> Any:
    # The traceback stays in the server log; the page says only that something went wrong.
    log.exception("unexpected error in %s %s", request.method, request.path)
    return error_page(500, "internal_error", "internal error; the operator can find details in the service log")


@bp.errorhandler(redis.ConnectionError)
@bp.errorhandler(redis.TimeoutError)
def redis_down(exc: Exception) -> Any:
    log.error("redis unavailable during %s %s: %s", request.method, request.path, type(exc).__name__)
    return error_page(503, "service_unavailable", "the task store (Redis) is unavailable; retry shortly")


def safe_next(target: str | None) -> str:
    """Where to go after login: a dashboard path only (never another site)."""
    return target if target is not None and is_local_path(target) else url_for("dashboard.endpoints")


def is_local_path(target: str | None) -> bool:
    """A path under /dashboard/ of this site: no scheme, host, backslash or control character
    that a browser could read as another site."""
    if not target or not target.startswith("/dashboard/"):
        return False
    return not any(c in target for c in "\\\r\n\t") and "//" not in target and "/.." not in target


__all__ = ["CSP", "DashboardState", "bp", "dashboard_state", "error_page", "init_state", "is_operator", "who"]

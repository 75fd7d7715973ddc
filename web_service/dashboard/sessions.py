"""Dashboard sessions: a random id in an HttpOnly cookie, the session itself in Redis.

Why server-side: a session can be ended (logout, the token behind it revoked) and any web
replica can read it, with no signing key to share between replicas. The cookie carries only a
random id; Redis keeps its sha256 digest, so a Redis dump holds no usable session id.

Keys::

    dash:session:{sha256(id)}   hash: user_id, username, csrf, token_id (local logins),
                                expires_at (absolute end: the token's expiry, at most
                                MAX_SESSION_SECONDS); the key's TTL is the idle timeout

The token a user logged in with is never stored, never put in a URL, and never sent back to
the browser. Forms and requests that change something carry the session's CSRF token (a
hidden field or an ``X-CSRF-Token`` header); the cookie is SameSite=Strict as well.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

from web_service.auth import Identity
from web_service.task_store import P
from web_service.redis_replies import text_map

COOKIE = "fns_dashboard"
# A login form's own CSRF token (double submit), before there is a session.
LOGIN_COOKIE = "fns_dashboard_login"
# The Globus login's OAuth2 state, sent back by the browser on the redirect from Globus Auth.
OAUTH_COOKIE = "fns_dashboard_oauth"
COOKIE_PATH = "/dashboard"
IDLE_SECONDS = 8 * 3600
MAX_SESSION_SECONDS = 7 * 86400
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class DashboardSession:
    sid: str
    user_id: str
    username: str
    csrf: str
    expires_at: float
    token_id: str | None = None

    @property
    def identity(self) -> Identity:
        return Identity(user_id=self.user_id, username=self.username)


# -- decisions (pure) -------------------------------------------------------------------------


def session_end(now: float, token_expires_at: float | None) -> float:
    """When a session made now ends: with its token, and at most a week from now."""
    cap = now + MAX_SESSION_SECONDS
    return cap if token_expires_at is None else min(cap, token_expires_at)


def idle_ttl(now: float, expires_at: float) -> int:
    """Seconds to keep a session after a request: the idle timeout, never past its end."""
    return max(0, min(IDLE_SECONDS, int(expires_at - now)))


def tokens_match(expected: str | None, given: str | None) -> bool:
    """A CSRF check in constant time; a missing token on either side never matches."""
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


def needs_csrf(method: str) -> bool:
    return method.upper() not in SAFE_METHODS


def cookie_options(secure: bool, max_age: int | None = None, same_site: str = "Strict") -> dict[str, Any]:
    """``Response.set_cookie`` options: never readable by scripts, never sent cross-site
    (Strict), Secure whenever the dashboard is served over https."""
    return {"httponly": True, "samesite": same_site, "secure": secure, "path": COOKIE_PATH, "max_age": max_age}


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def session_key(sid: str) -> str:
    return f"{P}dash:session:{_digest(sid)}"


def new_secret() -> str:
    return secrets.token_urlsafe(32)


# -- storage -----------------------------------------------------------------------------------


class SessionStore:
    """Dashboard sessions in Redis (see the module docstring)."""

    def __init__(self, r: redis.Redis):
        self.r = r

    def create(self, who: Identity, now: float, token_expires_at: float | None, token_id: str | None = None) -> DashboardSession:
        session = DashboardSession(
            sid=new_secret(), user_id=who.user_id, username=who.username, csrf=new_secret(),
            expires_at=session_end(now, token_expires_at), token_id=token_id,
        )
        key = session_key(session.sid)
        fields: dict[FieldT, EncodableT] = {"user_id": session.user_id, "username": session.username, "csrf": session.csrf,
                  "expires_at": repr(session.expires_at), "token_id": session.token_id or ""}
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, max(1, idle_ttl(now, session.expires_at)))
        pipe.execute()
        return session

    def load(self, sid: str | None, now: float) -> DashboardSession | None:
        """The live session behind cookie value ``sid`` (its idle timeout restarts), or None."""
        if not sid or len(sid) > 128:
            return None
        key = session_key(sid)
        raw = text_map(self.r.hgetall(key))
        if not raw or "user_id" not in raw:
            return None
        expires_at = float(raw.get("expires_at") or 0)
        ttl = idle_ttl(now, expires_at)
        if ttl <= 0:
            self.r.delete(key)
            return None
        self.r.expire(key, ttl)
        return DashboardSession(sid=sid, user_id=raw["user_id"], username=raw["username"], csrf=raw["csrf"],
                                expires_at=expires_at, token_id=raw.get("token_id") or None)

    def destroy(self, sid: str) -> None:
        self.r.delete(session_key(sid))


__all__ = [
    "COOKIE", "COOKIE_PATH", "CSRF_FIELD", "CSRF_HEADER", "DashboardSession", "LOGIN_COOKIE", "OAUTH_COOKIE",
    "SessionStore", "cookie_options", "idle_ttl", "needs_csrf", "new_secret", "session_end", "tokens_match",
]

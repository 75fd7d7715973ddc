"""Who is calling: bearer tokens to identities.

The service talks to an :class:`Authenticator`; :class:`LocalTokenAuthenticator` is the built-in
one for self-hosting and the embedded default, :class:`GlobusAuthenticator` introspects Globus
Auth tokens with the service's confidential client.

Local tokens look like ``fns_<43 url-safe characters>`` and are stored only as their sha256 hex
digest, so a database dump does not reveal usable tokens.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from fnserve.errors import Conflict, Forbidden, ServiceUnavailable, Unauthorized
from web_service.registry.db import rows_changed
from web_service.registry.models import Token, User, utcnow
from web_service.ttl_cache import TTLCache

TOKEN_PREFIX = "fns_"


@dataclass(frozen=True)
class Identity:
    """An authenticated caller."""

    user_id: str
    username: str


class Authenticator(Protocol):
    def authenticate(self, bearer_token: str) -> Identity:
        """The identity behind ``bearer_token``; raises :class:`Unauthorized` (``invalid_token``)."""
        ...

    def cached(self, bearer_token: str) -> Identity | None:
        """The identity if this process verified the token recently (no I/O), else None."""
        ...


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """sha256 hex digest: how tokens and endpoint secrets are stored."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def invalid_token() -> Unauthorized:
    return Unauthorized("the token is unknown, expired or revoked", code="invalid_token")


def user_disabled() -> Forbidden:
    return Forbidden("this account is disabled by the service's operator; ask them to enable it", code="user_disabled")


# Unknown, revoked and expired tokens never become valid again: remembered this long so that a
# client (or an attacker) retrying one costs no SQL query. A disabled account is remembered only
# for the token cache time, so enabling it takes effect as fast as disabling.
NEGATIVE_CACHE_SECONDS = 60.0


class ActiveUsers:
    """Whether a user may act (not disabled or deleted), cached for ``cache_seconds``."""

    def __init__(self, sessions: sessionmaker[Session], cache_seconds: float):
        self.sessions = sessions
        self._cache: TTLCache[str, bool] = TTLCache(cache_seconds)

    def check(self, user_id: str) -> None:
        active = self._cache.get(user_id)
        if active is None:
            with self.sessions() as session:
                row = session.execute(sa.select(User.disabled_at).where(User.id == user_id)).first()
            active = row is not None and row.disabled_at is None
            self._cache.put(user_id, active)
        if not active:
            raise user_disabled()


def _aware(ts: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything is stored in UTC.
    return ts.replace(tzinfo=timezone.utc) if ts is not None and ts.tzinfo is None else ts


class LocalTokenAuthenticator:
    """Checks tokens against the registry's ``tokens`` table.

    A verified token is remembered in-process for ``cache_seconds`` (never past its expiry) to
    keep the hot path to zero SQL queries. Consequence: a revoked token, or a disabled user's
    token, keeps working for up to ``cache_seconds`` in processes that verified it just before.
    Unknown, revoked and expired tokens are remembered for :data:`NEGATIVE_CACHE_SECONDS` (a
    disabled user's for ``cache_seconds``), so retrying one costs no SQL query.
    """

    def __init__(self, sessions: sessionmaker[Session], cache_seconds: float = 5.0):
        self.sessions = sessions
        self._cache: TTLCache[str, Identity] = TTLCache(cache_seconds)
        self._dead: TTLCache[str, str] = TTLCache(max(cache_seconds, NEGATIVE_CACHE_SECONDS) if cache_seconds > 0 else 0)
        self._cache_seconds = cache_seconds

    def cached(self, bearer_token: str) -> Identity | None:
        return self._cache.get(hash_secret(bearer_token))

    def authenticate(self, bearer_token: str) -> Identity:
        digest = hash_secret(bearer_token)
        hit = self._cache.get(digest)
        if hit is not None:
            return hit
        dead = self._dead.get(digest)
        if dead is not None:
            raise user_disabled() if dead == "disabled" else invalid_token()
        with self.sessions() as session:
            row = session.execute(
                sa.select(Token.expires_at, Token.revoked_at, User.id, User.username, User.disabled_at)
                .join(User, User.id == Token.user_id)
                .where(Token.token_hash == digest)
            ).first()
        expires_at = _aware(row.expires_at) if row is not None else None
        now = utcnow()
        if row is None or row.revoked_at is not None or (expires_at is not None and expires_at <= now):
            self._dead.put(digest, "invalid")
            raise invalid_token()
        if row.disabled_at is not None:
            self._dead.put(digest, "disabled", self._cache_seconds)
            raise user_disabled()
        identity = Identity(user_id=row.id, username=row.username)
        ttl = None if expires_at is None else (expires_at - now).total_seconds()
        self._cache.put(digest, identity, ttl)
        return identity


class GlobusAuthenticator:
    """Globus Auth bearer tokens, checked by introspection (``POST /v2/oauth2/token/introspect``
    through globus-sdk's ``ConfidentialAppAuthClient``).

    A token must be active and carry ``required_scope``. The Globus identity (``sub``) maps to
    a registry user, created on first sight and named after the identity's username. A positive
    answer is cached in-process until the token expires (``exp``), capped by
    ``max_cache_seconds`` when set; so a token revoked at Globus keeps working in this process
    until then. Inactive tokens are remembered for ``negative_cache_seconds`` so that a client
    retrying a dead token does not cost an introspection per request.
    """

    def __init__(self, sessions: sessionmaker[Session], client_id: str, client_secret: str, required_scope: str,
                 *, max_cache_seconds: float | None = None, negative_cache_seconds: float = 30.0, auth_client: object = None,
                 cache_seconds: float = 5.0):
        if not (client_id and client_secret and required_scope):
            raise ValueError("globus mode needs FNSERVE_GLOBUS_CLIENT_ID, FNSERVE_GLOBUS_CLIENT_SECRET and FNSERVE_GLOBUS_SCOPE")
        import globus_sdk

        self.sessions = sessions
        self.required_scope = required_scope
        # One quick retry at most: a request thread waits on this, and the caller can retry a 503.
        from globus_sdk.transport import RetryConfig

        retry = RetryConfig(max_retries=1, max_sleep=0.5)
        self.client = auth_client or globus_sdk.ConfidentialAppAuthClient(client_id, client_secret, retry_config=retry)
        self._cache: TTLCache[str, Identity] = TTLCache(max_cache_seconds or 366 * 86400)
        self._dead: TTLCache[str, bool] = TTLCache(negative_cache_seconds)
        # Introspections are cached until the token expires; whether the account is disabled
        # is checked apart, so an operator's disable applies within ``cache_seconds``.
        self.active = ActiveUsers(sessions, cache_seconds)

    def cached(self, bearer_token: str) -> Identity | None:
        hit = self._cache.get(hash_secret(bearer_token))
        if hit is not None:
            self.active.check(hit.user_id)
        return hit

    def authenticate(self, bearer_token: str) -> Identity:
        import globus_sdk

        digest = hash_secret(bearer_token)
        hit = self._cache.get(digest)
        if hit is not None:
            self.active.check(hit.user_id)
            return hit
        if self._dead.get(digest):
            raise invalid_token()
        try:
            info = self.client.oauth2_token_introspect(bearer_token)  # type: ignore[attr-defined]
        except globus_sdk.GlobusAPIError as exc:
            # Our own client's credentials are wrong, or Globus Auth is failing: not the caller's fault.
            raise ServiceUnavailable(f"cannot verify the token with Globus Auth (HTTP {exc.http_status}); retry later or tell the operator") from None
        except globus_sdk.NetworkError:
            raise ServiceUnavailable("cannot reach Globus Auth to verify the token; retry later") from None
        now = utcnow().timestamp()
        exp = float(info.get("exp") or 0)
        if not info.get("active") or not info.get("sub") or (exp and exp <= now):
            self._dead.put(digest, True)
            raise invalid_token()
        if self.required_scope not in str(info.get("scope", "")).split():
            raise Forbidden(
                f"the token does not carry the fnserve scope ({self.required_scope}); log in again with `fnserve login`",
                code="insufficient_scope",
            )
        identity = self._user_for(str(info["sub"]), str(info.get("username") or info["sub"]))
        self.active.check(identity.user_id)
        self._cache.put(digest, identity, (exp - now) if exp else None)
        return identity

    def _user_for(self, sub: str, username: str) -> Identity:
        """The registry user of Globus identity ``sub``, created on first sight."""
        import sqlalchemy.exc

        for _ in range(2):  # a concurrent first sight in another worker wins the insert
            with self.sessions() as session:
                row = session.execute(sa.select(User.id, User.username).where(User.globus_sub == sub)).first()
                if row is not None:
                    return Identity(user_id=row.id, username=row.username)
                taken = session.scalar(sa.select(User.id).where(User.username == username)) is not None
                user = User(username=f"{username}#{sub[:8]}" if taken else username, globus_sub=sub)
                session.add(user)
                try:
                    session.commit()
                    return Identity(user_id=user.id, username=user.username)
                except sqlalchemy.exc.IntegrityError:
                    session.rollback()
        raise ServiceUnavailable("could not record the Globus identity; retry")


# -- administration ----------------------------------------------------------------------------


def create_user(session: Session, username: str) -> tuple[User, str]:
    """Create a user and a first token for them; returns ``(user, token)``. Commits."""
    if not username or len(username) > 255:
        raise ValueError("username must be 1 to 255 characters")
    if session.scalar(sa.select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} already exists", code="user_exists")
    user = User(username=username)
    session.add(user)
    session.flush()
    _, token = issue_token(session, user.id, label="initial")
    return user, token


def issue_token(session: Session, user_id: str, label: str | None = None, expires_in: timedelta | None = None) -> tuple[Token, str]:
    """A new token for ``user_id``; returns ``(row, token)``. The token is not stored. Commits."""
    token = new_token()
    row = Token(
        user_id=user_id, token_hash=hash_secret(token), label=label,
        expires_at=utcnow() + expires_in if expires_in is not None else None,
    )
    session.add(row)
    session.commit()
    return row, token


def revoke_token(session: Session, token: str) -> bool:
    """Revoke ``token`` (the token text, or a token id from ``list_tokens``); False if it is
    unknown or already revoked. Commits.

    Processes that verified it in the last ``cache_seconds`` may still accept it that long.
    """
    which = Token.id == token if len(token) == 36 and not token.startswith(TOKEN_PREFIX) else Token.token_hash == hash_secret(token)
    changed = rows_changed(session, sa.update(Token).where(which, Token.revoked_at.is_(None)).values(revoked_at=utcnow()))
    session.commit()
    return bool(changed)


def list_tokens(session: Session, user_id: str) -> list[Token]:
    """A user's tokens (ids, labels, dates; never the tokens themselves)."""
    return list(session.scalars(sa.select(Token).where(Token.user_id == user_id).order_by(Token.created_at)))

"""Who is calling: bearer tokens to identities.

The service talks to an :class:`Authenticator`; :class:`LocalTokenAuthenticator` is the built-in
one for self-hosting and the embedded default. A Globus Auth authenticator (token introspection)
can implement the same protocol later.

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

from fnserve.errors import Conflict, Unauthorized
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


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """sha256 hex digest: how tokens and endpoint secrets are stored."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def invalid_token() -> Unauthorized:
    return Unauthorized("the token is unknown, expired or revoked", code="invalid_token")


def _aware(ts: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything is stored in UTC.
    return ts.replace(tzinfo=timezone.utc) if ts is not None and ts.tzinfo is None else ts


class LocalTokenAuthenticator:
    """Checks tokens against the registry's ``tokens`` table.

    A verified token is remembered in-process for ``cache_seconds`` (never past its expiry) to
    keep the hot path to zero SQL queries. Consequence: a revoked token keeps working for up to
    ``cache_seconds`` in processes that verified it just before. Unknown tokens are not cached.
    """

    def __init__(self, sessions: sessionmaker[Session], cache_seconds: float = 5.0):
        self.sessions = sessions
        self._cache: TTLCache[str, Identity] = TTLCache(cache_seconds)

    def authenticate(self, bearer_token: str) -> Identity:
        digest = hash_secret(bearer_token)
        hit = self._cache.get(digest)
        if hit is not None:
            return hit
        with self.sessions() as session:
            row = session.execute(
                sa.select(Token.expires_at, Token.revoked_at, User.id, User.username)
                .join(User, User.id == Token.user_id)
                .where(Token.token_hash == digest)
            ).first()
        if row is None or row.revoked_at is not None:
            raise invalid_token()
        expires_at = _aware(row.expires_at)
        now = utcnow()
        if expires_at is not None and expires_at <= now:
            raise invalid_token()
        identity = Identity(user_id=row.id, username=row.username)
        ttl = None if expires_at is None else (expires_at - now).total_seconds()
        self._cache.put(digest, identity, ttl)
        return identity


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
    """Revoke ``token`` (the token text); False if it is unknown or already revoked. Commits.

    Processes that verified it in the last ``cache_seconds`` may still accept it that long.
    """
    result = session.execute(
        sa.update(Token)
        .where(Token.token_hash == hash_secret(token), Token.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    session.commit()
    return bool(result.rowcount)

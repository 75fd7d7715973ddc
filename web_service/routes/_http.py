"""HTTP plumbing shared by the route modules: auth hook, JSON in and out, timestamps."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, TypeVar

import msgspec
import redis
from flask import Response, current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from fnserve.errors import Unauthorized
from web_service.auth import Identity
from web_service.rest_bodies.decoding import decode
from web_service.state import current
from web_service.validation import parse_json_object

_encoder = msgspec.json.Encoder()
T = TypeVar("T")


def require_identity() -> None:
    """``before_request`` hook of every protected blueprint: sets ``g.identity``.

    A token this process verified recently costs no I/O. Any other token is looked up only
    while the caller's address has refused requests left in its bucket (one Redis call, before
    any SQL query or token introspection); each refusal (no token, a bad one) takes one. So a
    flood of bad tokens from one address is answered 429 without touching the database, while
    the many users behind one login node's address, whose tokens are good, are never counted.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    state = current()
    if scheme.lower() != "bearer" or not token:
        check_address()
        raise Unauthorized("send 'Authorization: Bearer <token>'", code="missing_token")
    ident = state.authenticator.cached(token)
    if ident is None:
        check_address(cost=0)
        try:
            ident = state.authenticator.authenticate(token)
        except Unauthorized:
            check_address()
            raise
    g.identity = ident
    state.limiter.check(ident.user_id)


def check_address(cost: int = 1) -> None:
    """The per-client-address rate limit of unauthenticated requests (429 ``rate_limited``)."""
    try:
        current().address_limiter.check(request.remote_addr or "-", cost)
    except redis.RedisError:
        pass  # open when Redis is down: health must still say so, and the routes answer 503


def identity() -> Identity:
    return g.identity  # type: ignore[no-any-return]


def json_body() -> dict[str, Any]:
    raw = request.get_data(cache=False)
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    # A chunked body (no Content-Length) is read up to the limit and silently cut there by
    # Werkzeug; one byte more on the wire means it was larger: refuse it rather than use a cut.
    if limit is not None and len(raw) >= limit and request.content_length is None and request.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()
    return parse_json_object(raw)


def body_as(type_: type[T]) -> T:
    """The request body decoded into its Struct (400 naming the field otherwise)."""
    return decode(json_body(), type_)


def respond(body: Any, status: int = 200) -> Response:
    # msgspec: several times faster than json.dumps for the large task lists of batch calls.
    return Response(_encoder.encode(body), status=status, mimetype="application/json")


def iso(ts: datetime) -> str:
    # SQLite returns naive datetimes; everything is stored in UTC.
    return (ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)).isoformat()

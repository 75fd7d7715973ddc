"""``GET /v1/whoami`` and ``GET /v1/usage?since=&until=``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from flask import Blueprint, Response, request

from web_service.registry.models import Endpoint, User
from web_service.rest_bodies.responses import ObjectUsage, Usage, WhoAmI
from web_service.routes._http import identity, require_identity, respond
from web_service.state import current
from web_service.usage import endpoint_totals, user_totals
from web_service.validation import invalid

bp = Blueprint("identity", __name__)
bp.before_request(require_identity)

DEFAULT_USAGE_DAYS = 30


@bp.get("/whoami")
def whoami() -> Response:
    who = identity()
    return respond(WhoAmI(user_id=who.user_id, username=who.username, auth_mode=current().settings.auth_mode))


def _object_usage(user_id: str) -> ObjectUsage:
    objects = current().objects
    if objects is None:
        return ObjectUsage(bytes=0, quota_bytes=0)
    objects.sweep(user_id)
    return ObjectUsage(bytes=objects.used(user_id), quota_bytes=objects.quota_bytes)


def _time_arg(name: str, default: datetime) -> datetime:
    """ISO 8601 (naive means UTC) or unix seconds."""
    text = request.args.get(name)
    if not text:
        return default
    bad = invalid(name, "must be an ISO 8601 time (2025-01-31T00:00:00Z) or unix seconds")
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is not None:
        try:  # inf, nan and years past 9999 are not times
            return datetime.fromtimestamp(seconds, timezone.utc)
        except (ValueError, OverflowError, OSError):
            raise bad from None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise bad from None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


@bp.get("/usage")
def usage() -> Response:
    """The caller's totals over ``[since, until)`` (default: the last 30 days), and for each
    endpoint they own, its totals with a per-user breakdown."""
    now = datetime.now(timezone.utc)
    until = _time_arg("until", now)
    since = _time_arg("since", until - timedelta(days=DEFAULT_USAGE_DAYS))
    if since >= until:
        raise invalid("since", "must be before until")
    who = identity()
    with current().sessions() as session:
        mine = user_totals(session, who.user_id, since, until)
        eps = session.execute(
            sa.select(Endpoint.id, Endpoint.name).where(Endpoint.owner_id == who.user_id, Endpoint.deleted_at.is_(None))
            .order_by(Endpoint.created_at)
        ).all()
        per_ep = endpoint_totals(session, [e.id for e in eps], since, until)
        user_ids = {u for v in per_ep.values() for u in v["by_user"]}
        names = {row[0]: row[1] for row in session.execute(sa.select(User.id, User.username).where(User.id.in_(user_ids)))} if user_ids else {}
    return respond(Usage(
        since=since.isoformat(), until=until.isoformat(),
        user={"user_id": who.user_id, "username": who.username, **mine},
        # Bytes held in the object store now (not over the window): counted against the quota.
        objects=_object_usage(who.user_id),
        endpoints=[
            {"endpoint_id": e.id, "name": e.name, **per_ep[e.id]["totals"],
             "by_user": {names.get(u, u): t for u, t in per_ep[e.id]["by_user"].items()}}
            for e in eps
        ],
    ))

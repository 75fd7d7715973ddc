"""Registering, listing and deleting endpoints, and checking their secrets (for the forwarder)."""

from __future__ import annotations

import hmac
import logging
import secrets

import sqlalchemy as sa
from sqlalchemy.orm import Session

from fnserve.errors import NotFound
from web_service.auth import Identity, hash_secret
from web_service.registry.models import Endpoint, utcnow
from web_service.services import OwnershipCache
from web_service.services.functions import forbidden
from web_service.task_store import P, TaskStore, inflight_key, queue_key

log = logging.getLogger("fnserve.web.endpoints")

SECRET_PREFIX = "fnse_"
# Set when an endpoint is deleted, checked at submit in the same Redis round trip as function
# bodies: closes the window in which another process still trusts a cached ownership entry.
# Only needs to outlive that cache (seconds).
TOMBSTONE_TTL = 3600


def tombstone_key(endpoint_id: str) -> str:
    return f"{P}ep:{endpoint_id}:deleted"


def register_endpoint(session: Session, owner: Identity, name: str, description: str = "") -> tuple[Endpoint, str]:
    """Create an endpoint; returns ``(endpoint, secret)``. The secret is shown only this once."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    ep = Endpoint(owner_id=owner.user_id, name=name, description=description, secret_hash=hash_secret(secret))
    session.add(ep)
    session.commit()
    log.info("endpoint %s registered by user %s", ep.id, owner.user_id)
    return ep, secret


def list_endpoints(session: Session, owner: Identity) -> list[Endpoint]:
    return list(session.scalars(
        sa.select(Endpoint)
        .where(Endpoint.owner_id == owner.user_id, Endpoint.deleted_at.is_(None))
        .order_by(Endpoint.created_at, Endpoint.id)
    ))


def get_endpoint(session: Session, owner: Identity, endpoint_id: str) -> Endpoint:
    """The live endpoint ``endpoint_id`` if ``owner`` may use it (404 / 403 otherwise)."""
    ep = session.scalar(sa.select(Endpoint).where(Endpoint.id == endpoint_id, Endpoint.deleted_at.is_(None)))
    if ep is None:
        raise endpoint_not_found(endpoint_id)
    if ep.owner_id != owner.user_id:
        raise forbidden("endpoint", endpoint_id)
    return ep


def delete_endpoint(session: Session, store: TaskStore, owner: Identity, endpoint_id: str, cache: OwnershipCache | None = None) -> int:
    """Soft-delete an endpoint and cancel its unfinished tasks (nothing would ever run them).

    Returns how many tasks were cancelled.
    """
    ep = get_endpoint(session, owner, endpoint_id)
    ep.deleted_at = utcnow()
    session.commit()
    store.r.set(tombstone_key(endpoint_id), 1, ex=TOMBSTONE_TTL)
    if cache is not None:
        cache.forget(("endpoint", endpoint_id))
    cancelled = _cancel_unfinished(store, endpoint_id)
    log.info("endpoint %s deleted by user %s; %d unfinished tasks cancelled", endpoint_id, owner.user_id, cancelled)
    return cancelled


def _cancel_unfinished(store: TaskStore, endpoint_id: str) -> int:
    ids = [i.decode() for i in store.r.lrange(queue_key(endpoint_id), 0, -1)]
    ids += [i.decode() for i in store.r.smembers(inflight_key(endpoint_id))]
    if not ids:
        return 0
    cancelled = 0
    for task_id, owner in store.owners(ids).items():
        # cancel() returns the state before; finished tasks are left as they are.
        if owner is not None and store.cancel(task_id, owner) not in (None, "success", "failed", "cancelled"):
            cancelled += 1
    return cancelled


def verify_endpoint_secret(session: Session, endpoint_id: str, secret: str) -> bool:
    """Whether ``secret`` is the secret of the live endpoint ``endpoint_id`` (for the forwarder).

    Compares sha256 digests in constant time; unknown and deleted endpoints compare against a
    dummy digest so the answer takes the same time.
    """
    stored = session.scalar(sa.select(Endpoint.secret_hash).where(Endpoint.id == endpoint_id, Endpoint.deleted_at.is_(None)))
    ok = hmac.compare_digest(hash_secret(secret), stored or "0" * 64)
    return ok and stored is not None


def endpoint_not_found(endpoint_id: str, **details: object) -> NotFound:
    return NotFound(f"no endpoint {endpoint_id!r}", code="endpoint_not_found", details={"endpoint_id": endpoint_id, **details})

"""Registering, listing and deleting endpoints, and checking their secrets (for the forwarder)."""

from __future__ import annotations

import hmac
import logging
import secrets

import sqlalchemy as sa
from sqlalchemy.orm import Session

from fnserve.errors import NotFound
from fnserve.states import TaskState
from fnserve.messages import RemoteError
from web_service.auth import Identity, hash_secret
from web_service.curve_keys import new_keypair
from web_service.registry.models import Endpoint, utcnow
from web_service.services import OwnershipCache
from web_service.services.access import require_owner, require_use
from web_service.services.ended_tasks import log_cancelled
from web_service.services.functions import shared_with
from web_service.task_store import TaskStore

log = logging.getLogger("fnserve.web.endpoints")

SECRET_PREFIX = "fnse_"
# Set when an endpoint is deleted (web_service.store.keys.tombstone_key), checked at submit in
# the same Redis round trip as function bodies: closes the window in which another process
# still trusts a cached ownership entry. Only needs to outlive that cache (seconds).
TOMBSTONE_TTL = 3600


def register_endpoint(session: Session, owner: Identity, name: str, description: str = "") -> tuple[Endpoint, str, str]:
    """Create an endpoint with its secret and CurveZMQ keypair; returns
    ``(endpoint, secret, curve_secret_key)``. Both secrets are shown only this once: the
    registry keeps the secret's hash and the public key."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    public_key, secret_key = new_keypair()
    ep = Endpoint(owner_id=owner.user_id, name=name, description=description, secret_hash=hash_secret(secret),
                  curve_public_key=public_key)
    session.add(ep)
    session.commit()
    log.info("endpoint %s registered by user %s", ep.id, owner.user_id)
    return ep, secret, secret_key


def endpoint_for_key(session: Session, public_key: str) -> str | None:
    """The live endpoint whose CurveZMQ public key is ``public_key`` (for the forwarder's ZAP
    handler); deleted endpoints have none, so their site managers cannot connect."""
    return session.scalar(sa.select(Endpoint.id).where(Endpoint.curve_public_key == public_key, Endpoint.deleted_at.is_(None)))


def list_endpoints(session: Session, owner: Identity, shared: bool = False) -> list[Endpoint]:
    """The caller's live endpoints; with ``shared``, also those shared with them."""
    return list(session.scalars(
        sa.select(Endpoint)
        .where(shared_with(Endpoint, "endpoint", owner) if shared else Endpoint.owner_id == owner.user_id, Endpoint.deleted_at.is_(None))
        .order_by(Endpoint.created_at, Endpoint.id)
    ))


def get_endpoint(session: Session, owner: Identity, endpoint_id: str) -> Endpoint:
    """The live endpoint ``endpoint_id`` if the caller owns it or it is shared with them."""
    require_use(session, owner, "endpoint", endpoint_id)
    ep = session.get(Endpoint, endpoint_id)
    assert ep is not None
    return ep


def delete_endpoint(session: Session, store: TaskStore, owner: Identity, endpoint_id: str, cache: OwnershipCache | None = None) -> int:
    """Soft-delete an endpoint (owner only) and fail its unfinished tasks at once with code
    ``endpoint_deleted`` (nothing would ever run them). Returns how many tasks were ended. Its
    CurveZMQ key stops working at once: the forwarder checks the registry on every connection.
    """
    ep = require_owner(session, owner, "endpoint", endpoint_id)
    ep.deleted_at = utcnow()
    session.commit()
    store.mark_endpoint_deleted(endpoint_id, TOMBSTONE_TTL)
    # Its live connection is cut now (the ZAP handler refuses its key for new ones).
    store.revoke_endpoint(endpoint_id)
    if cache is not None:
        cache.forget(("endpoint", endpoint_id))
    ended = _fail_unfinished(store, endpoint_id)
    log.info("endpoint %s deleted by user %s; %d unfinished tasks failed (endpoint_deleted)", endpoint_id,
             owner.user_id, ended)
    return ended


def deleted_error(endpoint_id: str) -> RemoteError:
    """The error an unfinished task of a deleted endpoint ends with."""
    return RemoteError(code="endpoint_deleted", type="EndpointDeleted",
                       message=f"endpoint {endpoint_id} was deleted before this task finished; submit it to another endpoint")


def _fail_unfinished(store: TaskStore, endpoint_id: str) -> int:
    ids = store.unfinished_ids(endpoint_id)
    if not ids:
        return 0
    ended = 0
    error = deleted_error(endpoint_id)
    for task_id, owner in store.owners(ids).items():
        rec = store.get(task_id) if owner is not None else None
        # end_unfinished() returns the state before; finished tasks are left as they are.
        if rec is not None and store.end_unfinished(task_id, rec.owner, TaskState.FAILED, error) not in (
                None, "success", "failed", "cancelled"):
            log_cancelled(store, rec, state="failed")
            ended += 1
    return ended


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

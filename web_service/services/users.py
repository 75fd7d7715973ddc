"""Operator actions on users: disable, enable, delete (``fnserve service user ...``).

- **disable**: the user's requests are refused with 403 ``user_disabled`` within the token
  cache time (``FNSERVE_CACHE_SECONDS``, 5 s) in every web worker. Nothing else changes: their
  tasks run on, their functions and endpoints stay shared, and ``enable`` undoes it.
- **delete**: disable, then revoke every token; soft-delete the user's functions, endpoints
  and runtimes (an endpoint's queued and running tasks are cancelled and its key refused, as
  ``DELETE /v1/endpoints/{id}`` does); cancel the user's unfinished tasks queued on other
  users' endpoints; remove the groups they own, their group memberships and the grants made to
  them. The row stays (disabled, ``deleted_at`` set, name freed as ``<name>#deleted-<id>``), so
  usage history keeps naming it; finished results expire with their TTL and nobody can read
  them (the owner's tokens are revoked). A Globus identity of a deleted user stays refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from fnserve.errors import NotFound
from web_service.auth import Identity
from web_service.registry.db import rows_changed
from web_service.registry.models import Endpoint, Function, Grant, Group, GroupMember, Runtime, Token, User, utcnow
from web_service.services.ended_tasks import log_cancelled
from web_service.task_store import TaskStore

log = logging.getLogger("fnserve.admin")


@dataclass
class DeletedUser:
    """What deleting a user did."""

    username: str
    tokens_revoked: int = 0
    functions: int = 0
    endpoints: int = 0
    runtimes: int = 0
    groups: int = 0
    tasks_cancelled: int = 0


def find_user(session: Session, username: str) -> User:
    user = session.scalar(sa.select(User).where(User.username == username, User.deleted_at.is_(None)))
    if user is None:
        raise NotFound(f"no user {username!r}", code="user_not_found")
    return user


def set_disabled(session: Session, username: str, disabled: bool) -> User:
    """Disable or enable ``username``. Commits."""
    user = find_user(session, username)
    user.disabled_at = utcnow() if disabled else None
    session.commit()
    log.info("user %s %s by the operator", user.id, "disabled" if disabled else "enabled")
    return user


def delete_user(session: Session, store: TaskStore, username: str) -> DeletedUser:
    """Delete ``username`` as the module docstring says. Commits."""
    from web_service.services.endpoints import delete_endpoint
    from web_service.services.functions import delete_function

    user = find_user(session, username)
    user.disabled_at = user.disabled_at or utcnow()
    session.commit()  # refused from here on (within the cache time), whatever follows
    out = DeletedUser(username)
    owner = Identity(user_id=user.id, username=user.username)
    out.tokens_revoked = rows_changed(session, sa.update(Token).where(Token.user_id == user.id, Token.revoked_at.is_(None))
                                      .values(revoked_at=utcnow()))
    for endpoint_id in session.scalars(sa.select(Endpoint.id).where(Endpoint.owner_id == user.id, Endpoint.deleted_at.is_(None))).all():
        out.tasks_cancelled += delete_endpoint(session, store, owner, endpoint_id)
        out.endpoints += 1
    for function_id in session.scalars(sa.select(Function.id).where(Function.owner_id == user.id, Function.deleted_at.is_(None))).all():
        delete_function(session, store, owner, function_id)
        out.functions += 1
    out.runtimes = rows_changed(session, sa.update(Runtime).where(Runtime.owner_id == user.id, Runtime.deleted_at.is_(None))
                                .values(deleted_at=utcnow()))
    owned_groups = session.scalars(sa.select(Group.id).where(Group.owner_id == user.id)).all()
    out.groups = len(owned_groups)
    if owned_groups:
        session.execute(sa.delete(Grant).where(Grant.grantee_type == "group", Grant.grantee_id.in_(owned_groups)))
        session.execute(sa.delete(GroupMember).where(GroupMember.group_id.in_(owned_groups)))
        session.execute(sa.delete(Group).where(Group.id.in_(owned_groups)))
    session.execute(sa.delete(GroupMember).where(GroupMember.user_id == user.id))
    session.execute(sa.delete(Grant).where(Grant.grantee_type == "user", Grant.grantee_id == user.id))
    user.deleted_at = utcnow()
    user.username = f"{username}#deleted-{user.id[:8]}"
    session.commit()
    out.tasks_cancelled += cancel_tasks_of(session, store, user.id)
    log.info("user %s deleted by the operator: %s", user.id, out)
    return out


def cancel_tasks_of(session: Session, store: TaskStore, user_id: str) -> int:
    """Cancel ``user_id``'s unfinished tasks on every live endpoint (queued or in flight)."""
    cancelled = 0
    for endpoint_id in session.scalars(sa.select(Endpoint.id).where(Endpoint.deleted_at.is_(None))).all():
        ids = store.unfinished_ids(endpoint_id)
        mine = [tid for tid, owner in store.owners(ids).items() if owner == user_id] if ids else []
        for rec in store.get_many(mine).values():
            if rec is not None and store.cancel(rec.task_id, user_id) not in (None, "success", "failed", "cancelled"):
                log_cancelled(store, rec)
                cancelled += 1
    return cancelled


__all__ = ["DeletedUser", "cancel_tasks_of", "delete_user", "find_user", "set_disabled"]

"""Registering, listing and deleting functions."""

from __future__ import annotations

import hashlib
import logging

import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

from fnserve import serialize, shell
from fnserve.errors import Forbidden, NotFound, SerializationError  # noqa: F401 (re-exported)
from web_service.auth import Identity
from web_service.registry.models import Function, utcnow
from web_service.services import OwnershipCache
from web_service.services.access import require_owner, require_use, visible_to
from web_service.task_store import TaskStore

log = logging.getLogger("fnserve.web.functions")


def register_function(session: Session, store: TaskStore, owner: Identity, name: str, buf: bytes, description: str = "",
                      runtime_id: str | None = None) -> Function:
    """Store a function buffer (a code strategy: ``dill-code`` or ``source``) and cache it.

    Only the buffer's header is read: the service never loads user code.
    """
    header = serialize.parse_header(buf)
    if header.strategy == serialize.SHELL:
        shell_spec(buf)  # its body is data: checked here, a bad template is a 400 now, not a failed task
    if not header.is_code:
        raise SerializationError(
            f"a function must be serialized with a code strategy ({', '.join(serialize.CODE_STRATEGIES)}), "
            f"not {header.strategy!r}",
            code="wrong_strategy", details={"field": "function", "strategy": header.strategy},
        )
    fn = Function(
        owner_id=owner.user_id, name=name, description=description, strategy=header.strategy,
        python=header.python, body=buf, body_sha256=hashlib.sha256(buf).hexdigest(), runtime_id=runtime_id,
    )
    session.add(fn)
    session.commit()
    try:
        store.cache_function(fn.id, buf)
    except redis.RedisError as exc:
        # The function is registered (SQL is the record); submit re-caches missing bodies.
        log.warning("function %s registered but not cached in Redis (%s)", fn.id, type(exc).__name__)
    log.info("function %s registered by user %s (%s, %d bytes)", fn.id, owner.user_id, fn.strategy, len(buf))
    return fn


def shell_spec(buf: bytes) -> shell.ShellSpec:
    """The checked spec of a ``shell`` function buffer (JSON data: reading it runs nothing)."""
    header = serialize.parse_header(buf)
    try:
        return shell.load_spec(buf[header.length:])
    except SerializationError as exc:
        raise shell.ShellTemplateError(exc.message, details={"field": "function"}) from None


def list_functions(session: Session, owner: Identity, shared: bool = False) -> list[Function]:
    """The caller's live functions; with ``shared``, also those shared with them (directly,
    through a group, or public)."""
    return list(session.scalars(
        sa.select(Function)
        .where(shared_with(Function, "function", owner) if shared else Function.owner_id == owner.user_id, Function.deleted_at.is_(None))
        .order_by(Function.created_at, Function.id)
        .options(sa.orm.defer(Function.body))
    ))


def shared_with(model: type, kind: str, who: Identity) -> sa.ColumnElement[bool]:
    """SQL condition: ``who`` owns the row or it is shared with them (for list queries)."""
    return visible_to(model, kind, who.user_id)


def get_function(session: Session, owner: Identity, function_id: str) -> Function:
    """The live function ``function_id`` if the caller owns it or it is shared with them."""
    require_use(session, owner, "function", function_id)
    fn = session.scalar(sa.select(Function).where(Function.id == function_id).options(sa.orm.defer(Function.body)))
    assert fn is not None
    return fn


def delete_function(session: Session, store: TaskStore, owner: Identity, function_id: str, cache: OwnershipCache | None = None) -> None:
    """Soft-delete (owner only): the function can no longer be used; tasks already queued still find it gone."""
    fn = require_owner(session, owner, "function", function_id)
    fn.deleted_at = utcnow()
    session.commit()
    # Other processes may still trust a cached ownership entry, but submit re-checks SQL for
    # any function whose body is missing from Redis, so dropping it closes that window.
    store.drop_function(function_id)
    if cache is not None:
        cache.forget(("function", function_id))
    log.info("function %s deleted by user %s", function_id, owner.user_id)


def function_not_found(function_id: str, **details: object) -> NotFound:
    return NotFound(f"no function {function_id!r}", code="function_not_found", details={"function_id": function_id, **details})


def forbidden(kind: str, ident: str, **details: object) -> Forbidden:
    from web_service.services.access import forbidden as _forbidden

    return _forbidden(kind, ident, **details)

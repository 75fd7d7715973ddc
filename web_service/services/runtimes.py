"""Registering, listing and deleting runtimes, and resolving the runtime a task runs in.

A runtime is named by its id or, for convenience, its name (the caller's own runtimes first,
then those shared with them). What travels to the endpoint is the runtime's *name*: the site
admin configures runtimes under those names (``runtimes:`` in the endpoint config) and the
endpoint reports them (``EndpointStatus.runtimes``), so a task for a runtime an endpoint does
not run is refused at submit instead of waiting forever.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any, get_args

import sqlalchemy as sa
from sqlalchemy.orm import Session

from fnserve.errors import Conflict, NotFound
from web_service.auth import Identity
from web_service.registry.models import Function, Runtime, utcnow
from web_service.rest_bodies.requests import RuntimeRegistration, RuntimeType
from web_service.services.access import AccessCache, access_for, may_use, require_owner
from web_service.task_store import TaskStore
from web_service.ttl_cache import TTLCache
from web_service.validation import invalid

log = logging.getLogger("fnserve.web.runtimes")

RUNTIME_TYPES: tuple[str, ...] = get_args(RuntimeType)
# The runtime a task without one runs in: the endpoint's own engine (see site_manager.runtime_pool).
DEFAULT_RUNTIME = "host"

# A function's default runtime never changes after registration, so this cache needs no expiry
# beyond bounding its size; it spares the submit path a SQL query per batch.
_function_runtime: TTLCache[str, tuple[str | None]] = TTLCache(3600.0)
# (user, id-or-name) -> runtime id: names may be reused after a delete, so entries follow the
# access cache's lifetime; liveness and permission are re-checked through that cache anyway.
_resolved: TTLCache[tuple[str, str], RuntimeRef] = TTLCache(30.0)


@dataclass(frozen=True)
class RuntimeRef:
    """A live runtime a caller may use."""

    runtime_id: str
    name: str


# -- registry ----------------------------------------------------------------------------------------


def parse_runtime(body: RuntimeRegistration) -> dict[str, str]:
    """The checks of a ``POST /v1/runtimes`` body its Struct cannot state; returns name, type,
    image, description."""
    if any(c.isspace() for c in body.name):  # the Struct's pattern lets a trailing newline through
        raise invalid("name", "must not contain spaces (it names the runtime in endpoint configs)")
    if body.type != "host" and not body.image:
        what = "the interpreter's path (e.g. /opt/env/bin/python)" if body.type == "venv" else "the image location"
        raise invalid("image", f"is required for a {body.type} runtime: {what}")
    return {"name": body.name, "type": body.type, "image": body.image or "", "description": body.description or ""}


def register_runtime(session: Session, owner: Identity, name: str, type: str, image: str = "", description: str = "") -> Runtime:
    """Add a runtime owned by ``owner``; a live one of the same name is a 409."""
    clash = session.scalar(sa.select(Runtime.id).where(
        Runtime.owner_id == owner.user_id, Runtime.name == name, Runtime.deleted_at.is_(None)))
    if clash is not None:
        raise Conflict(f"you already have a runtime named {name!r} ({clash})", code="runtime_exists",
                       details={"name": name, "runtime_id": clash})
    rt = Runtime(owner_id=owner.user_id, name=name, type=type, image=image, description=description)
    session.add(rt)
    session.commit()
    log.info("runtime %s (%s, %s) registered by user %s", rt.id, name, type, owner.user_id)
    return rt


def list_runtimes(session: Session, owner: Identity, shared: bool = False) -> list[Runtime]:
    """The caller's live runtimes; with ``shared``, also those shared with them."""
    from web_service.services.functions import shared_with

    cond = shared_with(Runtime, "runtime", owner) if shared else Runtime.owner_id == owner.user_id
    return list(session.scalars(
        sa.select(Runtime).where(cond, Runtime.deleted_at.is_(None)).order_by(Runtime.created_at, Runtime.id)))


def get_runtime(session: Session, owner: Identity, ident: str, cache: AccessCache | None = None) -> Runtime:
    """A live runtime (by id or name) the caller may use."""
    ref = resolve_runtime(session, owner, ident, cache)
    rt = session.get(Runtime, ref.runtime_id)
    assert rt is not None
    return rt


def delete_runtime(session: Session, owner: Identity, ident: str, cache: AccessCache | None = None) -> None:
    """Soft-delete (owner only). Functions registered with it fail at submit until re-registered."""
    ref = resolve_runtime(session, owner, ident, cache)
    rt = require_owner(session, owner, "runtime", ref.runtime_id)
    rt.deleted_at = utcnow()
    session.commit()
    if cache is not None:
        cache.forget(("runtime", rt.id))
    _resolved.clear()
    log.info("runtime %s deleted by user %s", rt.id, owner.user_id)


def runtime_not_found(ident: str, **details: object) -> NotFound:
    return NotFound(f"no runtime {ident!r} (register it with `fnserve runtime register`, or check the name)",
                    code="runtime_not_found", details={"runtime": ident, **details})


# -- resolution (submit path) ------------------------------------------------------------------------


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def resolve_runtime(session: Session, who: Identity, ident: str, cache: AccessCache | None = None, **details: object) -> RuntimeRef:
    """The live runtime ``ident`` (an id, or a name) that ``who`` may use: 404 / 403 otherwise."""
    ref = _resolved.get((who.user_id, ident))
    if ref is None:
        row = _row_by_id(session, ident) if _is_uuid(ident) else _row_by_name(session, who, ident)
        if row is None:
            raise runtime_not_found(ident, **details)
        ref = RuntimeRef(str(row[0]), str(row[1]))
    # Liveness and permission through the (shared, TTL) access cache: no query when warm.
    acc = access_for(session, [("runtime", ref.runtime_id)], cache).get(("runtime", ref.runtime_id))
    if acc is None:
        _resolved.forget((who.user_id, ident))
        raise runtime_not_found(ident, **details)
    if not may_use(session, who, acc, cache):
        from web_service.services.access import forbidden

        raise forbidden("runtime", ident, **details)
    _resolved.put((who.user_id, ident), ref, _ttl(cache))
    return ref


def _row_by_id(session: Session, runtime_id: str) -> Any:
    return session.execute(sa.select(Runtime.id, Runtime.name).where(Runtime.id == runtime_id, Runtime.deleted_at.is_(None))).first()


def _ttl(cache: AccessCache | None) -> float:
    return cache.resources.ttl if cache is not None else 0.0


def _row_by_name(session: Session, who: Identity, name: str) -> Any:
    """(id, name) of the caller's own runtime of that name, else of the oldest one shared with them."""
    from web_service.services.functions import shared_with

    rows = session.execute(
        sa.select(Runtime.id, Runtime.owner_id).where(
            Runtime.name == name, Runtime.deleted_at.is_(None), shared_with(Runtime, "runtime", who))
        .order_by(Runtime.created_at, Runtime.id)
    ).all()
    for rid, owner_id in rows:
        if owner_id == who.user_id:
            return (rid, name)
    return (rows[0][0], name) if rows else None


def function_runtimes(session: Session, function_ids: list[str]) -> dict[str, str | None]:
    """Each function's default runtime id (None: the endpoint's default runtime)."""
    out: dict[str, str | None] = {}
    missing = []
    for fid in function_ids:
        hit = _function_runtime.get(fid)
        if hit is None:
            missing.append(fid)
        else:
            out[fid] = hit[0]
    if missing:
        for fid, rid in session.execute(sa.select(Function.id, Function.runtime_id).where(Function.id.in_(missing))):
            out[fid] = rid
            _function_runtime.put(fid, (rid,))
    return out


def check_endpoint_runs(store: TaskStore, endpoint_id: str, runtime: str, **details: object) -> None:
    """Refuse a runtime the endpoint's last status report does not list (``runtime_not_supported``).

    An endpoint that has not reported yet (or runs a site manager too old to list runtimes) is
    given the benefit of the doubt: its site manager fails such a task with the same code.
    """
    runtimes = store.endpoint_runtimes(endpoint_id)
    if runtimes and runtime not in runtimes:
        raise Conflict(
            f"endpoint {endpoint_id!r} does not run runtime {runtime!r}; it runs: {', '.join(sorted(runtimes))}. "
            "Ask its admin to add the runtime to the endpoint's `runtimes:` config, or pick another endpoint",
            code="runtime_not_supported",
            details={"endpoint_id": endpoint_id, "runtime": runtime, "supported": sorted(runtimes), **details},
        )


__all__ = [
    "DEFAULT_RUNTIME",
    "RUNTIME_TYPES",
    "RuntimeRef",
    "check_endpoint_runs",
    "delete_runtime",
    "function_runtimes",
    "get_runtime",
    "list_runtimes",
    "parse_runtime",
    "register_runtime",
    "resolve_runtime",
    "runtime_not_found",
]


def task_runtimes(session: Session, store: TaskStore, who: Identity, tasks: list[tuple[str, str, str | None]],
                  cache: AccessCache | None = None) -> list[str | None]:
    """The runtime name each task of a batch runs in, checked; ``tasks`` holds
    (function_id, endpoint_id, runtime named by the task or None), in batch order.

    A task's own runtime wins; else its function's default (usable by whoever may use the
    function); else None (the endpoint's default runtime). Each distinct (endpoint, runtime)
    pair is checked against the endpoint's last report once.
    """
    defaults = function_runtimes(session, sorted({f for f, _, r in tasks if r is None}))
    names: list[str | None] = []
    refs: dict[str, RuntimeRef] = {}
    checked: set[tuple[str, str]] = set()
    for index, (function_id, endpoint_id, runtime) in enumerate(tasks):
        if runtime is not None:
            ref = refs.get(runtime) or resolve_runtime(session, who, runtime, cache, index=index)
        elif defaults.get(function_id):
            rid = defaults[function_id]
            assert rid is not None
            ref = refs.get(rid) or _live(session, rid, cache, function_id=function_id, index=index)
        else:
            names.append(None)
            continue
        refs[runtime or ref.runtime_id] = ref
        if (endpoint_id, ref.name) not in checked:
            check_endpoint_runs(store, endpoint_id, ref.name, index=index)
            checked.add((endpoint_id, ref.name))
        names.append(ref.name)
    return names


def _live(session: Session, runtime_id: str, cache: AccessCache | None, **details: object) -> RuntimeRef:
    """A function's default runtime: it must still exist (using the function implies using it)."""
    ref = _resolved.get(("#function", runtime_id))
    if ref is None or access_for(session, [("runtime", runtime_id)], cache).get(("runtime", runtime_id)) is None:
        row = _row_by_id(session, runtime_id)
        if row is None:
            raise NotFound(f"the function's runtime {runtime_id!r} was deleted; register the function again with another runtime, "
                           "or name a runtime in the task", code="runtime_not_found", details={"runtime": runtime_id, **details})
        ref = RuntimeRef(str(row[0]), str(row[1]))
        _resolved.put(("#function", runtime_id), ref, _ttl(cache))
    return ref

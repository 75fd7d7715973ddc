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
from typing import get_args

import sqlalchemy as sa
from sqlalchemy.orm import Session

from fnserve.errors import Conflict, NotFound
from web_service.auth import Identity
from web_service.registry.models import Function, Grant, Runtime, utcnow
from web_service.rest_bodies.requests import RuntimeRegistration, RuntimeType
from web_service.services.access import Access, AccessCache, access_of, may_use, require_owner, visible_to
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
    """The live runtime ``ident`` (an id, or a name) that ``who`` may use: 404 / 403 otherwise.

    Warm (this process resolved ``ident`` for ``who`` and holds its access snapshot): no SQL.
    Otherwise one query, which reads the runtime and its grants together (:func:`_lookup`)."""
    ref = _resolved.get((who.user_id, ident))
    acc = cache.get(("runtime", ref.runtime_id)) if ref is not None and cache is not None else None
    if ref is None or acc is None:
        found = _lookup(session, ident, who.user_id, by_id=_is_uuid(ident))
        if found is None:
            _resolved.forget((who.user_id, ident))
            raise runtime_not_found(ident, **details)
        ref, acc = found
        if cache is not None:
            cache.put(("runtime", ref.runtime_id), acc)
    if not may_use(session, who, acc, cache):
        from web_service.services.access import forbidden

        raise forbidden("runtime", ident, **details)
    _resolved.put((who.user_id, ident), ref, _ttl(cache))
    return ref


def _ttl(cache: AccessCache | None) -> float:
    return cache.resources.ttl if cache is not None else 0.0


# A live runtime with every grant on it (one row per grant, one with NULLs when there is none):
# its name and its access snapshot in one round trip. Built once; the values are bound per call.
_WITH_GRANTS = (
    sa.select(Runtime.id, Runtime.name, Runtime.owner_id, Grant.grantee_type, Grant.grantee_id)
    .outerjoin(Grant, sa.and_(Grant.resource_type == "runtime", Grant.resource_id == Runtime.id))
    .where(Runtime.deleted_at.is_(None))
)
_BY_ID = _WITH_GRANTS.where(Runtime.id == sa.bindparam("ident"))
# By name: the caller's own runtimes and those shared with them, oldest first.
_BY_NAME = _WITH_GRANTS.where(Runtime.name == sa.bindparam("ident"), visible_to(Runtime, "runtime", sa.bindparam("user_id"))
                              ).order_by(Runtime.created_at, Runtime.id)


def _lookup(session: Session, ident: str, user_id: str = "", *, by_id: bool) -> tuple[RuntimeRef, Access] | None:
    """The live runtime ``ident`` (an id, or a name as user ``user_id`` sees it) and its access
    snapshot, in one query; None: no such runtime.

    A name picks the user's own runtime of that name, else the oldest one shared with them."""
    rows = session.execute(_BY_ID if by_id else _BY_NAME, {"ident": ident} if by_id else {"ident": ident, "user_id": user_id}).all()
    found: dict[str, tuple[str, str, list[tuple[str, str]]]] = {}  # in the query's order
    for rid, name, owner_id, grantee_type, grantee_id in rows:
        grants = found.setdefault(str(rid), (str(name), str(owner_id), []))[2]
        if grantee_type is not None:
            grants.append((grantee_type, grantee_id))
    if not found:
        return None
    rid = next((r for r, (_, owner_id, _) in found.items() if owner_id == user_id), next(iter(found)))
    name, owner_id, grants = found[rid]
    return RuntimeRef(rid, name), access_of(owner_id, grants)


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
    if ref is None or cache is None or cache.get(("runtime", runtime_id)) is None:
        found = _lookup(session, runtime_id, by_id=True)
        if found is None:
            raise NotFound(f"the function's runtime {runtime_id!r} was deleted; register the function again with another runtime, "
                           "or name a runtime in the task", code="runtime_not_found", details={"runtime": runtime_id, **details})
        ref, acc = found
        if cache is not None:
            cache.put(("runtime", runtime_id), acc)
        _resolved.put(("#function", runtime_id), ref, _ttl(cache))
    return ref

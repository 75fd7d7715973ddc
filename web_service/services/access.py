"""Who may use what: owners, public resources, grants to users and groups, endpoint allowlists.

Sharing is generic: a resource kind ("function", "endpoint", "runtime", "trigger") is a model
with ``id``, ``owner_id`` and ``deleted_at``, listed in :data:`RESOURCE_MODELS`; its grants live
in the one ``grants`` table keyed by ``(resource_type, resource_id)``. Adding a kind is one line.

The submit path asks :func:`check_use` with cached :class:`Access` snapshots (in-process, for
``cache_seconds``), so a sharing change takes effect in other processes within that time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from fnserve.errors import BadRequest, Forbidden, NotFound
from web_service.auth import Identity
from web_service.rest_bodies.requests import Allowlist, Sharing
from web_service.rest_bodies.responses import AllowlistOf, Group as GroupView
from web_service.registry.models import Endpoint, EndpointAllowedFunction, Function, Grant, Group, GroupMember, Runtime, Trigger, User
from web_service.ttl_cache import TTLCache

# Kinds of shareable resources and their models.
RESOURCE_MODELS: dict[str, Any] = {"function": Function, "endpoint": Endpoint, "runtime": Runtime, "trigger": Trigger}
PUBLIC = "*"


@dataclass(frozen=True)
class Access:
    """A snapshot of who may use one live resource."""

    owner_id: str
    public: bool = False
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    restricted: bool = False  # endpoints: only ``allowed`` functions may run
    allowed: frozenset[str] = frozenset()

    def permits(self, user_id: str, user_groups: frozenset[str] | None = None) -> bool:
        if user_id == self.owner_id or self.public or user_id in self.users:
            return True
        return bool(self.groups and user_groups and self.groups & user_groups)


class AccessCache:
    """In-process caches for the hot path: resource access snapshots and users' groups."""

    def __init__(self, ttl: float):
        self.resources: TTLCache[tuple[str, str], Access] = TTLCache(ttl)
        self.user_groups: TTLCache[str, frozenset[str]] = TTLCache(ttl)

    def forget(self, key: tuple[str, str]) -> None:
        self.resources.forget(key)

    # The service layer historically calls these on an "ownership cache".
    def get(self, key: tuple[str, str]) -> Access | None:
        return self.resources.get(key)

    def put(self, key: tuple[str, str], value: Access) -> None:
        self.resources.put(key, value)

    def clear(self) -> None:
        self.resources.clear()
        self.user_groups.clear()


# -- reading access ------------------------------------------------------------------------------


def load_access(session: Session, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Access]:
    """Access snapshots of the live resources among ``keys`` (missing ones are absent)."""
    by_kind: dict[str, list[str]] = {}
    for kind, ident in keys:
        by_kind.setdefault(kind, []).append(ident)
    owners: dict[tuple[str, str], tuple[str, bool]] = {}
    for kind, ids in by_kind.items():
        model = RESOURCE_MODELS[kind]
        restricted_col = model.restrict_functions if kind == "endpoint" else sa.false()
        for ident, owner_id, restricted in session.execute(
            sa.select(model.id, model.owner_id, restricted_col).where(model.id.in_(ids), model.deleted_at.is_(None))
        ):
            owners[(kind, ident)] = (owner_id, bool(restricted))
    if not owners:
        return {}
    grants: dict[tuple[str, str], list[tuple[str, str]]] = {}
    conditions = [
        sa.and_(Grant.resource_type == kind, Grant.resource_id.in_([i for k, i in owners if k == kind]))
        for kind in {k for k, _ in owners}
    ]
    for rtype, rid, gtype, gid in session.execute(
        sa.select(Grant.resource_type, Grant.resource_id, Grant.grantee_type, Grant.grantee_id).where(sa.or_(*conditions))
    ):
        grants.setdefault((rtype, rid), []).append((gtype, gid))
    restricted_eps = [i for (k, i), (_, r) in owners.items() if k == "endpoint" and r]
    allowed: dict[str, set[str]] = {}
    if restricted_eps:
        for ep, fn in session.execute(
            sa.select(EndpointAllowedFunction.endpoint_id, EndpointAllowedFunction.function_id)
            .where(EndpointAllowedFunction.endpoint_id.in_(restricted_eps))
        ):
            allowed.setdefault(ep, set()).add(fn)
    return {key: access_of(owner_id, grants.get(key, ()), restricted, allowed.get(key[1], ()))
            for key, (owner_id, restricted) in owners.items()}


def access_of(owner_id: str, grants: Iterable[tuple[str, str]], restricted: bool = False, allowed: Iterable[str] = ()) -> Access:
    """The snapshot of a resource owned by ``owner_id`` from its grants' (grantee_type, grantee_id)."""
    g = list(grants)
    return Access(
        owner_id=owner_id,
        public=any(t == "public" for t, _ in g),
        users=frozenset(i for t, i in g if t == "user"),
        groups=frozenset(i for t, i in g if t == "group"),
        restricted=restricted,
        allowed=frozenset(allowed),
    )


def visible_to(model: Any, kind: str, user_id: Any) -> sa.ColumnElement[bool]:
    """SQL condition: user ``user_id`` (an id, or a bound parameter) owns the row or it is shared
    with them, directly, through a group or publicly."""
    groups = sa.select(GroupMember.group_id).where(GroupMember.user_id == user_id)
    granted = sa.select(Grant.resource_id).where(Grant.resource_type == kind, sa.or_(
        Grant.grantee_type == "public",
        sa.and_(Grant.grantee_type == "user", Grant.grantee_id == user_id),
        sa.and_(Grant.grantee_type == "group", Grant.grantee_id.in_(groups)),
    ))
    return sa.or_(model.owner_id == user_id, model.id.in_(granted))


def groups_of(session: Session, user_id: str, cache: AccessCache | None = None) -> frozenset[str]:
    """Ids of the groups ``user_id`` belongs to."""
    hit = cache.user_groups.get(user_id) if cache is not None else None
    if hit is not None:
        return hit
    groups = frozenset(session.scalars(sa.select(GroupMember.group_id).where(GroupMember.user_id == user_id)))
    if cache is not None:
        cache.user_groups.put(user_id, groups)
    return groups


def access_for(session: Session, keys: Iterable[tuple[str, str]], cache: AccessCache | None) -> dict[tuple[str, str], Access]:
    """Like :func:`load_access`, through the cache."""
    keys = list(keys)
    found: dict[tuple[str, str], Access] = {}
    missing = []
    for key in keys:
        hit = cache.get(key) if cache is not None else None
        if hit is None:
            missing.append(key)
        else:
            found[key] = hit
    if missing:
        for key, acc in load_access(session, missing).items():
            found[key] = acc
            if cache is not None:
                cache.put(key, acc)
    return found


def may_use(session: Session, who: Identity, acc: Access, cache: AccessCache | None = None) -> bool:
    if acc.permits(who.user_id):
        return True
    return bool(acc.groups) and acc.permits(who.user_id, groups_of(session, who.user_id, cache))


def forbidden(kind: str, ident: str, **details: object) -> Forbidden:
    return Forbidden(
        f"{kind} {ident!r} belongs to another user and is not shared with you",
        details={f"{kind}_id": ident, **details},
    )


def not_found(kind: str, ident: str, **details: object) -> NotFound:
    return NotFound(f"no {kind} {ident!r}", code=f"{kind}_not_found", details={f"{kind}_id": ident, **details})


def function_not_allowed(function_id: str, endpoint_id: str, **details: object) -> Forbidden:
    return Forbidden(
        f"endpoint {endpoint_id!r} only runs the functions on its allowlist, and function {function_id!r} "
        "is not on it; ask the endpoint's owner to allow it",
        code="function_not_allowed", details={"function_id": function_id, "endpoint_id": endpoint_id, **details},
    )


def require_use(session: Session, who: Identity, kind: str, ident: str, cache: AccessCache | None = None) -> Access:
    """The access snapshot of a live resource ``who`` may use (404 / 403 otherwise)."""
    acc = access_for(session, [(kind, ident)], cache).get((kind, ident))
    if acc is None:
        raise not_found(kind, ident)
    if not may_use(session, who, acc, cache):
        raise forbidden(kind, ident)
    return acc


def require_owner(session: Session, who: Identity, kind: str, ident: str) -> Any:
    """The live resource row, if ``who`` owns it: managing (sharing, deleting) is owner-only."""
    model = RESOURCE_MODELS[kind]
    row = session.scalar(sa.select(model).where(model.id == ident, model.deleted_at.is_(None)))
    if row is None:
        raise not_found(kind, ident)
    if row.owner_id != who.user_id:
        if may_use(session, who, load_access(session, [(kind, ident)])[(kind, ident)]):
            raise Forbidden(f"only the owner of {kind} {ident!r} can change it", code="owner_only", details={f"{kind}_id": ident})
        raise forbidden(kind, ident)
    return row


# -- sharing -------------------------------------------------------------------------------------


def get_sharing(session: Session, who: Identity, kind: str, ident: str) -> Sharing:
    """``{"public": bool, "users": [names], "groups": [names]}`` of a resource ``who`` owns."""
    require_owner(session, who, kind, ident)
    return _sharing_view(session, kind, ident)


def _sharing_view(session: Session, kind: str, ident: str) -> Sharing:
    rows = session.execute(
        sa.select(Grant.grantee_type, Grant.grantee_id).where(Grant.resource_type == kind, Grant.resource_id == ident)
    ).all()
    user_ids = [i for t, i in rows if t == "user"]
    group_ids = [i for t, i in rows if t == "group"]
    users = sorted(session.scalars(sa.select(User.username).where(User.id.in_(user_ids)))) if user_ids else []
    groups = sorted(session.scalars(sa.select(Group.name).where(Group.id.in_(group_ids)))) if group_ids else []
    return Sharing(public=any(t == "public" for t, _ in rows), users=users, groups=groups)


def set_sharing(session: Session, who: Identity, kind: str, ident: str, *, public: bool, users: list[str],
                groups: list[str], cache: AccessCache | None = None) -> Sharing:
    """Replace who ``ident`` is shared with (owner only). Unknown names are 404s; commits."""
    require_owner(session, who, kind, ident)
    user_ids = _ids_by_name(session, User, User.username, users, "user")
    group_ids = _ids_by_name(session, Group, Group.name, groups, "group")
    _check_group_standing(session, who, groups, group_ids)
    wanted = {("user", u) for u in user_ids} | {("group", g) for g in group_ids} | ({("public", PUBLIC)} if public else set())
    session.execute(sa.delete(Grant).where(Grant.resource_type == kind, Grant.resource_id == ident))
    session.add_all(Grant(resource_type=kind, resource_id=ident, grantee_type=t, grantee_id=i) for t, i in sorted(wanted))
    session.commit()
    if cache is not None:
        cache.forget((kind, ident))
    return _sharing_view(session, kind, ident)


def _check_group_standing(session: Session, who: Identity, names: list[str], group_ids: list[str]) -> None:
    """Share only with groups you own or belong to: anything else would push your resources
    into the lists of strangers' groups (group-name squatting)."""
    if not group_ids:
        return
    mine = set(groups_of(session, who.user_id)) | set(
        session.scalars(sa.select(Group.id).where(Group.owner_id == who.user_id, Group.id.in_(group_ids))))
    for name, gid in zip(names, group_ids):
        if gid not in mine:
            raise Forbidden(f"you can share only with groups you own or belong to, and group {name!r} is neither",
                            code="not_group_member", details={"group": name})


def _ids_by_name(session: Session, model: Any, column: Any, names: list[str], what: str) -> list[str]:
    if not names:
        return []
    found = {row[0]: row[1] for row in session.execute(sa.select(column, model.id).where(column.in_(names)))}
    for name in names:
        if name not in found:
            raise NotFound(f"no {what} named {name!r}", code=f"{what}_not_found", details={what: name})
    return [found[n] for n in names]


def parse_sharing(body: Sharing) -> tuple[bool, list[str], list[str]]:
    """A sharing body as (public, users, groups), names sorted and each once."""
    return body.public, sorted(set(body.users)), sorted(set(body.groups))


# -- endpoint allowlists -------------------------------------------------------------------------


def get_allowlist(session: Session, who: Identity, endpoint_id: str) -> AllowlistOf:
    ep = require_owner(session, who, "endpoint", endpoint_id)
    ids = sorted(session.scalars(sa.select(EndpointAllowedFunction.function_id).where(EndpointAllowedFunction.endpoint_id == endpoint_id)))
    return AllowlistOf(endpoint_id=endpoint_id, restricted=bool(ep.restrict_functions), function_ids=ids)


def set_allowlist(session: Session, who: Identity, endpoint_id: str, function_ids: list[str] | None,
                  cache: AccessCache | None = None) -> AllowlistOf:
    """Restrict the endpoint to ``function_ids``, or lift the restriction with ``None``. Commits."""
    ep = require_owner(session, who, "endpoint", endpoint_id)
    session.execute(sa.delete(EndpointAllowedFunction).where(EndpointAllowedFunction.endpoint_id == endpoint_id))
    ep.restrict_functions = function_ids is not None
    if function_ids:
        known = set(session.scalars(sa.select(Function.id).where(Function.id.in_(function_ids), Function.deleted_at.is_(None))))
        for fid in function_ids:
            if fid not in known:
                raise not_found("function", fid)
        session.add_all(EndpointAllowedFunction(endpoint_id=endpoint_id, function_id=f) for f in sorted(set(function_ids)))
    session.commit()
    if cache is not None:
        cache.forget(("endpoint", endpoint_id))
    return get_allowlist(session, who, endpoint_id)


def parse_allowlist(body: Allowlist) -> list[str] | None:
    """The functions to restrict an endpoint to, or None to lift the restriction."""
    if not body.restricted:
        if body.function_ids:
            raise BadRequest("function_ids must be empty when restricted is false", code="invalid_request", details={"field": "function_ids"})
        return None
    return body.function_ids


# -- groups --------------------------------------------------------------------------------------


def create_group(session: Session, who: Identity, name: str) -> Group:
    from fnserve.errors import Conflict

    if session.scalar(sa.select(Group.id).where(Group.name == name)) is not None:
        raise Conflict(f"a group named {name!r} already exists", code="group_exists", details={"group": name})
    group = Group(name=name, owner_id=who.user_id)
    session.add(group)
    session.flush()
    session.add(GroupMember(group_id=group.id, user_id=who.user_id))
    session.commit()
    return group


def list_groups(session: Session, who: Identity) -> list[GroupView]:
    """Groups ``who`` owns or belongs to, with their members."""
    groups = session.scalars(
        sa.select(Group).where(sa.or_(Group.owner_id == who.user_id, Group.id.in_(
            sa.select(GroupMember.group_id).where(GroupMember.user_id == who.user_id)))).order_by(Group.name)
    ).all()
    return [group_view(session, g) for g in groups]


def group_view(session: Session, group: Group) -> GroupView:
    members = sorted(session.scalars(
        sa.select(User.username).join(GroupMember, GroupMember.user_id == User.id).where(GroupMember.group_id == group.id)
    ))
    owner = session.scalar(sa.select(User.username).where(User.id == group.owner_id))
    return GroupView(group_id=group.id, name=group.name, owner=owner, members=members)


def _owned_group(session: Session, who: Identity, name: str) -> Group:
    group = session.scalar(sa.select(Group).where(Group.name == name))
    if group is None:
        raise NotFound(f"no group named {name!r}", code="group_not_found", details={"group": name})
    if group.owner_id != who.user_id:
        raise Forbidden(f"only the owner of group {name!r} can change its members", code="owner_only", details={"group": name})
    return group


def set_members(session: Session, who: Identity, name: str, add: list[str], remove: list[str],
                cache: AccessCache | None = None) -> GroupView:
    group = _owned_group(session, who, name)
    for uid in _ids_by_name(session, User, User.username, add, "user"):
        if session.get(GroupMember, (group.id, uid)) is None:
            session.add(GroupMember(group_id=group.id, user_id=uid))
    removed = _ids_by_name(session, User, User.username, remove, "user")
    if removed:
        session.execute(sa.delete(GroupMember).where(GroupMember.group_id == group.id, GroupMember.user_id.in_(removed)))
    session.commit()
    if cache is not None:
        for uid in removed:
            cache.user_groups.forget(uid)
    return group_view(session, group)

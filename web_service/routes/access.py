"""Sharing, allowlists and groups:

    GET|PUT /v1/functions/<id>/sharing        {"public": bool, "users": [...], "groups": [...]}
    GET|PUT /v1/endpoints/<id>/sharing
    GET|PUT /v1/runtimes/<id>/sharing
    GET|PUT /v1/triggers/<id>/sharing         (who may bind rules to it; docs/triggers.md)
    GET|PUT /v1/endpoints/<id>/allowed_functions   {"restricted": bool, "function_ids": [...]}
    GET|POST /v1/groups                       {"name": ...}
    POST /v1/groups/<name>/members            {"add": [usernames], "remove": [usernames]}

Managing is owner-only; PUT replaces the whole list.
"""

from __future__ import annotations

from flask import Blueprint, Response

from web_service.rest_bodies.requests import Allowlist, GroupCreation, MemberChanges, Sharing
from web_service.rest_bodies.responses import GroupList
from web_service.routes._http import body_as, identity, require_identity, respond
from web_service.services import access as service
from web_service.state import current

bp = Blueprint("access", __name__)
bp.before_request(require_identity)

_KINDS = {"functions": "function", "endpoints": "endpoint", "runtimes": "runtime", "triggers": "trigger"}


def _kind(collection: str) -> str:
    kind = _KINDS.get(collection)
    if kind is None:
        from fnserve.errors import NotFound

        raise NotFound(f"nothing to share under /v1/{collection}", code="not_found")
    return kind


@bp.get("/<any(functions, endpoints, runtimes, triggers):collection>/<ident>/sharing")
def get_sharing(collection: str, ident: str) -> Response:
    with current().sessions() as session:
        return respond(service.get_sharing(session, identity(), _kind(collection), ident))


@bp.put("/<any(functions, endpoints, runtimes, triggers):collection>/<ident>/sharing")
def set_sharing(collection: str, ident: str) -> Response:
    state = current()
    public, users, groups = service.parse_sharing(body_as(Sharing))
    with state.sessions() as session:
        view = service.set_sharing(session, identity(), _kind(collection), ident, public=public, users=users,
                                   groups=groups, cache=state.ownership)
    return respond(view)


@bp.get("/endpoints/<endpoint_id>/allowed_functions")
def get_allowlist(endpoint_id: str) -> Response:
    with current().sessions() as session:
        return respond(service.get_allowlist(session, identity(), endpoint_id))


@bp.put("/endpoints/<endpoint_id>/allowed_functions")
def set_allowlist(endpoint_id: str) -> Response:
    state = current()
    ids = service.parse_allowlist(body_as(Allowlist))
    with state.sessions() as session:
        answer = service.set_allowlist(session, identity(), endpoint_id, ids, state.ownership)
    state.store.set_restricted(endpoint_id, ids is not None)
    return respond(answer)


@bp.get("/groups")
def list_groups() -> Response:
    with current().sessions() as session:
        return respond(GroupList(groups=service.list_groups(session, identity())))


@bp.post("/groups")
def create_group() -> Response:
    name = body_as(GroupCreation).name
    with current().sessions() as session:
        group = service.create_group(session, identity(), name)
        return respond(service.group_view(session, group), 201)


@bp.post("/groups/<name>/members")
def members(name: str) -> Response:
    state = current()
    body = body_as(MemberChanges)
    with state.sessions() as session:
        return respond(service.set_members(session, identity(), name, body.add, body.remove, state.ownership))

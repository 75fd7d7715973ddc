"""``/v1/runtimes``: register, list, get, delete (sharing is under ``/v1/runtimes/<id>/sharing``)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from web_service.registry.models import Runtime
from web_service.rest_bodies.requests import RuntimeRegistration
from web_service.rest_bodies.responses import Runtime as RuntimeView, RuntimeDeleted, RuntimeList
from web_service.routes._http import body_as, identity, iso, require_identity, respond
from web_service.services import runtimes as service
from web_service.state import current

bp = Blueprint("runtimes", __name__)
bp.before_request(require_identity)


def runtime_view(rt: Runtime) -> RuntimeView:
    return RuntimeView(runtime_id=rt.id, name=rt.name, type=rt.type, image=rt.image, description=rt.description,
                       owner_id=rt.owner_id, created_at=iso(rt.created_at))


@bp.post("/runtimes")
def register() -> Response:
    fields = service.parse_runtime(body_as(RuntimeRegistration))
    with current().sessions() as session:
        rt = service.register_runtime(session, identity(), **fields)
        return respond(runtime_view(rt), 201)


@bp.get("/runtimes")
def list_() -> Response:
    shared = request.args.get("shared", "").lower() in ("1", "true", "yes")
    with current().sessions() as session:
        return respond(RuntimeList(runtimes=[runtime_view(r) for r in service.list_runtimes(session, identity(), shared)]))


@bp.get("/runtimes/<ident>")
def get(ident: str) -> Response:
    state = current()
    with state.sessions() as session:
        return respond(runtime_view(service.get_runtime(session, identity(), ident, state.ownership)))


@bp.delete("/runtimes/<ident>")
def delete(ident: str) -> Response:
    state = current()
    with state.sessions() as session:
        service.delete_runtime(session, identity(), ident, state.ownership)
    return respond(RuntimeDeleted(runtime=ident, deleted=True))

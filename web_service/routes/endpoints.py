"""``/v1/endpoints``: register, list, get, status, delete."""

from __future__ import annotations

import msgspec
from flask import Blueprint, Response, request

from web_service.curve_keys import server_public_key
from web_service.forwarder_pool import ForwarderPool
from web_service.registry.models import Endpoint
from web_service.rest_bodies.requests import EndpointRegistration
from web_service.rest_bodies.responses import Endpoint as EndpointView
from web_service.rest_bodies.responses import EndpointDeleted, EndpointList, EndpointRegistered, EndpointStatus, EndpointStatusOf
from web_service.routes._http import body_as, identity, iso, require_identity, respond
from web_service.services import endpoints as service
from web_service.state import current

bp = Blueprint("endpoints", __name__)
bp.before_request(require_identity)


def _with_status(ep: Endpoint) -> EndpointView:
    return EndpointView(endpoint_id=ep.id, name=ep.name, description=ep.description, created_at=iso(ep.created_at),
                        owner_id=ep.owner_id, restricted=bool(ep.restrict_functions),
                        status=msgspec.convert(current().store.endpoint_status(ep.id), EndpointStatus))


@bp.post("/endpoints")
def register() -> Response:
    state = current()
    body = body_as(EndpointRegistration)
    with state.sessions() as session:
        ep, secret, curve_secret = service.register_endpoint(session, identity(), body.name, body.description or "")
    return respond(EndpointRegistered(
        endpoint_id=ep.id, name=ep.name, description=ep.description, created_at=iso(ep.created_at),
        owner_id=ep.owner_id, restricted=bool(ep.restrict_functions), secret=secret,
        # Several forwarders: the one the rule assigns this endpoint (web_service/forwarder_pool.py).
        forwarder_address=ForwarderPool(state.store.r).owner(ep.id, state.settings.forwarder_address),
        # The endpoint's CurveZMQ keys (the secret one shown only now) and the forwarder's public key.
        curve_public_key=ep.curve_public_key, curve_secret_key=curve_secret,
        forwarder_public_key=server_public_key(state.settings.forwarder_key_file) if state.settings.forwarder_curve else None,
    ), 201)


@bp.get("/endpoints")
def list_() -> Response:
    state = current()
    with state.sessions() as session:
        eps = service.list_endpoints(session, identity(), shared=request.args.get("shared", "").lower() in ("1", "true", "yes"))
    return respond(EndpointList(endpoints=[_with_status(ep) for ep in eps]))


@bp.get("/endpoints/<endpoint_id>")
def get(endpoint_id: str) -> Response:
    state = current()
    with state.sessions() as session:
        ep = service.get_endpoint(session, identity(), endpoint_id)
    return respond(_with_status(ep))


@bp.get("/endpoints/<endpoint_id>/status")
def status(endpoint_id: str) -> Response:
    state = current()
    with state.sessions() as session:
        service.get_endpoint(session, identity(), endpoint_id)
    return respond(msgspec.convert({"endpoint_id": endpoint_id, **state.store.endpoint_status(endpoint_id)}, EndpointStatusOf))


@bp.delete("/endpoints/<endpoint_id>")
def delete(endpoint_id: str) -> Response:
    state = current()
    with state.sessions() as session:
        ended = service.delete_endpoint(session, state.store, identity(), endpoint_id, state.ownership)
    # Its unfinished tasks failed with code endpoint_deleted (``tasks_cancelled``: the name of old).
    return respond(EndpointDeleted(endpoint_id=endpoint_id, deleted=True, tasks_failed=ended, tasks_cancelled=ended))

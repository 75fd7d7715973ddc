"""``/v1/triggers``: create, list, get, delete triggers; add and delete their rules; fire one
by hand; read its history (events and the tasks they made). Sharing a trigger is
``/v1/triggers/<id>/sharing`` in web_service.routes.access."""

from __future__ import annotations


from flask import Blueprint, Response, request
from sqlalchemy.orm import Session

from web_service.registry.models import Trigger
from web_service.rest_bodies.requests import FireRequest, TriggerCreation
from web_service.rest_bodies.responses import Delivered, RuleDeleted, Trigger as TriggerView, TriggerDeleted, TriggerEvents, TriggerList
from web_service.routes._http import body_as, identity, json_body, require_identity, respond
from web_service.services import tasks as task_service
from web_service.services import triggers as service
from web_service.state import current
from web_service.triggers import events

bp = Blueprint("triggers", __name__)
bp.before_request(require_identity)


def _view(session: Session, trig: Trigger) -> TriggerView:
    return service.trigger_view(trig, service.visible_rules(session, identity(), trig))


@bp.post("/triggers")
def create() -> Response:
    state = current()
    body = body_as(TriggerCreation)
    with state.sessions() as session:
        trig, secret = service.create_trigger(session, state.store, identity(), body, state.ownership)
        view = _view(session, trig)
    if secret is not None:
        view.secret = secret  # shown this once
    return respond(view, 201)


@bp.get("/triggers")
def list_() -> Response:
    state = current()
    with state.sessions() as session:
        shared = request.args.get("shared", "").lower() in ("1", "true", "yes")
        return respond(TriggerList(triggers=[_view(session, t) for t in service.list_triggers(session, identity(), shared)]))


@bp.get("/triggers/<trigger_id>")
def get(trigger_id: str) -> Response:
    state = current()
    with state.sessions() as session:
        return respond(_view(session, service.usable_trigger(session, identity(), trigger_id, state.ownership)))


@bp.delete("/triggers/<trigger_id>")
def delete(trigger_id: str) -> Response:
    state = current()
    with state.sessions() as session:
        service.delete_trigger(session, identity(), trigger_id, state.store, state.ownership)
    return respond(TriggerDeleted(trigger_id=trigger_id, deleted=True))


@bp.post("/triggers/<trigger_id>/rules")
def add_rule(trigger_id: str) -> Response:
    state = current()
    body = json_body()
    with state.sessions() as session:
        rule = service.add_rule(session, identity(), trigger_id, body, state.ownership)
        return respond(service.rule_view(rule), 201)


@bp.delete("/triggers/<trigger_id>/rules/<rule_id>")
def delete_rule(trigger_id: str, rule_id: str) -> Response:
    state = current()
    with state.sessions() as session:
        service.delete_rule(session, identity(), trigger_id, rule_id)
    return respond(RuleDeleted(rule_id=rule_id, deleted=True))


@bp.post("/triggers/<trigger_id>/fire")
def fire(trigger_id: str) -> Response:
    """An event from the owner: ``{"data": {...}, "event_id": "optional idempotency key"}``."""
    state = current()
    body = body_as(FireRequest)
    with state.sessions() as session:
        service.own_trigger(session, identity(), trigger_id)
        if state.trigger_limiter is not None:
            state.trigger_limiter.check(trigger_id)
        rec = service.fire(session, state.store, identity(), trigger_id, body, state.ownership, state.quotas)
        return respond(_recorded(rec), 200 if rec.duplicate else 202)


def _recorded(rec: events.Recorded) -> Delivered:
    return Delivered(event_id=rec.event.id, duplicate=rec.duplicate,
                     firings=[service.firing_view(f) for f in sorted(rec.firings, key=lambda f: f.rule_id)])


@bp.get("/triggers/<trigger_id>/events")
def history(trigger_id: str) -> Response:
    """The latest events, newest first (``?limit=``, at most 1000)."""
    state = current()
    limit = task_service.parse_count(request.args.get("limit"), "limit", 100)
    with state.sessions() as session:
        return respond(TriggerEvents(trigger_id=trigger_id,
                                     events=service.history(session, identity(), trigger_id, limit, state.ownership)))

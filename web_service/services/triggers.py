"""Creating, listing and deleting triggers and their rules; recording events (webhook calls,
manual fires) and reading a trigger's history.

A trigger is shared like a function (``PUT /v1/triggers/{id}/sharing``, web_service.services.access):
its owner manages it (delete, fire, share); a user it is shared with may bind rules to it and read
its history for their rules; anyone else gets 403 ``forbidden``. A rule may bind only a function
and an endpoint the user who binds it may use (owned or shared), checked when the rule is made and
again, by the submit path, whenever it fires (as that user); a restricted endpoint takes only
functions on its allowlist.
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import datetime, timezone
from typing import Any

import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

from fnserve import webhooks
from fnserve.errors import Conflict, Forbidden, NotFound, PayloadTooLarge, Unauthorized
from web_service.auth import Identity
from web_service.quotas import QuotaChecker, RateLimiter
from msgspec import UNSET

from web_service.registry.models import Trigger, TriggerEvent, TriggerFiring, TriggerRule, utcnow
from web_service.services import OwnershipCache
from web_service.services.access import function_not_allowed, require_owner, require_use
from web_service.task_store import TaskStore
from web_service.triggers import config, events
from web_service.triggers.config import RuleSpec
from web_service.rest_bodies import responses as rest
from web_service.rest_bodies.requests import MAX_RULES, FireRequest, TriggerCreation
from web_service.validation import invalid, parse_json_object

log = logging.getLogger("fnserve.web.triggers")

MAX_EVENT_KEY = 160
MAX_HISTORY = 1000


def trigger_not_found(trigger_id: str) -> NotFound:
    return NotFound(f"no trigger {trigger_id!r}", code="trigger_not_found", details={"trigger_id": trigger_id})


def own_trigger(session: Session, who: Identity, trigger_id: str) -> Trigger:
    """The caller's live trigger: deleting, firing and sharing it are the owner's (404
    ``trigger_not_found``; 403 ``owner_only`` if it is shared with the caller, ``forbidden`` if not)."""
    return require_owner(session, who, "trigger", trigger_id)  # type: ignore[no-any-return]


def usable_trigger(session: Session, who: Identity, trigger_id: str, cache: OwnershipCache | None = None) -> Trigger:
    """A live trigger the caller owns or that is shared with them: they may bind rules to it and
    read its history for their rules (404 ``trigger_not_found``; 403 ``forbidden``)."""
    require_use(session, who, "trigger", trigger_id, cache)
    trig = session.scalar(sa.select(Trigger).where(Trigger.id == trigger_id, Trigger.deleted_at.is_(None)))
    if trig is None:  # deleted since the access snapshot was cached
        raise trigger_not_found(trigger_id)
    return trig


def rule_owner(rule: TriggerRule, trig: Trigger) -> str:
    """Who a rule's tasks run as: the user who bound it (rules from before sharing: the trigger's owner)."""
    return rule.owner_id or trig.owner_id


def visible_rules(session: Session, who: Identity, trig: Trigger) -> list[TriggerRule]:
    """The trigger's live rules the caller may see: all for its owner, their own for a user it is shared with."""
    rules = events.live_rules(session, trig.id)
    return rules if trig.owner_id == who.user_id else [r for r in rules if rule_owner(r, trig) == who.user_id]


def create_trigger(session: Session, store: TaskStore, who: Identity, body: TriggerCreation,
                   cache: OwnershipCache | None = None) -> tuple[Trigger, str | None]:
    """Check (its config and rules: ``triggers.config``) and store a trigger. Returns it and,
    for a webhook, its secret (shown this once)."""
    name, kind = body.name, body.kind
    cfg = config.parse_config(kind, body.config)
    specs = [config.parse_rule(r, f"rules[{i}].") for i, r in enumerate(body.rules or [])]
    if kind == "file":
        check_watch(session, store, who, cfg, cache)
    for spec in specs:
        check_rule_access(session, who, spec, cache)
    secret = secrets.token_urlsafe(32) if kind == "webhook" else None
    trig = Trigger(owner_id=who.user_id, name=name, kind=kind, config=json.dumps(cfg), secret=secret, created_at=utcnow())
    session.add(trig)
    session.flush()
    for spec in specs:
        session.add(_rule_row(trig.id, spec, who.user_id))
    session.commit()
    if kind == "file":
        _wake_watchers(store, cfg["endpoint_id"])
    log.info("trigger %s (%s) created by user %s with %d rule(s)", trig.id, kind, who.user_id, len(specs))
    return trig, secret


def check_watch(session: Session, store: TaskStore, who: Identity, cfg: dict[str, Any], cache: OwnershipCache | None) -> None:
    """A file trigger watches a folder of an endpoint the caller may use, and only one its
    admin allowed (``triggers.allowed_folders``, reported when the endpoint connects)."""
    from web_service.triggers.files import folder_allowed

    endpoint_id = cfg["endpoint_id"]
    require_use(session, who, "endpoint", endpoint_id, cache)
    allowed = store.endpoint_watch_folders(endpoint_id)
    if allowed is None:
        raise Conflict(f"endpoint {endpoint_id} has not connected yet, so its allowed folders are unknown: start it, "
                       "then create the file trigger", code="endpoint_never_connected", details={"endpoint_id": endpoint_id})
    if not folder_allowed(cfg["folder"], allowed):
        where = ", ".join(allowed) if allowed else "none (its config has no triggers.allowed_folders)"
        raise Forbidden(f"endpoint {endpoint_id} does not allow file triggers on {cfg['folder']}; its admin allows: {where}",
                        code="folder_not_allowed", details={"endpoint_id": endpoint_id, "folder": cfg["folder"],
                                                           "allowed_folders": allowed})


def check_rule_access(session: Session, who: Identity, spec: RuleSpec, cache: OwnershipCache | None = None) -> None:
    require_use(session, who, "function", spec.function_id, cache)
    acc = require_use(session, who, "endpoint", spec.endpoint_id, cache)
    if acc.restricted and spec.function_id not in acc.allowed:
        raise function_not_allowed(spec.function_id, spec.endpoint_id)


def _rule_row(trigger_id: str, spec: RuleSpec, owner_id: str) -> TriggerRule:
    return TriggerRule(trigger_id=trigger_id, owner_id=owner_id, function_id=spec.function_id, endpoint_id=spec.endpoint_id,
                       args_template=json.dumps(spec.template), filters=json.dumps(list(spec.filters)),
                       max_concurrency=spec.max_concurrency, created_at=utcnow())


def add_rule(session: Session, who: Identity, trigger_id: str, body: dict[str, Any], cache: OwnershipCache | None = None) -> TriggerRule:
    """Bind a rule (the trigger's owner, or a user it is shared with: with functions and endpoints
    they themselves may use; its tasks run as them)."""
    trig = usable_trigger(session, who, trigger_id, cache)
    spec = config.parse_rule(body)
    if len(events.live_rules(session, trig.id)) >= MAX_RULES:
        raise invalid("rules", f"a trigger may have at most {MAX_RULES} rules", limit=MAX_RULES)
    check_rule_access(session, who, spec, cache)
    rule = _rule_row(trig.id, spec, who.user_id)
    session.add(rule)
    session.commit()
    return rule


def delete_rule(session: Session, who: Identity, trigger_id: str, rule_id: str) -> None:
    """The trigger's owner removes any rule; a user it is shared with, their own (others' are
    invisible to them: 404)."""
    trig = usable_trigger(session, who, trigger_id)
    rule = session.scalar(sa.select(TriggerRule).where(TriggerRule.id == rule_id, TriggerRule.trigger_id == trig.id,
                                                      TriggerRule.deleted_at.is_(None)))
    if rule is None or who.user_id not in (trig.owner_id, rule_owner(rule, trig)):
        raise NotFound(f"trigger {trigger_id!r} has no rule {rule_id!r}", code="rule_not_found", details={"rule_id": rule_id})
    rule.deleted_at = utcnow()
    session.commit()


def list_triggers(session: Session, who: Identity, shared: bool = False) -> list[Trigger]:
    """The caller's live triggers; with ``shared``, also those shared with them."""
    from web_service.services.functions import shared_with

    mine = shared_with(Trigger, "trigger", who) if shared else Trigger.owner_id == who.user_id
    return list(session.scalars(sa.select(Trigger).where(mine, Trigger.deleted_at.is_(None))
                                .order_by(Trigger.created_at, Trigger.id)))


def delete_trigger(session: Session, who: Identity, trigger_id: str, store: TaskStore | None = None,
                   cache: OwnershipCache | None = None) -> None:
    """Soft-delete: it fires no more; its history stays readable to no one but the database."""
    trig = own_trigger(session, who, trigger_id)
    trig.deleted_at = utcnow()
    session.commit()
    if cache is not None:
        cache.forget(("trigger", trigger_id))
    if trig.kind == "file" and store is not None:
        _wake_watchers(store, json.loads(trig.config)["endpoint_id"])
    log.info("trigger %s deleted by user %s", trigger_id, who.user_id)


def _wake_watchers(store: TaskStore, endpoint_id: str) -> None:
    """Tell the forwarders the endpoint's file triggers changed (best effort: they also look
    every few seconds)."""
    try:
        store.wake_watchers(endpoint_id)
    except Exception as exc:  # noqa: BLE001 - the periodic refresh covers it
        log.warning("could not wake the forwarders for endpoint %s's file triggers (%s)", endpoint_id, type(exc).__name__)


def history(session: Session, who: Identity, trigger_id: str, limit: int, cache: OwnershipCache | None = None) -> list[rest.Event]:
    """The trigger's latest events, newest first, each with the firings (rule, task, state).
    A user the trigger is shared with sees the events that fired their rules, with those firings."""
    trig = usable_trigger(session, who, trigger_id, cache)
    query = sa.select(TriggerEvent).where(TriggerEvent.trigger_id == trig.id)
    mine: set[str] | None = None
    if trig.owner_id != who.user_id:
        mine = set(session.scalars(sa.select(TriggerRule.id).where(TriggerRule.trigger_id == trig.id,
                                                                   TriggerRule.owner_id == who.user_id)))
        query = query.where(TriggerEvent.id.in_(sa.select(TriggerFiring.event_id).where(TriggerFiring.rule_id.in_(mine))))
    evs = list(session.scalars(query.order_by(TriggerEvent.received_at.desc(), TriggerEvent.id).limit(min(limit, MAX_HISTORY))))
    firings: dict[str, list[TriggerFiring]] = {}
    for f in events.firings_of(session, [e.id for e in evs]):
        if mine is None or f.rule_id in mine:
            firings.setdefault(f.event_id, []).append(f)
    return [event_record(e, firings.get(e.id, [])) for e in evs]


def event_record(e: TriggerEvent, firings: list[TriggerFiring]) -> rest.Event:
    data = json.loads(e.data)
    return rest.Event(event_id=e.id, event_key=e.event_key, kind=data.get("kind"), time=data.get("time"),
                      data=data.get("data"), firings=[firing_view(f) for f in sorted(firings, key=lambda f: f.rule_id)])


def firing_view(f: TriggerFiring) -> rest.Firing:
    error = rest.FiringError(code=f.error_code, message=f.error_message or "") if f.error_code else UNSET
    return rest.Firing(rule_id=f.rule_id, task_id=f.task_id, state=f.state, error=error)  # type: ignore[arg-type]


def parse_event_key(value: Any, field: str = "event_id") -> str | None:
    """A sender's id of an event (its idempotency key), if given."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_EVENT_KEY or not value.isprintable():
        raise invalid(field, f"must be printable text of at most {MAX_EVENT_KEY} characters")
    return value


def fire(session: Session, store: TaskStore, who: Identity, trigger_id: str, body: FireRequest,
         cache: OwnershipCache | None = None, quotas: QuotaChecker | None = None) -> events.Recorded:
    """An event sent by the trigger's owner (``POST /v1/triggers/{id}/fire``): ``data`` is the
    event's data, ``event_id`` its optional idempotency key."""
    trig = own_trigger(session, who, trigger_id)
    key = parse_event_key(body.event_id)
    return _deliver(session, store, trig, "id:" + key if key else "fire:" + secrets.token_hex(16), "manual", body.data, cache,
                    quotas)


def deliver_webhook(session: Session, store: TaskStore, trigger_id: str, raw: bytes, headers: dict[str, str | None],
                    max_bytes: int, cache: OwnershipCache | None = None, quotas: QuotaChecker | None = None,
                    now: float | None = None, limiter: RateLimiter | None = None) -> events.Recorded:
    """A signed webhook delivery: 401 ``bad_signature`` unless signed with the trigger's secret;
    an unknown, deleted or non-webhook trigger is 401 too (a caller without the secret learns
    nothing about which triggers exist)."""
    import time

    trig = session.scalar(sa.select(Trigger).where(Trigger.id == trigger_id, Trigger.deleted_at.is_(None), Trigger.kind == "webhook"))
    why = "no webhook trigger of that id" if trig is None or not trig.secret else webhooks.check(
        trig.secret, headers.get(webhooks.TIMESTAMP_HEADER), headers.get(webhooks.SIGNATURE_HEADER), raw,
        time.time() if now is None else now)
    if why is not None:
        raise Unauthorized(f"webhook refused: {why}", code="bad_signature", details={"trigger_id": trigger_id})
    assert trig is not None
    if limiter is not None:
        limiter.check(trig.id)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"a webhook body may be at most {max_bytes} bytes", details={"limit": max_bytes})
    data = parse_json_object(raw) if raw.strip() else {}
    key = parse_event_key(headers.get(webhooks.EVENT_ID_HEADER), webhooks.EVENT_ID_HEADER)
    # Without the sender's id, the signature names the delivery: an exact re-send fires once.
    event_key = "id:" + key if key else "sig:" + (headers.get(webhooks.SIGNATURE_HEADER) or "").strip()[-64:]
    return _deliver(session, store, trig, event_key, "webhook", data, cache, quotas)


def _deliver(session: Session, store: TaskStore, trig: Trigger, event_key: str, kind: str, data: Any,
             cache: OwnershipCache | None, quotas: QuotaChecker | None) -> events.Recorded:
    rec = events.record_event(session, trig, event_key, kind, data, now=datetime.now(timezone.utc))
    if not rec.duplicate:
        limited = {r.id for r in events.live_rules(session, trig.id) if r.max_concurrency is not None}
        now_ = [f for f in rec.firings if f.rule_id not in limited]
        try:
            events.submit_firings(session, store, now_, cache, quotas)
        except (redis.RedisError, sa.exc.SQLAlchemyError) as exc:  # the event is recorded; the runner submits it
            session.rollback()
            log.warning("trigger %s event %s recorded; submitting its tasks failed (%s), the runner retries",
                        trig.id, rec.event.id, type(exc).__name__)
    return rec


def trigger_view(trig: Trigger, rules: list[TriggerRule], now: datetime | None = None) -> rest.Trigger:
    from web_service.routes._http import iso
    from web_service.triggers import schedule

    view = rest.Trigger(trigger_id=trig.id, name=trig.name, kind=trig.kind, config=json.loads(trig.config),  # type: ignore[arg-type]
                        owner_id=trig.owner_id, created_at=iso(trig.created_at), rules=[rule_view(r) for r in rules])
    if trig.kind == "webhook":
        view.webhook_path = f"/v1/hooks/{trig.id}"
    if trig.kind == "schedule":
        spec = config.schedule_of(trig.config)
        last = trig.last_scheduled_at or trig.created_at
        last = last if last.tzinfo else last.replace(tzinfo=timezone.utc)
        view.next_time = schedule.next_time(spec, max(last, now or datetime.now(timezone.utc))).isoformat()
    return view


def rule_view(r: TriggerRule) -> rest.Rule:
    return rest.Rule(rule_id=r.id, owner_id=r.owner_id, function_id=r.function_id, endpoint_id=r.endpoint_id,
                     args_template=json.loads(r.args_template), filters=json.loads(r.filters),
                     max_concurrency=r.max_concurrency)


__all__ = ["create_trigger", "add_rule", "delete_rule", "list_triggers", "delete_trigger", "history", "fire", "deliver_webhook",
           "own_trigger", "usable_trigger", "visible_rules", "trigger_view", "rule_view"]

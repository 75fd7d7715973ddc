"""Recording a trigger's events and firings in SQL, and submitting the firings' tasks (I/O).

The order that makes delivery exactly-once per (event, rule):

1. :func:`record_event` writes the event and one firing per matching rule (state ``pending``,
   task id fixed) in one SQL transaction; the unique ``(trigger_id, event_key)`` turns a second
   delivery of the same event into a no-op that answers with the first one.
2. :func:`submit_firings` submits pending firings through the ordinary submit path (access,
   allowlists, quotas) with those fixed ids: a task already there is not written again.
3. Then the firings are marked ``submitted`` (or ``refused`` with the error). A crash between
   2 and 3 leaves them pending; the runner submits them again, which finds the tasks.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from fnserve import serialize
from fnserve.errors import FnserveError
from web_service.auth import Identity
from web_service.quotas import QuotaChecker
from web_service.registry.models import Trigger, TriggerEvent, TriggerFiring, TriggerRule, User
from web_service.services import OwnershipCache
from web_service.services.tasks import TaskSpec, submit_tasks
from web_service.task_store import TaskStore
from web_service.triggers import rules as rule_logic

log = logging.getLogger("fnserve.web.triggers")

PENDING, SUBMITTED, DONE, REFUSED = "pending", "submitted", "done", "refused"


@dataclass
class Recorded:
    event: TriggerEvent
    firings: list[TriggerFiring]
    duplicate: bool  # the event was already recorded (this delivery changed nothing)


def live_rules(session: Session, trigger_id: str) -> list[TriggerRule]:
    return list(session.scalars(
        sa.select(TriggerRule).where(TriggerRule.trigger_id == trigger_id, TriggerRule.deleted_at.is_(None))
        .order_by(TriggerRule.created_at, TriggerRule.id)
    ))


def event_view(trigger: Trigger, event_id: str, kind: str, time: datetime, data: Any) -> dict[str, Any]:
    """The event as rules see it (see :mod:`web_service.triggers.rules`)."""
    return {"trigger_id": trigger.id, "event_id": event_id, "kind": kind, "time": time.isoformat(), "data": data}


def record_event(session: Session, trigger: Trigger, event_key: str, kind: str, data: Any,
                 now: datetime | None = None) -> Recorded:
    """Write one event of ``trigger`` and the firings of its rules, once per ``event_key``.
    Commits (or, for an event already recorded, rolls back and returns the first one)."""
    now = now or datetime.now(timezone.utc)
    event = TriggerEvent(id=_new_id(), trigger_id=trigger.id, event_key=event_key, received_at=now, data="")
    view = event_view(trigger, event.id, kind, now, data)
    event.data = json.dumps(view)
    rules = live_rules(session, trigger.id)
    planned = rule_logic.fire(view, [(r.id, json.loads(r.args_template), json.loads(r.filters)) for r in rules])
    firings = []
    for f in planned:
        firing = TriggerFiring(event_id=event.id, rule_id=f.rule_id, task_id=f.task_id, created_at=now,
                               state=PENDING if f.error is None else REFUSED)
        if f.error is not None:
            firing.error_code, firing.error_message = rule_logic.TemplateError.code, f.error
        firings.append(firing)
    session.add(event)
    try:
        session.flush()  # the event first: PostgreSQL checks the firings' foreign key at once
        session.add_all(firings)
        session.commit()
    except sa.exc.IntegrityError:
        session.rollback()
        first = session.scalar(sa.select(TriggerEvent).where(TriggerEvent.trigger_id == trigger.id, TriggerEvent.event_key == event_key))
        if first is None:
            raise
        return Recorded(first, firings_of(session, [first.id]), duplicate=True)
    return Recorded(event, firings, duplicate=False)


def firings_of(session: Session, event_ids: list[str]) -> list[TriggerFiring]:
    if not event_ids:
        return []
    return list(session.scalars(sa.select(TriggerFiring).where(TriggerFiring.event_id.in_(event_ids))))


def submit_firings(session: Session, store: TaskStore, firings: list[TriggerFiring], cache: OwnershipCache | None = None,
                   quotas: QuotaChecker | None = None) -> int:
    """Submit the tasks of pending ``firings`` (of any triggers) and mark each submitted or
    refused. Commits. Returns how many were submitted. Redis being down raises: they stay
    pending for the runner."""
    pending = [f for f in firings if f.state == PENDING]
    if not pending:
        return 0
    rules = {r.id: r for r in session.scalars(sa.select(TriggerRule).where(TriggerRule.id.in_({f.rule_id for f in pending})))}
    triggers = {t.id: t for t in session.scalars(sa.select(Trigger).where(Trigger.id.in_({r.trigger_id for r in rules.values()})))}
    events = {e.id: e for e in session.scalars(sa.select(TriggerEvent).where(TriggerEvent.id.in_({f.event_id for f in pending})))}
    runs_as = {r.id: r.owner_id or triggers[r.trigger_id].owner_id for r in rules.values() if r.trigger_id in triggers}
    owners = {u.id: u for u in session.scalars(sa.select(User).where(User.id.in_(set(runs_as.values()))))}
    by_owner: dict[str, list[tuple[TriggerFiring, TaskSpec]]] = {}
    for f in pending:
        rule = rules.get(f.rule_id)
        trigger = triggers.get(rule.trigger_id) if rule else None
        if rule is None or trigger is None or rule.deleted_at is not None or trigger.deleted_at is not None:
            _refuse(f, "rule_deleted", "the rule or its trigger was deleted before its task was submitted")
            continue
        try:
            args, kwargs = rule_logic.render(json.loads(rule.args_template), json.loads(events[f.event_id].data))
        except rule_logic.TemplateError as exc:
            _refuse(f, exc.code, str(exc))
            continue
        owner_id = runs_as[rule.id]
        if owner_id != trigger.owner_id and not _still_shared(session, trigger.id, owners.get(owner_id), cache):
            _refuse(f, "forbidden", "the trigger is no longer shared with the user who bound this rule")
            continue
        payload = serialize.serialize_args(args, kwargs, strategy=serialize.JSON_DATA)
        spec = TaskSpec(function_id=rule.function_id, endpoint_id=rule.endpoint_id, payload=payload, result_strategy=serialize.JSON_DATA)
        by_owner.setdefault(owner_id, []).append((f, spec))
    submitted = 0
    for owner_id, items in by_owner.items():
        owner = owners[owner_id]
        if owner.disabled_at is not None:
            for f, _ in items:
                _refuse(f, "owner_disabled", "the user the rule's tasks run as (who bound it) is disabled")
            continue
        who = Identity(owner.id, owner.username)
        try:
            outcomes = submit_tasks(session, store, who, [s for _, s in items], cache, quotas, atomic=False,
                                    task_ids=[f.task_id for f, _ in items])
        except FnserveError as exc:  # every task refused: the first error names them all
            errors = {e["index"]: (e["code"], e["message"]) for e in exc.details.get("errors", [])}
            for i, (f, _) in enumerate(items):
                _refuse(f, *errors.get(i, (exc.code, exc.message)))
            continue
        for (f, _), outcome in zip(items, outcomes):
            if isinstance(outcome, FnserveError):
                _refuse(f, outcome.code, outcome.message)
            else:
                f.state = SUBMITTED
                submitted += 1
    session.commit()
    return submitted


def _still_shared(session: Session, trigger_id: str, user: User | None, cache: OwnershipCache | None) -> bool:
    """A rule bound by a user the trigger was shared with fires only while it still is."""
    from web_service.services.access import access_for, may_use

    acc = access_for(session, [("trigger", trigger_id)], cache).get(("trigger", trigger_id))
    return user is not None and acc is not None and may_use(session, Identity(user.id, user.username), acc, cache)


def _refuse(f: TriggerFiring, code: str, message: str) -> None:
    f.state, f.error_code, f.error_message = REFUSED, code, message
    log.info("trigger firing %s/%s refused: %s", f.event_id, f.rule_id, code)


def _new_id() -> str:
    from web_service.registry.models import new_id

    return new_id()

"""File triggers on the service side: which folders each endpoint watches, and recording the
file events its site manager reports (used by the forwarder).

A site manager may fire only its own endpoint's file triggers, and only for files under the
trigger's folder that match its pattern: anything else in a batch is dropped (and acked, so it
is not resent). Each event's key is computed here from path, size and mtime, not taken from the
site manager. A batch is recorded in one transaction and its tasks submitted in one call.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import posixpath
from datetime import datetime, timezone

import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

from fnserve.messages import FileEvent, FolderWatch, file_event_key
from web_service.quotas import QuotaChecker
from web_service.registry.models import Trigger, TriggerEvent, TriggerFiring, TriggerRule
from web_service.services import OwnershipCache
from web_service.task_store import TaskStore
from web_service.triggers import events, rules

log = logging.getLogger("fnserve.web.triggers")


def folder_allowed(folder: str, allowed: list[str]) -> bool:
    """Whether ``folder`` is one of ``allowed`` or under one (normalized paths, as reported by
    the endpoint: the site manager checks again with symlinks resolved)."""
    f = posixpath.normpath(folder)
    return any(f == posixpath.normpath(a) or f.startswith(posixpath.normpath(a).rstrip("/") + "/") for a in allowed)


def file_triggers(session: Session, endpoint_ids: list[str]) -> dict[str, list[Trigger]]:
    """The live file triggers of each of ``endpoint_ids``."""
    out: dict[str, list[Trigger]] = {e: [] for e in endpoint_ids}
    for trig in session.scalars(sa.select(Trigger).where(Trigger.kind == "file", Trigger.deleted_at.is_(None))
                                .order_by(Trigger.created_at, Trigger.id)):
        endpoint_id = json.loads(trig.config).get("endpoint_id")
        if endpoint_id in out:
            out[endpoint_id].append(trig)
    return out


def watch_of(trig: Trigger) -> FolderWatch:
    cfg = json.loads(trig.config)
    created = trig.created_at if trig.created_at.tzinfo else trig.created_at.replace(tzinfo=timezone.utc)
    return FolderWatch(trigger_id=trig.id, folder=cfg["folder"], pattern=cfg.get("pattern", "*"),
                       recursive=bool(cfg.get("recursive")), settle=float(cfg.get("settle", 1.0)),
                       poll=bool(cfg.get("poll")), since=created.timestamp())


def watches(session: Session, endpoint_ids: list[str]) -> dict[str, list[FolderWatch]]:
    return {e: [watch_of(t) for t in ts] for e, ts in file_triggers(session, endpoint_ids).items()}


def _takes(trig: Trigger, path: str) -> bool:
    cfg = json.loads(trig.config)
    folder = cfg["folder"].rstrip("/") + "/"
    p = posixpath.normpath(path)
    if not p.startswith(folder):
        return False
    rel = p[len(folder):]
    if not cfg.get("recursive") and "/" in rel:
        return False
    return fnmatch.fnmatchcase(posixpath.basename(p), cfg.get("pattern", "*"))


def record_file_events(session: Session, store: TaskStore, endpoint_id: str, batch: list[FileEvent],
                       cache: OwnershipCache | None = None, quotas: QuotaChecker | None = None) -> list[str]:
    """Record a batch of file events from ``endpoint_id``'s site manager (those already
    recorded are skipped) and submit their tasks. Returns the keys to ack: every event of the
    batch, recorded now, before, or refused for good."""
    triggers = {t.id: t for t in file_triggers(session, [endpoint_id])[endpoint_id]}
    wanted: dict[tuple[str, str], FileEvent] = {}
    dropped = 0
    for e in batch:
        trig = triggers.get(e.trigger_id)
        if trig is None or not _takes(trig, e.path):
            dropped += 1
            continue
        norm = posixpath.normpath(e.path)  # one spelling per file: its key and the path rules see
        wanted.setdefault((e.trigger_id, file_event_key(norm, e.size, e.mtime)),
                          FileEvent(trigger_id=e.trigger_id, path=norm, size=e.size, mtime=e.mtime, key=e.key))
    if dropped:
        log.warning("endpoint %s reported %d file event(s) for triggers or paths it does not watch; dropped", endpoint_id, dropped)
    if wanted:
        _record(session, store, triggers, wanted, cache, quotas)
    return [e.key for e in batch]


def _record(session: Session, store: TaskStore, triggers: dict[str, Trigger], wanted: dict[tuple[str, str], FileEvent],
            cache: OwnershipCache | None, quotas: QuotaChecker | None) -> None:
    seen = set()
    keys = list(wanted)
    for i in range(0, len(keys), 500):
        part = keys[i:i + 500]
        seen |= set(session.execute(sa.select(TriggerEvent.trigger_id, TriggerEvent.event_key).where(
            sa.tuple_(TriggerEvent.trigger_id, TriggerEvent.event_key).in_(part))).all())
    fresh = [k for k in keys if k not in seen]
    if not fresh:
        return
    now = datetime.now(timezone.utc)
    rule_rows: dict[str, list[TriggerRule]] = {t: events.live_rules(session, t) for t in {k[0] for k in fresh}}
    new_events, new_firings = [], []
    for trigger_id, key in fresh:
        e = wanted[(trigger_id, key)]
        event_id = events._new_id()
        data = {"path": e.path, "name": posixpath.basename(e.path), "size": e.size, "mtime": e.mtime}
        view = events.event_view(triggers[trigger_id], event_id, "file", now, data)
        new_events.append(TriggerEvent(id=event_id, trigger_id=trigger_id, event_key=key, data=json.dumps(view), received_at=now))
        planned = rules.fire(view, [(r.id, json.loads(r.args_template), json.loads(r.filters)) for r in rule_rows[trigger_id]])
        for f in planned:
            firing = TriggerFiring(event_id=event_id, rule_id=f.rule_id, task_id=f.task_id, created_at=now,
                                   state=events.PENDING if f.error is None else events.REFUSED)
            if f.error is not None:
                firing.error_code, firing.error_message = rules.TemplateError.code, f.error
            new_firings.append(firing)
    session.add_all(new_events)
    try:
        session.flush()
        session.add_all(new_firings)
        session.commit()
    except sa.exc.IntegrityError:
        # Recorded meanwhile by another forwarder (a reconnect raced): one at a time, each once.
        session.rollback()
        for trigger_id, key in fresh:
            e = wanted[(trigger_id, key)]
            data = {"path": e.path, "name": posixpath.basename(e.path), "size": e.size, "mtime": e.mtime}
            rec = events.record_event(session, triggers[trigger_id], key, "file", data)
            if not rec.duplicate:
                new_firings += rec.firings
        new_firings = [f for f in new_firings if f in session]
    limited = {r.id for rs in rule_rows.values() for r in rs if r.max_concurrency is not None}
    try:
        events.submit_firings(session, store, [f for f in new_firings if f.rule_id not in limited], cache, quotas)
    except (redis.RedisError, sa.exc.SQLAlchemyError) as exc:  # recorded; the trigger runner submits them
        session.rollback()
        log.warning("file events recorded; submitting their tasks failed (%s), the runner retries", type(exc).__name__)


class FileTriggerBridge:
    """What the forwarder asks about file triggers, over the registry and the task store."""

    def __init__(self, sessions: object, store: TaskStore, quotas: QuotaChecker | None = None) -> None:
        self.sessions = sessions
        self.store = store
        self.quotas = quotas
        self.cache = OwnershipCache(5.0)

    def watches(self, endpoint_ids: list[str]) -> dict[str, list[FolderWatch]]:
        with self.sessions() as session:  # type: ignore[operator]
            return watches(session, endpoint_ids)

    def record(self, endpoint_id: str, batch: list[FileEvent]) -> list[str]:
        with self.sessions() as session:  # type: ignore[operator]
            return record_file_events(session, self.store, endpoint_id, batch, self.cache, self.quotas)

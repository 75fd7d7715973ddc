"""The trigger runner: turns due schedule times into events and submits pending firings.

    python -m web_service.triggers.runner      (settings from FNSERVE_* variables)

One loop, every ``tick`` seconds while there is anything to watch (up to ``idle_tick`` apart,
:func:`rules.next_pass`, while there is no schedule trigger, no rule with a concurrency limit and
no pending firing: then only a new trigger or a leftover firing can appear, and each pass opens a
database connection), one database session a pass:

- each live schedule trigger's due times (:func:`schedule.due_times` since its
  ``last_scheduled_at``) are recorded as events keyed by the time, and ``last_scheduled_at``
  moves on in the same transaction. Several runners (replicas, or one restarted over its
  predecessor) compute the same times; the unique event key lets one of them record each;
- pending firings are submitted: those of rules without a concurrency limit once they are
  ``grace`` seconds old (a webhook call submits its own at once; older ones were left by a
  crash or an outage of Redis), those of rules with a limit as their unfinished tasks allow
  (:func:`rules.admit`); finished tasks of limited rules are marked ``done``.

Any number of runners may run; each event still fires each rule once.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from web_service.quotas import QuotaChecker
from web_service.registry.models import Trigger, TriggerFiring, TriggerRule
from web_service.services import OwnershipCache
from web_service.task_store import TaskStore
from web_service.triggers import events, rules, schedule
from web_service.triggers.config import schedule_of

log = logging.getLogger("fnserve.triggers")

BATCH = 500  # pending firings submitted per pass


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)  # SQLite gives naive datetimes


class Runner:
    def __init__(self, sessions: sessionmaker[Session], store: TaskStore, quotas: QuotaChecker | None = None,
                 tick: float = 0.25, grace: float = 5.0, idle_tick: float = 2.0):
        self.sessions = sessions
        self.store = store
        self.quotas = quotas
        self.tick = tick
        self.grace = grace
        self.idle_tick = max(idle_tick, tick)
        self.watching = True  # the last pass saw a schedule trigger, a limited rule or a pending firing
        self.cache = OwnershipCache(5.0)
        self.stopping = threading.Event()

    def run(self) -> None:
        log.info("trigger runner started (tick %.2f s, %.2f s when idle)", self.tick, self.idle_tick)
        wait = self.tick
        while not self.stopping.is_set():
            try:
                self.step()
            except Exception:  # one bad pass (database or Redis away) must not end the loop
                log.exception("trigger runner pass failed; retrying")
                self.stopping.wait(min(5.0, self.tick * 8))
                continue
            wait = rules.next_pass(self.tick, self.idle_tick, wait, self.watching)
            self.stopping.wait(wait)

    def step(self, now: datetime | None = None) -> None:
        now = now or datetime.now(timezone.utc)
        self.watching = False
        with self.sessions() as session:  # one connection a pass (SQLite: a fresh one each time)
            self.fire_schedules(session, now)
            self.submit_pending(session, now)

    def fire_schedules(self, session: Session, now: datetime) -> int:
        fired = 0
        triggers = session.scalars(sa.select(Trigger).where(Trigger.kind == "schedule", Trigger.deleted_at.is_(None))).all()
        self.watching = self.watching or bool(triggers)
        for trig in triggers:
            spec = schedule_of(trig.config)
            last = _utc(trig.last_scheduled_at or trig.created_at)
            for t in schedule.due_times(spec, last, now):
                fired += self._fire_one(session, trig, t)
        return fired

    def _fire_one(self, session: Session, trig: Trigger, t: datetime) -> int:
        """Record the event of schedule time ``t`` and advance the trigger past it, atomically."""
        trig_id = trig.id
        # The same transaction records the event: another runner either recorded it first (the
        # unique key refuses ours) or will find last_scheduled_at moved and skip it.
        session.execute(sa.update(Trigger).where(Trigger.id == trig_id).values(last_scheduled_at=t))
        rec = events.record_event(session, trig, schedule.event_key(t), "schedule", {"scheduled_at": t.isoformat()}, now=t)
        if rec.duplicate:
            session.execute(sa.update(Trigger).where(Trigger.id == trig_id, sa.or_(
                Trigger.last_scheduled_at.is_(None), Trigger.last_scheduled_at < t)).values(last_scheduled_at=t),
                execution_options={"synchronize_session": False})
            session.commit()
            return 0
        log.info("trigger %s: schedule time %s fired %d rule(s)", trig_id, t.isoformat(), len(rec.firings))
        events.submit_firings(session, self.store, rec.firings, self.cache, self.quotas)
        return 1

    def submit_pending(self, session: Session, now: datetime) -> int:
        limited = {r.id: r.max_concurrency for r in session.scalars(
            sa.select(TriggerRule).where(TriggerRule.max_concurrency.is_not(None), TriggerRule.deleted_at.is_(None)))}
        if limited:
            self._mark_done(session, list(limited))
        old = now - timedelta(seconds=self.grace)
        pending = list(session.scalars(
            sa.select(TriggerFiring).where(TriggerFiring.state == events.PENDING)
            .order_by(TriggerFiring.created_at, TriggerFiring.event_id).limit(BATCH * 4)
        ))
        self.watching = self.watching or bool(limited) or bool(pending)
        active = self._active(session, list(limited)) if limited else {}
        by_rule: dict[str, list[TriggerFiring]] = defaultdict(list)
        for f in pending:
            by_rule[f.rule_id].append(f)
        chosen: list[TriggerFiring] = []
        for rule_id, fs in by_rule.items():
            if rule_id in limited:
                chosen += fs[:rules.admit(len(fs), active.get(rule_id, 0), limited[rule_id])]
            else:
                chosen += [f for f in fs if _utc(f.created_at) <= old]
        chosen = chosen[:BATCH]
        return events.submit_firings(session, self.store, chosen, self.cache, self.quotas) if chosen else 0

    def _active(self, session: Session, rule_ids: list[str]) -> dict[str, int]:
        rows = session.execute(sa.select(TriggerFiring.rule_id, sa.func.count()).where(
            TriggerFiring.rule_id.in_(rule_ids), TriggerFiring.state == events.SUBMITTED).group_by(TriggerFiring.rule_id))
        return {rid: n for rid, n in rows}

    def _mark_done(self, session: Session, rule_ids: list[str]) -> None:
        """Submitted firings of limited rules whose tasks finished (or expired) become done."""
        subs = list(session.scalars(sa.select(TriggerFiring).where(
            TriggerFiring.rule_id.in_(rule_ids), TriggerFiring.state == events.SUBMITTED).limit(BATCH * 4)))
        if not subs:
            return
        recs = self.store.get_many([f.task_id for f in subs])
        changed = False
        for f in subs:
            rec = recs.get(f.task_id)
            if rec is None or rec.finished:
                f.state = events.DONE
                changed = True
        if changed:
            session.commit()


def main() -> None:
    import os


    from fnserve.private_files import private_umask
    from web_service.log_safety import install_log_escaping
    from web_service.registry.db import migrate, session_factory
    from web_service.settings import Settings

    private_umask()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_escaping()
    settings = Settings.from_env()
    if settings.migrate_on_start:
        migrate(settings.database_url)
    from web_service.redis_client import redis_from_settings

    client = redis_from_settings(settings, socket_connect_timeout=5, socket_timeout=10)
    runner = Runner(session_factory(settings.database_url), TaskStore(client, result_ttl=settings.result_ttl),
                    QuotaChecker(client, settings.cache_seconds), tick=float(os.environ.get("FNSERVE_TRIGGER_TICK", "0.25")),
                    idle_tick=float(os.environ.get("FNSERVE_TRIGGER_IDLE_TICK", "2.0")))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: runner.stopping.set())
    runner.run()


if __name__ == "__main__":
    main()

"""Which schedule times are due (pure: no clock, no I/O).

Interval schedules sit on a grid anchored at the Unix epoch, so every replica and every restart
computes the same times; a time becomes an event keyed by itself, so two replicas computing it
make one event. Cron schedules are evaluated in their time zone by croniter.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from croniter import croniter

from web_service.triggers.config import Schedule


def due_times(schedule: Schedule, last: datetime, now: datetime) -> list[datetime]:
    """The schedule's times in ``(last, now]``, oldest first: at most ``1 + catch_up`` of them
    (the most recent), so a long outage fires a bounded catch-up, not thousands of tasks."""
    keep = 1 + schedule.catch_up
    if schedule.every is not None:
        every = schedule.every
        first = math.floor(last.timestamp() / every) + 1
        latest = math.floor(now.timestamp() / every)
        return [datetime.fromtimestamp(k * every, timezone.utc) for k in range(max(first, latest - keep + 1), latest + 1)]
    assert schedule.cron is not None
    # Walk back from now (croniter's get_prev is strictly before its start, and cron has whole
    # seconds at the finest: starting a second past now's whole second includes now).
    start = now.astimezone(ZoneInfo(schedule.timezone)).replace(microsecond=0) + timedelta(seconds=1)
    it = croniter(schedule.cron, start)
    out: list[datetime] = []
    while len(out) < keep:
        t = it.get_prev(datetime).astimezone(timezone.utc)
        if t <= last:
            break
        out.append(t)
    return out[::-1]


def next_time(schedule: Schedule, after: datetime) -> datetime:
    """The first time after ``after`` (for showing users when a trigger fires next)."""
    if schedule.every is not None:
        k = math.floor(after.timestamp() / schedule.every) + 1
        return datetime.fromtimestamp(k * schedule.every, timezone.utc)
    assert schedule.cron is not None
    t = croniter(schedule.cron, after.astimezone(ZoneInfo(schedule.timezone))).get_next(datetime)
    return t.astimezone(timezone.utc)  # type: ignore[no-any-return]


def event_key(t: datetime) -> str:
    """The key that makes one schedule time one event, whoever computes it."""
    return "schedule:" + t.astimezone(timezone.utc).isoformat(timespec="milliseconds")


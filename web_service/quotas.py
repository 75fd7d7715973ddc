"""Per-user quotas (tasks and core-hours per period) and the per-user request rate limit.

Quotas are set by the operator (``fnserve service quota set``) in the ``quotas`` table and
checked at submit:

- tasks per period: a Redis counter per (user, period window), incremented atomically by the
  batch size and given back if over the limit, so concurrent submits cannot overshoot;
- core-hours per period: the sum of CPU time in the ``usage`` table since the window started
  (cached for ``cache_seconds``; usage rows arrive within about a second of a task finishing,
  so a user can overshoot by what is running and what finished in that time).

Periods are calendar-aligned in UTC (an hour, a day from midnight, an ISO week from Monday, a
month from the 1st), so "when it resets" has one clear answer.

The rate limit is a token bucket per user in Redis (one Lua call per request, ``store/scripts/bucket.lua``): ``rate``
requests per second sustained, bursts of ``burst``; over it, 429 ``rate_limited`` with
``Retry-After``. Off when ``rate`` is 0.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

from fnserve.errors import QuotaExceeded, RateLimited
from web_service.registry.models import Quota
from web_service.store.keys import quota_tasks_key, rate_bucket_prefix
from web_service.store.scripts import register
from web_service.ttl_cache import TTLCache
from web_service.usage import core_hours_since

PERIODS = ("hour", "day", "week", "month")


def window(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The UTC window of ``period`` holding ``now``: ``(start, end)``."""
    now = now.astimezone(timezone.utc)
    if period == "hour":
        start = now.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if period == "month":
        start = day.replace(day=1)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        return start, end
    raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")


@dataclass(frozen=True)
class QuotaLimits:
    period: str
    max_tasks: int | None
    max_core_hours: float | None


_NONE = QuotaLimits("day", None, None)


class QuotaChecker:
    """Checks quotas at submit; keeps per-process caches so users without quotas cost nothing."""

    def __init__(self, r: redis.Redis, cache_seconds: float):
        self.r = r
        self._reserve = register(r, "reserve")  # rules.quota_allows, in one round trip
        self._limits: TTLCache[str, QuotaLimits] = TTLCache(cache_seconds)
        self._core_hours: TTLCache[tuple[str, datetime], float] = TTLCache(cache_seconds)

    def limits(self, session: Session, user_id: str) -> QuotaLimits:
        hit = self._limits.get(user_id)
        if hit is None:
            row = session.get(Quota, user_id)
            hit = _NONE if row is None else QuotaLimits(row.period, row.max_tasks, row.max_core_hours)
            self._limits.put(user_id, hit)
        return hit

    def reserve(self, session: Session, user_id: str, n_tasks: int, now: datetime | None = None) -> "Reservation | None":
        """Count ``n_tasks`` against the user's quotas or raise 429 ``quota_exceeded``.

        Returns a reservation to :meth:`Reservation.release` if the submit then fails.
        """
        q = self.limits(session, user_id)
        if q.max_tasks is None and q.max_core_hours is None:
            return None
        now = now or datetime.now(timezone.utc)
        start, end = window(q.period, now)
        if q.max_core_hours is not None:
            used = self._core_hours.get((user_id, start))
            if used is None:
                used = core_hours_since(session, user_id, start)
                self._core_hours.put((user_id, start), used)
            if used >= q.max_core_hours:
                raise _exceeded("core-hours", f"{used:.3f} of {q.max_core_hours:g} core-hours", q.period, end)
        if q.max_tasks is None:
            return None
        key = tasks_counter_key(user_id, start)
        count, reserved = self._reserve(keys=[key], args=[n_tasks, int(end.timestamp()) + 3600, q.max_tasks])
        if not reserved:
            raise _exceeded("tasks", f"{int(count) - n_tasks} of {q.max_tasks} tasks used, {n_tasks} more asked", q.period, end)
        return Reservation(self.r, key, n_tasks)


def tasks_counter_key(user_id: str, window_start: datetime) -> str:
    """The Redis counter of the tasks ``user_id`` submitted in the window starting then."""
    return quota_tasks_key(user_id, int(window_start.timestamp()))


@dataclass(frozen=True)
class QuotaUsage:
    """A user's quota and what they used of it in the current window (for the dashboard)."""

    limits: QuotaLimits
    window_start: datetime
    window_end: datetime
    tasks: int
    core_hours: float


def quota_usage(session: Session, r: redis.Redis, user_id: str, now: datetime | None = None) -> QuotaUsage | None:
    """The user's quota and its use in the current window, or None without a quota."""
    row = session.get(Quota, user_id)
    if row is None:
        return None
    start, end = window(row.period, now or datetime.now(timezone.utc))
    tasks = int(r.get(tasks_counter_key(user_id, start)) or 0)
    return QuotaUsage(QuotaLimits(row.period, row.max_tasks, row.max_core_hours), start, end, tasks,
                      core_hours_since(session, user_id, start))


@dataclass
class Reservation:
    r: redis.Redis
    key: str
    n: int

    def release(self, n: int | None = None) -> None:
        """Give back the reservation, or ``n`` of its tasks (those that were not written)."""
        self.r.decrby(self.key, self.n if n is None else n)


def _exceeded(which: str, used: str, period: str, resets: datetime) -> QuotaExceeded:
    return QuotaExceeded(
        f"{which} quota per {period} exceeded ({used}); it resets at {resets.isoformat()}",
        details={"quota": which, "period": period, "resets_at": resets.isoformat(),
                 "retry_after": max(1, math.ceil((resets - datetime.now(timezone.utc)).total_seconds()))},
    )


def set_quota(session: Session, user_id: str, period: str, max_tasks: int | None, max_core_hours: float | None) -> None:
    """Set (or, with both limits None, remove) a user's quota. Commits."""
    window(period, datetime.now(timezone.utc))  # validates the period
    session.execute(sa.delete(Quota).where(Quota.user_id == user_id))
    if max_tasks is not None or max_core_hours is not None:
        session.add(Quota(user_id=user_id, period=period, max_tasks=max_tasks, max_core_hours=max_core_hours))
    session.commit()


# -- rate limit ------------------------------------------------------------------------------------

class RateLimiter:
    """Token buckets in Redis, shared by every web worker: per user (``scope="user"``), or per
    client address for requests without a verified token (``scope="address"``)."""

    def __init__(self, r: redis.Redis, rate: float, burst: float, scope: str = "user"):
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.scope = scope
        self._prefix = rate_bucket_prefix(scope)
        self._script = register(r, "bucket")  # web_service.store.rules.bucket_take

    def check(self, who: str, cost: int = 1) -> None:
        """Take ``cost`` tokens from ``who``'s bucket, or raise 429 ``rate_limited``. A ``cost``
        of 0 takes none: it only checks that one is left."""
        if self.rate <= 0:
            return
        wait_ms = int(self._script(keys=[self._prefix + who], args=[self.rate, self.burst, repr(time.time()), cost]))
        if wait_ms > 0:
            retry = max(1, math.ceil(wait_ms / 1000))
            what = {"user": "", "trigger": " to this trigger"}.get(self.scope, " without a valid token from your address")
            raise RateLimited(
                f"too many requests{what}: the limit is {self.rate:g} per second (bursts of {self.burst:g}); retry in {retry} s",
                details={"retry_after": retry},
            )

"""Usage over time, per endpoint, from the ``usage`` table (see :mod:`web_service.usage`).

One grouped query per chart set: the database buckets rows by hour or day (UTC) using the
``(user_id, finished_at)`` index, so a page costs the same with 10 or 100,000 tasks in range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from web_service.registry.models import Usage

RANGES = {1: "last 24 hours", 7: "last 7 days", 30: "last 30 days"}


@dataclass
class Series:
    """One endpoint's usage per bucket (buckets without tasks are zeros)."""

    endpoint_id: str
    tasks: list[int]
    core_hours: list[float]
    peak_memory_kb: list[float]
    failed: int = 0

    @property
    def total_tasks(self) -> int:
        return sum(self.tasks)


@dataclass
class UsageSeries:
    labels: list[str]
    hourly: bool
    endpoints: list[Series] = field(default_factory=list)


def buckets(since: datetime, until: datetime, hourly: bool) -> list[datetime]:
    """Starts of the UTC hours (or days) from the one holding ``since`` up to ``until``."""
    since = since.astimezone(timezone.utc)
    start = since.replace(minute=0, second=0, microsecond=0)
    if not hourly:
        start = start.replace(hour=0)
    step = timedelta(hours=1) if hourly else timedelta(days=1)
    out = []
    while start < until:
        out.append(start)
        start += step
    return out


def bucket_label(moment: datetime, hourly: bool) -> str:
    return moment.strftime("%Y-%m-%d %H:00" if hourly else "%Y-%m-%d")


def _bucket(dialect: str, hourly: bool) -> Any:
    """SQL for a row's bucket label, the same text :func:`bucket_label` makes."""
    if dialect == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", Usage.finished_at), "YYYY-MM-DD HH24:00" if hourly else "YYYY-MM-DD")
    # SQLite keeps times as UTC text ('2025-01-31 13:04:05.123456'): a prefix is the bucket,
    # and cutting text costs a fraction of strftime() per row.
    if hourly:
        return sa.func.substr(Usage.finished_at, 1, 13).concat(":00")
    return sa.func.substr(Usage.finished_at, 1, 10)


def usage_series(session: Session, user_id: str, since: datetime, until: datetime) -> UsageSeries:
    """``user_id``'s tasks, core-hours and peak memory per endpoint and bucket (hours for a
    range of up to two days, else days)."""
    hourly = until - since <= timedelta(days=2)
    starts = buckets(since, until, hourly)
    labels = [bucket_label(b, hourly) for b in starts]
    index = {label: i for i, label in enumerate(labels)}
    bucket = _bucket(session.get_bind().dialect.name, hourly).label("bucket")
    rows = session.execute(
        sa.select(Usage.endpoint_id, bucket, sa.func.count().label("tasks"),
                  sa.func.coalesce(sa.func.sum(Usage.cpu_time), 0.0).label("cpu"),
                  sa.func.coalesce(sa.func.max(Usage.max_rss_kb), 0.0).label("rss"),
                  sa.func.sum(sa.case((Usage.state == "failed", 1), else_=0)).label("failed"))
        .where(Usage.user_id == user_id, Usage.finished_at >= since, Usage.finished_at < until)
        .group_by(Usage.endpoint_id, bucket)
    ).all()
    by_endpoint: dict[str, Series] = {}
    n = len(labels)
    for row in rows:
        i = index.get(row.bucket)
        if i is None:
            continue
        s = by_endpoint.setdefault(row.endpoint_id, Series(row.endpoint_id, [0] * n, [0.0] * n, [0.0] * n))
        s.tasks[i] += int(row.tasks)
        s.core_hours[i] += float(row.cpu) / 3600.0
        s.peak_memory_kb[i] = max(s.peak_memory_kb[i], float(row.rss))
        s.failed += int(row.failed or 0)
    series = sorted(by_endpoint.values(), key=lambda s: -s.total_tasks)
    return UsageSeries(labels, hourly, series)


def recent_failures(session: Session, user_id: str, endpoint_id: str, limit: int = 5) -> list[Usage]:
    """``user_id``'s latest failed tasks on ``endpoint_id``."""
    return list(session.scalars(
        sa.select(Usage).where(Usage.user_id == user_id, Usage.endpoint_id == endpoint_id, Usage.state == "failed")
        .order_by(Usage.finished_at.desc()).limit(limit)
    ))


def failures_since(session: Session, user_id: str, since: datetime) -> dict[str, int]:
    """``user_id``'s failed tasks per endpoint since ``since``."""
    return {eid: int(n) for eid, n in session.execute(
        sa.select(Usage.endpoint_id, sa.func.count())
        .where(Usage.user_id == user_id, Usage.finished_at >= since, Usage.state == "failed")
        .group_by(Usage.endpoint_id)
    )}


__all__ = ["RANGES", "Series", "UsageSeries", "bucket_label", "buckets", "failures_since", "recent_failures", "usage_series"]

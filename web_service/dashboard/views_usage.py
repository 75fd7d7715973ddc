"""Usage (the caller's tasks, core-hours and peak memory over time per endpoint, against their
quota) and Operators (service-wide health, queues, connections and error rates)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from flask import Response, render_template, request

from web_service.dashboard import live
from web_service.dashboard.blueprint import bp, require_operator, who
from web_service.dashboard.charts import BarChart, bar_chart, gauge
from web_service.dashboard.formatting import number, size
from web_service.dashboard.labels import names
from web_service.dashboard.operator_stats import operator_view
from web_service.dashboard.usage_series import RANGES, Series, usage_series
from web_service.quotas import quota_usage
from web_service.state import current
from web_service.task_store import status_channel


def _days() -> int:
    try:
        days = int(request.args.get("days", "7"))
    except ValueError:
        days = 7
    return days if days in RANGES else 7


def series_charts(s: Series, labels: list[str], task_limit: float | None) -> dict[str, BarChart]:
    """The three charts of one endpoint; ``task_limit`` (a quota per bucket) is drawn as a line."""
    def axis(label: str) -> str:  # "2025-01-31 13:00" -> "13:00", "2025-01-31" -> "01-31"
        return label[-5:]

    return {
        "tasks": bar_chart(list(zip(labels, map(float, s.tasks))), lambda v: number(v), limit=task_limit,
                           limit_label="quota" if task_limit else "", axis=axis),
        "core_hours": bar_chart(list(zip(labels, s.core_hours)), lambda v: number(v, 3), axis=axis),
        "memory": bar_chart(list(zip(labels, s.peak_memory_kb)), lambda v: size(v * 1024), axis=axis),
    }


@bp.get("/usage")
def usage() -> str:
    state, me = current(), who()
    days = _days()
    until = datetime.now(timezone.utc)
    since = until - timedelta(days=days)
    with state.sessions() as session:
        data = usage_series(session, me.user_id, since, until)
        quota = quota_usage(session, state.store.r, me.user_id, until)
        labels = names(session, me, (), [s.endpoint_id for s in data.endpoints])
    # A task quota per bucket's length is drawn on the task charts (an hourly quota on hourly bars...).
    bucket = "hour" if data.hourly else "day"
    limit = float(quota.limits.max_tasks) if quota and quota.limits.max_tasks and quota.limits.period == bucket else None
    gauges = {}
    if quota is not None:
        if quota.limits.max_tasks is not None:
            gauges["tasks"] = gauge(quota.tasks, quota.limits.max_tasks)
        if quota.limits.max_core_hours is not None:
            gauges["core_hours"] = gauge(quota.core_hours, quota.limits.max_core_hours)
    charts = [(s, series_charts(s, data.labels, limit)) for s in data.endpoints]
    return render_template("dashboard/usage.html", days=days, ranges=RANGES, data=data, charts=charts, names=labels,
                           quota=quota, gauges=gauges)


@bp.get("/operators")
def operators() -> str:
    require_operator()
    return render_template("dashboard/operators.html", view=operator_view(current()))


@bp.get("/stream/operators")
def operator_stream() -> Response:
    """The Operators page's figures again whenever an endpoint's status changes (at most every
    two seconds)."""
    require_operator()
    state = current()
    listener = live.Listener(state.store.r, patterns=[status_channel("*")])

    def snapshot() -> Iterator[str]:
        yield live.event("reset", {"html": render_template("dashboard/_operators.html", view=operator_view(state))})

    return live.stream(listener, snapshot, lambda wake: snapshot(), live.lifetime(), min_interval=2.0)

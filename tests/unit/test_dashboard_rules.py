"""The dashboard's pure rules: chart geometry, session and CSRF decisions, formatting, buckets."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from web_service.dashboard import charts
from web_service.dashboard.blueprint import is_local_path
from web_service.dashboard.formatting import duration, size, when
from web_service.dashboard.operator_stats import EndpointLoad, busiest
from web_service.dashboard.sessions import (
    IDLE_SECONDS, MAX_SESSION_SECONDS, cookie_options, idle_ttl, needs_csrf, session_end, tokens_match,
)
from web_service.dashboard.usage_series import bucket_label, buckets


def test_bars_scale_to_the_largest_value_and_a_larger_quota_line():
    chart = charts.bar_chart([("a", 1.0), ("b", 4.0), ("c", 0.0)], str, height=122)
    plot = chart.plot_bottom - chart.plot_top
    assert [round(b.height, 6) for b in chart.bars] == [plot / 4, plot, 0.0]
    assert all(b.y + b.height == pytest.approx(chart.plot_bottom) for b in chart.bars)
    assert chart.limit_y is None
    with_quota = charts.bar_chart([("a", 1.0), ("b", 4.0)], str, limit=8.0, limit_label="quota")
    # The quota is the top of the scale: the largest bar reaches half way, the line the top.
    assert with_quota.limit_y == pytest.approx(with_quota.plot_top)
    assert with_quota.bars[1].height == pytest.approx((with_quota.plot_bottom - with_quota.plot_top) / 2)


def test_bars_of_zeros_and_many_labels_stay_drawable():
    chart = charts.bar_chart([(str(i), 0.0) for i in range(30)], str, max_labels=6, axis=lambda s: "x" + s)
    assert all(b.height == 0 and b.width >= 1 for b in chart.bars)
    assert len(chart.x_labels) <= 6 and chart.x_labels[0][1] == "x0"


def test_hops_follow_the_journey_and_fall_back_to_submit_to_finish():
    stamps = {"submitted": 10.0, "dispatched": 10.5, "finished": 13.0}
    timings = {"site_received": 10.6, "worker_received": 10.7, "worker_started": 10.8, "worker_finished": 12.8, "site_result": 12.9}
    hops = charts.task_hops(stamps, timings)
    # The forwarder's own timing is missing: the service's dispatch time stands in for it.
    assert [h[0] for h in hops] == [label for label, _, _ in charts.HOPS]
    assert hops[0] == ("waiting at the service", 10.0, 10.5) and hops[4] == ("running", 10.8, 12.8)
    assert charts.task_hops({"submitted": 1.0, "finished": 2.0}, {}) == [("submitted to finished", 1.0, 2.0)]
    assert charts.task_hops({"submitted": 1.0}, {}) == []


def test_timeline_places_hops_on_one_axis_and_clips_clock_skew():
    tl = charts.timeline([("a", 0.0, 1.0), ("b", 1.0, 3.0), ("skewed", 3.0, 2.9)], width=500, label_width=100, value_width=0)
    a, b, skewed = tl.segments
    assert (a.x, a.width) == (100.0, pytest.approx(400 / 3))
    assert b.x == pytest.approx(100 + 400 / 3) and b.width == pytest.approx(800 / 3)
    assert skewed.seconds == 0.0 and skewed.width == 1.0  # drawn, with no length
    assert tl.total_seconds == 3.0 and b.y > a.y
    assert charts.timeline([]).segments == []


def test_gauge_stops_at_full_and_says_over():
    assert charts.gauge(5, 10, width=200).used_width == 100 and not charts.gauge(5, 10).over
    over = charts.gauge(15, 10, width=200)
    assert over.used_width == 200 and over.over


def test_a_session_ends_with_its_token_and_within_a_week_and_idles_out():
    now = 1_000_000.0
    assert session_end(now, None) == now + MAX_SESSION_SECONDS
    assert session_end(now, now + 60) == now + 60
    assert session_end(now, now + 10 * MAX_SESSION_SECONDS) == now + MAX_SESSION_SECONDS
    assert idle_ttl(now, now + 10 * IDLE_SECONDS) == IDLE_SECONDS
    assert idle_ttl(now, now + 30) == 30
    assert idle_ttl(now, now - 1) == 0


def test_csrf_tokens_must_both_be_present_and_equal():
    assert tokens_match("abc", "abc")
    assert not tokens_match("abc", "abd") and not tokens_match("abc", None) and not tokens_match(None, None)
    assert not tokens_match("", "")
    assert [m for m in ("GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE", "PATCH") if needs_csrf(m)] == ["POST", "PUT", "DELETE", "PATCH"]


def test_cookies_are_httponly_strict_and_secure_over_https():
    assert cookie_options(True) == {"httponly": True, "samesite": "Strict", "secure": True, "path": "/dashboard", "max_age": None}
    assert cookie_options(False)["secure"] is False


@pytest.mark.parametrize("target, ok", [
    ("/dashboard/tasks?page=2", True), ("/dashboard/tasks/abc", True),
    ("https://evil.example/", False), ("//evil.example/dashboard/", False), ("/dashboard//evil.example", False),
    ("/dashboard/\\evil", False), ("/v1/tasks", False), ("/dashboard/../v1/tasks", False), ("", False), (None, False),
])
def test_after_login_only_dashboard_paths_are_followed(target, ok):
    assert is_local_path(target) is ok


def test_formatting():
    assert when(0) == "1970-01-01 00:00:00 UTC" and when(None) == "-"
    assert when(datetime(2025, 1, 2, 3, 4, 5)) == "2025-01-02 03:04:05 UTC"  # naive registry times are UTC
    assert [duration(x) for x in (0.0000005, 0.0123, 2.34, 125, 7300, 90000)] == ["0 us", "12 ms", "2.3 s", "2 min 5 s", "2 h 1 min", "1 d 1 h"]
    assert [size(x) for x in (12, 2048, 5 * 1024 ** 3)] == ["12 B", "2.0 KiB", "5.0 GiB"]


def test_usage_buckets_cover_the_range_in_utc_hours_or_days():
    since = datetime(2025, 1, 30, 22, 30, tzinfo=timezone.utc)
    until = datetime(2025, 2, 1, 1, 0, tzinfo=timezone.utc)
    days = buckets(since, until, hourly=False)
    assert [bucket_label(d, False) for d in days] == ["2025-01-30", "2025-01-31", "2025-02-01"]
    hours = buckets(since, until, hourly=True)
    assert bucket_label(hours[0], True) == "2025-01-30 22:00" and bucket_label(hours[-1], True) == "2025-02-01 00:00"
    assert len(hours) == 27


def test_operators_see_disconnected_endpoints_with_work_first_then_the_busiest():
    def load(name: str, connected: bool, waiting: int, in_flight: int = 0) -> EndpointLoad:
        return EndpointLoad(name, name, "o", connected, None, waiting, in_flight)

    loads = [load("idle", True, 0), load("busy", True, 50, 3), load("stuck", False, 5), load("gone", False, 0), load("warm", True, 0, 9)]
    assert [e.name for e in busiest(loads, 4)] == ["stuck", "busy", "warm", "gone"]


def test_the_submission_logs_ttl_is_renewed_first_then_at_most_once_a_minute():
    from web_service.task_store import LOG_UPKEEP_SECONDS, log_upkeep_due

    assert log_upkeep_due(None, 5.0)
    assert not log_upkeep_due(5.0, 5.0 + LOG_UPKEEP_SECONDS - 0.1)
    assert log_upkeep_due(5.0, 5.0 + LOG_UPKEEP_SECONDS)

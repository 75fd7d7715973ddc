"""Pure rules: who an access snapshot permits, quota windows and their resets, plaintext binds."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from web_service.forwarder_auth import local_only as _local_only
from web_service.quotas import window
from web_service.services.access import Access


def test_access_permits_owner_public_users_and_group_members_only():
    acc = Access(owner_id="o", users=frozenset({"u"}), groups=frozenset({"g"}))
    assert acc.permits("o") and acc.permits("u")
    assert not acc.permits("x") and not acc.permits("x", frozenset({"h"}))
    assert acc.permits("x", frozenset({"h", "g"}))
    assert Access(owner_id="o", public=True).permits("anyone")


@pytest.mark.parametrize("period, start, end", [
    ("hour", "2025-03-31T23:00:00", "2025-04-01T00:00:00"),
    ("day", "2025-03-31T00:00:00", "2025-04-01T00:00:00"),
    ("week", "2025-03-31T00:00:00", "2025-04-07T00:00:00"),  # 2025-03-31 is a Monday
    ("month", "2025-03-01T00:00:00", "2025-04-01T00:00:00"),
])
def test_quota_windows_are_calendar_aligned_in_utc(period, start, end):
    now = datetime(2025, 3, 31, 23, 59, 30, tzinfo=timezone.utc)
    assert window(period, now) == (datetime.fromisoformat(start + "+00:00"), datetime.fromisoformat(end + "+00:00"))


def test_december_month_window_ends_next_year_and_bad_periods_are_refused():
    assert window("month", datetime(2025, 12, 9, tzinfo=timezone.utc))[1] == datetime(2026, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(ValueError):
        window("fortnight", datetime.now(timezone.utc))


def test_only_loopback_and_local_transports_count_as_local():
    assert _local_only("tcp://127.0.0.1:5") and _local_only("tcp://localhost:5") and _local_only("ipc:///tmp/x")
    assert not _local_only("tcp://0.0.0.0:5") and not _local_only("tcp://10.0.0.2:5") and not _local_only("tcp://*:5")

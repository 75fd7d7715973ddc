"""How the dashboard writes times, durations, sizes and counts (Jinja filters; pure)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any


def when(ts: float | datetime | None) -> str:
    """A moment in UTC, to the second."""
    if ts is None:
        return "-"
    if isinstance(ts, datetime):
        moment = ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
    else:
        moment = datetime.fromtimestamp(float(ts), timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(float(ts), timezone.utc).isoformat()


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0.0, float(seconds))
    if s < 1:
        return f"{s * 1000:.0f} ms" if s >= 0.001 else f"{s * 1e6:.0f} us"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "never"
    return duration((now if now is not None else time.time()) - float(ts)) + " ago"


def size(n: float | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def number(n: float | None, digits: int = 0) -> str:
    if n is None:
        return "-"
    return f"{float(n):,.{digits}f}"


def percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * float(fraction):.1f}%"


FILTERS: dict[str, Any] = {"when": when, "iso": iso, "duration": duration, "ago": ago, "size": size,
                           "number": number, "percent": percent}

__all__ = ["FILTERS", "ago", "duration", "iso", "number", "percent", "size", "when"]

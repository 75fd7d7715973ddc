"""Small charts as geometry (pure functions): the templates draw them as inline SVG.

No chart library and no script: a bar chart of a series over time, the per-hop timeline of a
task, and a gauge of a quota. Coordinates are in SVG user units; every shape is drawn with
presentation attributes only (the Content-Security-Policy allows no inline style).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# A task's journey, hop by hop: (label, from event, to event). Events are the task's
# timestamps (service clock) and the timings the forwarder, site manager and worker add.
HOPS: tuple[tuple[str, str, str], ...] = (
    ("waiting at the service", "submitted", "forwarder_dispatched"),
    ("forwarder to site manager", "forwarder_dispatched", "site_received"),
    ("site manager to worker", "site_received", "worker_received"),
    ("loading the function", "worker_received", "worker_started"),
    ("running", "worker_started", "worker_finished"),
    ("worker to site manager", "worker_finished", "site_result"),
    ("site manager to service", "site_result", "finished"),
)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: str


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    plot_top: int
    plot_bottom: int
    bars: list[Bar]
    x_labels: list[tuple[float, str]]
    y_max_label: str
    limit_y: float | None = None
    limit_label: str = ""


@dataclass(frozen=True)
class Segment:
    label: str
    x: float
    y: float
    width: float
    seconds: float


@dataclass(frozen=True)
class Timeline:
    width: int
    height: int
    label_width: int
    row_height: int
    segments: list[Segment]
    total_seconds: float


@dataclass(frozen=True)
class Gauge:
    width: int
    used_width: float
    fraction: float

    @property
    def over(self) -> bool:
        return self.fraction >= 1.0


def bar_chart(points: list[tuple[str, float]], fmt: Callable[[float], str], *, width: int = 420, height: int = 140,
              limit: float | None = None, limit_label: str = "", max_labels: int = 6,
              axis: Callable[[str], str] = str) -> BarChart:
    """Bars for ``(label, value)`` points, scaled to the largest value (or ``limit``, drawn as
    a line, when it is larger); at most ``max_labels`` labels under them, shortened by ``axis``."""
    top, bottom, left = 16, height - 22, 4
    plot_h = bottom - top
    top_value = max([v for _, v in points] + [limit or 0.0, 0.0])
    scale = plot_h / top_value if top_value > 0 else 0.0
    slot = (width - left) / max(1, len(points))
    gap = min(2.0, slot * 0.2)
    bars = []
    for i, (label, value) in enumerate(points):
        h = max(0.0, value) * scale
        bars.append(Bar(x=left + i * slot + gap / 2, y=bottom - h, width=max(1.0, slot - gap), height=h,
                        label=label, value=fmt(value)))
    step = max(1, -(-len(points) // max_labels))
    x_labels = [(b.x + b.width / 2, axis(b.label)) for i, b in enumerate(bars) if i % step == 0]
    limit_y = bottom - limit * scale if limit is not None and scale else None
    return BarChart(width, height, top, bottom, bars, x_labels, fmt(top_value), limit_y, limit_label)


def task_hops(timestamps: dict[str, float], timings: dict[str, float]) -> list[tuple[str, float, float]]:
    """``(label, start, end)`` of each hop whose two ends are known, in journey order.

    Without any hop (a task cancelled before dispatch, one still waiting), the whole time from
    submit to finish is one hop."""
    events = {**timings, **timestamps}
    if "forwarder_dispatched" not in events and "dispatched" in events:
        events["forwarder_dispatched"] = events["dispatched"]
    hops = [(label, events[a], events[b]) for label, a, b in HOPS if a in events and b in events]
    if not hops and "submitted" in events and "finished" in events:
        hops = [("submitted to finished", events["submitted"], events["finished"])]
    return hops


def timeline(hops: list[tuple[str, float, float]], *, width: int = 640, label_width: int = 190,
             value_width: int = 80, row_height: int = 20) -> Timeline:
    """A Gantt-like chart of hops on one time axis from the first hop's start. Hosts' clocks
    differ, so a hop that seems to end before it starts is drawn with no length."""
    if not hops:
        return Timeline(width, 0, label_width, row_height, [], 0.0)
    t0 = min(start for _, start, _ in hops)
    t1 = max(max(start, end) for _, start, end in hops)
    total = max(t1 - t0, 1e-9)
    plot = width - label_width - value_width
    segments = []
    for i, (label, start, end) in enumerate(hops):
        seconds = max(0.0, end - start)
        x = label_width + (start - t0) / total * plot
        segments.append(Segment(label=label, x=x, y=i * row_height + 4, width=max(1.0, seconds / total * plot),
                                seconds=seconds))
    return Timeline(width, len(hops) * row_height + 8, label_width, row_height, segments, t1 - t0)


def gauge(used: float, limit: float, *, width: int = 240) -> Gauge:
    """How much of ``limit`` is ``used`` (the bar stops at full)."""
    fraction = used / limit if limit > 0 else 1.0
    return Gauge(width, min(1.0, max(0.0, fraction)) * width, fraction)


__all__ = ["HOPS", "Bar", "BarChart", "Gauge", "Segment", "Timeline", "bar_chart", "gauge", "task_hops", "timeline"]

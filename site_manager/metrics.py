"""Prometheus metrics of a site manager, served on ``metrics: HOST:PORT`` of the endpoint config
(or ``$FNSERVE_SITE_METRICS``); nothing is served when neither is set.

Metrics (names start with ``fnserve_site_``)::

    tasks_total{outcome}     counter: task attempts handed to the engine (``received``) and
                             their results (``success``, ``failed``); a task rerun after a
                             lost worker counts once per attempt
    tasks_running            gauge: tasks handed to the engine whose result is not back yet
    hop_seconds{hop}         histogram of each hop a task takes here, from its timings:
                             forwarder_to_site (forwarder dispatched -> received here; two
                             hosts' clocks), site_to_worker (received -> the worker starts the
                             function), worker_run (the function itself), worker_to_site
                             (function done -> result back here)

Labels never carry task ids, users or payloads. ``prometheus_client`` is imported only when
metrics are on, so a site manager without them starts as before.
"""

from __future__ import annotations

from typing import Any, Callable

from fnserve.messages import ResultMessage

# Hop name -> (timing it starts at, timing it ends at).
HOPS = {
    "forwarder_to_site": ("forwarder_dispatched", "site_received"),
    "site_to_worker": ("site_received", "worker_started"),
    "worker_run": ("worker_started", "worker_finished"),
    "worker_to_site": ("worker_finished", "site_result"),
}
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400)


def hop_durations(timings: dict[str, float]) -> dict[str, float]:
    """The hops a result's timings cover, in seconds (a hop missing either end is left out;
    clock skew between hosts never makes one negative)."""
    out = {}
    for hop, (start, end) in HOPS.items():
        if timings.get(start) and timings.get(end):
            out[hop] = max(0.0, timings[end] - timings[start])
    return out


class SiteMetrics:
    """The site manager's metrics; :meth:`serve` starts the HTTP server."""

    def __init__(self, running: Callable[[], int]):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        # A registry of its own: several site managers in one process (tests) never clash.
        self.registry = CollectorRegistry()
        tasks = Counter("fnserve_site_tasks", "Tasks handed to the engine (received) and results sent back, by outcome",
                        ("outcome",), registry=self.registry)
        self._received, self._success, self._failed = (tasks.labels(o) for o in ("received", "success", "failed"))
        Gauge("fnserve_site_tasks_running", "Tasks handed to the engine whose result is not back yet",
              registry=self.registry).set_function(lambda: float(running()))
        hops = Histogram("fnserve_site_hop_seconds", "Time a task spends on each hop, by hop", ("hop",),
                         buckets=_BUCKETS, registry=self.registry)
        self._hops = {hop: hops.labels(hop) for hop in HOPS}

    def received(self) -> None:
        self._received.inc()

    def results(self, results: list[ResultMessage]) -> None:
        for r in results:
            (self._success if r.ok else self._failed).inc()
            for hop, seconds in hop_durations(r.timings).items():
                self._hops[hop].observe(seconds)

    def serve(self, bind: str) -> tuple[str, int]:
        from fnserve.metrics_bind import serve_metrics

        return serve_metrics(bind, self.registry)


class NoMetrics:
    """Metrics off: the same calls, doing nothing."""

    def received(self) -> None:
        pass

    def results(self, results: list[ResultMessage]) -> None:
        pass


def site_metrics(bind: str, running: Callable[[], int], log: Any) -> SiteMetrics | NoMetrics:
    """Metrics served on ``bind``, or :class:`NoMetrics` when ``bind`` is empty."""
    if not bind:
        return NoMetrics()
    metrics = SiteMetrics(running)
    host, port = metrics.serve(bind)
    log.info("site manager metrics on http://%s:%d/metrics", host, port)
    return metrics

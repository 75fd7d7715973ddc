"""Prometheus metrics of the forwarder, served on ``FNSERVE_FORWARDER_METRICS`` (``HOST:PORT``).

Metrics (names start with ``fnserve_forwarder_``)::

    tasks_total{state}                 counter: tasks this forwarder moved, by what happened:
                                       dispatched (sent to a site manager), success / failed
                                       (a result recorded; first wins), duplicate (a result for
                                       a task already finished, ignored), rejected (a result
                                       from an endpoint that did not hold the task, dropped),
                                       requeued (in flight on a lost connection: back in queue)
    dispatch_delay_seconds             histogram: submitted -> sent to the site manager (the
                                       queue wait plus the dispatch hop)
    round_trip_seconds                 histogram: sent to the site manager -> result recorded
    result_bytes                       histogram: size of each recorded result (once per task)
    file_events_total                  counter: file events received from site managers (file triggers)
    file_event_batches_total           counter: transactions that recorded them (one per endpoint per
                                       drain pass, however many FileEventBatch messages it held):
                                       a burst of files is taken in few of these, not one per file
    connected_endpoints                gauge: site managers registered with this forwarder
    queued_tasks{endpoint_id}          gauge: tasks waiting for a connected endpoint
    inflight_tasks{endpoint_id}        gauge: tasks sent to it and not yet finished

The three gauges are read at scrape time (one Redis pipeline over the connected endpoints): the
task path pays only counter increments and histogram observations (microseconds per batch).
Labels are endpoint ids, never task ids, users or payloads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Iterator

import redis
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from web_service.metrics import RESULT_SIZE_BUCKETS
from web_service.task_store import inflight_key, queue_key

if TYPE_CHECKING:
    from fnserve.messages import ResultMessage, TaskMessage
    from web_service.forwarder import Forwarder

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)

TASKS = Counter("fnserve_forwarder_tasks", "Tasks moved by this forwarder, by what happened to them", ("state",))
DISPATCH_DELAY = Histogram("fnserve_forwarder_dispatch_delay_seconds", "From submission to dispatch to the site manager",
                           buckets=_LATENCY_BUCKETS)
ROUND_TRIP = Histogram("fnserve_forwarder_round_trip_seconds", "From dispatch to the site manager to its result recorded",
                       buckets=_LATENCY_BUCKETS)
RESULT_BYTES = Histogram("fnserve_forwarder_result_bytes", "Size of each recorded result (serialized bytes)",
                         buckets=RESULT_SIZE_BUCKETS)
FILE_EVENTS = Counter("fnserve_forwarder_file_events", "File events received from site managers (file triggers)")
FILE_EVENT_BATCHES = Counter("fnserve_forwarder_file_event_batches",
                             "Transactions that recorded file events (one per endpoint per drain pass)")
# Children made once: .labels() is a dict lookup under a lock, not free on the task path.
DISPATCHED, SUCCESS, FAILED = TASKS.labels("dispatched"), TASKS.labels("success"), TASKS.labels("failed")
DUPLICATE, REJECTED, REQUEUED = TASKS.labels("duplicate"), TASKS.labels("rejected"), TASKS.labels("requeued")


def count_dispatched(claimed: list[tuple["TaskMessage", float]], now: float) -> None:
    """Tasks sent now, each with the time it was submitted (0.0: unknown)."""
    DISPATCHED.inc(len(claimed))
    for _, submitted in claimed:
        if submitted:
            DISPATCH_DELAY.observe(max(0.0, now - submitted))


def count_recorded(results: list["ResultMessage"], recorded: Iterable[str], rejected: int, now: float) -> None:
    """What one recorded batch did: results recorded now (by outcome), rejected, duplicates."""
    recorded = set(recorded)
    ok = failed = 0
    for r in results:
        if r.task_id not in recorded:
            continue
        if r.ok:
            ok += 1
        else:
            failed += 1
        RESULT_BYTES.observe(len(r.data))
        sent = r.timings.get("forwarder_dispatched")
        if sent:
            ROUND_TRIP.observe(max(0.0, now - sent))
    if ok:
        SUCCESS.inc(ok)
    if failed:
        FAILED.inc(failed)
    if rejected:
        REJECTED.inc(rejected)
    duplicates = len(results) - len(recorded) - rejected
    if duplicates > 0:
        DUPLICATE.inc(duplicates)


def count_file_events(n: int) -> None:
    """One batch of ``n`` file events recorded (in one transaction)."""
    FILE_EVENT_BATCHES.inc()
    FILE_EVENTS.inc(n)


def count_requeued(n: int) -> None:
    if n:
        REQUEUED.inc(n)


class ForwarderCollector(Collector):
    """The gauges read at scrape time from a running :class:`~web_service.forwarder.Forwarder`."""

    def __init__(self, forwarder: "Forwarder"):
        self.forwarder = forwarder

    def collect(self) -> Iterator[GaugeMetricFamily]:
        # list(): one C-level copy under the GIL while the loop thread may add or drop endpoints.
        endpoints = sorted(list(self.forwarder.connections.by_endpoint))
        yield GaugeMetricFamily("fnserve_forwarder_connected_endpoints", "Site managers registered with this forwarder",
                                value=len(endpoints))
        queued = GaugeMetricFamily("fnserve_forwarder_queued_tasks", "Tasks waiting for a connected endpoint",
                                   labels=["endpoint_id"])
        inflight = GaugeMetricFamily("fnserve_forwarder_inflight_tasks", "Tasks sent to a connected endpoint, not finished",
                                     labels=["endpoint_id"])
        counts: list[int] = []
        if endpoints:
            pipe = self.forwarder.store.r.pipeline(transaction=False)
            for e in endpoints:
                pipe.llen(queue_key(e))
                pipe.scard(inflight_key(e))
            try:
                counts = pipe.execute()
            except redis.RedisError:
                counts = []  # Redis away: the scrape still answers, without these two
        if counts:
            for i, e in enumerate(endpoints):
                queued.add_metric([e], counts[2 * i])
                inflight.add_metric([e], counts[2 * i + 1])
        yield queued
        yield inflight


__all__ = ["ForwarderCollector", "count_dispatched", "count_file_events", "count_recorded", "count_requeued"]

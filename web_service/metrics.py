"""Prometheus metrics of the web service, served on ``GET /metrics`` of the service's own port.

Metrics (all names start with ``fnserve_web_``)::

    http_requests_total{route, method, code}     counter: requests answered, by Flask's route
                                                 template (``/v1/tasks/<task_id>``, never the
                                                 concrete path: no ids become labels) and status
    http_request_duration_seconds{route}         histogram: time to answer (long-polls included)
    longpoll_waits_total{outcome}                counter: long-polls admitted / refused (429
                                                 too_many_waits, 503 service_busy)
    longpoll_waits_open                          gauge: long-polls open now (summed over the
                                                 live worker processes)
    result_bytes                                 histogram: size of each serialized result the
                                                 service hands to a client (a result read twice
                                                 counts twice; the forwarder's
                                                 ``fnserve_forwarder_result_bytes`` counts each
                                                 recorded result once)

Several gunicorn workers: prometheus_client's multiprocess mode. ``python -m web_service.server``
(web_service/server.py, which must not import this module before forking) points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before the workers fork (the operator's
own, wiped at start, when set), each worker writes its values there, any worker answering
``/metrics`` sums them all, and the master drops a dead worker's live gauges. Counters of a
worker that died or was replaced keep counting (they stay in the folder), so rates never jump
back. Without that variable (Werkzeug's server, tests) the process's own registry is served.

Who may read ``/metrics`` (:func:`may_read_metrics`): it holds route templates, status codes,
counts and sizes, never a payload, a user, a token or a task id. Still, it is for operators:
with ``FNSERVE_METRICS_TOKEN`` set, only requests carrying ``Authorization: Bearer <that
token>``; without it, only requests from this host's loopback that did not come through a
proxy (no ``X-Forwarded-For``). Everyone else gets 403 ``metrics_forbidden``.
"""

from __future__ import annotations

import hmac
import os
import time

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from fnserve.metrics_bind import is_loopback

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "<unmatched>"  # requests for no route (404, 405): one label for all of them

# Seconds: quick routes sit in the millisecond buckets, long-polls in the last ones.
_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# Bytes: from a None result (a few bytes) to the 10 MiB default limit.
RESULT_SIZE_BUCKETS = (64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 10485760, 67108864)

REQUESTS = Counter("fnserve_web_http_requests", "Requests answered, by route template, method and status code",
                   ("route", "method", "code"))
DURATION = Histogram("fnserve_web_http_request_duration_seconds", "Time to answer a request, by route template",
                     ("route",), buckets=_DURATION_BUCKETS)
WAITS = Counter("fnserve_web_longpoll_waits", "Long-polls asked for, by outcome (admitted, too_many_waits, service_busy)",
                ("outcome",))
WAITS_OPEN = Gauge("fnserve_web_longpoll_waits_open", "Long-polls open now", multiprocess_mode="livesum")
RESULT_BYTES = Histogram("fnserve_web_result_bytes", "Size of the serialized results handed to clients",
                         buckets=RESULT_SIZE_BUCKETS)


def may_read_metrics(remote_addr: str | None, authorization: str, forwarded: bool, token: str) -> bool:
    """Whether a request may read ``/metrics`` (see the module docstring).

    >>> may_read_metrics("127.0.0.1", "", False, "")
    True
    >>> may_read_metrics("127.0.0.1", "", True, "")      # through a proxy on this host
    False
    >>> may_read_metrics("10.0.0.7", "Bearer s3cret", False, "s3cret")
    True
    """
    if token:
        scheme, _, given = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    return not forwarded and remote_addr is not None and is_loopback(remote_addr)


def route_label(rule: str | None) -> str:
    """The label for a request's route: its template, or one label for requests matching none."""
    return rule if rule else UNMATCHED


def registry() -> CollectorRegistry:
    """What ``/metrics`` serves: every worker's values in multiprocess mode, else this process's."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return merged
    return REGISTRY


def register_metrics(app: Flask, token: str) -> None:
    """Count every request and serve ``GET /metrics``. Call before other request hooks, so the
    clock starts first and a request refused by an earlier hook is still counted."""

    @app.before_request
    def _start() -> None:
        g.metrics_t0 = time.perf_counter()

    # Label children by (route, method, status): .labels() takes a lock and builds a key each
    # time; the set of routes is fixed, so these stay few.
    counters: dict[tuple[str, str, int], tuple[object, object]] = {}

    @app.after_request
    def _count(resp: Response) -> Response:
        rule = request.url_rule
        key = (rule.rule if rule is not None else "", request.method, resp.status_code)
        children = counters.get(key)
        if children is None:
            route = route_label(key[0])
            children = counters.setdefault(key, (REQUESTS.labels(route, key[1], str(key[2])), DURATION.labels(route)))
        children[0].inc()  # type: ignore[attr-defined]
        started = g.get("metrics_t0")
        if started is not None:
            children[1].observe(time.perf_counter() - started)  # type: ignore[attr-defined]
        return resp

    def metrics() -> Response:
        allowed = may_read_metrics(request.remote_addr, request.headers.get("Authorization", ""),
                                   "X-Forwarded-For" in request.headers, token)
        if not allowed:
            from web_service.routes._http import respond

            how = ("send the operator's metrics token (FNSERVE_METRICS_TOKEN) as a bearer token" if token else
                   "scrape from this host without a proxy, or set FNSERVE_METRICS_TOKEN and send it as a bearer token")
            return respond({"error": {"code": "metrics_forbidden", "message": f"/metrics is for operators: {how}"}}, 403)
        return Response(generate_latest(registry()), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])


__all__ = ["RESULT_BYTES", "WAITS", "WAITS_OPEN", "may_read_metrics", "register_metrics", "registry", "route_label"]

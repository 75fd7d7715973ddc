"""What the Prometheus metrics cost on the hot path, measured in isolation (a loaded 2-core
machine makes end-to-end latencies too noisy to show a few microseconds).

    python benchmarks/metrics_overhead.py [--requests 5000]

- web service: ``GET /v1/version`` through Flask's test client (no socket; a real Redis), with the
  metrics hooks and without them, in prometheus_client's multiprocess mode (as under gunicorn);
- forwarder: ``count_dispatched`` + ``count_recorded`` for a batch of 512 tasks (what one
  dispatch and one result batch add), per task;
- site manager: ``SiteMetrics.received`` + ``results`` per task.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import write_results  # noqa: E402


def _web(requests: int) -> dict[str, float]:
    from web_service.app import create_app
    from web_service.settings import Settings

    from pathlib import Path

    from fnserve._redis_server import start_redis

    db = tempfile.mkdtemp(prefix="fnserve-bench-db-")
    # A real Redis: the route's per-address rate limit reads it, as in production.
    redis_proc, redis_url = start_redis(Path(db) / "redis", appendonly=False)
    app = create_app(Settings(database_url=f"sqlite:///{db}/r.db", redis_url=redis_url, access_log=False))
    client = app.test_client()

    hooks = (list(app.before_request_funcs[None]), list(app.after_request_funcs[None]))
    for _ in range(200):
        client.get("/v1/version")
    # Alternate request by request, so the load drifting on a shared machine hits both alike.
    with_metrics, without = [], []
    for _ in range(requests):
        app.before_request_funcs[None], app.after_request_funcs[None] = list(hooks[0]), list(hooks[1])
        t0 = time.perf_counter()
        client.get("/v1/version")
        with_metrics.append(time.perf_counter() - t0)
        app.before_request_funcs[None], app.after_request_funcs[None] = [], []
        t0 = time.perf_counter()
        client.get("/v1/version")
        without.append(time.perf_counter() - t0)
    app.before_request_funcs[None], app.after_request_funcs[None] = list(hooks[0]), list(hooks[1])
    # What the hooks do per request, alone: a clock read, a counter increment, an observation.
    from web_service.metrics import DURATION, REQUESTS

    counter, histogram = REQUESTS.labels("/v1/version", "GET", "200"), DURATION.labels("/v1/version")
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        started = time.perf_counter()
        counter.inc()
        histogram.observe(time.perf_counter() - started)
    hook_ops = (time.perf_counter() - t0) / n * 1e6
    redis_proc.terminate()
    w, wo = statistics.median(with_metrics) * 1e6, statistics.median(without) * 1e6
    return {"request_p50_us_with_metrics": w, "request_p50_us_without": wo, "web_metric_ops_us_per_request": hook_ops}


def _forwarder(batches: int) -> dict[str, float]:
    from fnserve.messages import ResultMessage, TaskMessage
    from web_service import forwarder_metrics as fm

    now = time.time()
    claimed = [(TaskMessage(task_id=f"t{i}", function_id="f", function=b"", payload=b""), now - 0.01) for i in range(512)]
    results = [ResultMessage(task_id=f"t{i}", ok=True, data=b"x" * 40, timings={"forwarder_dispatched": now - 0.005})
               for i in range(512)]
    recorded = [r.task_id for r in results]
    t0 = time.perf_counter()
    for _ in range(batches):
        fm.count_dispatched(claimed, now)
        fm.count_recorded(results, recorded, 0, now)
    return {"forwarder_us_per_task": (time.perf_counter() - t0) / (batches * 512) * 1e6}


def _site(tasks: int) -> dict[str, float]:
    from fnserve.messages import ResultMessage
    from site_manager.metrics import SiteMetrics

    m = SiteMetrics(lambda: 0)
    t = time.time()
    r = ResultMessage(task_id="t", ok=True, timings={"forwarder_dispatched": t, "site_received": t + 0.001, "worker_started": t + 0.002,
                                                     "worker_finished": t + 0.003, "site_result": t + 0.004})
    t0 = time.perf_counter()
    for _ in range(tasks):
        m.received()
        m.results([r])
    return {"site_us_per_task": (time.perf_counter() - t0) / tasks * 1e6}


def _noop_us() -> float:
    f = lambda: None  # noqa: E731
    t0 = time.perf_counter()
    for _ in range(200000):
        f()
    return (time.perf_counter() - t0) / 200000 * 1e6


def _part(name: str, requests: int) -> dict[str, float]:
    """One part in a fresh process: the web service in multiprocess mode (as under gunicorn),
    the forwarder and the site manager in the single-process mode they run in."""
    import json
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if name == "web":
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fnserve-bench-metrics-")
    out = subprocess.run([sys.executable, __file__, "--part", name, "--requests", str(requests)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--part", choices=["web", "forwarder", "site"])
    args = parser.parse_args()
    if args.part:
        run = {"web": lambda: _web(args.requests), "forwarder": lambda: _forwarder(20), "site": lambda: _site(20000)}
        print(json.dumps(run[args.part]()))
        return
    # write_results adds the commit, date, host, load and versions; the cost of an empty call
    # says how slow this (shared) machine is right now.
    results = {"noop_call_us": _noop_us(), "requests": args.requests,
               **_part("web", args.requests), **_part("forwarder", 0), **_part("site", 0)}
    for k, v in results.items():
        print(f"{k:<28} {v:10.2f}" if isinstance(v, float) else f"{k:<28} {v}")
    print(f"(an empty Python call costs {_noop_us():.3f} us now, about 0.05 us on an idle core: scale by that)")
    print(f"(results in {write_results('metrics_overhead', results)})")


if __name__ == "__main__":
    main()

"""GET /v1/health latency while 200 long-polls are open (issue 12, item 8).

The real web service (`python -m web_service.server`, gunicorn) on a fresh Redis and SQLite
registry; USERS users hold PER_USER long-polls each (`GET /v1/tasks/completions` with a wait,
re-opened as soon as one answers, so they stay open throughout), then PROBES sequential health
probes are timed. Run it for each worker class, and against another checkout's server
(``--pythonpath /work/main``) for the numbers before the fix:

    python benchmarks/longpoll_health.py [--worker-class gevent|gthread] [--pythonpath DIR]
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from common import summarize
from web_server_support import web_server

from fnserve._redis_server import start_redis

RESULTS = Path(__file__).parent / "results" / "longpoll_health.json"


def hold_long_polls(url: str, tokens: list[str], per_user: int, wait: float, stop: threading.Event) -> list[threading.Thread]:
    parts = urllib.parse.urlsplit(url)

    def loop(token: str) -> None:
        while not stop.is_set():
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=wait + 120)
            try:
                conn.request("GET", f"/v1/tasks/completions?cursor=0-0&wait={wait}", headers={"Authorization": f"Bearer {token}"})
                conn.getresponse().read()
            except OSError:
                pass
            finally:
                conn.close()

    threads = [threading.Thread(target=loop, args=(t,), daemon=True) for t in tokens for _ in range(per_user)]
    for t in threads:
        t.start()
    return threads


def probe_health(url: str, n: int, timeout: float, budget: float) -> tuple[list[float], int]:
    """Latencies of up to ``n`` sequential probes (within ``budget`` s); and how many timed out."""
    parts = urllib.parse.urlsplit(url)
    samples: list[float] = []
    timeouts = 0
    end = time.monotonic() + budget
    for _ in range(n):
        if time.monotonic() > end:
            break
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        t0 = time.perf_counter()
        try:
            conn.request("GET", "/v1/health")
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status
            samples.append(time.perf_counter() - t0)
        except TimeoutError:
            timeouts += 1
        finally:
            conn.close()
    return samples, timeouts


def run(worker_class: str | None, pythonpath: str | None, users: int, per_user: int, probes: int, wait: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="fnserve-lp-"))
    redis_proc, redis_url = start_redis(tmp / "redis", appendonly=False)
    stop = threading.Event()
    try:
        with web_server(redis_url, tmp / "web", worker_class=worker_class, pythonpath=pythonpath, MAX_WAIT=str(wait),
                        MAX_WAITS_PER_USER=str(per_user)) as server:
            tokens = [server.add_user(f"lp{i}") for i in range(users)]
            idle, _ = probe_health(server.url, probes, 60, 120)
            hold_long_polls(server.url, tokens, per_user, wait, stop)
            time.sleep(3)  # let every long-poll reach the server before probing
            busy, timeouts = probe_health(server.url, probes, 60, 240)
            stop.set()
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
    return {
        "worker_class": worker_class or "(the server's default)", "server_from": pythonpath or "this checkout",
        "long_polls_open": users * per_user, "users": users, "wait_s": wait,
        "health_idle": summarize(idle), "health_with_long_polls": summarize(busy) if busy else None,
        "probes_timed_out_60s": timeouts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker-class", choices=["gevent", "gthread"])
    parser.add_argument("--pythonpath", help="run this checkout's server instead (e.g. /work/main for 'before')")
    parser.add_argument("--label", default=None, help="key of this run in the results file")
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--per-user", type=int, default=20)
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--wait", type=float, default=30.0)
    args = parser.parse_args()
    result = run(args.worker_class, args.pythonpath, args.users, args.per_user, args.probes, args.wait)
    print(json.dumps(result, indent=2))
    label = args.label or (f"before ({args.pythonpath})" if args.pythonpath else (args.worker_class or "default"))
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    saved[label] = result
    RESULTS.write_text(json.dumps(saved, indent=2) + "\n")


if __name__ == "__main__":
    main()

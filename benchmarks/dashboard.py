"""Server time of every dashboard page with 10,000 tasks in the user's history.

    python benchmarks/dashboard.py [--tasks 10000] [--requests 100] [--database-url URL]

Seeds a real Redis and a registry (SQLite unless ``--database-url``) through the real code: the
tasks through :class:`TaskStore` (submit, claim, record_results: 90% succeed with stdout and
timings, 5% fail with a traceback, 5% still wait), their usage rows through
:func:`web_service.usage.insert_entries` (spread over the last 30 days), then times each page
in-process (the WSGI app's own time, no network): p50 / p99 over ``--requests`` calls each.
The goal: every page under 200 ms. Results go to benchmarks/results/dashboard.json.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import summarize, time_calls, write_results  # noqa: E402

from fnserve import serialize  # noqa: E402
from fnserve._redis_server import start_redis  # noqa: E402
from fnserve.messages import EndpointStatus, RemoteError, ResultMessage  # noqa: E402

GOAL_MS = 200.0
BATCH = 500


def seed(app, settings, n_tasks: int) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A user with one function, one endpoint and ``n_tasks`` tasks; returns ids to visit."""
    import base64

    from web_service.admin import add_user, set_operator
    from web_service.task_store import NewTask
    from web_service.usage import UsageEntry, insert_entries

    token = add_user(settings, "bench")
    set_operator(settings, "bench")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    fn = serialize.serialize_source("def double(x):\n    print('doubling', x)\n    return 2 * x\n", "double")
    fid = client.post("/v1/functions", json={"name": "double", "function": base64.b64encode(fn).decode()}, headers=headers).json["function_id"]
    eid = client.post("/v1/endpoints", json={"name": "bench-endpoint"}, headers=headers).json["endpoint_id"]
    uid = client.get("/v1/whoami", headers=headers).json["user_id"]
    store = app.extensions["fnserve"].store
    store.set_connected(eid, True)
    store.touch(eid, EndpointStatus(blocks_running=4, workers=64, runtimes={"host": {"workers": 64, "blocks": 4, "tasks": 0}}))
    payload = serialize.serialize_args([21], strategy=serialize.JSON_DATA)
    ids: list[str] = []
    now = time.time()
    entries = []
    for start in range(0, n_tasks, BATCH):
        batch = [NewTask(task_id=str(uuid.uuid4()), owner=uid, function_id=fid, endpoint_id=eid, payload=payload)
                 for i in range(start, min(n_tasks, start + BATCH))]
        store.submit(batch)
        ids += [t.task_id for t in batch]
        if start >= n_tasks * 0.95:
            continue  # the newest 5% stay waiting
        claimed = store.claim(eid, len(batch))
        results = []
        for k, task in enumerate(claimed):
            t0 = now - 1.0
            timings = {"forwarder_dispatched": t0, "site_received": t0 + 0.001, "worker_received": t0 + 0.002,
                       "worker_started": t0 + 0.003, "worker_finished": t0 + 0.010, "site_result": t0 + 0.011}
            if k % 20 == 7:
                results.append(ResultMessage(task_id=task.task_id, ok=False, timings=timings, error=RemoteError(
                    code="user_exception", type="ZeroDivisionError", message="division by zero",
                    traceback='Traceback (most recent call last):\n  File "<fn>", line 2, in double\nZeroDivisionError: division by zero\n')))
            else:
                results.append(ResultMessage(task_id=task.task_id, ok=True, data=serialize.serialize_data(42, serialize.JSON_DATA),
                                             stdout="doubling 21\n", timings=timings,
                                             resources={"wall_time": 0.007, "cpu_time": 0.006, "max_rss_kb": 50_000.0}))
        store.record_results(results, eid)
        for res in results:
            entries.append(UsageEntry(
                task_id=res.task_id, user_id=uid, function_id=fid, endpoint_id=eid, runtime="", state="success" if res.ok else "failed",
                wall_time=0.007, cpu_time=0.006, max_rss_kb=50_000.0, submitted_at=now,
                finished_at=now - (len(entries) % (30 * 24)) * 3600.0))  # spread over 30 days, hourly
    with app.extensions["fnserve"].sessions() as session:
        insert_entries(session, entries)
    failed = next(e.task_id for e in entries if e.state == "failed")
    return {"token": token, "function_id": fid, "endpoint_id": eid, "newest": ids[-1], "finished": entries[-1].task_id,
            "failed": failed}


def log_in(app, token: str):  # type: ignore[no-untyped-def]
    client = app.test_client()
    page = client.get("/dashboard/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    resp = client.post("/dashboard/login", data={"csrf_token": csrf, "token": token})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return client


def older_page(client, n: int) -> str:  # type: ignore[no-untyped-def]
    """The URL of the task list ``n`` pages back, found by following its "Older" links."""
    url = "/dashboard/tasks"
    for _ in range(n):
        html = client.get(url).get_data(as_text=True)
        url = html.split('rel="next" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    return url


def pages(ids: dict[str, str]) -> dict[str, str]:
    return {
        "endpoints": "/dashboard/endpoints",
        "endpoint": f"/dashboard/endpoints/{ids['endpoint_id']}",
        "tasks (newest page)": "/dashboard/tasks",
        "tasks (page 100)": ids["page_100"],
        "task (success)": f"/dashboard/tasks/{ids['finished']}",
        "task (failed)": f"/dashboard/tasks/{ids['failed']}",
        "task (waiting)": f"/dashboard/tasks/{ids['newest']}",
        "task outputs (script)": f"/dashboard/api/tasks/{ids['finished']}/outputs",
        "functions": "/dashboard/functions",
        "function": f"/dashboard/functions/{ids['function_id']}",
        "usage (24 h)": "/dashboard/usage?days=1",
        "usage (7 days)": "/dashboard/usage?days=7",
        "usage (30 days)": "/dashboard/usage?days=30",
        "operators": "/dashboard/operators",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--database-url", help="registry URL (default: SQLite in a temporary folder)")
    args = parser.parse_args()
    from web_service.app import create_app
    from web_service.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="fnserve-dash-bench-"))
    proc, redis_url = start_redis(tmp)
    try:
        settings = Settings(database_url=args.database_url or f"sqlite:///{tmp / 'registry.db'}", redis_url=redis_url,
                            forwarder_key_file=str(tmp / "forwarder.key"))
        app = create_app(settings)
        t0 = time.perf_counter()
        ids = seed(app, settings, args.tasks)
        print(f"seeded {args.tasks} tasks in {time.perf_counter() - t0:.1f} s")
        client = log_in(app, ids["token"])
        ids["page_100"] = older_page(client, 100)
        results = {}
        for name, path in pages(ids).items():
            def call(path: str = path) -> None:
                resp = client.get(path)
                assert resp.status_code == 200, (path, resp.status_code, resp.get_data(as_text=True)[:500])

            stats = summarize(time_calls(call, args.requests, warmup=5))
            results[name] = stats
            flag = "" if stats["p99_ms"] < GOAL_MS else f"  OVER {GOAL_MS:.0f} ms"
            print(f"{name:24s} p50 {stats['p50_ms']:7.2f} ms   p99 {stats['p99_ms']:7.2f} ms{flag}")
        backend = "postgresql" if args.database_url else "sqlite"
        name = "dashboard" if backend == "sqlite" else f"dashboard-{backend}"
        path = write_results(name, {"tasks": args.tasks, "requests_per_page": args.requests, "registry": backend,
                                    "goal_ms": GOAL_MS, "pages": results})
        print(f"results in {path}")
        return 0 if all(s["p99_ms"] < GOAL_MS for s in results.values()) else 1
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    raise SystemExit(main())

"""Memory of the service per 100,000 queued tasks: Redis used_memory, web and forwarder RSS.

    python benchmarks/memory.py [--tasks 100000]

The embedded stack (Redis, gunicorn web service, forwarder), a registered endpoint that is
never started (so every task stays queued, payload included), and ``--tasks`` no-op tasks
submitted through ``POST /v1/tasks`` in batches of 10,000 with ``Client.batch_run``. Memory is
read before and after; Redis's is what grows, the processes' should not.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from common import embedded_stack, write_results


def noop(x: Any = None) -> None:
    return None


def _rss_mb(pid: int) -> float:
    """RSS of ``pid`` and its children (gunicorn's workers), MiB."""
    total = 0
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        with open(f"/proc/{p}/status") as f:
            total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return total / 1024


def snapshot(redis_url: str) -> dict[str, float]:
    import redis

    from fnserve.cli import stack

    procs = stack.processes()
    info = redis.Redis.from_url(redis_url).info("memory")
    return {"redis_used_memory_mb": info["used_memory"] / 2**20,
            "web_rss_mb": _rss_mb(procs["web"].pid()), "forwarder_rss_mb": _rss_mb(procs["forwarder"].pid())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    args = parser.parse_args()
    with embedded_stack(port=18830) as (fc, _running_endpoint):
        from fnserve._redis_server import redis_auth
        from fnserve.cli.stack import service_dir

        redis_url = redis_auth(service_dir()).socket_url()  # the stack's Redis needs its password
        parked = fc.register_endpoint("parked")["endpoint_id"]  # never started: tasks stay queued
        fid = fc.register_function(noop, serializer="source")
        before = snapshot(redis_url)
        t0 = time.perf_counter()
        for start in range(0, args.tasks, 10_000):
            batch = fc.create_batch()
            for i in range(start, min(args.tasks, start + 10_000)):
                batch.add(fid, parked, args=(i,))
            fc.batch_run(batch)
        submit_s = time.perf_counter() - t0
        after = snapshot(redis_url)
        queued = fc.get_endpoint_status(parked)["tasks_waiting"]
    per_100k = {k: (after[k] - before[k]) * 100_000 / args.tasks for k in before}
    results = {"tasks": args.tasks, "queued": queued, "submit_seconds": submit_s, "submit_tasks_per_s": args.tasks / submit_s,
               "before": before, "after": after, "growth_per_100k_tasks_mb": per_100k,
               "redis_bytes_per_task": (after["redis_used_memory_mb"] - before["redis_used_memory_mb"]) * 2**20 / args.tasks}
    print(f"{queued} tasks queued in {submit_s:.1f} s ({results['submit_tasks_per_s']:.0f} tasks/s through POST /v1/tasks)")
    for k, v in per_100k.items():
        print(f"  {k:<22} {before[k]:8.1f} -> {after[k]:8.1f} MiB   growth per 100k tasks {v:7.1f} MiB")
    print(f"  Redis bytes per queued task: {results['redis_bytes_per_task']:.0f}")
    print(f"(results in {write_results('memory', results)})")


if __name__ == "__main__":
    main()

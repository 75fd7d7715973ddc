"""Throughput of many no-op tasks: fnserve Executor vs bare Parsl HTEX vs Dask, in one run.

    python benchmarks/throughput.py [--tasks 100000] [--workers 2]

Each system gets the same number of worker processes on this machine and the whole batch at
once; the time runs from the first submit to the last result in the caller's hands.
fnserve: ``Executor.submit`` for every task (batched submit requests, results pushed over one
long-poll), through the embedded stack (web service, Redis, forwarder, site manager, HTEX).
HTEX: ``submit`` for every task, then wait for all futures. Dask: ``client.map`` then ``wait``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from common import embedded_stack, write_results
from peers import bare_htex, dask_client


def noop(x: Any = None) -> None:
    return None


def _rate(n: int, seconds: float) -> dict[str, float]:
    return {"tasks": n, "seconds": seconds, "tasks_per_s": n / seconds}


def run_htex(n: int, workers: int) -> dict[str, float]:
    with bare_htex(workers) as ex:
        t0 = time.perf_counter()
        futures = [ex.submit(noop, {}, i) for i in range(n)]
        concurrent.futures.wait(futures)
        return _rate(n, time.perf_counter() - t0)


def run_dask(n: int, workers: int) -> dict[str, float]:
    from dask.distributed import wait

    with dask_client(workers) as client:
        t0 = time.perf_counter()
        wait(client.map(noop, range(n), pure=False))
        return _rate(n, time.perf_counter() - t0)


def run_fnserve(n: int, workers: int, batch_size: int) -> dict[str, Any]:
    from fnserve.executor import Executor

    engine = {"max_workers_per_node": workers, "init_blocks": 1, "min_blocks": 0, "max_blocks": 1}
    with embedded_stack(port=18800, engine=engine) as (fc, endpoint_id):
        with Executor(endpoint_id, fc, batch_size=batch_size, serializer="source") as ex:
            concurrent.futures.wait([ex.submit(noop, i) for i in range(8 * workers)])  # warm
            ex.requests.update(submit=0, completions=0)
            t0 = time.perf_counter()
            futures = [ex.submit(noop, i) for i in range(n)]
            t_submitted = time.perf_counter() - t0
            concurrent.futures.wait(futures)
            out: dict[str, Any] = _rate(n, time.perf_counter() - t0)
            failed = sum(1 for f in futures if f.exception() is not None)
            out.update(submit_calls_s=t_submitted, submit_requests=ex.requests["submit"],
                       completion_requests=ex.requests["completions"], failed=failed)
            out["redis_busiest_commands"] = _redis_commandstats("redis://127.0.0.1:18802/0")
            return out


def _redis_commandstats(url: str) -> dict[str, float]:
    """Redis CPU time by command (ms), the 8 busiest: Redis is one thread shared by all."""
    import redis

    stats = redis.Redis.from_url(url).info("commandstats")
    busiest = sorted(stats.items(), key=lambda kv: -kv[1]["usec"])[:8]
    return {name.removeprefix("cmdstat_"): round(v["usec"] / 1000, 1) for name, v in busiest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--only", choices=["fnserve", "htex", "dask"], action="append")
    args = parser.parse_args()
    which = args.only or ["htex", "dask", "fnserve"]
    results: dict[str, Any] = {"tasks": args.tasks, "workers": args.workers, "batch_size": args.batch_size}
    for name in which:
        if name == "htex":
            results["bare_htex"] = run_htex(args.tasks, args.workers)
        elif name == "dask":
            results["dask"] = run_dask(args.tasks, args.workers)
        else:
            results["fnserve"] = run_fnserve(args.tasks, args.workers, args.batch_size)
        key = {"htex": "bare_htex"}.get(name, name)
        print(f"{key:<10} {results[key]['tasks_per_s']:8.0f} tasks/s  ({results[key]['seconds']:.1f} s)", flush=True)
    if "fnserve" in results:
        for peer in ("bare_htex", "dask"):
            if peer in results:
                results[f"fnserve_over_{peer}"] = results["fnserve"]["tasks_per_s"] / results[peer]["tasks_per_s"]
    if not args.only:
        print(f"(results in {write_results('throughput', results)})")
    else:
        print(results)


if __name__ == "__main__":
    main()

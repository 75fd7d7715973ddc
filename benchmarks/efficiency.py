"""Efficiency for short tasks (1, 10, 100 ms): fnserve Executor vs bare HTEX vs Dask, one run.

    python benchmarks/efficiency.py [--workers 2] [--scale 1.0]

Each system runs N sleeping tasks of duration d on W workers; efficiency is the ideal time
N*d/W over the measured time from first submit to last result (1.0 = no overhead at all).
N is chosen so the ideal time is about 4 s per duration (times ``--scale``).
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

DURATIONS = (0.001, 0.010, 0.100)


def sleeper(seconds: float) -> None:
    import time

    time.sleep(seconds)


def _tasks(d: float, workers: int, scale: float) -> int:
    return max(workers, int(4.0 * scale * workers / d))


def _eff(n: int, d: float, workers: int, seconds: float) -> dict[str, float]:
    return {"tasks": n, "seconds": seconds, "efficiency": (n * d / workers) / seconds}


def run_htex(workers: int, scale: float) -> dict[str, Any]:
    out = {}
    with bare_htex(workers) as ex:
        for d in DURATIONS:
            n = _tasks(d, workers, scale)
            t0 = time.perf_counter()
            concurrent.futures.wait([ex.submit(sleeper, {}, d) for _ in range(n)])
            out[f"{int(d * 1000)}ms"] = _eff(n, d, workers, time.perf_counter() - t0)
    return out


def run_dask(workers: int, scale: float) -> dict[str, Any]:
    from dask.distributed import wait

    out = {}
    with dask_client(workers) as client:
        for d in DURATIONS:
            n = _tasks(d, workers, scale)
            t0 = time.perf_counter()
            wait(client.map(sleeper, [d] * n, pure=False))
            out[f"{int(d * 1000)}ms"] = _eff(n, d, workers, time.perf_counter() - t0)
    return out


def run_fnserve(workers: int, scale: float) -> dict[str, Any]:
    from fnserve.executor import Executor

    out = {}
    engine = {"max_workers_per_node": workers, "init_blocks": 1, "min_blocks": 0, "max_blocks": 1}
    with embedded_stack(port=18810, engine=engine) as (fc, endpoint_id):
        with Executor(endpoint_id, fc, serializer="source") as ex:
            concurrent.futures.wait([ex.submit(sleeper, 0) for _ in range(4 * workers)])
            for d in DURATIONS:
                n = _tasks(d, workers, scale)
                t0 = time.perf_counter()
                concurrent.futures.wait([ex.submit(sleeper, d) for _ in range(n)])
                out[f"{int(d * 1000)}ms"] = _eff(n, d, workers, time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    results: dict[str, Any] = {"workers": args.workers}
    results["bare_htex"] = run_htex(args.workers, args.scale)
    results["dask"] = run_dask(args.workers, args.scale)
    results["fnserve"] = run_fnserve(args.workers, args.scale)
    for d in results["fnserve"]:
        print(f"{d:>6}: " + "  ".join(f"{k} {results[k][d]['efficiency']:.2f}" for k in ("fnserve", "bare_htex", "dask")))
    print(f"(results in {write_results('efficiency', results)})")


if __name__ == "__main__":
    main()

"""Efficiency for short tasks (1, 10, 100 ms): fnserve Executor vs its peers, interleaved, one run.

    python benchmarks/efficiency.py [--workers 2] [--scale 1.0]

Each system runs N sleeping tasks of duration d on W workers; efficiency is the ideal time
N*d/W over the measured time from first submit to last result (1.0 = no overhead at all).
N is chosen so the ideal time is about 4 s per duration (times ``--scale``). Peers: bare HTEX,
Parsl ``@python_app`` (DataFlowKernel), Dask, ``ProcessPoolExecutor``; all are up for the whole
run and, for each duration, take turns.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import time
from contextlib import ExitStack
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(__file__))
from common import embedded_stack, write_results
from peers import bare_htex, dask_client, parsl_dfk, process_pool

DURATIONS = (0.001, 0.010, 0.100)
PEERS = ("bare_htex", "parsl_dfk", "dask", "process_pool")


def sleeper(seconds: float) -> None:
    import time

    time.sleep(seconds)


def _tasks(d: float, workers: int, scale: float) -> int:
    return max(workers, int(4.0 * scale * workers / d))


def _eff(n: int, d: float, workers: int, seconds: float) -> dict[str, float]:
    return {"tasks": n, "seconds": seconds, "efficiency": (n * d / workers) / seconds}


def systems(stack: ExitStack, workers: int) -> dict[str, Callable[[float, int], None]]:
    """Start every system (warm); return for each a function that runs n sleepers of d seconds."""
    from dask.distributed import wait

    from fnserve.executor import Executor

    pool = stack.enter_context(process_pool(workers))
    htex = stack.enter_context(bare_htex(workers))
    dfk = stack.enter_context(parsl_dfk(workers))
    dask = stack.enter_context(dask_client(workers))
    engine = {"max_workers_per_node": workers, "init_blocks": 1, "min_blocks": 0, "max_blocks": 1}
    fc, endpoint_id = stack.enter_context(embedded_stack(port=18810, engine=engine))
    ex = stack.enter_context(Executor(endpoint_id, fc, serializer="source"))
    concurrent.futures.wait([ex.submit(sleeper, 0) for _ in range(4 * workers)])
    return {
        "process_pool": lambda d, n: concurrent.futures.wait([pool.submit(sleeper, d) for _ in range(n)]),
        "bare_htex": lambda d, n: concurrent.futures.wait([htex.submit(sleeper, {}, d) for _ in range(n)]),
        "parsl_dfk": lambda d, n: concurrent.futures.wait([dfk(sleeper, d) for _ in range(n)]),
        "dask": lambda d, n: wait(dask.map(sleeper, [d] * n, pure=False)),
        "fnserve": lambda d, n: concurrent.futures.wait([ex.submit(sleeper, d) for _ in range(n)]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    results: dict[str, Any] = {"workers": args.workers, "interleaved": True}
    with ExitStack() as stack:
        runs = systems(stack, args.workers)
        for d in DURATIONS:  # each duration: every system in turn
            n = _tasks(d, args.workers, args.scale)
            for name, run in runs.items():
                t0 = time.perf_counter()
                run(d, n)
                results.setdefault(name, {})[f"{int(d * 1000)}ms"] = _eff(n, d, args.workers, time.perf_counter() - t0)
    for d in results["fnserve"]:
        print(f"{d:>6}: " + "  ".join(f"{k} {results[k][d]['efficiency']:.2f}" for k in ("fnserve", *PEERS)))
    print(f"(results in {write_results('efficiency', results)})")


if __name__ == "__main__":
    main()

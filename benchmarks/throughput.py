"""Throughput of many no-op tasks: fnserve Executor vs its peers, interleaved in rounds, one run.

    python benchmarks/throughput.py [--tasks 100000] [--workers 2] [--rounds 4]

Each system gets the same number of worker processes on this machine. All are up for the whole
run and take turns in ``--rounds`` rounds; in each round a system gets ``tasks / rounds`` tasks at
once, timed from the first submit to the last result in the caller's hands. A system's rate is its
tasks over its summed time. fnserve: ``Executor.submit`` for every task (batched submit requests,
results pushed over one long-poll), through the embedded stack (web service, Redis, forwarder,
site manager, HTEX). Peers: bare HTEX ``submit`` then wait for all futures; Parsl ``@python_app``
through the DataFlowKernel; Dask ``client.map`` then ``wait``; ``ProcessPoolExecutor`` (the floor).
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

PEERS = ("process_pool", "bare_htex", "parsl_dfk", "dask")


def noop(x: Any = None) -> None:
    return None


def _redis_commandstats() -> dict[str, float]:
    """The embedded Redis's CPU time by command (ms), the 8 busiest: Redis is one thread shared by
    all. Reached as the service reaches it (its socket and password; inside the stack's context)."""
    import redis

    from fnserve._redis_server import redis_auth
    from fnserve.cli.stack import service_dir

    stats = redis.Redis.from_url(redis_auth(service_dir()).socket_url()).info("commandstats")
    busiest = sorted(stats.items(), key=lambda kv: -kv[1]["usec"])[:8]
    return {name.removeprefix("cmdstat_"): round(v["usec"] / 1000, 1) for name, v in busiest}


def systems(stack: ExitStack, workers: int, batch_size: int, only: list[str]) -> dict[str, Callable[[int], int]]:
    """Start each system (warm); return for each a function that runs n no-ops and returns failures."""
    out: dict[str, Callable[[int], int]] = {}
    if "process_pool" in only:
        pool = stack.enter_context(process_pool(workers))
        out["process_pool"] = lambda n: len(list(pool.map(noop, range(n), chunksize=64))) - n  # map raises on a failure
    if "bare_htex" in only:
        htex = stack.enter_context(bare_htex(workers))
        out["bare_htex"] = lambda n: _wait([htex.submit(noop, {}, i) for i in range(n)])
    if "parsl_dfk" in only:
        dfk = stack.enter_context(parsl_dfk(workers))
        out["parsl_dfk"] = lambda n: _wait([dfk(noop, i) for i in range(n)])
    if "dask" in only:
        from dask.distributed import wait

        dask = stack.enter_context(dask_client(workers))
        out["dask"] = lambda n: sum(f.status != "finished" for f in wait(dask.map(noop, range(n), pure=False)).done)
    if "fnserve" in only:
        from fnserve.executor import Executor

        engine = {"max_workers_per_node": workers, "init_blocks": 1, "min_blocks": 0, "max_blocks": 1}
        fc, endpoint_id = stack.enter_context(embedded_stack(port=18800, engine=engine))
        ex = stack.enter_context(Executor(endpoint_id, fc, batch_size=batch_size, serializer="source"))
        concurrent.futures.wait([ex.submit(noop, i) for i in range(8 * workers)])  # warm
        ex.requests.update(submit=0, completions=0)
        out["fnserve"] = lambda n: _wait([ex.submit(noop, i) for i in range(n)])
        out["fnserve"].executor = ex  # type: ignore[attr-defined]
    return out


def _wait(futures: list[Any]) -> int:
    concurrent.futures.wait(futures)
    return sum(1 for f in futures if f.exception() is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--only", choices=["fnserve", *PEERS], action="append")
    args = parser.parse_args()
    which = args.only or [*PEERS, "fnserve"]
    per_round = max(1, args.tasks // args.rounds)
    results: dict[str, Any] = {"tasks": per_round * args.rounds, "workers": args.workers, "batch_size": args.batch_size,
                               "rounds": args.rounds, "interleaved": True}
    seconds = {name: 0.0 for name in which}
    failed = {name: 0 for name in which}
    with ExitStack() as stack:
        runs = systems(stack, args.workers, args.batch_size, which)
        for _ in range(args.rounds):
            for name, run in runs.items():
                t0 = time.perf_counter()
                failed[name] += run(per_round)
                seconds[name] += time.perf_counter() - t0
        if "fnserve" in runs:
            ex = runs["fnserve"].executor  # type: ignore[attr-defined]
            extra = {"submit_requests": ex.requests["submit"], "completion_requests": ex.requests["completions"],
                     "redis_busiest_commands": _redis_commandstats()}
    for name in which:
        key = name
        results[key] = {"tasks": results["tasks"], "seconds": seconds[name], "tasks_per_s": results["tasks"] / seconds[name],
                        "failed": failed[name]}
        print(f"{key:<13} {results[key]['tasks_per_s']:8.0f} tasks/s  ({seconds[name]:.1f} s, {failed[name]} failed)", flush=True)
    if "fnserve" in results:
        results["fnserve"].update(extra)
        for peer in PEERS:
            if peer in results:
                results[f"fnserve_over_{peer}"] = results["fnserve"]["tasks_per_s"] / results[peer]["tasks_per_s"]
    if not args.only:
        print(f"(results in {write_results('throughput', results)})")
    else:
        print(results)


if __name__ == "__main__":
    main()

"""Warm end-to-end latency of a no-op: fnserve vs its peers, interleaved in rounds in one run.

    python benchmarks/warm_latency.py [--calls 1000] [--rounds 10]

fnserve: SDK -> REST web service -> Redis -> ZMQ forwarder -> site manager -> Parsl HTEX worker
(node manager) and back, through the embedded stack on this machine. Measured three ways:
``Executor.submit(noop).result()`` (results pushed over the completions long-poll),
``Client.call`` (one submit-and-wait request) and ``run + get_result`` (two requests).
Peers, each with the same number of workers (1): bare ``HighThroughputExecutor`` (no
DataFlowKernel), Parsl ``@python_app`` through the DataFlowKernel, Dask, and
``ProcessPoolExecutor`` (the local floor). Every system is up for the whole run and they take
turns in ``--rounds`` rounds of ``calls / rounds`` calls each, so drift in the machine's load
hits all of them alike.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import ExitStack
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(__file__))
from common import embedded_stack, summarize, time_calls, write_results
from peers import bare_htex, dask_client, parsl_dfk, process_pool

WORKERS = 1
LABELS = {
    "process_pool": "ProcessPoolExecutor (local floor)",
    "bare_htex": "bare HTEX submit().result()",
    "parsl_dfk": "Parsl @python_app (DFK)",
    "dask": "Dask client.submit().result()",
    "executor": "fnserve Executor.submit().result()",
    "call": "fnserve Client.call (1 request)",
    "run_get_result": "fnserve run + get_result (2 req.)",
}


def noop() -> None:
    return None


def systems(stack: ExitStack) -> dict[str, Callable[[], Any]]:
    """Start every system (warm) and return one call of each."""
    from fnserve.executor import Executor

    pool = stack.enter_context(process_pool(WORKERS))
    htex = stack.enter_context(bare_htex(WORKERS))
    dfk = stack.enter_context(parsl_dfk(WORKERS))
    dask = stack.enter_context(dask_client(WORKERS))
    engine = {"max_workers_per_node": WORKERS, "init_blocks": 1, "min_blocks": 0, "max_blocks": 1}
    fc, endpoint_id = stack.enter_context(embedded_stack(engine=engine))
    fid = fc.register_function(noop, serializer="source")
    fc.get_result(fc.run(fid, endpoint_id), timeout=60)
    ex = stack.enter_context(Executor(endpoint_id, fc, serializer="source"))
    return {
        "process_pool": lambda: pool.submit(noop).result(),
        "bare_htex": lambda: htex.submit(noop, {}).result(),
        "parsl_dfk": lambda: dfk(noop).result(),
        "dask": lambda: dask.submit(noop, pure=False).result(),
        "executor": lambda: ex.submit(noop).result(),
        "call": lambda: fc.call(fid, endpoint_id),
        "run_get_result": lambda: fc.get_result(fc.run(fid, endpoint_id), timeout=60),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    t0 = time.time()
    per_round = max(1, args.calls // args.rounds)
    samples: dict[str, list[float]] = {}
    with ExitStack() as stack:
        calls = systems(stack)
        for _ in range(args.rounds):
            for name, fn in calls.items():
                samples.setdefault(name, []).extend(time_calls(fn, per_round, warmup=5))
    stats = {name: summarize(s) for name, s in samples.items()}
    results: dict[str, Any] = {"calls": per_round * args.rounds, "rounds": args.rounds, "workers_per_node": WORKERS,
                               "interleaved": True, **{k: stats[k] for k in ("process_pool", "bare_htex", "parsl_dfk", "dask")},
                               "fnserve": {k: stats[k] for k in ("executor", "call", "run_get_result")}}
    base = stats["bare_htex"]
    for name in ("executor", "call", "run_get_result"):
        results[f"{name}_p50_ratio"] = stats[name]["p50_ms"] / base["p50_ms"]
        results[f"{name}_p99_ratio"] = stats[name]["p99_ms"] / base["p99_ms"]
    results["call_minus_dfk_p50_ms"] = stats["call"]["p50_ms"] - stats["parsl_dfk"]["p50_ms"]
    results["executor_over_call_p50"] = stats["executor"]["p50_ms"] / stats["call"]["p50_ms"]
    for name, s in stats.items():
        print(f"{LABELS[name]:<36} p50 {s['p50_ms']:6.2f} ms  p99 {s['p99_ms']:6.2f} ms  "
              f"vs HTEX p50 {s['p50_ms'] / base['p50_ms']:.2f}x")
    results["seconds"] = time.time() - t0
    print(f"(results in {write_results('warm_latency', results)})")


if __name__ == "__main__":
    main()

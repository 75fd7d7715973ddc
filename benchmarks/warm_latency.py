"""Warm end-to-end latency of a no-op: fnserve vs bare Parsl HTEX vs Dask LocalCluster, one run.

    python benchmarks/warm_latency.py [--calls 1000]

fnserve: SDK -> REST web service -> Redis -> ZMQ forwarder -> site manager -> Parsl HTEX worker
(node manager) and back, through the embedded stack on this machine. Measured three ways:
``Executor.submit(noop).result()`` (results pushed over the completions long-poll),
``Client.call`` (one submit-and-wait request) and ``run + get_result`` (two requests).
Peers, with the same number of workers (1): ``HighThroughputExecutor.submit(noop).result()``
(LocalProvider, one block, no DataFlowKernel) and Dask ``client.submit(noop).result()``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import embedded_stack, summarize, time_calls, write_results
from peers import bare_htex, dask_client

WORKERS = 1


def noop() -> None:
    return None


def run_htex(calls: int) -> dict[str, float]:
    with bare_htex(WORKERS) as ex:
        return summarize(time_calls(lambda: ex.submit(noop, {}).result(), calls))


def run_dask(calls: int) -> dict[str, float]:
    with dask_client(WORKERS) as client:
        return summarize(time_calls(lambda: client.submit(noop, pure=False).result(), calls))


def run_fnserve(calls: int) -> dict[str, dict[str, float]]:
    from fnserve.executor import Executor

    with embedded_stack(engine={"max_workers_per_node": WORKERS, "init_blocks": 1, "min_blocks": 0, "max_blocks": 1}) as (fc, endpoint_id):
        fid = fc.register_function(noop, serializer="source")
        fc.get_result(fc.run(fid, endpoint_id), timeout=60)
        with Executor(endpoint_id, fc, serializer="source") as ex:
            executor = summarize(time_calls(lambda: ex.submit(noop).result(), calls))
        call = summarize(time_calls(lambda: fc.call(fid, endpoint_id), calls))
        run_get = summarize(time_calls(lambda: fc.get_result(fc.run(fid, endpoint_id), timeout=60), calls))
        return {"executor": executor, "call": call, "run_get_result": run_get}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    t0 = time.time()
    htex = run_htex(args.calls)
    dask = run_dask(args.calls)
    fns = run_fnserve(args.calls)
    results: dict = {"calls": args.calls, "workers_per_node": WORKERS, "bare_htex": htex, "dask": dask, "fnserve": fns}
    print(f"{'bare HTEX submit().result()':<36} p50 {htex['p50_ms']:6.2f} ms  p99 {htex['p99_ms']:6.2f} ms")
    print(f"{'Dask client.submit().result()':<36} p50 {dask['p50_ms']:6.2f} ms  p99 {dask['p99_ms']:6.2f} ms")
    for name, label in (("executor", "fnserve Executor.submit().result()"), ("call", "fnserve Client.call (1 request)"),
                        ("run_get_result", "fnserve run + get_result (2 req.)")):
        s = fns[name]
        results[f"{name}_p50_ratio"] = s["p50_ms"] / htex["p50_ms"]
        results[f"{name}_p99_ratio"] = s["p99_ms"] / htex["p99_ms"]
        print(f"{label:<36} p50 {s['p50_ms']:6.2f} ms  p99 {s['p99_ms']:6.2f} ms  "
              f"vs HTEX p50 {results[f'{name}_p50_ratio']:.2f}x  p99 {results[f'{name}_p99_ratio']:.2f}x")
    results["seconds"] = time.time() - t0
    print(f"(results in {write_results('warm_latency', results)})")


if __name__ == "__main__":
    main()

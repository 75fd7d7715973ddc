"""Warm end-to-end latency of a no-op function: fnserve vs bare Parsl HTEX, in one run.

    python benchmarks/warm_latency.py [--calls 1000]

fnserve: SDK -> REST web service -> Redis -> ZMQ forwarder -> site manager -> Parsl HTEX worker
(node manager) and back, through the embedded stack on this machine. Measured two ways:
``run + get_result`` (two HTTP requests per call) and ``call`` as used in the demo.
Peer: ``HighThroughputExecutor.submit(noop).result()`` with the same executor settings
(LocalProvider, one block, the same workers per node), no DataFlowKernel.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import embedded_stack, summarize, time_calls, write_results  # noqa: E402

WORKERS = 1


def noop() -> None:
    return None


def bare_htex(calls: int) -> dict[str, float]:
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    run_dir = tempfile.mkdtemp(prefix="htex-bench-")
    ex = HighThroughputExecutor(label="bench", provider=LocalProvider(init_blocks=1, min_blocks=0, max_blocks=1),
                                max_workers_per_node=WORKERS, encrypted=False)
    ex.run_dir = run_dir
    ex.provider.script_dir = run_dir
    ex.start()
    ex.scale_out_facade(1)
    try:
        ex.submit(noop, {}).result(timeout=60)
        return summarize(time_calls(lambda: ex.submit(noop, {}).result(), calls))
    finally:
        ex.shutdown()


def fnserve_sdk(calls: int) -> dict[str, dict[str, float]]:
    with embedded_stack(engine={"max_workers_per_node": WORKERS, "init_blocks": 1, "min_blocks": 0, "max_blocks": 1}) as (fc, endpoint_id):
        fid = fc.register_function(noop, serializer="source")
        fc.get_result(fc.run(fid, endpoint_id), timeout=60)
        call = summarize(time_calls(lambda: fc.call(fid, endpoint_id), calls))
        run_get = summarize(time_calls(lambda: fc.get_result(fc.run(fid, endpoint_id), timeout=60), calls))
        return {"call": call, "run_get_result": run_get}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    t0 = time.time()
    htex = bare_htex(args.calls)
    fns = fnserve_sdk(args.calls)
    results: dict = {"calls": args.calls, "workers_per_node": WORKERS, "bare_htex": htex, "fnserve": fns}
    print(f"{'bare HTEX submit().result()':<34} p50 {htex['p50_ms']:6.2f} ms  p99 {htex['p99_ms']:6.2f} ms")
    for name, label in (("call", "fnserve Client.call (1 request)"), ("run_get_result", "fnserve run + get_result (2 req.)")):
        s = fns[name]
        results[f"{name}_p50_ratio"] = s["p50_ms"] / htex["p50_ms"]
        results[f"{name}_p99_ratio"] = s["p99_ms"] / htex["p99_ms"]
        print(f"{label:<34} p50 {s['p50_ms']:6.2f} ms  p99 {s['p99_ms']:6.2f} ms  "
              f"ratio p50 {results[f'{name}_p50_ratio']:.2f}x  p99 {results[f'{name}_p99_ratio']:.2f}x")
    results["seconds"] = time.time() - t0
    print(f"(results in {write_results('warm_latency', results)})")


if __name__ == "__main__":
    main()

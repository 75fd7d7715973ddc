"""What CurveZMQ on the HTEX interchange costs a warm no-op call: encrypted vs plaintext.

    python benchmarks/curve_interchange.py [--calls 500]

Two measurements, each plaintext then encrypted, same machine, same run:
``HighThroughputExecutor.submit(noop).result()`` (bare Parsl HTEX, one worker: the interchange
hop alone), and fnserve's ``Client.call`` through the embedded stack with ``engine.encrypted``
false / true (the whole warm path). JSON in benchmarks/results/curve_interchange.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import embedded_stack, summarize, time_calls, write_results
from peers import bare_htex

WORKERS = 1


def noop() -> None:
    return None


def run_htex(calls: int, encrypted: bool) -> dict[str, float]:
    with bare_htex(WORKERS, encrypted=encrypted) as ex:
        return summarize(time_calls(lambda: ex.submit(noop, {}).result(), calls))


def run_fnserve(calls: int, encrypted: bool) -> dict[str, float]:
    engine = {"max_workers_per_node": WORKERS, "init_blocks": 1, "min_blocks": 0, "max_blocks": 1, "encrypted": encrypted}
    with embedded_stack(engine=engine) as (fc, endpoint_id):
        fid = fc.register_function(noop, serializer="source")
        fc.get_result(fc.run(fid, endpoint_id), timeout=60)
        return summarize(time_calls(lambda: fc.call(fid, endpoint_id), calls))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    t0 = time.time()
    results = {
        "calls": args.calls,
        "htex_plain": run_htex(args.calls, False),
        "htex_curve": run_htex(args.calls, True),
        "fnserve_call_plain": run_fnserve(args.calls, False),
        "fnserve_call_curve": run_fnserve(args.calls, True),
        "seconds": 0.0,
    }
    results["seconds"] = round(time.time() - t0, 1)
    for key in ("htex_plain", "htex_curve", "fnserve_call_plain", "fnserve_call_curve"):
        r = results[key]
        print(f"{key:22s} p50 {r['p50_ms']:.2f} ms  p90 {r['p90_ms']:.2f} ms  mean {r['mean_ms']:.2f} ms")
    print(write_results("curve_interchange", results))


if __name__ == "__main__":
    main()

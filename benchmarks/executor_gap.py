"""Warm ``Executor.submit().result()`` against ``Client.call`` on one stack, and where the
Executor's extra time goes (issue 21).

    python benchmarks/executor_gap.py [--calls 200] [--block 25] [--port 18850]

Blocks of ``--block`` no-op calls go to the Executor and to ``Client.call`` in turn on the same
embedded stack (one endpoint, one worker), so a change in the machine's load hits both alike.
Prints the Executor's hop medians from its tasks' own timestamps (the client's submit, the
service's accept, ..., the result recorded, delivered to the future, and the caller woken), the
results requests (completions long-polls) per Executor task, and both latencies with their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from common import embedded_stack, write_results  # noqa: E402

ORDER = ["client_sent", "submitted", "dispatched", "forwarder_dispatched", "site_received", "worker_received",
         "worker_started", "worker_finished", "site_result", "finished", "delivered", "client_done"]


def noop() -> None:
    return None


def measure(calls: int, block: int, port: int) -> dict[str, Any]:
    from fnserve.executor import Executor

    engine = {"max_workers_per_node": 1, "init_blocks": 1, "min_blocks": 0, "max_blocks": 1}
    with embedded_stack(port=port, engine=engine) as (fc, endpoint_id):
        fid = fc.register_function(noop, serializer="source")
        with Executor(endpoint_id, fc, serializer="source") as ex:
            for _ in range(30):
                fc.call(fid, endpoint_id)
                ex.submit(noop).result()
            executor: list[float] = []
            call: list[float] = []
            points: list[dict[str, float]] = []
            requests = 0
            for _ in range(max(1, calls // block)):
                ex.submit(noop).result()  # past the other system's completions in the log
                before = ex.requests["completions"]
                for _ in range(block):
                    t0 = time.time()
                    future = ex.submit(noop)
                    future.result()
                    t1 = time.time()
                    executor.append(t1 - t0)
                    task = future.task or {}
                    points.append({**task.get("timestamps", {}), **task.get("timings", {}), "client_sent": t0, "client_done": t1})
                requests += ex.requests["completions"] - before
                for _ in range(block):
                    s = time.perf_counter()
                    fc.call(fid, endpoint_id)
                    call.append(time.perf_counter() - s)
    hops = {}
    for a, b in zip(ORDER, ORDER[1:]):
        vals = [(p[b] - p[a]) * 1e3 for p in points if a in p and b in p]
        hops[f"{a} -> {b}"] = round(statistics.median(vals), 3) if vals else None

    def pct(v: list[float], q: float) -> float:
        return round(sorted(v)[int(q * len(v))] * 1e3, 2)

    return {"calls": len(executor), "block": block, "hops_ms": hops, "completions_requests_per_task": round(requests / len(executor), 2),
            "executor": {"p50_ms": pct(executor, 0.5), "p90_ms": pct(executor, 0.9)},
            "call": {"p50_ms": pct(call, 0.5), "p90_ms": pct(call, 0.9)},
            "executor_over_call_p50": round(statistics.median(executor) / statistics.median(call), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=200, help="calls of each kind")
    ap.add_argument("--block", type=int, default=25, help="calls per turn")
    ap.add_argument("--port", type=int, default=18850)
    args = ap.parse_args()
    load0 = os.getloadavg()
    out = measure(args.calls, args.block, args.port)
    out["load_average"] = [round(load0[0], 2), round(os.getloadavg()[0], 2)]
    for hop, ms in out["hops_ms"].items():
        print(f"{hop:<46} {ms:7.3f} ms" if ms is not None else f"{hop:<46}     n/a")
    print(f"results requests per Executor task: {out['completions_requests_per_task']:.2f}")
    e, c = out["executor"], out["call"]
    print(f"Executor p50 {e['p50_ms']} ms, p90 {e['p90_ms']} ms | Client.call p50 {c['p50_ms']} ms, p90 {c['p90_ms']} ms | "
          f"Executor / Client.call p50 {out['executor_over_call_p50']:.3f}")
    print(f"load average {load0[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end")
    print(f"(results in {write_results('executor_gap', out)})")


if __name__ == "__main__":
    main()

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

Systems left up between their turns still burn CPU (Parsl's interchanges and worker pools poll,
Dask heartbeats, fnserve's trigger runner ticks), and on 2 cores that CPU is taken from whichever
system is measured. So each round also records, from the kernel's counters (:mod:`proc_cpu`),
the CPU every *other* system's processes used meanwhile (``idle_cpu_pct``: percent of one core),
the CPU of the benchmark process's other threads (the peers' client-side threads share its
GIL), and, for the measured system, its processes' CPU and run-queue wait per call (time they
were ready to run but had no core).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import ExitStack
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(__file__))
import proc_cpu
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


# The systems' processes, by system (filled as each starts; see ``started``).
OWNERS: dict[str, dict[int, str]] = {}
_TAG = "FNSERVE_BENCH_SYSTEM"


def started(system: str, cm: Any, stack: ExitStack) -> Any:
    """Enter ``cm`` and note the processes it started: new descendants of this process, and
    processes carrying its tag in their environment (Parsl's LocalProvider starts worker pools
    with ``bash -c ... &``: they leave the process tree)."""
    os.environ[_TAG] = system
    taken = {p for pids in OWNERS.values() for p in pids}
    try:
        value = stack.enter_context(cm)
    finally:
        os.environ.pop(_TAG, None)
    mine = (proc_cpu.descendants(os.getpid()) | proc_cpu.tagged(_TAG, system)) - taken
    OWNERS[system] = {p: proc_cpu.label(p) or proc_cpu.command_line(p)[:40] for p in mine}
    return value


def systems(stack: ExitStack) -> dict[str, Callable[[], Any]]:
    """Start every system (warm) and return one call of each."""
    from fnserve.executor import Executor

    pool = started("process_pool", process_pool(WORKERS), stack)
    htex = started("bare_htex", bare_htex(WORKERS), stack)
    dfk = started("parsl_dfk", parsl_dfk(WORKERS), stack)
    dask = started("dask", dask_client(WORKERS), stack)
    engine = {"max_workers_per_node": WORKERS, "init_blocks": 1, "min_blocks": 0, "max_blocks": 1}
    fc, endpoint_id = started("fnserve", embedded_stack(port=PORT, engine=engine), stack)
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


PORT = 18780
SYSTEM_OF = {"process_pool": "process_pool", "bare_htex": "bare_htex", "parsl_dfk": "parsl_dfk", "dask": "dask",
             "executor": "fnserve", "call": "fnserve", "run_get_result": "fnserve"}
BENCH_THREADS = "bench process, other threads"


def _snapshot() -> dict[str, proc_cpu.Sched]:
    snap = {system: sum((proc_cpu.sched(p) for p in pids), proc_cpu.Sched()) for system, pids in OWNERS.items()}
    snap[BENCH_THREADS] = proc_cpu.other_threads()
    return snap


def cpu_report(during: dict[str, dict[str, proc_cpu.Sched]], walls: dict[str, float], calls: dict[str, int]) -> dict[str, Any]:
    """``during[measured][system]``: what ``system`` used while ``measured`` was measured."""
    idle: dict[str, float] = {}
    for system in [*OWNERS, BENCH_THREADS]:
        others = [m for m in during if SYSTEM_OF[m] != system]
        wall = sum(walls[m] for m in others)
        idle[system] = 100 * sum(during[m][system].cpu_s for m in others) / wall if wall else 0.0
    own = {m: {"cpu_us_per_call": 1e6 * during[m][SYSTEM_OF[m]].cpu_s / calls[m],
               "runq_wait_us_per_call": 1e6 * during[m][SYSTEM_OF[m]].wait_s / calls[m],
               "scheduled_per_call": during[m][SYSTEM_OF[m]].slices / calls[m],
               "others_cpu_pct": 100 * sum(v.cpu_s for k, v in during[m].items() if k != SYSTEM_OF[m]) / walls[m]}
           for m in during}
    return {"idle_cpu_pct": idle, "measured": own}


def main() -> None:
    global PORT
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--port", type=int, default=PORT, help="fnserve's web port (the next two are taken too)")
    args = parser.parse_args()
    PORT = args.port
    t0 = time.time()
    per_round = max(1, args.calls // args.rounds)
    samples: dict[str, list[float]] = {}
    during: dict[str, dict[str, proc_cpu.Sched]] = {}
    walls: dict[str, float] = {}
    with ExitStack() as stack:
        calls = systems(stack)
        for _ in range(args.rounds):
            for name, fn in calls.items():
                time_calls(fn, 5, warmup=0)
                before, w0 = _snapshot(), time.perf_counter()
                samples.setdefault(name, []).extend(time_calls(fn, per_round, warmup=0))
                walls[name] = walls.get(name, 0.0) + time.perf_counter() - w0
                d = proc_cpu.delta(_snapshot(), before)
                during[name] = {k: during.get(name, {}).get(k, proc_cpu.Sched()) + v for k, v in d.items()}
    stats = {name: summarize(s) for name, s in samples.items()}
    cpu = cpu_report(during, walls, {name: len(s) for name, s in samples.items()})
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
    print("\nCPU each system used while the others were measured (% of one core):")
    for system, pct in cpu["idle_cpu_pct"].items():
        print(f"  {system:<30} {pct:5.1f} %")
    print("Measured system: its processes' CPU and run-queue wait per call; CPU of all others meanwhile:")
    for name, m in cpu["measured"].items():
        print(f"  {LABELS[name]:<36} CPU {m['cpu_us_per_call']:7.0f} us  run-queue wait {m['runq_wait_us_per_call']:7.0f} us  "
              f"scheduled {m['scheduled_per_call']:5.1f}x  others {m['others_cpu_pct']:5.1f} %")
    results["cpu"] = cpu
    results["processes"] = {system: sorted(set(pids.values())) for system, pids in OWNERS.items()}
    results["seconds"] = time.time() - t0
    print(f"(results in {write_results('warm_latency', results)})")


if __name__ == "__main__":
    main()

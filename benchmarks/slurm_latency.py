"""Cold and warm latency on the local Slurm: fnserve vs bare Parsl HTEX, in one run.

    scripts/start_slurm.sh && python benchmarks/slurm_latency.py [--calls 300] [--cold-runs 3]

Cold: the time from submitting the first task of an endpoint with 0 blocks to its result,
which includes sbatch, Slurm starting the job, the worker pool starting and connecting, and
the task itself. Measured after the endpoint has scaled its block back in (idle time 2 s), so
every cold run starts from an empty batch queue.
Warm: sequential no-op calls once a block is up (p50/p99).

fnserve: SDK -> REST -> Redis -> forwarder -> site manager -> HTEX on SlurmProvider (SrunLauncher),
the endpoint set up with `fnserve endpoint configure --template slurm` / `start`.
Peer: ``HighThroughputExecutor`` on the same SlurmProvider settings, no DataFlowKernel:
cold = ``submit`` + ``scale_out_facade(1)`` until the result, warm = ``submit(noop).result()``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import yaml

sys.path.insert(0, os.path.dirname(__file__))
from common import summarize, time_calls, write_results

PROVIDER = {"partition": "debug", "exclusive": False, "walltime": "00:30:00"}
WORKERS = 1


def noop() -> None:
    return None


def jobs_under(path: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i|%o"], capture_output=True, text=True, check=True).stdout
    return [ln.split("|", 1)[0] for ln in out.splitlines() if ln.split("|", 1)[1].startswith(path)]


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def bare_htex(calls: int, cold_runs: int) -> dict[str, Any]:
    from parsl.executors import HighThroughputExecutor
    from parsl.launchers import SrunLauncher
    from parsl.providers import SlurmProvider

    run_dir = tempfile.mkdtemp(prefix="htex-slurm-bench-")
    provider = SlurmProvider(init_blocks=0, min_blocks=0, max_blocks=1, launcher=SrunLauncher(), **PROVIDER)
    provider.script_dir = run_dir
    ex = HighThroughputExecutor(label="bench", provider=provider, max_workers_per_node=WORKERS,
                                heartbeat_period=1, heartbeat_threshold=4, encrypted=False)
    ex.run_dir = run_dir
    ex.start()
    cold = []
    try:
        for i in range(cold_runs):
            wait_until(lambda: not jobs_under(run_dir) and not ex.connected_managers(), 60, "bare HTEX block gone")
            t0 = time.perf_counter()
            fut = ex.submit(noop, {})
            ex.scale_out_facade(1)
            fut.result(timeout=120)
            cold.append(time.perf_counter() - t0)
            warm = summarize(time_calls(lambda: ex.submit(noop, {}).result(), calls)) if i == cold_runs - 1 else None
            ex.scale_in_facade(1)
        return {"cold_s": cold, "warm": warm}
    finally:
        for job in jobs_under(run_dir):
            subprocess.run(["scancel", job], check=False)
        ex.shutdown()


def fnserve_endpoint(calls: int, cold_runs: int, port: int) -> dict[str, Any]:
    home = tempfile.mkdtemp(prefix="fnserve-slurm-bench-")
    os.environ["FNSERVE_HOME"] = home
    from fnserve.cli import endpoint_cmds, stack
    from fnserve.cli.endpoint_templates import render
    from fnserve.client import Client

    try:
        env = stack.start_service(stack.StackPorts(web=port, forwarder=port + 1, redis=port + 2), say=lambda _s: None)
        url = f"http://127.0.0.1:{port}"
        cfg = stack.ensure_user(env, url, "bench")
        fc = Client(url, cfg.token)
        path = stack.endpoint_config_path("slurm")
        path.parent.mkdir(parents=True)
        config = yaml.safe_load(render("slurm", str(stack.endpoint_dir("slurm") / "run")))
        config["provider"].update(PROVIDER)
        config["engine"].update({"max_workers_per_node": WORKERS, "heartbeat_period": 1, "heartbeat_threshold": 4})
        config["scaling"].update({"init_blocks": 0, "min_blocks": 0, "max_blocks": 1, "max_idletime": 2})
        config["worker_init"] = ""
        path.write_text(yaml.safe_dump(config))
        endpoint_cmds.start("slurm", say=lambda _s: None)
        endpoint_id = endpoint_cmds.identity("slurm")["endpoint_id"]
        run_dir = str(stack.endpoint_dir("slurm") / "run")
        fid = fc.register_function(noop, serializer="source")
        cold, warm = [], None
        for i in range(cold_runs):
            wait_until(lambda: not jobs_under(run_dir), 60, "fnserve block scaled in")
            t0 = time.perf_counter()
            fc.get_result(fc.run(fid, endpoint_id), timeout=120)
            cold.append(time.perf_counter() - t0)
            if i == cold_runs - 1:
                warm = summarize(time_calls(lambda: fc.call(fid, endpoint_id), calls))
                run_get = summarize(time_calls(lambda: fc.get_result(fc.run(fid, endpoint_id), timeout=60), calls))
                task = fc.get_task(fc.run(fid, endpoint_id))
                task = fc.wait([task["task_id"]], 60)[0]
                example = {"timestamps": task.get("timestamps"), "timings": task.get("timings")}
        return {"cold_s": cold, "warm": warm, "run_get_result": run_get, "example_task": example}
    finally:
        endpoint_cmds.stop("slurm", say=lambda _s: None)
        stack.stop_all(say=lambda _s: None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=18880)
    args = parser.parse_args()
    t0 = time.time()
    htex = bare_htex(args.calls, args.cold_runs)
    fns = fnserve_endpoint(args.calls, args.cold_runs, args.port)
    results: dict[str, Any] = {"calls": args.calls, "cold_runs": args.cold_runs, "workers_per_node": WORKERS,
                               "slurm_provider": PROVIDER, "launcher": "srun", "bare_htex": htex, "fnserve": fns}
    for name, r in (("bare HTEX on SlurmProvider", htex), ("fnserve endpoint on Slurm", fns)):
        cold = sorted(r["cold_s"])
        print(f"{name:<28} cold median {cold[len(cold) // 2]:5.2f} s (runs: {', '.join(f'{c:.2f}' for c in r['cold_s'])})"
              f"   warm p50 {r['warm']['p50_ms']:6.2f} ms  p99 {r['warm']['p99_ms']:6.2f} ms")
    results["warm_p50_ratio"] = fns["warm"]["p50_ms"] / htex["warm"]["p50_ms"]
    results["cold_median_ratio"] = sorted(fns["cold_s"])[len(fns["cold_s"]) // 2] / sorted(htex["cold_s"])[len(htex["cold_s"]) // 2]
    results["seconds"] = time.time() - t0
    print(f"fnserve/HTEX: cold {results['cold_median_ratio']:.2f}x, warm p50 {results['warm_p50_ratio']:.2f}x")
    print(f"(results in {write_results('slurm_latency', results)})")


if __name__ == "__main__":
    main()

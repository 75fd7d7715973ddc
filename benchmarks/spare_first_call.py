"""Hot spare first call against warm calls, hop by hop, on a local endpoint.

    python benchmarks/spare_first_call.py [--spares 6] [--warm 20] [--port 18960]

One embedded stack; the endpoint keeps ``--spares`` hot spares (``min_warm_workers: 1``), each a
venv runtime (a venv of this Python that sees this checkout; its own pool, started with the
endpoint). Half of them run with ``FNSERVE_WORKER_PRELOAD=0`` (the worker does not load its task runner before its first task: the
behaviour before the preload), so before and after are measured in the same run, interleaved.
Each spare's first call is a call to a fresh spare; then ``--warm`` calls to each, interleaved.
Every call is one submit-and-wait request (as ``Client.call``); the answer carries the task's
timestamps, so each hop of a first call is set against the same hop of warm calls.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


sys.path.insert(0, os.path.dirname(__file__))
from common import write_results  # noqa: E402
from hops import HOPS  # noqa: E402
from runtime_latency import runtime_figure, start_bench_endpoint  # noqa: E402


def noop() -> None:
    return None


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)  # set-up only, never inside a timed section


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spares", type=int, default=6)
    ap.add_argument("--warm", type=int, default=20)
    ap.add_argument("--port", type=int, default=18960)
    ap.add_argument("--at-ready", choices=["workers", "ready"],
                    help="call each spare the moment the endpoint reports its worker (workers: registered, "
                         "ready: started); default: 3 s after all are ready")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fnserve-spare-bench-"))
    # A venv runtime runs isolated (python -I): a venv that sees this checkout (a .pth) and the
    # system's packages, so the spares run the code under test, not an installed fnserve.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(tmp / "venv")], check=True)
    site = next((tmp / "venv/lib").glob("python*/site-packages"))
    (site / "fnserve_checkout.pth").write_text(str(Path(__file__).resolve().parents[1]) + "\n")
    python = str(tmp / "venv/bin/python")
    os.environ["FNSERVE_HOME"] = str(tmp / "home")
    from fnserve.cli import stack

    variants = {f"spare{i}": ("before" if i % 2 else "after") for i in range(args.spares)}
    runtimes = {name: {"type": "venv", "python": python, "min_warm_workers": 1, "max_blocks": 1,
                       **({"env": {"FNSERVE_WORKER_PRELOAD": "0"}} if v == "before" else {})}
                for name, v in variants.items()}
    load0 = os.getloadavg()
    try:
        fc, eid = start_bench_endpoint(args.port, runtimes, connect_timeout=400)
        fid = fc.register_function(noop, serializer="source")
        fc.call(fid, eid)  # the service's and the host engine's first use of the function: not a spare's

        def workers(name: str, key: str = "workers") -> int:
            return runtime_figure(fc, eid, name, key)

        if not args.at_ready:
            _wait(lambda: all(workers(n, "ready") >= 1 for n in runtimes), 300, "hot spares")
            time.sleep(3)  # well past every spare's start (a call right at the report is --at-ready)

        def one(name: str) -> dict[str, float]:
            spec = {"function_id": fid, "endpoint_id": eid, "args": [], "runtime": name}
            t0 = time.time()
            task = fc.transport.post("/v1/tasks", {"tasks": [spec], "wait": 60})["tasks"][0]
            t1 = time.time()
            assert task["state"] == "success", task
            return {"client_sent": t0, "client_received": t1, **task["timestamps"], **task["timings"]}

        first = {}
        for name in runtimes:
            if args.at_ready:
                _wait(lambda n=name: workers(n, args.at_ready) >= 1, 300, f"hot spare {name}")
            first[name] = one(name)
        warm: dict[str, list[dict[str, float]]] = {name: [] for name in runtimes}
        for _ in range(args.warm):
            for name in runtimes:
                warm[name].append(one(name))
    finally:
        stack.stop_all(say=lambda _s: None)

    def ms(p: dict[str, float], a: str, b: str) -> float:
        return (p[b] - p[a]) * 1e3 if a in p and b in p else float("nan")

    out: dict[str, Any] = {"spares": args.spares, "warm_calls": args.warm, "at_ready": args.at_ready, "load_average_start": list(load0),
                           "load_average_end": list(os.getloadavg())}
    for v in ("before", "after"):
        names = [n for n, x in variants.items() if x == v]
        firsts = [ms(first[n], "client_sent", "client_received") for n in names]
        warms = [ms(p, "client_sent", "client_received") for n in names for p in warm[n]]
        row: dict[str, Any] = {"first_ms": firsts, "first_median_ms": statistics.median(firsts),
                               "warm_p50_ms": statistics.median(warms)}
        row["ratio"] = row["first_median_ms"] / row["warm_p50_ms"]
        row["hops_first_ms"] = {lbl: statistics.median(ms(first[n], a, b) for n in names) for lbl, a, b in HOPS}
        row["hops_warm_ms"] = {lbl: statistics.median(ms(p, a, b) for n in names for p in warm[n]) for lbl, a, b in HOPS}
        out[v] = row
        print(f"\n{v} (FNSERVE_WORKER_PRELOAD={'0' if v == 'before' else 'default'}): first calls "
              f"{', '.join(f'{x:.1f}' for x in firsts)} ms, median {row['first_median_ms']:.1f} ms; "
              f"warm p50 {row['warm_p50_ms']:.1f} ms; first / warm {row['ratio']:.2f}x")
        print(f"  {'hop':<34} {'first ms':>9} {'warm ms':>9}")
        for lbl, _a, _b in HOPS:
            print(f"  {lbl:<34} {row['hops_first_ms'][lbl]:9.2f} {row['hops_warm_ms'][lbl]:9.2f}")
    print(f"\nload average at start {load0[0]:.2f}, at end {os.getloadavg()[0]:.2f}")
    write_results("spare_first_call", out)


if __name__ == "__main__":
    main()

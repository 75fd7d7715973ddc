"""Where the time goes: each hop of a warm no-op call, and each process's CPU per call.

    python benchmarks/hops.py [--calls 300] [--port 18790] [--py-spy] [--plaintext]

Two views of the same warm ``Client.call`` (one submit-and-wait request, as the SDK makes it):

* **hops**: the median time between the task's own timestamps (client sent, service accepted,
  forwarder claimed and sent, site manager received, worker received / started / finished,
  site manager got the result, recorded, client has it);
* **processes**: for each process of the stack (the client, the gunicorn worker, Redis, the
  forwarder, the site manager, the HTEX interchange, the worker pool and its worker), its CPU
  time per call, the time it spent runnable but waiting for a core (the share a loaded machine
  adds to a latency path), and how often it was scheduled in, from the kernel's ``schedstat``
  (:mod:`proc_cpu`), minus what the same process burns idle over as long (measured just before).

``--py-spy`` then runs the calls again with py-spy sampling every Python process of the stack at
once and lists, per process, the functions that hold its samples (:mod:`pyspy`; the raw
collapsed stacks stay in a temporary folder named in the output). The engine runs CurveZMQ on
its interchange (the default) unless ``--plaintext``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(__file__))
import proc_cpu  # noqa: E402
import pyspy  # noqa: E402
from common import embedded_stack, write_results  # noqa: E402

# (label, from, to): names are the task's timestamps (t_*) and hop timings, plus the client's.
HOPS = [
    ("client -> service accepted", "client_sent", "submitted"),
    ("accepted -> forwarder claimed", "submitted", "dispatched"),
    ("claimed -> sent to site", "dispatched", "forwarder_dispatched"),
    ("forwarder -> site manager", "forwarder_dispatched", "site_received"),
    ("site manager -> worker (HTEX)", "site_received", "worker_received"),
    ("deserialize in worker", "worker_received", "worker_started"),
    ("run function", "worker_started", "worker_finished"),
    ("worker -> site manager (HTEX)", "worker_finished", "site_result"),
    ("site -> forwarder -> recorded", "site_result", "finished"),
    ("recorded -> client has result", "finished", "client_received"),
]
CLIENT = "client (SDK)"


def noop() -> None:
    return None


def stack_pids() -> dict[int, str]:
    """The embedded stack's processes (by their sessions: LocalProvider's worker pool leaves the
    process tree), labelled; several workers or pools get numbered labels."""
    from fnserve.cli import stack

    sids = {p for p in (m.pid() for m in (*stack.processes().values(), stack.endpoint_process("bench"))) if p}
    pids: dict[int, str] = {}
    seen: dict[str, int] = {}
    spawned = sorted(p for p in proc_cpu.sessions_pids(sids) if proc_cpu.label(p) == "worker")
    for pid in sorted(proc_cpu.sessions_pids(sids)):
        name = proc_cpu.label(pid)
        if name is None:
            continue
        if name == "worker" and len(spawned) > 1 and pid == spawned[0]:
            # Parsl's pool spawns its multiprocessing Manager (the shared task queue) before its workers.
            name = "pool task-queue server"
        seen[name] = seen.get(name, 0) + 1
        pids[pid] = name if seen[name] == 1 else f"{name} {seen[name]}"
    return pids


def per_call(pids: dict[int, str], run: Callable[[], int], idle_s: float = 3.0) -> dict[str, dict[str, float]]:
    """Per process: CPU, run-queue wait and times scheduled in, per call of ``run`` (which returns
    how many calls it made), less the same process's idle rate over as long."""
    b = proc_cpu.sched_all(pids)
    time.sleep(idle_s)
    idle = proc_cpu.delta(proc_cpu.sched_all(pids), b)
    b = proc_cpu.sched_all(pids)
    t0 = time.perf_counter()
    n = run()
    wall = time.perf_counter() - t0
    busy = proc_cpu.delta(proc_cpu.sched_all(pids), b)
    scale = wall / idle_s
    out = {}
    for name, d in busy.items():
        i = idle[name]
        out[name] = {"cpu_us": max(0.0, (d.cpu_s - i.cpu_s * scale) / n * 1e6), "runq_wait_us": max(0.0, (d.wait_s - i.wait_s * scale) / n * 1e6),
                     "scheduled": max(0.0, (d.slices - i.slices * scale) / n), "idle_cpu_pct": 100 * i.cpu_s / idle_s}
    return out


def measure(calls: int, port: int, encrypted: bool, profile: bool) -> dict[str, Any]:
    engine = {"max_workers_per_node": 1, "init_blocks": 1, "min_blocks": 0, "max_blocks": 1, "encrypted": encrypted}
    with embedded_stack(port=port, engine=engine) as (fc, endpoint_id):
        fid = fc.register_function(noop, serializer="source")
        for _ in range(50):
            fc.call(fid, endpoint_id)
        spec = {"function_id": fid, "endpoint_id": endpoint_id, "args": []}
        points: list[dict[str, float]] = []

        def run() -> int:
            for _ in range(calls):
                # One submit-and-wait request, as Client.call makes it; the answer has the hops.
                t0 = time.time()
                task = fc.transport.post("/v1/tasks", {"tasks": [spec], "wait": 30})["tasks"][0]
                t1 = time.time()
                assert task["state"] == "success", task
                points.append({"client_sent": t0, "client_received": t1, **task["timestamps"], **task["timings"]})
            return calls

        pids = stack_pids()
        procs = per_call({**pids, os.getpid(): CLIENT}, run)
        hops: dict[str, float] = {}
        for label, a, b in HOPS:
            vals = [(p[b] - p[a]) * 1e3 for p in points if a in p and b in p]
            hops[label] = statistics.median(vals) if vals else float("nan")
        hops["total (client)"] = statistics.median([(p["client_received"] - p["client_sent"]) * 1e3 for p in points])
        out: dict[str, Any] = {"calls": calls, "encrypted": encrypted, "hops": hops, "processes": procs}
        if profile:
            rec = pyspy.record({pid: name for pid, name in pids.items() if name != "redis"} | {os.getpid(): CLIENT})
            points.clear()
            run()
            pyspy.stop(rec)
            out["py_spy"] = {name: pyspy.summary(pyspy.read(path)) for name, path in rec.files.items()}
            out["py_spy_dir"] = rec.out_dir
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--port", type=int, default=18790)
    parser.add_argument("--plaintext", action="store_true", help="the interchange without CurveZMQ")
    parser.add_argument("--py-spy", action="store_true", help="also profile every Python process with py-spy")
    args = parser.parse_args()
    load0 = os.getloadavg()
    out = measure(args.calls, args.port, not args.plaintext, args.py_spy)
    out["load_average_start"] = [round(x, 2) for x in load0]
    for label, ms in out["hops"].items():
        print(f"{label:<34} {ms:7.3f} ms")
    print(f"\n{'process':<26} {'CPU us/call':>12} {'run-queue wait us/call':>23} {'scheduled/call':>15} {'idle CPU %':>10}")
    for name, p in sorted(out["processes"].items(), key=lambda kv: -kv[1]["cpu_us"]):
        print(f"{name:<26} {p['cpu_us']:12.0f} {p['runq_wait_us']:23.0f} {p['scheduled']:15.1f} {p['idle_cpu_pct']:10.1f}")
    for name, s in out.get("py_spy", {}).items():
        print(f"\n[{name}] {s['samples']} samples; self: " + ", ".join(f"{fr} {100 * x:.0f}%" for fr, x in s["self"][:8]))
    if "py_spy_dir" in out:
        print(f"\n(py-spy collapsed stacks in {out['py_spy_dir']})")
    print(f"load average at start {load0[0]:.2f}, at end {os.getloadavg()[0]:.2f}")
    write_results("hops", out)


if __name__ == "__main__":
    main()

"""Forwarder scale: 100 and 1,000 endpoints connected at once, tasks routed per second; and
the same over 1, 2 and 4 forwarders sharing the endpoints (web_service/forwarder_pool.py).

    python benchmarks/forwarder_scale.py [--endpoints 100 1000] [--tasks 30000]
    python benchmarks/forwarder_scale.py --endpoints 1000 --forwarders 1 2 4   # scale-out

Real pieces: redis-server, the task store, and the forwarder (``web_service.forwarder.Forwarder``
in its own process, plaintext ZMQ on loopback). The endpoints are light simulated site managers
(tests/integration/sim_endpoints.py, shared with the compose deployment test): the site
manager's protocol state machine per endpoint on a ZMQ DEALER socket, all of them in two
processes, answering every TaskBatch at once with a ResultBatch (no Parsl behind them), so the
forwarder and Redis are what is measured.
Their secrets are checked by a stand-in verifier (a dict) instead of the SQL registry.
Tasks are submitted through ``TaskStore.submit`` (what ``POST /v1/tasks`` calls), spread evenly
over the endpoints, in batches of 1,000.

Reported: tasks routed per second (first submit to last result recorded), and the dispatch
delay of each task: from its submit batch being written to Redis to the simulated site manager
receiving it (p50, p99).

With ``--forwarders``: each forwarder runs in the pool (its own process, liveness in Redis) and
each simulated endpoint connects to the forwarder the rule assigns it (what ``POST
/v1/endpoints`` answers). Also reported: each forwarder's CPU seconds (user + system, from
/proc) per 1,000 tasks it routed, the figure to project from: on a 2-core machine shared with
Redis and the simulators, tasks/s cannot grow with forwarders, the CPU cost per task can be
measured. Results: benchmarks/results/forwarder_scale_out.json.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository: tests.integration
from common import summarize, write_results

OWNER = "bench-user"
IDLE_S = 10.0  # seconds all endpoints are registered and idle before the burst (liveness cost)


def _submit_and_wait(store: Any, cursor: str, ids: list[str], n_endpoints: int, n_tasks: int) -> tuple[dict[str, float], float]:
    """Submit ``n_tasks`` no-ops round-robin over the endpoints in batches of 1,000 and wait until
    all are recorded; returns each task's submit time and the seconds it all took."""
    from web_service.task_store import NewTask

    submitted_at: dict[str, float] = {}
    t0 = time.perf_counter()
    for start in range(0, n_tasks, 1000):
        batch = [NewTask(task_id=f"t{i}", owner=OWNER, function_id="f-noop", endpoint_id=ids[i % n_endpoints], payload=b"fns1 json-data 3\n{}")
                 for i in range(start, min(n_tasks, start + 1000))]
        now = time.time()
        store.submit(batch)
        submitted_at.update((t.task_id, now) for t in batch)
    done = 0
    while done < n_tasks:
        page = store.completed_since(OWNER, cursor, 30.0, 100_000)
        if not page.task_ids:
            raise RuntimeError(f"stalled: {done}/{n_tasks} results recorded")
        done += len(page.task_ids)
        cursor = page.cursor
    elapsed = time.perf_counter() - t0
    return submitted_at, elapsed


def _groups(ids: list[str]) -> list[list[str]]:
    """The endpoints split over the simulator processes: two, or one per 2,500 endpoints (a
    poll over all of a process's sockets costs in proportion to their number)."""
    k = max(2, len(ids) // 2500)
    return [ids[i::k] for i in range(k)]


def _secret(endpoint_id: str) -> str:
    return "s-" + endpoint_id


def forwarder_process(redis_url: str, bind: str, ready: Any, pooled: bool = False) -> None:
    import logging

    from web_service.forwarder import Forwarder
    from web_service.forwarder_pool import ForwarderPool
    from web_service.task_store import TaskStore

    logging.basicConfig(level=logging.ERROR)
    store = TaskStore.from_url(redis_url)
    fwd = Forwarder(store, lambda eid, secret: secret == _secret(eid), bind,
                    pool=ForwarderPool(store.r, bind) if pooled else None)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: fwd.stop())
    ready.set()
    fwd.run()


def endpoints_process(address: str | dict[str, str], endpoint_ids: list[str], registered: Any, out: Any, stop: Any) -> None:
    """Simulated site managers (tests/integration/sim_endpoints.py: the site manager's protocol
    state machine per endpoint, all on one ZMQ context and poller): register, heartbeat, answer
    tasks at once."""
    from tests.integration.sim_endpoints import SimEndpoint, SimulatedEndpoints

    sims = SimulatedEndpoints([SimEndpoint(eid, _secret(eid), address if isinstance(address, str) else address[eid])
                               for eid in endpoint_ids])
    sims.record_received = True

    check_at = [0.0]

    def stopping() -> bool:
        # Whether all registered: a scan of every session, so not on every loop pass.
        if not registered.is_set() and time.monotonic() >= check_at[0]:
            check_at[0] = time.monotonic() + 0.5
            if sims.registered():
                registered.set()
        return bool(stop.is_set())

    try:
        sims.run(stopping)
        out.put((sims.received, sims.reconnected_at))
    finally:
        sims.close()


def scenario(redis_url: str, n_endpoints: int, n_tasks: int, port: int) -> dict[str, Any]:
    import redis

    from web_service.task_store import TaskStore

    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    store = TaskStore(r)
    store.cache_function("f-noop", b"fns1 source 3.11\nnoop\ndef noop():\n    return None\n")
    ctx = mp.get_context("spawn")
    address = f"tcp://127.0.0.1:{port}"
    ready, stop = ctx.Event(), ctx.Event()
    fwd = ctx.Process(target=forwarder_process, args=(redis_url, address, ready), daemon=True)
    fwd.start()
    ready.wait(30)
    ids = [f"ep-{i:05d}" for i in range(n_endpoints)]
    groups = _groups(ids)
    out = ctx.Queue()
    regs = [ctx.Event() for _ in groups]
    sims = [ctx.Process(target=endpoints_process, args=(address, g, ev, out, stop), daemon=True) for g, ev in zip(groups, regs)]
    for p in sims:
        p.start()
    t_reg = time.perf_counter()
    for ev in regs:
        if not ev.wait(max(120, n_endpoints / 20)):
            raise RuntimeError("simulated endpoints did not all register")
    register_s = time.perf_counter() - t_reg
    cursor = store.completion_cursor(OWNER)
    submitted_at, elapsed = _submit_and_wait(store, cursor, ids, n_endpoints, n_tasks)
    stop.set()
    received: list[tuple[str, float]] = []
    for _ in sims:
        received += out.get(timeout=60)[0]
    for p in sims:
        p.join(30)
    fwd.terminate()
    fwd.join(30)
    delays = [at - submitted_at[tid] for tid, at in received if tid in submitted_at]
    return {"endpoints": n_endpoints, "tasks": n_tasks, "seconds": elapsed, "tasks_per_s": n_tasks / elapsed,
            "register_all_s": register_s, "dispatch_delay": summarize(delays)}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def scale_out(redis_url: str, n_endpoints: int, n_tasks: int, n_forwarders: int, port: int) -> dict[str, Any]:
    """``n_forwarders`` pooled forwarders; endpoints connect to the one the rule assigns."""
    import redis

    from web_service.forwarder_pool import ForwarderPool, assign
    from web_service.task_store import TaskStore

    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    store = TaskStore(r)
    store.cache_function("f-noop", b"fns1 source 3.11\nnoop\ndef noop():\n    return None\n")
    ctx = mp.get_context("spawn")
    addresses = [f"tcp://127.0.0.1:{port + k}" for k in range(n_forwarders)]
    stop = ctx.Event()
    fwds = []
    for a in addresses:
        ready = ctx.Event()
        p = ctx.Process(target=forwarder_process, args=(redis_url, a, ready, True), daemon=True)
        p.start()
        ready.wait(30)
        fwds.append(p)
    deadline = time.monotonic() + 30
    while sorted(ForwarderPool(r).live()) != sorted(addresses):
        if time.monotonic() > deadline:
            raise RuntimeError("forwarders did not all join the pool")
        time.sleep(0.1)  # start-up only
    ids = [f"ep-{i:05d}" for i in range(n_endpoints)]
    where = {e: assign(e, addresses) for e in ids}
    groups = _groups(ids)
    out = ctx.Queue()
    regs = [ctx.Event() for _ in groups]
    sims = [ctx.Process(target=endpoints_process, args=(where, g, ev, out, stop), daemon=True) for g, ev in zip(groups, regs)]
    for p in sims:
        p.start()
    for ev in regs:
        if not ev.wait(max(120, n_endpoints / 20)):
            raise RuntimeError("simulated endpoints did not all register")
    # Liveness alone (heartbeats and status reports, no task): each forwarder's CPU over 10 s idle.
    idle0 = [_cpu_seconds(p.pid) for p in fwds]
    time.sleep(IDLE_S)
    idle = [(_cpu_seconds(p.pid) - c) / IDLE_S for p, c in zip(fwds, idle0)]
    cursor = store.completion_cursor(OWNER)
    cpu0 = [_cpu_seconds(p.pid) for p in fwds]
    burst_at = time.time()
    submitted_at, elapsed = _submit_and_wait(store, cursor, ids, n_endpoints, n_tasks)
    cpu = [_cpu_seconds(p.pid) - c for p, c in zip(fwds, cpu0)]
    stop.set()
    received: list[tuple[str, float]] = []
    reconnects: list[float] = []
    for _ in sims:
        got, times = out.get(timeout=60)
        received += got
        reconnects += times
    for p in [*sims, *fwds]:
        if p in fwds:
            p.terminate()
        p.join(30)
    routed = {a: sum(1 for i in range(n_tasks) if where[ids[i % n_endpoints]] == a) for a in addresses}
    per_forwarder = [{"endpoints": sum(1 for e in ids if where[e] == a), "tasks": routed[a], "cpu_s": c,
                      "cpu_s_per_1000_tasks": c / routed[a] * 1000 if routed[a] else None,
                      "idle_cpu_s_per_s": i} for a, c, i in zip(addresses, cpu, idle)]
    delays = [at - submitted_at[tid] for tid, at in received if tid in submitted_at]
    return {"forwarders": n_forwarders, "endpoints": n_endpoints, "tasks": n_tasks, "seconds": elapsed,
            "tasks_per_s": n_tasks / elapsed, "dispatch_delay": summarize(delays), "per_forwarder": per_forwarder,
            "reconnects_registering": sum(1 for t in reconnects if t < burst_at),
            "reconnects_burst": sum(1 for t in reconnects if t >= burst_at),
            "tasks_delivered_twice": len(received) - len({tid for tid, _ in received}),
            "loadavg": Path("/proc/loadavg").read_text().split()[:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--tasks", type=int, default=30_000)
    parser.add_argument("--forwarders", type=int, nargs="+", default=None,
                        help="run the scale-out scenarios with these forwarder counts (e.g. 1 2 4)")
    args = parser.parse_args()
    from fnserve._redis_server import start_redis

    proc, url = start_redis(Path(tempfile.mkdtemp(prefix="fwd-bench-")), appendonly=True)
    if args.forwarders:
        out: dict[str, Any] = {"tasks": args.tasks, "scenarios": []}
        try:
            for n in args.endpoints:
                for k in args.forwarders:
                    res = scale_out(url, n, args.tasks, k, 18900 + 10 * k)
                    out["scenarios"].append(res)
                    d = res["dispatch_delay"]
                    costs = ", ".join(f"{f['cpu_s_per_1000_tasks']:.2f}" for f in res["per_forwarder"] if f["cpu_s_per_1000_tasks"])
                    print(f"{n:5d} endpoints, {k} forwarder(s): {res['tasks_per_s']:7.0f} tasks/s, dispatch p50 "
                          f"{d['p50_ms']:.1f} ms p99 {d['p99_ms']:.1f} ms; CPU s per 1,000 tasks per forwarder: {costs}; "
                          f"idle (liveness) CPU s/s: {', '.join(format(f['idle_cpu_s_per_s'], '.2f') for f in res['per_forwarder'])}; "
                          f"reconnects registering {res['reconnects_registering']}, in the burst {res['reconnects_burst']}, "
                          f"tasks delivered twice {res['tasks_delivered_twice']} "
                          f"(load {' '.join(res['loadavg'])})", flush=True)
        finally:
            proc.terminate()
            proc.wait(10)
        print(f"(results in {write_results('forwarder_scale_out', out)})")
        return
    results: dict[str, Any] = {"tasks": args.tasks, "scenarios": []}
    try:
        for i, n in enumerate(args.endpoints):
            res = scenario(url, n, args.tasks, 18850 + i)
            results["scenarios"].append(res)
            d = res["dispatch_delay"]
            print(f"{n:5d} endpoints: {res['tasks_per_s']:7.0f} tasks/s routed, dispatch delay p50 {d['p50_ms']:.1f} ms "
                  f"p99 {d['p99_ms']:.1f} ms (all registered in {res['register_all_s']:.1f} s)", flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"(results in {write_results('forwarder_scale', results)})")


if __name__ == "__main__":
    main()

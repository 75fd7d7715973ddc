"""CPU per warm call of two commits, interleaved in one run: did a change make a call cheaper?

    python benchmarks/cpu_ab.py OLD [NEW] [--calls 600] [--block 60]

Each commit (NEW defaults to HEAD; uncommitted changes are not measured) is checked out in a
throwaway git worktree and brings up its own embedded stack (one endpoint, one worker, CurveZMQ
on the interchange), both at once. Blocks of ``--block`` warm no-op ``Client.call``s then go to
one stack and the other in turn (ABBA), so a change in the machine's load hits both alike. Per
process of each stack: CPU time, run-queue wait and times scheduled in per call from the kernel's
``schedstat`` (:mod:`proc_cpu`), less each process's idle rate (measured before) over as long;
Redis commands executed per call (``INFO commandstats``, commands inside scripts included) and
the calls' latency. On a machine shared with other jobs CPU time per call still moves with the
load (caches, steal): read the two commits' figures of one run side by side, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from compare_commits import REPO, git  # the benchmarks folder is the script's own


# -- one stack, driven over stdin/stdout (runs with the measured commit's fnserve on PYTHONPATH) --


def _serve(port: int) -> None:
    sys.path.insert(0, os.path.dirname(__file__))
    import redis

    import proc_cpu
    from common import embedded_stack
    from hops import CLIENT, noop, stack_pids

    from fnserve._redis_server import redis_auth
    from fnserve.cli.stack import service_dir

    engine = {"max_workers_per_node": 1, "init_blocks": 1, "min_blocks": 0, "max_blocks": 1}
    with embedded_stack(port=port, engine=engine) as (fc, endpoint_id):
        fid = fc.register_function(noop, serializer="source")
        for _ in range(50):
            fc.call(fid, endpoint_id)
        pids = {**stack_pids(), os.getpid(): CLIENT}
        r = redis.Redis.from_url(redis_auth(service_dir()).socket_url())

        def commands() -> int:
            return sum(v["calls"] for k, v in r.info("commandstats").items()
                       if k.removeprefix("cmdstat_").split("|")[0] not in ("info", "monitor", "config", "client", "ping"))

        print("ready", flush=True)
        for line in sys.stdin:
            word, _, arg = line.strip().partition(" ")
            if word == "quit":
                break
            before, c0, t0 = proc_cpu.sched_all(pids), commands(), time.perf_counter()
            latencies = []
            if word == "idle":
                time.sleep(float(arg))
            else:
                for _ in range(int(arg)):
                    s = time.perf_counter()
                    fc.call(fid, endpoint_id)
                    latencies.append(time.perf_counter() - s)
            wall, c1 = time.perf_counter() - t0, commands()
            delta = proc_cpu.delta(proc_cpu.sched_all(pids), before)
            print(json.dumps({"wall": wall, "commands": c1 - c0, "latencies": latencies,
                              "procs": {k: [d.cpu_s, d.wait_s, d.slices] for k, d in delta.items()}}), flush=True)


# -- the driver --------------------------------------------------------------------------------


class _Stack:
    def __init__(self, tree: Path, port: int, tmp: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(tree), "TMPDIR": str(tmp)}
        env.pop("FNSERVE_HOME", None)
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", "--port", str(port)], cwd=tree, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        while (line := self.proc.stdout.readline()).strip() != "ready":
            if not line:
                raise RuntimeError(f"the stack of {tree} did not start")

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(120)
        except Exception:  # noqa: BLE001 - a stack that will not stop is killed
            self.proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("commits", nargs="*", help="the baseline, then the commit compared with it (default: HEAD)")
    ap.add_argument("--calls", type=int, default=600, help="calls per commit")
    ap.add_argument("--block", type=int, default=60, help="calls per turn")
    ap.add_argument("--idle", type=float, default=3.0, help="seconds of idle measured per stack")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=18800)
    args = ap.parse_args()
    if args.serve:
        _serve(args.port)
        return
    if len(args.commits) == 1:
        args.commits.append("HEAD")
    shas = [git("rev-parse", "--short", f"{c}^{{commit}}") for c in args.commits]
    work = Path(tempfile.mkdtemp(prefix="fcpu-"))  # short: the stacks' unix sockets live below it
    stacks: dict[str, _Stack] = {}
    load0 = os.getloadavg()
    try:
        for i, sha in enumerate(shas):
            git("worktree", "add", "--detach", str(work / sha), sha)
            (work / f"tmp-{sha}").mkdir()
            stacks[sha] = _Stack(work / sha, args.port + 20 * i, work / f"tmp-{sha}")
        idle = {sha: s.ask(f"idle {args.idle}") for sha, s in stacks.items()}
        busy: dict[str, list[dict[str, Any]]] = {sha: [] for sha in shas}
        for turn in range(max(1, args.calls // args.block)):
            for sha in (shas if turn % 2 == 0 else shas[::-1]):
                busy[sha].append(stacks[sha].ask(f"run {args.block}"))
    finally:
        for s in stacks.values():
            s.close()
        for sha in shas:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / sha)], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
    load1 = os.getloadavg()

    out: dict[str, Any] = {"commits": dict(zip(args.commits, shas)), "calls": args.calls, "block": args.block,
                           "load_average": [round(load0[0], 2), round(load1[0], 2)], "per_commit": {}}
    for sha in shas:
        calls = sum(len(b["latencies"]) for b in busy[sha])
        wall = sum(b["wall"] for b in busy[sha])
        scale = wall / idle[sha]["wall"]
        procs = {}
        for name in idle[sha]["procs"]:
            tot = [sum(b["procs"][name][k] for b in busy[sha]) - idle[sha]["procs"][name][k] * scale for k in range(3)]
            procs[name] = {"cpu_us": round(max(0.0, tot[0]) / calls * 1e6), "runq_wait_us": round(max(0.0, tot[1]) / calls * 1e6),
                           "scheduled": round(max(0.0, tot[2]) / calls, 1)}
        lat = sorted(x for b in busy[sha] for x in b["latencies"])
        out["per_commit"][sha] = {
            "processes": procs, "stack_cpu_us": sum(p["cpu_us"] for n, p in procs.items() if n != "client (SDK)"),
            "redis_commands_per_call": round((sum(b["commands"] for b in busy[sha]) - idle[sha]["commands"] * scale) / calls, 2),
            "p50_ms": round(statistics.median(lat) * 1e3, 2), "p90_ms": round(lat[int(0.9 * len(lat))] * 1e3, 2),
        }
    names = sorted({n for c in out["per_commit"].values() for n in c["processes"]},
                   key=lambda n: -out["per_commit"][shas[0]]["processes"].get(n, {"cpu_us": 0})["cpu_us"])
    print("| process: CPU us per call (scheduled in per call) | " + " | ".join(shas) + " |")
    print("|---|" + "---:|" * len(shas))
    for n in names:
        row = [out["per_commit"][s]["processes"].get(n, {"cpu_us": 0, "scheduled": 0}) for s in shas]
        if any(p["cpu_us"] for p in row):
            print(f"| {n} | " + " | ".join(f"{p['cpu_us']} ({p['scheduled']:g})" for p in row) + " |")
    for label, key in (("stack total (without the client)", "stack_cpu_us"), ("Redis commands per call", "redis_commands_per_call"),
                       ("p50 ms", "p50_ms"), ("p90 ms", "p90_ms")):
        print(f"| {label} | " + " | ".join(f"{out['per_commit'][s][key]:g}" for s in shas) + " |")
    print(f"\nload average (1 min): {load0[0]:.1f} at start, {load1[0]:.1f} at end")
    sys.path.insert(0, os.path.dirname(__file__))
    from common import write_results

    print(f"(results in {write_results('cpu_ab', out)})")


if __name__ == "__main__":
    main()

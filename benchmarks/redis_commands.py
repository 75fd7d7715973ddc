"""Redis commands per task through the real stack (issue 21: fewer round trips on accept and record).

    python benchmarks/redis_commands.py [--tasks 1000] [--calls 200]
    python benchmarks/redis_commands.py --store [--tasks 1000]

Brings up the embedded stack (web service, Redis, forwarder, site manager, HTEX with 2 workers),
warms it, then runs two workloads and counts what Redis executed for them:
``executor``: ``--tasks`` no-ops through ``Executor.submit`` (batched submits, results pushed);
``call``: ``--calls`` single ``Client.call`` requests (a batch of one each: the per-task worst case).

With ``--store``: the task store alone on a fresh redis-server, each stage of a task's life
(accept, claim, running, record) for ``--tasks`` tasks in batches of 1, 10, 100 and 1,000, so
that the counts do not depend on how the live stack happened to batch.

For each: commands executed per task (``INFO commandstats``, reset before; commands run inside Lua
scripts included), commands sent by clients per task (``MONITOR``, lines not from a script: each
is a command on the wire, several may share a round trip in a pipeline), and the busiest commands.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import threading
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(__file__))
from common import embedded_stack, write_results

_OURS = {"MONITOR", "INFO", "CONFIG", "CLIENT", "PING"}


def noop(x: Any = None) -> None:
    return None


def _redis():  # type: ignore[no-untyped-def]
    import redis

    from fnserve._redis_server import redis_auth
    from fnserve.cli.stack import service_dir

    return redis.Redis.from_url(redis_auth(service_dir()).socket_url())


class _Monitor:
    """Counts the commands clients send (MONITOR), by name, apart from those scripts run."""

    def __init__(self) -> None:
        self.sent: collections.Counter[str] = collections.Counter()
        self.in_scripts = 0
        self._conn = _redis()
        self._mon = self._conn.monitor()
        self._mon.__enter__()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for entry in self._mon.listen():
                name = entry["command"].split(" ", 1)[0].strip('"').upper()
                if entry.get("client_type") == "lua":
                    self.in_scripts += 1
                elif name not in _OURS:
                    self.sent[name] += 1
        except Exception:  # noqa: BLE001 - the connection is closed to stop
            return

    def stop(self) -> None:
        try:
            self._mon.connection.disconnect()
        finally:
            self._thread.join(5)


def measure(name: str, n: int, run: Callable[[], None]) -> dict[str, Any]:
    r = _redis()
    r.config_resetstat()
    mon = _Monitor()
    run()
    mon.stop()
    stats = {k.removeprefix("cmdstat_"): v for k, v in r.info("commandstats").items()}
    executed = sum(v["calls"] for k, v in stats.items() if k.upper().split("|")[0] not in _OURS)
    sent = sum(mon.sent.values())
    out = {
        "tasks": n,
        "executed_per_task": round(executed / n, 2),
        "sent_per_task": round(sent / n, 2),
        "scripts_per_task": round(sum(mon.sent[c] for c in ("EVALSHA", "EVAL")) / n, 2),
        "sent_by_command_per_task": {c: round(k / n, 3) for c, k in mon.sent.most_common(14)},
        "executed_by_command_per_task": {c: round(v["calls"] / n, 3) for c, v in
                                         sorted(stats.items(), key=lambda kv: -kv[1]["calls"])[:14]},
    }
    print(f"{name:<9} {out['executed_per_task']:6.2f} commands executed per task, {out['sent_per_task']:6.2f} sent by clients "
          f"({out['scripts_per_task']:.2f} script runs)", flush=True)
    return out


def store_stages(tasks: int) -> dict[str, Any]:
    """Commands per task of each store stage, by batch size (deterministic: no stack)."""
    import tempfile
    from pathlib import Path

    import redis

    from fnserve._redis_server import start_redis
    from fnserve.messages import ResultMessage
    from web_service.task_store import NewTask, TaskStore

    proc, url = start_redis(Path(tempfile.mkdtemp(prefix="fnserve-rc-")) / "data", appendonly=False)
    out: dict[str, Any] = {}
    try:
        r = redis.Redis.from_url(url)
        store = TaskStore(r)
        for batch in (1, 10, 100, 1000):
            r.flushall()
            ids = [f"t{i}" for i in range(tasks)]
            chunks = [ids[i:i + batch] for i in range(0, tasks, batch)]
            stages: dict[str, Callable[[list[str]], Any]] = {
                "accept": lambda c: store.submit([NewTask(task_id=i, owner="u", function_id="f", endpoint_id="ep",
                                                          payload=b"fns1 json-data 3\n{}", walltime=10.0) for i in c]),
                "claim": lambda c: store.claim("ep", len(c)),
                "running": lambda c: store.mark_running(c),
                "record": lambda c: store.record_results_from([ResultMessage(task_id=i, ok=True, data=b"r") for i in c], "ep"),
            }
            row = {}
            for stage, run in stages.items():
                r.config_resetstat()
                t0 = time.perf_counter()
                for c in chunks:
                    run(c)
                seconds = time.perf_counter() - t0
                stats = r.info("commandstats")
                executed = sum(v["calls"] for k, v in stats.items() if k.removeprefix("cmdstat_").upper() not in _OURS)
                sent = sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_exec"))
                row[stage] = {"executed_per_task": round(executed / tasks, 2), "round_trips_per_batch": round(sent / len(chunks), 2),
                              "client_us_per_task": round(seconds / tasks * 1e6, 1)}
            out[f"batch_{batch}"] = row
            print(f"batch {batch:>4}: " + ", ".join(f"{k} {v['executed_per_task']:.2f}/task {v['client_us_per_task']:.0f} us" for k, v in row.items()), flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--port", type=int, default=18840)
    parser.add_argument("--out", help="write the results JSON here instead of benchmarks/results")
    parser.add_argument("--store", action="store_true", help="the task store's stages alone, by batch size")
    args = parser.parse_args()
    import concurrent.futures
    import json

    if args.store:
        results_store = store_stages(args.tasks)
        if args.out:
            with open(args.out, "w") as fh:
                json.dump(results_store, fh, indent=1)
        return

    from fnserve.executor import Executor

    engine = {"max_workers_per_node": 2, "init_blocks": 1, "min_blocks": 0, "max_blocks": 1}
    results: dict[str, Any] = {}
    with embedded_stack(port=args.port, engine=engine) as (fc, endpoint_id):
        fid = fc.register_function(noop, serializer="source")
        fc.get_result(fc.run(fid, endpoint_id), timeout=120)
        with Executor(endpoint_id, fc, serializer="source") as ex:
            concurrent.futures.wait([ex.submit(noop, i) for i in range(50)])  # warm

            def batch() -> None:
                futures = [ex.submit(noop, i) for i in range(args.tasks)]
                concurrent.futures.wait(futures)
                assert not any(f.exception() for f in futures)

            results["executor"] = measure("executor", args.tasks, batch)
        for _ in range(5):
            fc.call(fid, endpoint_id)
        results["call"] = measure("call", args.calls, lambda: [fc.call(fid, endpoint_id) for _ in range(args.calls)])
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)
    else:
        print(f"(results in {write_results('redis_commands', results)})")


if __name__ == "__main__":
    main()

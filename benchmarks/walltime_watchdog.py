"""What the walltime watchdog and the encrypted live-output socket cost a warm call.

    python benchmarks/walltime_watchdog.py [--calls 300] [--micro 3000]

Two measurements, same machine, same run, the two cases interleaved in rounds:

- the node manager alone: ``execute_task`` of a no-op in this process, without a walltime and
  with one (the watchdog armed and disarmed: two pipe writes; its helper started once, before
  timing), with the start marker sent over the CurveZMQ output socket each time;
- the whole warm path: ``Client.call`` of a no-op through the embedded stack, without a
  walltime and with ``walltime=60``.

JSON in benchmarks/results/walltime_watchdog.json. Run it from a checkout without the watchdog
(``git stash`` / an older commit) for the "before" numbers of the same warm path.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import embedded_stack, summarize, write_results

ROUNDS = 10


def noop() -> None:
    return None


def _interleaved(cases: dict[str, object], calls: int) -> dict[str, dict[str, float]]:
    samples: dict[str, list[float]] = {name: [] for name in cases}
    per_round = max(1, calls // ROUNDS)
    for _ in range(ROUNDS):
        for name, fn in cases.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()  # type: ignore[operator]
                samples[name].append(time.perf_counter() - t0)
    return {name: summarize(s) for name, s in samples.items()}


def run_micro(calls: int) -> dict[str, dict[str, float]]:
    import zmq

    from fnserve import serialize
    from fnserve.messages import TaskMessage, encode_task
    from node_manager.execute import execute_task
    from site_manager.outputs import OutputRelay

    ctx = zmq.Context()
    relay = OutputRelay(ctx, "127.0.0.1")
    fn = serialize.serialize_source("def noop():\n    return None\n", "noop")
    args = serialize.serialize_args([], {}, serialize.JSON_DATA)

    def task(walltime: float | None) -> bytes:
        return encode_task(TaskMessage(task_id="t", function_id="noop", function=fn, payload=args, walltime=walltime,
                                       outputs_address=relay.address, outputs_keys=relay.keys))

    plain, timed = task(None), task(60.0)
    for t in (plain, timed):  # warm: function cached, channel open, watchdog helper started
        for _ in range(50):
            execute_task(t)
            time.sleep(0.001)
            relay.answer_zap()  # the handshake, as the site manager's loop answers it
            relay.drain()
    from node_manager import watchdog

    def alarm_only() -> None:  # the in-process limit alone, as before the watchdog
        arm, watchdog.arm = watchdog.arm, lambda _seconds: False
        try:
            execute_task(timed)
        finally:
            watchdog.arm = arm

    cases = {"no_walltime": lambda: execute_task(plain), "walltime_alarm_only": alarm_only,
             "walltime_watchdog": lambda: execute_task(timed)}
    try:
        return _interleaved(cases, calls)
    finally:
        relay.close()
        ctx.term()


def run_call(calls: int) -> dict[str, dict[str, float]]:
    engine = {"max_workers_per_node": 1, "init_blocks": 1, "min_blocks": 0, "max_blocks": 1}
    with embedded_stack(engine=engine) as (fc, endpoint_id):
        from fnserve.client import _LONG_POLL
        from fnserve.task_results import result_of
        from fnserve.task_specs import task_spec

        fid = fc.register_function(noop, serializer="source")

        def call(walltime: float | None) -> None:
            # Client.call's one request, with a walltime (call() has no walltime argument).
            spec = task_spec(fid, endpoint_id, (), None, None, walltime, None)
            task = fc.transport.post("/v1/tasks", {"tasks": [spec], "wait": _LONG_POLL})["tasks"][0]
            if task["state"] in ("success", "failed", "cancelled"):
                result_of(task, None)
            else:  # still running when the long-poll ended (a cold start): as Client.call does
                fc.get_result(task["task_id"], timeout=120)

        for walltime in (None, 60.0):
            for _ in range(20):
                call(walltime)
        return _interleaved({"no_walltime": lambda: call(None), "walltime_60": lambda: call(60.0)}, calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--micro", type=int, default=3000, help="execute_task calls per case (0: skip)")
    parser.add_argument("--name", default="walltime_watchdog", help="result file name (e.g. ..._before)")
    args = parser.parse_args()
    t0 = time.time()
    results = {"calls": args.calls, "micro_calls": args.micro,
               "execute_task": run_micro(args.micro) if args.micro else {},
               "client_call": run_call(args.calls), "seconds": 0.0}
    results["seconds"] = round(time.time() - t0, 1)
    for group in ("execute_task", "client_call"):
        for name, r in results[group].items():  # type: ignore[union-attr]
            print(f"{group:13s} {name:18s} p50 {r['p50_ms']:.3f} ms  p90 {r['p90_ms']:.3f} ms  mean {r['mean_ms']:.3f} ms")
    print(write_results(args.name, results))


if __name__ == "__main__":
    main()

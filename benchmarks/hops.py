"""Where the time goes: median time of each hop of a warm no-op task, from its own timestamps.

    python benchmarks/hops.py [--calls 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
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


def noop() -> None:
    return None


def measure(calls: int) -> dict[str, float]:
    engine = {"max_workers_per_node": 1, "init_blocks": 1, "min_blocks": 0, "max_blocks": 1}
    with embedded_stack(port=18790, engine=engine) as (fc, endpoint_id):
        fid = fc.register_function(noop, serializer="source")
        for _ in range(20):
            fc.call(fid, endpoint_id)
        spec = {"function_id": fid, "endpoint_id": endpoint_id, "args": []}
        points = []
        for _ in range(calls):
            # One submit-and-wait request, as Client.call makes it; the answer has the hops.
            t0 = time.time()
            task = fc.transport.post("/v1/tasks", {"tasks": [spec], "wait": 30})["tasks"][0]
            t1 = time.time()
            assert task["state"] == "success", task
            points.append({"client_sent": t0, "client_received": t1, **task["timestamps"], **task["timings"]})
        out: dict[str, float] = {}
        for label, a, b in HOPS:
            vals = [(p[b] - p[a]) * 1e3 for p in points if a in p and b in p]
            out[label] = statistics.median(vals) if vals else float("nan")
        out["total (client)"] = statistics.median([(p["client_received"] - p["client_sent"]) * 1e3 for p in points])
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    out = measure(parser.parse_args().calls)
    for label, ms in out.items():
        print(f"{label:<34} {ms:7.3f} ms")
    write_results("hops", out)


if __name__ == "__main__":
    main()

"""File triggers: time from a file's close to its function starting, p50/p99, at 1 and at 100
files/s, on a warm endpoint (issue 20; target p50 under 100 ms).

A throwaway embedded stack (Redis, gunicorn, forwarder, trigger runner, a local endpoint whose
config allows one folder); a file trigger (inotify, settle 0) with one rule whose function
returns the time it started. The writer notes each file's close time; latency = start - close,
both read from this host's clock.

    python benchmarks/triggers.py [--slow 30] [--fast 500] [--port 18790]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import summarize, write_results  # noqa: E402

def started(path: str) -> dict:
    import time

    return {"path": path, "t": time.time()}


def write_files(folder: Path, prefix: str, n: int, rate: float) -> dict[str, float]:
    """Write ``n`` files at ``rate`` per second; returns path -> close time."""
    closed: dict[str, float] = {}
    t0 = time.monotonic()
    for i in range(n):
        due = t0 + i / rate
        while time.monotonic() < due:  # pacing the writer, not waiting for the system
            time.sleep(min(0.001, max(0.0, due - time.monotonic())))
        path = folder / f"{prefix}{i:05d}.dat"
        with open(path, "wb") as f:
            f.write(b"x" * 1024)
        closed[str(path)] = time.time()
    return closed


def measure(client: Any, trigger_id: str, closed: dict[str, float], seen: set[str], timeout: float = 300) -> list[float]:
    deadline = time.monotonic() + timeout
    while True:
        events = client.trigger_history(trigger_id, limit=1000)
        ids = [f["task_id"] for e in events for f in e["firings"] if e["data"]["path"] in closed]
        if len(ids) >= len(closed) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    tasks = []
    for i in range(0, len(ids), 500):
        tasks += client.wait(ids[i:i + 500], timeout=max(1.0, deadline - time.monotonic()))
    out = []
    for t in tasks:
        if t["state"] == "success" and t["result_json"]["path"] not in seen:
            seen.add(t["result_json"]["path"])
            out.append(t["result_json"]["t"] - closed[t["result_json"]["path"]])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=30, help="files at 1 per second")
    parser.add_argument("--fast", type=int, default=500, help="files at 100 per second")
    parser.add_argument("--port", type=int, default=18790)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="fnserve-bench-triggers-")
    os.environ["FNSERVE_HOME"] = home
    from fnserve.cli import stack
    from fnserve.client import Client

    folder = Path(home) / "detector"
    folder.mkdir()
    try:
        env = stack.start_service(stack.StackPorts(args.port, args.port + 1, args.port + 2), say=lambda _s: None)
        url = f"http://127.0.0.1:{args.port}"
        client = Client(url, stack.ensure_user(env, url, "bench").token)
        ep = stack.create_endpoint("bench", env["FNSERVE_FORWARDER_ADDRESS"], client)
        cfg_path = stack.endpoint_config_path("bench")
        cfg = yaml.safe_load(cfg_path.read_text())
        cfg["triggers"] = {"allowed_folders": [str(folder)]}
        cfg_path.write_text(yaml.safe_dump(cfg))
        stack.wait_connected(client, ep["endpoint_id"], stack.start_endpoint("bench"))
        fid = client.register_function(started)
        trig = client.create_trigger("bench", "file", {"endpoint_id": ep["endpoint_id"], "folder": str(folder),
                                                       "pattern": "*.dat", "settle": 0},
                                     rules=[client.rule(fid, ep["endpoint_id"], args=["$data.path"])])
        time.sleep(1.0)
        seen: set[str] = set()
        measure(client, trig["trigger_id"], write_files(folder, "warm", 20, 10.0), seen)  # warm the workers
        slow = measure(client, trig["trigger_id"], write_files(folder, "slow", args.slow, 1.0), seen)
        fast = measure(client, trig["trigger_id"], write_files(folder, "fast", args.fast, 100.0), seen)
    finally:
        stack.stop_all(say=lambda _s: None)
    from importlib.metadata import version

    result = {"settle_s": 0, "watch": "inotify", "trigger_libraries": {p: version(p) for p in ("watchdog", "croniter")},
              "close_to_start_1_per_s": summarize(slow), "close_to_start_100_per_s": summarize(fast),
              "files": {"1_per_s": args.slow, "100_per_s": args.fast},
              "measured": {"1_per_s": len(slow), "100_per_s": len(fast)}}
    print(json.dumps(result, indent=2))
    print("written to", write_results("triggers", result))


if __name__ == "__main__":
    main()

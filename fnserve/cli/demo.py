"""``fnserve demo``: register a few functions, run them on the local endpoint, show results."""

from __future__ import annotations

import time
from typing import Callable

from fnserve.errors import RemoteExecutionError


def estimate_pi(samples: int) -> float:
    """Monte Carlo estimate of pi."""
    import random

    inside = sum(1 for _ in range(samples) if random.random() ** 2 + random.random() ** 2 <= 1.0)
    return 4.0 * inside / samples


def greet(name: str) -> str:
    import platform

    print(f"hello from {platform.node()}")  # captured and returned with the result
    return f"Hello, {name}!"


def square(x: float) -> float:
    return x * x


def inverse(x: float) -> float:
    return 1 / x


def run_demo(endpoint_name: str, say: Callable[[str], None] = print) -> None:
    from fnserve.cli.stack import endpoint_config_path
    from fnserve.client import Client
    import yaml

    cfg_path = endpoint_config_path(endpoint_name)
    if not cfg_path.exists():
        raise SystemExit(f"no endpoint {endpoint_name!r} here: run `fnserve up` first")
    endpoint_id = yaml.safe_load(cfg_path.read_text())["endpoint_id"]
    fc = Client()
    say(f"endpoint {endpoint_name}: {endpoint_id}")

    ids = {f.__name__: fc.register_function(f, serializer="source") for f in (estimate_pi, greet, square, inverse)}
    for name, fid in ids.items():
        say(f"registered {name:<12} -> {fid}")

    task = fc.run(ids["greet"], endpoint_id, "scientist")
    say(f"\ngreet('scientist')         = {fc.get_result(task, timeout=60)!r}")
    say(f"  its stdout: {fc.get_task(task)['stdout'].strip()!r}")

    t0 = time.perf_counter()
    value = fc.call(ids["estimate_pi"], endpoint_id, 200_000)
    say(f"estimate_pi(200000)        = {value:.4f}   ({(time.perf_counter() - t0) * 1e3:.1f} ms)")

    batch = fc.create_batch()
    for x in range(10):
        batch.add(ids["square"], endpoint_id, args=(x,))
    task_ids = fc.batch_run(batch)
    results = fc.get_batch_result(task_ids, timeout=60)
    say(f"square(0..9) as one batch  = {[results[t]['result'] for t in task_ids]}")

    try:
        fc.call(ids["inverse"], endpoint_id, 0)
    except RemoteExecutionError as exc:
        say(f"inverse(0) raised remotely: {exc.remote_type}: {exc.remote_message}")
        say("  remote traceback (last lines):")
        for line in exc.remote_traceback.strip().splitlines()[-3:]:
            say(f"    {line}")

    lat = []
    for _ in range(50):
        t0 = time.perf_counter()
        fc.call(ids["square"], endpoint_id, 3)
        lat.append((time.perf_counter() - t0) * 1e3)
    lat.sort()
    say(f"\nwarm round trip, 50 calls: p50 {lat[25]:.2f} ms, max {lat[-1]:.2f} ms")
    say(
        "\nfrom plain HTTP:\n"
        f"  curl -s -H \"Authorization: Bearer $(python -c 'import fnserve.config as c; print(c.ClientConfig.load().token)')\" \\\n"
        f"       -H 'Content-Type: application/json' {fc.service_url}/v1/tasks \\\n"
        f"       -d '{{\"tasks\": [{{\"function_id\": \"{ids['square']}\", \"endpoint_id\": \"{endpoint_id}\", \"args\": [7]}}]}}'"
    )

"""Cold and warm latency per runtime, on a Slurm endpoint (default) or a local one.

    python benchmarks/runtime_latency.py [--warm 200]            # Slurm: see runtime_latency_slurm.py
    python benchmarks/runtime_latency.py --local [--warm 50] [--cold 3]

The Slurm run (``benchmarks/runtime_latency_slurm.py``) puts every runtime that runs here inside
its sbatch job and measures bare Parsl HTEX on the same SlurmProvider in the same run. What
follows describes the local run.

One embedded stack on this machine; the endpoint runs one warm pool per runtime (see
site_manager/runtime_pool.py). Every figure is one no-op task, SDK ``submit`` + ``get_result``
(two REST requests) through web service, Redis, forwarder, site manager and the runtime's workers:

* ``first``: the runtime's first task ever (its engine starts, then a block: cold);
* ``cold``: first task after its idle workers were reaped (``max_idletime``: 1 s): a block starts
  inside the runtime (container start, Python start, imports) while the task waits;
* ``warm``: p50 over ``--warm`` calls with workers running;
* ``spare_first``: first task of a runtime that keeps a hot spare (``min_warm_workers: 1``).

Needs podman and the worker image (scripts/build_worker_image.sh) and ch-run (charliecloud-runtime).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, os.path.dirname(__file__))
from common import summarize, write_results

REPO = Path(__file__).resolve().parents[1]
IMAGE_DIR = os.environ.get("FNSERVE_WORKER_IMAGE_DIR", "/var/cache/fnserve/worker-image")


def noop() -> None:
    return None


def _runtimes(venv_python: str, image: str) -> dict[str, dict[str, Any]]:
    kinds: dict[str, dict[str, Any]] = {
        # The endpoint's own Python as a runtime (type venv: "host" names the endpoint's own engine,
        # which has no pool of its own to reap or keep warm).
        "host": {"type": "venv", "python": sys.executable},
        "venv": {"type": "venv", "python": venv_python},
        "podman": {"type": "podman", "image": image},
    }
    if shutil.which("ch-run"):
        kinds["charliecloud"] = {"type": "charliecloud", "image": f"{IMAGE_DIR}/rootfs"}
    out = {}
    for kind, spec in kinds.items():
        out[f"{kind}-rt"] = {**spec, "max_idletime": 1}
        out[f"{kind}-spare"] = {**spec, "min_warm_workers": 1}
    return out


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)  # benchmark set-up only, never inside a timed section


def _one(fc: Any, fid: str, eid: str, runtime: str) -> float:
    t0 = time.perf_counter()
    fc.get_result(fc.submit(fid, eid, runtime=runtime), timeout=120)
    return time.perf_counter() - t0


def start_bench_endpoint(port: int, runtimes: dict[str, dict[str, Any]], connect_timeout: float) -> tuple[Any, str]:
    """An embedded service on ``port`` (and the next two) and a local endpoint "bench" of one
    block of one worker with ``runtimes`` configured and registered; ``(client, endpoint id)``.
    Stop it with ``stack.stop_all``. FNSERVE_HOME must be set first."""
    from fnserve.cli import stack
    from fnserve.client import Client

    ports = stack.StackPorts(web=port, forwarder=port + 1, redis=port + 2)
    env = stack.start_service(ports, say=lambda _s: None)
    url = f"http://127.0.0.1:{port}"
    fc = Client(url, stack.ensure_user(env, url, "bench").token)
    ep = stack.create_endpoint("bench", env["FNSERVE_FORWARDER_ADDRESS"], fc,
                               engine={"max_workers_per_node": 1, "init_blocks": 1, "min_blocks": 1, "max_blocks": 1})
    path = stack.endpoint_config_path("bench")
    data = yaml.safe_load(path.read_text())
    data["runtimes"] = runtimes
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    eid = ep["endpoint_id"]
    stack.wait_connected(fc, eid, stack.start_endpoint("bench"), timeout=connect_timeout)
    for name, spec in runtimes.items():
        fc.register_runtime(name, spec["type"], image=spec.get("image") or spec.get("python", ""))
    return fc, eid


def runtime_figure(fc: Any, eid: str, name: str, key: str = "workers") -> int:
    """One figure (``workers``, ``ready``, ``blocks``) of runtime ``name`` in the endpoint's status; -1: none yet."""
    site = fc.get_endpoint_status(eid).get("site") or {}
    return int((site.get("runtimes") or {}).get(name, {}).get(key, -1))


def main() -> None:
    if "--local" not in sys.argv:
        import runtime_latency_slurm

        runtime_latency_slurm.main()
        return
    sys.argv.remove("--local")
    ap = argparse.ArgumentParser()
    ap.add_argument("--warm", type=int, default=50)
    ap.add_argument("--cold", type=int, default=3)
    ap.add_argument("--port", type=int, default=18880)
    args = ap.parse_args()

    image = subprocess.run([str(REPO / "scripts/build_worker_image.sh"), IMAGE_DIR], check=True,
                           capture_output=True, text=True).stdout.strip().splitlines()[-1]
    tmp = Path(tempfile.mkdtemp(prefix="fnserve-rt-bench-"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(tmp / "venv")], check=True)
    os.environ["FNSERVE_HOME"] = str(tmp / "home")
    from fnserve.cli import stack

    runtimes = _runtimes(str(tmp / "venv/bin/python"), image)
    results: dict[str, Any] = {"image": image}
    try:
        fc, eid = start_bench_endpoint(args.port, runtimes, connect_timeout=90)
        fid = fc.register_function(noop, serializer="source")

        def workers(name: str, key: str = "workers") -> int:
            return runtime_figure(fc, eid, name, key)

        def reaped(name: str) -> bool:
            # No block at all, pending ones included (a report taken while a new block was still
            # starting would also say 0 workers).
            return workers(name, "blocks") == 0 and workers(name) == 0

        _wait(lambda: all(workers(n, "ready") >= 1 for n in runtimes if n.endswith("-spare")), 120, "hot spares")
        for name in runtimes:
            kind = name.rsplit("-", 1)[0]
            row = results.setdefault(kind, {})
            if name.endswith("-spare"):
                row["spare_first_ms"] = _one(fc, fid, eid, name) * 1e3
                continue
            row["first_ms"] = _one(fc, fid, eid, name) * 1e3
            row["warm"] = summarize([_one(fc, fid, eid, name) for _ in range(args.warm)])
            colds = []
            for _ in range(args.cold):
                time.sleep(2.5)  # past the next status report, so it reflects the last call's block
                _wait(lambda n=name: reaped(n), 60, f"{name} to be reaped")
                colds.append(_one(fc, fid, eid, name))
            row["cold_ms"] = statistics.median(colds) * 1e3
            row["cold_samples_ms"] = [round(c * 1e3, 1) for c in colds]
            print(f"{kind:>13}: first {row['first_ms']:7.0f} ms  cold {row['cold_ms']:7.0f} ms  warm p50 {row['warm']['p50_ms']:6.2f} ms", flush=True)
        for kind, row in results.items():
            if isinstance(row, dict) and "spare_first_ms" in row:
                print(f"{kind:>13}: hot spare first call {row['spare_first_ms']:.2f} ms", flush=True)
        host_warm = results["host"]["warm"]["p50_ms"]
        for kind in ("venv", "podman", "charliecloud"):
            if kind in results:
                results[kind]["warm_vs_host"] = results[kind]["warm"]["p50_ms"] / host_warm
        print(f"written to {write_results('runtime_latency', results)}")
    finally:
        stack.stop_all(say=lambda _s: None)


if __name__ == "__main__":
    main()

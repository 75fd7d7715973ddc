"""Runtimes inside Slurm blocks: cold first call and warm latency per runtime, against bare
Parsl HTEX on the same SlurmProvider, in one run.

    scripts/start_slurm.sh && scripts/build_worker_image.sh && python benchmarks/runtime_latency.py [--warm 200]

One stack (`fnserve up` parts), one Slurm endpoint (the ``slurm`` template, 1 worker per node,
``exclusive: false``) whose runtimes each start their own sbatch job (a block) and their worker
pool inside it:

* ``host``: no container (the endpoint's own engine, Parsl's plain worker pool in the job);
* ``venv``: a virtualenv's interpreter;
* ``podman``, ``docker``, ``charliecloud``: the worker image (scripts/build_worker_image.sh);
* ``apptainer (STAND-IN)``: tests/integration/apptainer_standin.py in place of the ``apptainer``
  binary (none can be installed here): it parses spython's command line and runs the pool on the
  host, so its figure is a host process behind one more exec, NOT Apptainer's own cost;
* ``podman hot spare``: a podman runtime with ``min_warm_workers: 1`` (its block starts with the
  endpoint); its first call is the "hot spare first call".

Every fnserve figure is one no-op task, SDK ``submit`` + ``get_result`` (two REST requests)
through web service, Redis, forwarder, site manager and the runtime's worker inside the job.
``cold``: the runtime's first task with no block (sbatch, the job starting, the container and the
pool starting, the task). ``warm``: ``--warm`` sequential calls once the block is up (p50/p95/p99).
Peer: bare ``HighThroughputExecutor`` on the same SlurmProvider settings, no DataFlowKernel
(benchmarks/slurm_latency.py's): cold = ``submit`` + ``scale_out_facade(1)`` to the result,
warm = ``submit(noop).result()``.

The test node has 2 CPUs, so at most 2 jobs run at once: runtimes are measured one after the
other (each gives its CPU back 1 s after going idle); the hot spare last, after a restart of the
endpoint with it configured (its block holds a CPU from the start).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, os.path.dirname(__file__))
from common import summarize, write_results
from slurm_latency import PROVIDER, jobs_under, wait_until

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
IMAGE_DIR = os.environ.get("FNSERVE_WORKER_IMAGE_DIR", "/var/cache/fnserve/worker-image")
ENGINE = {"max_workers_per_node": 1, "heartbeat_period": 2, "heartbeat_threshold": 120}


def noop() -> None:
    return None


def summarize95(samples_s: list[float]) -> dict[str, float]:
    out = summarize(samples_s)
    ms = sorted(x * 1e3 for x in samples_s)
    out["p95_ms"] = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return out


def queue_wait_s(job_id: str) -> float | None:
    """Seconds batch job ``job_id`` waited in the queue (Slurm's StartTime - SubmitTime, 1 s
    resolution): the part of a cold start that other jobs on the node decide, not fnserve."""
    out = subprocess.run(["scontrol", "-o", "show", "job", str(job_id)], capture_output=True, text=True, check=False).stdout
    fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
    try:
        start, submit = (datetime.datetime.fromisoformat(fields[k]) for k in ("StartTime", "SubmitTime"))
    except (KeyError, ValueError):
        return None
    return (start - submit).total_seconds()


def _version(*argv: str) -> str:
    exe = shutil.which(argv[0])
    if exe is None:
        return "not installed"
    # ch-run refuses to start without $USER, even for --version.
    out = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, check=False,
                         env={**os.environ, "USER": os.environ.get("USER", "root")})
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else "?"


def runtime_versions() -> dict[str, str]:
    """The batch system's and container runtimes' versions (write_results adds commit, date, host
    and the Python packages' under ``meta``)."""
    return {"slurm": _version("sinfo", "--version"), "podman": _version("podman", "--version"),
            "docker": _version("docker", "--version"), "charliecloud": _version("ch-run", "--version"),
            "apptainer": "STAND-IN (tests/integration/apptainer_standin.py)"}


def bare_htex(calls: int) -> dict[str, Any]:
    from parsl.executors import HighThroughputExecutor
    from parsl.launchers import SingleNodeLauncher
    from parsl.providers import SlurmProvider

    # noop is pickled by reference: the batch job (sbatch exports this environment) imports it from here.
    os.environ["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.abspath(__file__)), os.environ.get("PYTHONPATH", "")])
    run_dir = tempfile.mkdtemp(prefix="htex-rt-bench-")
    provider = SlurmProvider(init_blocks=0, min_blocks=0, max_blocks=1, launcher=SingleNodeLauncher(), **PROVIDER)
    provider.script_dir = run_dir
    ex = HighThroughputExecutor(label="bench", provider=provider, max_workers_per_node=1, heartbeat_period=2,
                                heartbeat_threshold=120, encrypted=True)
    ex.run_dir = run_dir
    ex.start()
    try:
        t0 = time.perf_counter()
        fut = ex.submit(noop, {})
        ex.scale_out_facade(1)
        fut.result(timeout=1200)
        cold = time.perf_counter() - t0
        (job,) = [j for j in ex.blocks_to_job_id.values() if j is not None][:1]
        queued = queue_wait_s(job)
        for _ in range(20):
            ex.submit(noop, {}).result()
        warm = []
        for _ in range(calls):
            t = time.perf_counter()
            ex.submit(noop, {}).result()
            warm.append(time.perf_counter() - t)
        return {"cold_s": cold, "cold_queue_wait_s": queued, "warm": summarize95(warm)}
    finally:
        for job in jobs_under(run_dir):
            subprocess.run(["scancel", job], check=False)
        ex.shutdown()
        wait_until(lambda: not jobs_under(run_dir), 60, "bare HTEX job gone")


def _one(fc: Any, fid: str, eid: str, runtime: str | None) -> float:
    t0 = time.perf_counter()
    fc.get_result(fc.submit(fid, eid, runtime=runtime), timeout=1200)
    return time.perf_counter() - t0


def fnserve_runtimes(calls: int, port: int, tmp: Path, results: dict[str, Any] | None = None,
                     save: Any = lambda: None) -> dict[str, Any]:
    from apptainer_support import install, make_sif

    image = subprocess.run([str(REPO / "scripts/build_worker_image.sh"), IMAGE_DIR], check=True, capture_output=True,
                           text=True).stdout.strip().splitlines()[-1]
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(tmp / "venv")], check=True)
    standin = install(tmp)  # STAND-IN for Apptainer
    sif = make_sif(tmp / "worker.sif")
    os.environ.update(standin.env(os.environ["PATH"]))
    os.environ["FNSERVE_HOME"] = str(tmp / "home")
    from fnserve.cli import endpoint_cmds, stack
    from fnserve.cli.endpoint_templates import render
    from fnserve.client import Client

    quick = {"max_idletime": 2, "max_blocks": 1}
    runtimes = {
        "venv": {"type": "venv", "python": str(tmp / "venv/bin/python"), **quick},
        "podman": {"type": "podman", "image": image, **quick},
        "docker": {"type": "docker", "image": image, **quick},
        "charliecloud": {"type": "charliecloud", "image": f"{IMAGE_DIR}/rootfs", **quick},
        "apptainer-standin": {"type": "apptainer", "image": str(sif), "python": sys.executable,
                              "env": {"PYTHONPATH": str(REPO)}, **quick},
    }
    spare = {"podman-spare": {"type": "podman", "image": image, "min_warm_workers": 1, "max_blocks": 1}}
    results = {} if results is None else results
    results["image"] = image
    try:
        env = stack.start_service(stack.StackPorts(web=port, forwarder=port + 1, redis=port + 2), say=lambda _s: None)
        url = f"http://127.0.0.1:{port}"
        fc = Client(url, stack.ensure_user(env, url, "bench").token)
        path = stack.endpoint_config_path("slurm")
        path.parent.mkdir(parents=True)
        config = yaml.safe_load(render("slurm", str(stack.endpoint_dir("slurm") / "run")))
        config["provider"].update(PROVIDER)
        config["launcher"] = {"type": "single_node"}
        config["engine"].update(ENGINE)
        config["scaling"].update({"init_blocks": 0, "min_blocks": 0, "max_blocks": 1, "max_idletime": 1})
        config["worker_init"] = ""
        config["runtimes"] = runtimes
        path.write_text(yaml.safe_dump(config))
        endpoint_cmds.start("slurm", say=lambda _s: None)
        eid = endpoint_cmds.identity("slurm")["endpoint_id"]
        run_dir = stack.endpoint_dir("slurm") / "run"
        for name, spec in {**runtimes, **spare}.items():
            fc.register_runtime(name, spec["type"], image=spec.get("image") or spec.get("python", ""))
        fid = fc.register_function(noop, serializer="source")

        def runtime_figures(name: str) -> dict[str, int]:
            return ((fc.get_endpoint_status(eid).get("site") or {}).get("runtimes") or {}).get(name, {})

        for name in ["host", *runtimes]:
            where = run_dir / ("engine" if name == "host" else f"runtimes/{name}")
            wait_until(lambda w=where: not jobs_under(str(w)), 120, f"{name}: no block before its cold call")
            wait_until(lambda: not jobs_under(str(run_dir)), 120, "the CPU of the previous runtime back")
            runtime = None if name == "host" else name
            cold = _one(fc, fid, eid, runtime)
            queued = [queue_wait_s(j) for j in jobs_under(str(where))][:1]
            for _ in range(20):
                _one(fc, fid, eid, runtime)
            results[name] = {"cold_s": cold, "cold_queue_wait_s": queued[0] if queued else None,
                             "warm": summarize95([_one(fc, fid, eid, runtime) for _ in range(calls)])}
            save()  # a partial result file after each runtime: a long queue wait never loses them all
            print(f"{name:>18}: cold {cold:5.2f} s  warm p50 {results[name]['warm']['p50_ms']:6.2f} ms "
                  f"p95 {results[name]['warm']['p95_ms']:6.2f} p99 {results[name]['warm']['p99_ms']:6.2f}", flush=True)
        # The hot spare last, in a restart with it configured: its block holds a CPU from the start,
        # which the runtimes above need (2 CPUs, other jobs may hold one).
        endpoint_cmds.stop("slurm", say=lambda _s: None)
        wait_until(lambda: not jobs_under(str(run_dir)), 120, "the endpoint's blocks gone")
        config["runtimes"] = {**runtimes, **spare}
        path.write_text(yaml.safe_dump(config))
        endpoint_cmds.start("slurm", say=lambda _s: None)
        # "ready": its worker has started ("workers" counts it from the pool's registration, before).
        wait_until(lambda: runtime_figures("podman-spare").get("ready", 0) >= 1, 300, "the hot spare's worker")
        results["podman hot spare"] = {"first_ms": _one(fc, fid, eid, "podman-spare") * 1e3}
        results["podman hot spare"]["warm"] = summarize95([_one(fc, fid, eid, "podman-spare") for _ in range(calls)])
        print(f"podman hot spare: first call {results['podman hot spare']['first_ms']:.1f} ms", flush=True)
    finally:
        try:
            endpoint_cmds.stop("slurm", say=lambda _s: None)
        finally:
            stack.stop_all(say=lambda _s: None)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--warm", type=int, default=200)
    ap.add_argument("--port", type=int, default=18890)
    args = ap.parse_args()
    t0 = time.time()
    results: dict[str, Any] = {"runtime_versions": runtime_versions(), "calls": args.warm, "slurm_provider": PROVIDER, "launcher": "single_node",
                               "workers_per_node": 1}
    results["bare_htex"] = htex = bare_htex(args.warm)
    print(f"{'bare HTEX':>18}: cold {htex['cold_s']:5.2f} s  warm p50 {htex['warm']['p50_ms']:6.2f} ms", flush=True)
    results["fnserve"] = fns = {}
    results["complete"] = False
    fnserve_runtimes(args.warm, args.port, Path(tempfile.mkdtemp(prefix="fnserve-rt-slurm-bench-")), fns,
                     lambda: write_results("runtime_latency_slurm", results))
    results["complete"] = True
    host = fns["host"]["warm"]["p50_ms"]
    ratios = {}
    for name, row in fns.items():
        if isinstance(row, dict) and "warm" in row:
            ratios[name] = {"warm_p50_vs_host": row["warm"]["p50_ms"] / host,
                            "warm_p50_vs_bare_htex": row["warm"]["p50_ms"] / htex["warm"]["p50_ms"],
                            "warm_p99_vs_host": row["warm"]["p99_ms"] / fns["host"]["warm"]["p99_ms"]}
            if "cold_s" in row:
                ratios[name]["cold_minus_bare_htex_cold_s"] = row["cold_s"] - htex["cold_s"]
                if row.get("cold_queue_wait_s") is not None and htex.get("cold_queue_wait_s") is not None:
                    # Without the time each job waited behind other jobs in the queue.
                    ratios[name]["cold_minus_bare_htex_cold_s_without_queue_wait"] = (
                        (row["cold_s"] - row["cold_queue_wait_s"]) - (htex["cold_s"] - htex["cold_queue_wait_s"]))
    spare = fns["podman hot spare"]
    ratios["podman hot spare"]["first_call_vs_warm_p50"] = spare["first_ms"] / spare["warm"]["p50_ms"]
    results["ratios"] = ratios
    results["seconds"] = time.time() - t0
    for name, r in ratios.items():
        print(f"{name:>18}: warm p50 {r['warm_p50_vs_host']:.2f}x host, {r['warm_p50_vs_bare_htex']:.1f}x bare HTEX")
    print(f"written to {write_results('runtime_latency_slurm', results)}")


if __name__ == "__main__":
    main()

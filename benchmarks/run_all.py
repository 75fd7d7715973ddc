"""Run every benchmark (each against its peers in the same run), then plot them.

    python benchmarks/run_all.py [--tasks 100000] [--calls 1000] [--only NAME ...] [--plots-only]

Results: ``benchmarks/results/*.json``; plots: ``docs/img/bench_*.png``. On a 2-core machine the
whole suite takes about 15 minutes; ``--tasks 20000`` (throughput) makes it much shorter.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
IMG = HERE.parent / "docs" / "img"


def run(script: str, *args: str) -> None:
    print(f"\n== {script} {' '.join(args)}", flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(HERE.parent), os.environ.get("PYTHONPATH", "")) if p)}
    t0 = time.time()
    subprocess.run([sys.executable, str(HERE / script), *args], check=True, env=env, cwd=HERE.parent)
    print(f"   ({time.time() - t0:.0f} s)", flush=True)


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMG.mkdir(parents=True, exist_ok=True)
    colors = {"fnserve": "#1f77b4", "bare HTEX": "#ff7f0e", "Dask": "#2ca02c"}

    if (r := _load("warm_latency")) and "dask" in r:
        labels = ["bare HTEX", "Dask", "fnserve\nExecutor", "fnserve\nClient.call", "fnserve\nrun+get_result"]
        rows = [r["bare_htex"], r["dask"], r["fnserve"]["executor"], r["fnserve"]["call"], r["fnserve"]["run_get_result"]]
        fig, ax = plt.subplots(figsize=(7, 3.6))
        x = range(len(rows))
        ax.bar([i - 0.2 for i in x], [s["p50_ms"] for s in rows], 0.4, label="p50")
        ax.bar([i + 0.2 for i in x], [s["p99_ms"] for s in rows], 0.4, label="p99")
        ax.set_xticks(list(x), labels)
        ax.set_ylabel("ms per no-op call")
        ax.set_title(f"Warm latency, sequential no-op calls (n={r['calls']}, 1 worker)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(IMG / "bench_warm_latency.png", dpi=120)

    if (r := _load("throughput")) and "fnserve" in r:
        names = [("fnserve", "fnserve"), ("bare_htex", "bare HTEX"), ("dask", "Dask")]
        fig, ax = plt.subplots(figsize=(6, 3.4))
        vals = [r[k]["tasks_per_s"] for k, _ in names if k in r]
        ax.bar([n for k, n in names if k in r], vals, color=[colors[n] for k, n in names if k in r])
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.0f}", ha="center", va="bottom")
        ax.set_ylabel("tasks / s")
        ax.set_title(f"Throughput: {r['tasks']:,} no-op tasks, {r['workers']} workers")
        fig.tight_layout()
        fig.savefig(IMG / "bench_throughput.png", dpi=120)

    if r := _load("efficiency"):
        durations = list(r["fnserve"])
        fig, ax = plt.subplots(figsize=(6.5, 3.4))
        for j, (k, n) in enumerate([("fnserve", "fnserve"), ("bare_htex", "bare HTEX"), ("dask", "Dask")]):
            ax.bar([i + (j - 1) * 0.27 for i in range(len(durations))], [r[k][d]["efficiency"] for d in durations], 0.27,
                   label=n, color=colors[n])
        ax.set_xticks(range(len(durations)), [f"{d} tasks" for d in durations])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("efficiency (ideal / measured)")
        ax.set_title(f"Efficiency of short tasks, {r['workers']} workers")
        ax.legend()
        fig.tight_layout()
        fig.savefig(IMG / "bench_efficiency.png", dpi=120)

    if r := _load("forwarder_scale"):
        sc = r["scenarios"]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.2))
        a1.bar([str(s["endpoints"]) for s in sc], [s["tasks_per_s"] for s in sc], color=colors["fnserve"])
        a1.axhline(5000, ls="--", color="grey", label="target 5,000/s")
        a1.set_xlabel("endpoints connected")
        a1.set_ylabel("tasks routed / s")
        a1.legend()
        a2.bar([str(s["endpoints"]) for s in sc], [s["dispatch_delay"]["p99_ms"] for s in sc], color="#9467bd")
        a2.set_xlabel("endpoints connected")
        a2.set_ylabel("p99 dispatch delay (ms)")
        fig.suptitle(f"Forwarder scale: a burst of {r['tasks']:,} tasks")
        fig.tight_layout()
        fig.savefig(IMG / "bench_forwarder_scale.png", dpi=120)

    if r := _load("memory"):
        g = r["growth_per_100k_tasks_mb"]
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        labels = ["Redis used_memory", "web RSS", "forwarder RSS"]
        vals = [g["redis_used_memory_mb"], g["web_rss_mb"], g["forwarder_rss_mb"]]
        ax.bar(labels, vals, color=["#d62728", "#1f77b4", "#7f7f7f"])
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.1f}", ha="center", va="bottom")
        ax.set_ylabel("MiB per 100,000 queued tasks")
        ax.set_title("Service memory per 100,000 queued tasks")
        fig.tight_layout()
        fig.savefig(IMG / "bench_memory.png", dpi=120)
    print(f"plots in {IMG}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks in the throughput benchmark")
    parser.add_argument("--calls", type=int, default=1000, help="calls per system in the latency benchmark")
    parser.add_argument("--only", nargs="+", choices=["warm_latency", "throughput", "efficiency", "forwarder_scale", "memory"])
    parser.add_argument("--plots-only", action="store_true")
    args = parser.parse_args()
    if not args.plots_only:
        t0 = time.time()
        todo = args.only or ["warm_latency", "throughput", "efficiency", "forwarder_scale", "memory"]
        plan = {"warm_latency": ["--calls", str(args.calls)], "throughput": ["--tasks", str(args.tasks)],
                "efficiency": [], "forwarder_scale": [], "memory": []}
        for name in todo:
            run(f"{name}.py", *plan[name])
        print(f"\nall benchmarks: {time.time() - t0:.0f} s")
    plot()
    run("report.py")


if __name__ == "__main__":
    main()

"""Benchmarks of several commits side by side in one run: did a change make fnserve slower?

    python benchmarks/compare_commits.py OLD [NEW ...] [--repeat 2] [--calls 200] [--tasks 4000]

Each commit (NEW defaults to HEAD; uncommitted changes are not measured) is checked out in its
own throwaway git worktree, and that commit's own benchmarks/warm_latency.py and
benchmarks/throughput.py (``--only fnserve --only bare_htex``) run there with its fnserve first on
PYTHONPATH (the stack's processes inherit it). The commits take turns, in reverse order on every
other repeat (ABBA), so a drift in the machine's load hits them alike; the load average is
recorded beside every run (a shared machine's numbers are only comparable within one run).

Reported per commit: the median over repeats of fnserve's warm latency (Executor, Client.call,
run + get_result; p50 and p99) and throughput (tasks/s), and each figure's ratio to the first
commit's. The bare HTEX peer is the control: the same code in every commit, so its ratio shows
the run's noise. Results: benchmarks/results/compare_commits.json and a Markdown table on stdout
(docs/performance.md keeps one).
"""

from __future__ import annotations

import argparse
import ast
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

sys.path.insert(0, os.path.dirname(__file__))
from common import write_results

REPO = Path(__file__).resolve().parents[1]

# (benchmark, figure, how to read it from the benchmark's results, higher is better)
FIGURES = [
    ("warm_latency", "Executor p50 ms", lambda r: r["fnserve"]["executor"]["p50_ms"], False),
    ("warm_latency", "Executor p99 ms", lambda r: r["fnserve"]["executor"]["p99_ms"], False),
    ("warm_latency", "Client.call p50 ms", lambda r: r["fnserve"]["call"]["p50_ms"], False),
    ("warm_latency", "run + get_result p50 ms", lambda r: r["fnserve"]["run_get_result"]["p50_ms"], False),
    ("warm_latency", "control: bare HTEX p50 ms", lambda r: r["bare_htex"]["p50_ms"], False),
    ("throughput", "Executor tasks/s", lambda r: r["fnserve"]["tasks_per_s"], True),
    ("throughput", "control: bare HTEX tasks/s", lambda r: r["bare_htex"]["tasks_per_s"], True),
]


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout.strip()


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_benchmark(tree: Path, name: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """One run of benchmark ``name`` as commit ``tree`` has it; its results."""
    if name == "warm_latency":
        argv = ["--calls", str(args.calls), "--rounds", str(args.rounds)]
    else:
        argv = ["--tasks", str(args.tasks), "--rounds", str(args.rounds), "--only", "fnserve", "--only", "bare_htex"]
    # Its own TMPDIR: an older commit's benchmark leaves its stack's home behind.
    env = {**os.environ, "PYTHONPATH": str(tree), "TMPDIR": str(tmp)}
    env.pop("FNSERVE_HOME", None)
    out = subprocess.run([sys.executable, str(tree / "benchmarks" / f"{name}.py"), *argv], cwd=tree, env=env,
                         capture_output=True, text=True, timeout=args.timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{name} at {tree.name} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    if name == "warm_latency":
        return dict(json.loads((tree / "benchmarks" / "results" / "warm_latency.json").read_text()))
    return dict(ast.literal_eval(out.stdout.strip().splitlines()[-1]))  # --only: printed, not written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("commits", nargs="+", help="the baseline first, then the commits compared with it (default: HEAD)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each benchmark per commit")
    ap.add_argument("--calls", type=int, default=200, help="warm_latency --calls")
    ap.add_argument("--tasks", type=int, default=4000, help="throughput --tasks")
    ap.add_argument("--rounds", type=int, default=4, help="--rounds of both benchmarks")
    ap.add_argument("--benchmarks", nargs="+", default=["warm_latency", "throughput"], choices=["warm_latency", "throughput"])
    ap.add_argument("--timeout", type=float, default=1800, help="seconds one benchmark run may take")
    args = ap.parse_args()
    if len(args.commits) == 1:
        args.commits.append("HEAD")
    shas = [git("rev-parse", "--short", f"{c}^{{commit}}") for c in args.commits]
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]

    work = Path(tempfile.mkdtemp(prefix="fcmp-"))  # short: the stacks' unix sockets live below it
    trees = {sha: work / sha for sha in shas}
    runs: list[dict[str, Any]] = []
    t0 = time.time()
    try:
        for sha, tree in trees.items():
            git("worktree", "add", "--detach", str(tree), sha)
        for r in range(args.repeat):
            order = shas if r % 2 == 0 else shas[::-1]
            for name in args.benchmarks:
                for sha in order:
                    tmp = work / f"tmp-{sha}"
                    tmp.mkdir(exist_ok=True)
                    before = load()
                    started = time.time()
                    results = run_benchmark(trees[sha], name, args, tmp)
                    row = {"commit": sha, "benchmark": name, "repeat": r, "load_before": before, "load_after": load(),
                           "seconds": round(time.time() - started, 1),
                           "figures": {f: round(get(results), 2) for b, f, get, _ in FIGURES if b == name}}
                    runs.append(row)
                    print(f"{name} {sha} (repeat {r}, load {before[0]:.1f}): "
                          + ", ".join(f"{k} {v:g}" for k, v in row["figures"].items()))
    finally:
        for tree in trees.values():
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)

    base = shas[0]
    summary: dict[str, dict[str, Any]] = {}
    for bench, figure, _, higher_better in FIGURES:
        if bench not in args.benchmarks:
            continue
        medians = {sha: statistics.median(x["figures"][figure] for x in runs if x["commit"] == sha and x["benchmark"] == bench)
                   for sha in shas}
        summary[figure] = {"higher_is_better": higher_better, "median": medians,
                           "ratio_to_baseline": {sha: round(medians[sha] / medians[base], 3) for sha in shas}}
    loads = [x["load_before"][0] for x in runs]
    print(f"\n| figure (median of {args.repeat}) | " + " | ".join(shas) + " | " + " | ".join(f"{s}/{base}" for s in shas[1:]) + " |")
    print("|---|" + "---:|" * (2 * len(shas) - 1))
    for figure, s in summary.items():
        print(f"| {figure} | " + " | ".join(f"{s['median'][sha]:g}" for sha in shas) + " | "
              + " | ".join(f"{s['ratio_to_baseline'][sha]:.2f}" for sha in shas[1:]) + " |")
    print(f"\nload average (1 min) before the runs: {min(loads):.1f}-{max(loads):.1f}; {time.time() - t0:.0f} s in all")
    results = {"commits": dict(zip(args.commits, shas)), "baseline": base, "repeat": args.repeat, "calls": args.calls,
               "tasks": args.tasks, "rounds": args.rounds, "summary": summary, "runs": runs}
    print(f"(results in {write_results('compare_commits', results)})")


if __name__ == "__main__":
    main()

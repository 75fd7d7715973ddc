"""Write the latest benchmark figures into ``docs/performance.md``.

    python benchmarks/report.py

Reads ``benchmarks/results/*.json`` (written by each benchmark) and replaces the part of
``docs/performance.md`` between the ``figures:begin`` and ``figures:end`` markers with tables of
those figures, each target judged against the peer measured in the same run. The prose around
the markers (what the figures mean, why a target is missed) is written by hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOC = HERE.parent / "docs" / "performance.md"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _ms(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


_PEER_NAMES = {"process_pool": "`ProcessPoolExecutor` (local floor)", "bare_htex": "bare Parsl HTEX (peer)",
               "parsl_dfk": "Parsl `@python_app` on the DataFlowKernel (peer)", "dask": "Dask LocalCluster (peer)"}


def warm_latency(r: dict[str, Any]) -> str:
    base = r["bare_htex"]["p50_ms"]
    rows = [[_PEER_NAMES[k], r[k]] for k in _PEER_NAMES if k in r]
    rows += [["fnserve `Executor.submit().result()`", r["fnserve"]["executor"]],
             ["fnserve `Client.call` (one request)", r["fnserve"]["call"]],
             ["fnserve `Client.run` + `get_result`", r["fnserve"]["run_get_result"]]]
    table = _table(["system", "p50 ms", "p90 ms", "p99 ms", "p50 / HTEX"],
                   [[n, _ms(s["p50_ms"]), _ms(s["p90_ms"]), _ms(s["p99_ms"]), f"{s['p50_ms'] / base:.2f}x"] for n, s in rows])
    call, ex = r["fnserve"]["call"]["p50_ms"], r["fnserve"]["executor"]["p50_ms"]
    how = (f"interleaved in {r['rounds']} rounds" if r.get("interleaved") else "one system after another")
    targets = f"Targets: `Client.call` p50 at most 2.0x bare HTEX: {call / base:.2f}x, {_met(call / base <= 2.0)}"
    if "parsl_dfk" in r:
        dfk = r["parsl_dfk"]["p50_ms"]
        targets += f"; at most DFK + 1 ms: {call - dfk:+.2f} ms, {_met(call - dfk <= 1.0)}"
    targets += f"; `Executor` within 10 % of `Client.call`: {ex / call:.2f}x, {_met(ex / call <= 1.1)}."
    cpu = r.get("cpu")
    if cpu:
        idle = ", ".join(f"{k.replace('_', ' ')} {v:.1f} %" for k, v in cpu["idle_cpu_pct"].items())
        wake = ", ".join(f"{k.replace('_', ' ')} {m['scheduled_per_call']:.0f}" for k, m in cpu["measured"].items() if "scheduled_per_call" in m)
        targets += (f"\n\nCPU each system used while the others were measured (percent of one core): {idle}. "
                    f"Times the measured system's processes were scheduled in per call: {wake}.")
    return (f"{r['calls']:,} sequential no-op calls per system ({how}), {r['workers_per_node']} worker.\n\n{table}\n\n"
            f"{targets}\n\n![warm latency](img/bench_warm_latency.png)")


def hops(r: dict[str, Any]) -> str:
    hop_ms = r.get("hops", r)  # older files: the hops at the top level
    total = hop_ms["total (client)"]
    rows = [[hop, _ms(ms), f"{100 * ms / total:.0f}%"] for hop, ms in hop_ms.items() if hop != "total (client)"]
    rows.append(["**total seen by the client**", _ms(total), "100%"])
    how = "CurveZMQ on the interchange" if r.get("encrypted", True) else "interchange in plaintext"
    text = (f"Median of each hop over {r.get('calls', 'the')} warm no-op `Client.call`s ({how}; timestamps recorded on every task).\n\n"
            + _table(["hop", "ms", "share"], rows))
    procs = r.get("processes")
    if procs:
        prow = [[name, f"{p['cpu_us']:,.0f}", f"{p['runq_wait_us']:,.0f}", f"{p['scheduled']:.1f}", f"{p['idle_cpu_pct']:.1f}"]
                for name, p in sorted(procs.items(), key=lambda kv: -kv[1]["cpu_us"]) if p["cpu_us"] >= 1 or p["idle_cpu_pct"] >= 0.1]
        cpu = sum(p["cpu_us"] for p in procs.values())
        prow.append(["**all processes**", f"**{cpu:,.0f}**", f"{sum(p['runq_wait_us'] for p in procs.values()):,.0f}",
                     f"{sum(p['scheduled'] for p in procs.values()):.1f}", ""])
        text += ("\n\nThe same calls, per process (kernel `schedstat`, each process's idle rate subtracted): CPU per call, time "
                 "runnable but waiting for a core, times scheduled in, and CPU when idle.\n\n"
                 + _table(["process", "CPU us / call", "run-queue wait us / call", "scheduled / call", "idle CPU %"], prow))
    return text


def throughput(r: dict[str, Any]) -> str:
    f, h = r["fnserve"], r["bare_htex"]
    rows = [["fnserve `Executor`", f]] + [[_PEER_NAMES[k], r[k]] for k in _PEER_NAMES if k in r]
    table = _table(["system", "tasks/s", "seconds", "fnserve / system"],
                   [[n, f"{x['tasks_per_s']:,.0f}", f"{x['seconds']:.1f}", f"{f['tasks_per_s'] / x['tasks_per_s']:.2f}x"] for n, x in rows])
    ratio_h = f["tasks_per_s"] / h["tasks_per_s"]
    targets = [f"at least 0.8x bare HTEX ({ratio_h:.2f}x, {_met(ratio_h >= 0.8)})"]
    if "parsl_dfk" in r:
        ratio = f["tasks_per_s"] / r["parsl_dfk"]["tasks_per_s"]
        targets.append(f"at least 1.0x Parsl's DataFlowKernel ({ratio:.2f}x, {_met(ratio >= 1.0)})")
    if "dask" in r:
        ratio = f["tasks_per_s"] / r["dask"]["tasks_per_s"]
        targets.append(f"at least Dask ({ratio:.2f}x, {_met(ratio >= 1.0)})")
    extra = [f"{k.replace('_', ' ')}: {f[k]}" for k in ("submit_requests", "completion_requests", "failed", "requeued") if k in f]
    how = f"interleaved in {r['rounds']} rounds" if r.get("interleaved") else "one system after another"
    return (f"{r['tasks']:,} no-op tasks per system ({how}), {r['workers']} workers, submitted in batches of "
            f"{r.get('batch_size', '?')}.\n\n{table}\n\nTargets: {'; '.join(targets)}. fnserve {'; '.join(extra)}.\n\n"
            "![throughput](img/bench_throughput.png)")


def efficiency(r: dict[str, Any]) -> str:
    durations = list(r["fnserve"])
    keys = [("fnserve", "fnserve `Executor`")] + [(k, n) for k, n in _PEER_NAMES.items() if k in r]
    rows = [[name] + [f"{r[key][d]['efficiency']:.2f}" for d in durations] for key, name in keys]
    return (f"Ideal time / measured time for a bag of equal tasks on {r['workers']} workers "
            f"({', '.join(str(r['fnserve'][d]['tasks']) + ' x ' + d for d in durations)}).\n\n"
            + _table(["system"] + [f"{d} tasks" for d in durations], rows) + "\n\n![efficiency](img/bench_efficiency.png)")


def forwarder_scale(r: dict[str, Any]) -> str:
    rows = [[f"{s['endpoints']:,}", f"{s['tasks']:,}", f"{s['tasks_per_s']:,.0f}", f"{s['register_all_s']:.2f}",
             _ms(s["dispatch_delay"]["p50_ms"]), _ms(s["dispatch_delay"]["p99_ms"])] for s in r["scenarios"]]
    big = max(r["scenarios"], key=lambda s: s["endpoints"])
    return ("Light simulated endpoints (tests/integration/sim_endpoints.py, shared with the compose deployment test: "
            "the site manager's protocol Session per endpoint on a real ZMQ DEALER, registering, heartbeating with status "
            "reports, reconnecting when the forwarder is silent, answering every task at once) connected to one forwarder "
            "at once; a burst of tasks spread over all of them.\n\n"
            + _table(["endpoints", "tasks", "tasks routed/s", "all registered (s)", "dispatch delay p50 ms", "p99 ms"], rows)
            + f"\n\nTarget at least 5,000 tasks/s with 1,000 endpoints: {big['tasks_per_s']:,.0f}/s with "
            f"{big['endpoints']:,}, {_met(big['endpoints'] >= 1000 and big['tasks_per_s'] >= 5000)}.\n\n"
            "![forwarder scale](img/bench_forwarder_scale.png)")


def memory(r: dict[str, Any]) -> str:
    g = r["growth_per_100k_tasks_mb"]
    rows = [["Redis `used_memory`", f"{r['before']['redis_used_memory_mb']:.1f}", f"{r['after']['redis_used_memory_mb']:.1f}", f"{g['redis_used_memory_mb']:.1f}"],
            ["web service RSS", f"{r['before']['web_rss_mb']:.1f}", f"{r['after']['web_rss_mb']:.1f}", f"{g['web_rss_mb']:.1f}"],
            ["forwarder RSS", f"{r['before']['forwarder_rss_mb']:.1f}", f"{r['after']['forwarder_rss_mb']:.1f}", f"{g['forwarder_rss_mb']:.1f}"]]
    return (f"{r['queued']:,} tasks queued for an endpoint that is not connected (submitted at "
            f"{r['submit_tasks_per_s']:,.0f} tasks/s); {r['redis_bytes_per_task']:.0f} bytes of Redis per queued task.\n\n"
            + _table(["process", "before (MiB)", "after (MiB)", "growth per 100,000 tasks (MiB)"], rows)
            + "\n\n![memory](img/bench_memory.png)")


def slurm_latency(r: dict[str, Any]) -> str:
    h, f = r["bare_htex"], r["fnserve"]
    rows = [["bare Parsl HTEX + SlurmProvider (peer)", ", ".join(f"{c:.1f}" for c in h["cold_s"]), _ms(h["warm"]["p50_ms"]), _ms(h["warm"]["p99_ms"])],
            ["fnserve endpoint (`Client.call`)", ", ".join(f"{c:.1f}" for c in f["cold_s"]), _ms(f["warm"]["p50_ms"]), _ms(f["warm"]["p99_ms"])],
            ["fnserve endpoint (`run` + `get_result`)", "", _ms(f["run_get_result"]["p50_ms"]), _ms(f["run_get_result"]["p99_ms"])]]
    return (f"Local single-node Slurm, {r['launcher']} launcher, {r['workers_per_node']} worker per node; cold = submit to result "
            f"with 0 blocks (includes sbatch, the job starting and the worker pool connecting), {r['cold_runs']} runs; "
            f"warm = {r['calls']} sequential no-op calls.\n\n"
            + _table(["system", "cold first task (s)", "warm p50 ms", "warm p99 ms"], rows)
            + f"\n\nCold median fnserve / HTEX: {r['cold_median_ratio']:.2f}x; warm p50: {r['warm_p50_ratio']:.1f}x.")


def runtime_latency(r: dict[str, Any]) -> str:
    host = r["host"]["warm"]["p50_ms"]
    rows = []
    for name, limit in (("host", 1500), ("venv", 1500), ("podman", 2500), ("charliecloud", 2500)):
        if name not in r:
            continue
        s = r[name]
        warm = s["warm"]["p50_ms"]
        rows.append([name, f"{s['cold_ms']:,.0f}", f"{limit:,} ({'met' if s['cold_ms'] <= limit else 'not met'})",
                     _ms(warm), _ms(s["warm"]["p99_ms"]),
                     "" if name == "host" else f"{warm / host:.2f}x ({'met' if name == 'venv' or warm / host <= 1.2 else 'not met'})",
                     f"{s['spare_first_ms']:.0f} ({'met' if s['spare_first_ms'] <= 1.5 * warm else 'not met'})"])
    return (f"One local endpoint; image `{r['image']}`. Cold = first call after the runtime's pool was reaped (median of 3); "
            "warm = 50 sequential calls; hot spare = first call with `min_warm_workers: 1`.\n\n"
            + _table(["runtime", "cold ms", "cold target ms", "warm p50 ms", "warm p99 ms", "warm / host (target 1.2x)",
                      "hot-spare first call ms (target: warm)"], rows)
            + "\n\nThe hot-spare column predates the worker warm-up: `benchmarks/spare_first_call.py` measures the "
            "first call against warm ones in one run (see \"Runtimes\" above).")


def runtime_latency_slurm(r: dict[str, Any]) -> str:
    h, f, ratios = r["bare_htex"], r["fnserve"], r["ratios"]
    def cold_of(row: dict[str, Any]) -> str:
        wait = row.get("cold_queue_wait_s")
        return f"{row['cold_s']:.1f}" + ("" if wait is None else f" (queued {wait:.0f})")

    rows = [["bare Parsl HTEX on the same SlurmProvider (peer)", cold_of(h), "", _ms(h["warm"]["p50_ms"]),
             _ms(h["warm"]["p95_ms"]), _ms(h["warm"]["p99_ms"]), "", "1.0x"]]
    for name in ("host", "venv", "podman", "docker", "charliecloud", "apptainer-standin", "podman hot spare"):
        if name not in f:
            continue
        row, q = f[name], ratios[name]
        label = {"host": "fnserve, no container (host)", "apptainer-standin": "fnserve, Apptainer **STAND-IN** (runs on the host)",
                 "podman hot spare": "fnserve, podman hot spare"}.get(name, f"fnserve, {name}")
        if "cold_s" in row:
            cold = cold_of(row)
            extra = q.get("cold_minus_bare_htex_cold_s_without_queue_wait", q["cold_minus_bare_htex_cold_s"])
            cold_target = "" if name in ("host", "venv") else f"{extra:+.1f} s ({'met' if extra <= 2.5 else 'not met'})"
        else:
            cold = f"first call {row['first_ms']:.0f} ms"
            cold_target = f"{q['first_call_vs_warm_p50']:.2f}x warm ({'met' if q['first_call_vs_warm_p50'] <= 1.3 else 'not met'}, target 1.3x)"
        vs_host = "" if name == "host" else f"{q['warm_p50_vs_host']:.2f}x ({'met' if q['warm_p50_vs_host'] <= 1.2 else 'not met'})"
        rows.append([label, cold, cold_target, _ms(row["warm"]["p50_ms"]), _ms(row["warm"]["p95_ms"]), _ms(row["warm"]["p99_ms"]),
                     vs_host, f"{q['warm_p50_vs_bare_htex']:.1f}x"])
    v = r["runtime_versions"]
    return (f"Slurm `{v['slurm']}`, {v['podman']}, {v['docker']}, Charliecloud {v['charliecloud']}, Apptainer: stand-in. "
            f"One Slurm endpoint, {r['launcher']} launcher, "
            f"1 worker per node, each runtime's pool inside its own sbatch job; cold = the runtime's first task with no block "
            f"(sbatch, queue wait, job start, container and pool start, the task); warm = {r['calls']} sequential no-op `submit` + "
            "`get_result`. Cold target: at most 2.5 s more than bare HTEX's cold start on the same provider (the batch job's "
            "own start), compared without each job's queue wait (Slurm's StartTime - SubmitTime).\n\n"
            + _table(["system", "cold (s)", "cold beyond bare HTEX's, queue waits left out (target 2.5 s)", "warm p50 ms", "warm p95 ms", "warm p99 ms",
                      "warm p50 / host (target 1.2x)", "warm p50 / bare HTEX"], rows))


SECTIONS: list[tuple[str, str, Callable[[dict[str, Any]], str], str]] = [
    ("warm_latency", "Warm latency of a no-op", warm_latency, "python benchmarks/warm_latency.py --calls 1000"),
    ("hops", "Where the time goes, hop by hop", hops, "python benchmarks/hops.py"),
    ("throughput", "Throughput: 100,000 no-op tasks", throughput, "python benchmarks/throughput.py --tasks 100000"),
    ("efficiency", "Efficiency of 1 ms, 10 ms and 100 ms tasks", efficiency, "python benchmarks/efficiency.py"),
    ("forwarder_scale", "Forwarder scale: 100 and 1,000 endpoints", forwarder_scale, "python benchmarks/forwarder_scale.py"),
    ("memory", "Memory per 100,000 queued tasks", memory, "python benchmarks/memory.py"),
    ("slurm_latency", "Endpoints on Slurm: cold and warm", slurm_latency, "python benchmarks/slurm_latency.py"),
    ("runtime_latency", "Runtimes: cold, warm and hot spares", runtime_latency, "python benchmarks/runtime_latency.py --local"),
    ("runtime_latency_slurm", "Runtimes inside Slurm blocks, against bare HTEX", runtime_latency_slurm,
     "python benchmarks/runtime_latency.py"),
]


def measured_with(r: dict[str, Any]) -> str:
    """One line under a table: the commit, date, host and versions its figures were measured with.

    Each table is drawn from one result file, written by one run: figures of different commits
    never share a table (:func:`check_one_commit` refuses a file that mixes them)."""
    meta = r.get("meta")
    if not meta:
        return "Measured before result files recorded their commit, host and versions: re-run to refresh."
    v = meta.get("versions", {})
    versions = ", ".join(f"{k} {v[k]}" for k in ("parsl", "pyzmq", "redis", "dask", "flask", "gunicorn") if v.get(k))
    commit = (meta.get("commit") or "unknown")[:10] + (" (with uncommitted changes)" if meta.get("tree_changed") else "")
    load = meta.get("load_average")
    return (f"Measured at commit `{commit}` on {meta.get('date', '?')}, host `{meta.get('host', '?')}` "
            f"({meta.get('cpu', '?')}, {meta.get('cores', '?')} cores{f', load {load[0]}' if load else ''}), "
            f"Python {meta.get('python', '?')}; {versions}.")


def check_one_commit(name: str, r: dict[str, Any]) -> None:
    """A result file holding parts from runs of different commits is refused."""
    commits = {part["meta"].get("commit") for part in r.values() if isinstance(part, dict) and "meta" in part}
    if r.get("meta"):
        commits.add(r["meta"].get("commit"))
    if len(commits) > 1:
        raise SystemExit(f"benchmarks/results/{name}.json mixes runs of commits {sorted(map(str, commits))}: re-run it in one go")


def render() -> str:
    parts = []
    for name, title, fn, command in SECTIONS:
        r = _load(name)
        if r is None:
            parts.append(f"### {title}\n\nNot measured yet: `{command}`.")
            continue
        check_one_commit(name, r)
        parts.append(f"### {title}\n\n{fn(r)}\n\n{measured_with(r)} Reproduce: `{command}` "
                     f"(results: `benchmarks/results/{name}.json`).")
    return "\n\n".join(parts)


def main() -> None:
    import argparse

    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()  # --help writes nothing
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOC} has no {BEGIN} ... {END} markers to fill")
    body = render()
    text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n\n{body}\n\n{END}", text, flags=re.S)
    DOC.write_text(text)
    print(f"wrote the figures into {DOC}")


if __name__ == "__main__":
    main()

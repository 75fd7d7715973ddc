"""Fault injection: short tasks through a kill -9 or restart of every part; lost, duplicated, hung.

    python benchmarks/chaos.py [--tasks 10000] [--task-ms 20] [--faults site_manager_kill9 ...] [--out FILE]

One real stack (`fnserve up` in a temporary FNSERVE_HOME: embedded Redis with AOF, gunicorn web
service, forwarder, a local endpoint with 2 workers) plus, for the `slurm_*` faults, an endpoint
on the local Slurm (scripts/start_slurm.sh). The faults, in turn: kill -9 of the site manager
(its whole process group) and of the forwarder; SIGTERM and restart of the web service, of
Redis, of the site manager (`fnserve endpoint restart`) and of the forwarder; kill -9 of a worker
process; `scancel` of the Slurm endpoint's block, and kill -9 of that block's worker pool alone
(`slurm_pool_kill9`: one process by pid, the batch job left to notice); then kill -9 of one process by pid: the site
manager alone, the HTEX interchange, the worker pool (manager), the gunicorn master, a gunicorn
worker, Redis. The tasks are split evenly over the faults; for each
fault its tasks are submitted (accepted: the service answered with their ids), the fault is
injected once about a quarter of them have run, the broken part is started again, and the script
then waits for every task to end. Each task appends its index to a file when it starts, so the
report also counts executions (a task may run again after its worker died: at-least-once), and,
from the same file at the moment of the fault, the tasks running on workers then.

Per fault: accepted; completed (success, the right value); failed with a clear error (a stable
code and a message); lost (accepted, then unknown to the service, or ended without a clear
error); duplicated (a task's final state or result changed after it was first seen, or a wrong
value); hung (not ended within --hung-after seconds after the fault); reruns (tasks executed
more than once; target: at most the tasks in flight at the fault: started, and their result not
yet recorded by the service, read just before the fault; a task that has finished on a worker but
whose result is still on its way through a process that dies is one). Target: 0 lost, 0 duplicated,
0 hung. Each row also records the 1-minute load average at the fault (`load_at_fault`).
Results: benchmarks/results/chaos.json,
figures in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any


sys.path.insert(0, os.path.dirname(__file__))
from common import write_results

from fnserve.cli.stack import wait_until as _wait
from fnserve.testing.stack import Stack
from fnserve.testing.stack import alive as _alive

REPO = Path(__file__).resolve().parents[1]
FINAL = ("success", "failed", "cancelled")
# Whole process groups and graceful restarts, then one process by pid (kill -9 <pid>: the OOM
# killer, a segfault, an admin), on the embedded stack.
FAULTS = ("site_manager_kill9", "forwarder_kill9", "web_restart", "redis_restart", "worker_kill9", "slurm_scancel",
          "site_manager_sigterm", "forwarder_sigterm",
          "site_manager_pid_kill9", "interchange_kill9", "worker_pool_kill9", "gunicorn_master_kill9",
          "gunicorn_worker_kill9", "redis_kill9", "slurm_pool_kill9")


def record(i: int, path: str, ms: float) -> int:
    """The task: note the run (index and worker pid, one O_APPEND write), work ``ms``, note the
    end (``i pid end``), return ``i``."""
    import os
    import time

    def note(line: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    note(f"{i} {os.getpid()}\n")
    time.sleep(ms / 1000)
    note(f"{i} {os.getpid()} end\n")
    return i


def executions(runs: Path) -> Counter[int]:
    """Runs per task index (start lines) in a side-effect file."""
    text = runs.read_text() if runs.exists() else ""
    return Counter(int(ln.split()[0]) for ln in text.splitlines() if len(ln.split()) == 2)


def running_now(runs: Path) -> int:
    """Executions started and not ended, from the side-effect file (tasks on workers right now)."""
    text = runs.read_text() if runs.exists() else ""
    open_runs: Counter[tuple[str, str]] = Counter()
    for ln in text.splitlines():
        parts = ln.split()
        open_runs[(parts[0], parts[1])] += 1 if len(parts) == 2 else -1
    return sum(1 for v in open_runs.values() if v > 0)

def add_slurm_endpoint(stack: Stack) -> str:
    """Endpoint "hpc" on the local Slurm, one block of 2 workers kept; its id."""
    # Half a core per worker: the block asks Slurm for 1 CPU and fits beside other jobs on a small node.
    stack.configure("hpc", "slurm", engine={"max_workers_per_node": 2, "cores_per_worker": 0.5, "heartbeat_period": 1,
                                            "heartbeat_threshold": 4},
                    provider={"walltime": "00:30:00"}, scaling={"init_blocks": 1, "min_blocks": 1, "max_blocks": 1},
                    worker_init="")
    stack.cli("endpoint", "start", "hpc")
    return stack.id_of("hpc")


# -- the faults: each breaks one part, then brings it back -------------------------------------


def kill_site_manager(stack: Stack, runs: Path) -> str:
    pid = stack.pid("endpoints", "local", "site_manager.pid")
    os.killpg(pid, signal.SIGKILL)  # the site manager, its interchange and its workers
    _wait(lambda: not _alive(pid), 10, "site manager gone")
    stack.up()
    return f"kill -9 of the site manager's process group (pid {pid}), `fnserve up` again"


def kill_forwarder(stack: Stack, runs: Path) -> str:
    pid = stack.pid("service", "run", "forwarder.pid")
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: not _alive(pid), 10, "forwarder gone")
    stack.up()
    return f"kill -9 of the forwarder (pid {pid}), `fnserve up` again"


def _restart_service_process(name: str, what: str) -> Callable[[Stack, Path], str]:
    """A fault: SIGTERM to one of the service's processes (its group), then `fnserve up` again."""

    def restart(stack: Stack, runs: Path) -> str:
        pid = stack.pid("service", "run", f"{name}.pid")
        os.killpg(pid, signal.SIGTERM)
        _wait(lambda: not _alive(pid), 30, f"{name} (pid {pid}) to stop")
        stack.up()
        return f"SIGTERM to {what} (pid {pid}), `fnserve up` again"

    return restart


def restart_endpoint(stack: Stack, runs: Path) -> str:
    pid = stack.pid("endpoints", "local", "site_manager.pid")
    stack.cli("endpoint", "restart", "local")  # SIGTERM: drains, hands back what it cannot finish
    return f"`fnserve endpoint restart local` (SIGTERM to the site manager, pid {pid}, then start)"


def kill_worker(stack: Stack, runs: Path) -> str:
    pid = int(runs.read_text().splitlines()[-1].split()[1])  # the worker that noted the latest line
    os.kill(pid, signal.SIGKILL)
    return f"kill -9 of a worker process (pid {pid}) in the middle of its task"


def scancel_block(stack: Stack, runs: Path) -> str:
    run_dir = str(stack.home / "endpoints" / "hpc")
    out = subprocess.run(["squeue", "-h", "-o", "%i|%o"], capture_output=True, text=True, check=True).stdout
    jobs = [ln.split("|", 1)[0] for ln in out.splitlines() if ln.split("|", 1)[1].startswith(run_dir)]
    if not jobs:
        raise RuntimeError("no batch job of the Slurm endpoint to cancel")
    subprocess.run(["scancel", *jobs], check=True)
    return f"scancel of the Slurm endpoint's block (batch job {', '.join(jobs)})"


def _proc_stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every live process."""
    out = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                out[int(entry.name)] = (int(_proc_stat(int(entry.name))[1]), _cmdline(int(entry.name)))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _kill_one(pid: int, what: str) -> str:
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: not _alive(pid), 10, f"{what} (pid {pid}) gone")
    return f"kill -9 of {what} (pid {pid})"


def kill_site_manager_alone(stack: Stack, runs: Path) -> str:
    how = _kill_one(stack.pid("endpoints", "local", "site_manager.pid"), "the site manager process alone")
    stack.up()
    return how + ", `fnserve up` again"


def kill_interchange(stack: Stack, runs: Path) -> str:
    sm = stack.pid("endpoints", "local", "site_manager.pid")
    [pid] = [p for p, (ppid, cmd) in _processes().items() if ppid == sm and "interchange" in cmd]
    return _kill_one(pid, "the HTEX interchange") + " (the site manager restarts its engine)"


def kill_worker_pool(stack: Stack, runs: Path) -> str:
    where = str(stack.home / "endpoints" / "local")
    [pid] = [p for p, (_, cmd) in _processes().items() if "node_manager.pool" in cmd and where in cmd]
    return _kill_one(pid, "the worker pool (manager) process") + " (the site manager restarts its engine)"


def kill_gunicorn_master(stack: Stack, runs: Path) -> str:
    how = _kill_one(stack.pid("service", "run", "web.pid"), "the gunicorn master")
    stack.up()
    return how + ", `fnserve up` again"


def kill_gunicorn_worker(stack: Stack, runs: Path) -> str:
    master = stack.pid("service", "run", "web.pid")
    pid = min(p for p, (ppid, _) in _processes().items() if ppid == master)
    return _kill_one(pid, "a gunicorn worker") + " (its master starts another)"


def kill_redis(stack: Stack, runs: Path) -> str:
    how = _kill_one(stack.pid("service", "run", "redis.pid"), "Redis (AOF on, appendfsync everysec)")
    stack.up()
    return how + ", `fnserve up` again"


def _hpc_jobs(stack: Stack) -> list[str]:
    run_dir = str(stack.home / "endpoints" / "hpc")
    out = subprocess.run(["squeue", "-h", "-o", "%i|%o"], capture_output=True, text=True, check=True).stdout
    return [ln.split("|", 1)[0] for ln in out.splitlines() if ln.split("|", 1)[1].startswith(run_dir)]


def _block_pools(jobs: list[str]) -> list[tuple[int, str]]:
    """(pid, batch job) of each worker pool (``python3 -m node_manager.pool``, Parsl's
    process_worker_pool.py before) running in ``jobs``: the pool process itself, not a child of it."""
    found: dict[int, tuple[int, str]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
            if b"process_worker_pool" not in cmd and b"node_manager.pool" not in cmd:
                continue
            env = (d / "environ").read_bytes().split(b"\0")
            ppid = int((d / "stat").read_text().rsplit(") ", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        job = next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"SLURM_JOB_ID=")), None)
        if job in jobs:
            found[int(d.name)] = (ppid, job)
    return [(pid, job) for pid, (ppid, job) in found.items() if ppid not in found]


def kill_block_pool(stack: Stack, runs: Path) -> str:
    """kill -9 of one process: the worker pool of the Slurm endpoint's block (its workers, the
    batch job and the site manager are left alone; the interchange must notice the loss)."""
    pools = _block_pools(_hpc_jobs(stack))
    if not pools:
        raise RuntimeError("no worker pool of the Slurm endpoint's block to kill")
    pid, job = pools[0]
    os.kill(pid, signal.SIGKILL)
    return f"kill -9 of the Slurm block's worker pool alone (pid {pid}, batch job {job})"


INJECT: dict[str, Callable[[Stack, Path], str]] = {
    "slurm_pool_kill9": kill_block_pool,
    "site_manager_kill9": kill_site_manager,
    "forwarder_kill9": kill_forwarder,
    "web_restart": _restart_service_process("web", "the web service (gunicorn)"),
    # redis-server writes its AOF on SIGTERM
    "redis_restart": _restart_service_process("redis", "Redis (AOF on, appendfsync everysec)"),
    "worker_kill9": kill_worker,
    "slurm_scancel": scancel_block,
    "site_manager_sigterm": restart_endpoint,
    "forwarder_sigterm": _restart_service_process("forwarder", "the forwarder"),
    "site_manager_pid_kill9": kill_site_manager_alone,
    "interchange_kill9": kill_interchange,
    "worker_pool_kill9": kill_worker_pool,
    "gunicorn_master_kill9": kill_gunicorn_master,
    "gunicorn_worker_kill9": kill_gunicorn_worker,
    "redis_kill9": kill_redis,
}


# -- one phase: submit, break, recover, count ----------------------------------------------------


def _poll(stack: Stack, task_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The tasks' current records (a task the service does not know is left out: lost)."""
    from fnserve.errors import FnserveError, NotFound

    seen: dict[str, dict[str, Any]] = {}
    client = stack.client()
    for i in range(0, len(task_ids), 1000):
        chunk = task_ids[i:i + 1000]
        for attempt in range(60):  # the web service or Redis may be coming back
            try:
                try:
                    tasks = client.transport.post("/v1/tasks/results", {"task_ids": chunk, "wait": 0})["tasks"]
                except NotFound:  # one unknown id fails the whole read: read them one by one
                    tasks = []
                    for tid in chunk:
                        try:
                            tasks.append(client.get_task(tid))
                        except NotFound:
                            pass
                for t in tasks:
                    seen[t["task_id"]] = t
                break
            except (FnserveError, OSError) as exc:
                if attempt == 59:
                    raise
                print(f"    (service not answering: {exc}; retrying)")
                time.sleep(1)
    return seen


def _value(task: dict[str, Any]) -> Any:
    from fnserve.task_results import result_of

    try:
        return result_of(task)
    except Exception as exc:  # noqa: BLE001 - a failed task: its error, whatever it is
        return repr(exc)


def run_phase(stack: Stack, fault: str, fid: str, endpoint_id: str, n: int, offset: int, ms: float,
              hung_after: float, work: Path) -> dict[str, Any]:
    runs = work / f"runs-{fault}"
    client = stack.client()
    task_ids: list[str] = []
    for start in range(offset, offset + n, 1000):
        batch = client.create_batch()
        for i in range(start, min(start + 1000, offset + n)):
            batch.add(fid, endpoint_id, (i, str(runs), ms))
        task_ids += client.batch_run(batch)
    index = {tid: offset + k for k, tid in enumerate(task_ids)}
    _wait(lambda: len(executions(runs)) >= n // 4, 300, f"{fault}: a quarter of the tasks to run")
    running_at_fault = running_now(runs)
    # In flight: started, and the service has not recorded its result (read just before the fault:
    # the service first, the side-effect file second, so nothing that started in between is missed).
    # A task that finished on a worker but whose result is still on its way is one of these.
    not_recorded = {index[tid] for tid, t in _poll(stack, task_ids).items() if t["state"] not in FINAL}
    in_flight_at_fault = len(not_recorded & set(executions(runs)))
    load = Path("/proc/loadavg").read_text().split()[0]  # the 1-minute load average at the fault
    injected_at = time.time()
    how = INJECT[fault](stack, runs)
    print(f"  {fault}: {how}")
    recovered_at = time.time()

    first: dict[str, tuple[str, Any]] = {}
    changed: set[str] = set()
    deadline = time.monotonic() + hung_after
    while True:
        seen = _poll(stack, task_ids)
        for tid, t in seen.items():
            if t["state"] in FINAL:
                now = (t["state"], _value(t))
                if tid not in first:
                    first[tid] = now
                elif first[tid] != now:
                    changed.add(tid)
        if len(first) == len(task_ids) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    finished_at = time.time()
    final = _poll(stack, task_ids)  # one more read: a late second result would show here
    for tid, t in final.items():
        if tid in first and (t["state"], _value(t)) != first[tid]:
            changed.add(tid)

    runs_of = executions(runs)
    completed = failed_clear = lost = hung = wrong = 0
    errors: Counter[str] = Counter()
    for tid in task_ids:
        t = final.get(tid)
        if t is None:
            lost += 1
        elif t["state"] not in FINAL:
            hung += 1
        elif t["state"] == "success":
            if _value(t) == index[tid]:
                completed += 1
            else:
                wrong += 1
        else:
            err = t.get("error") or {}
            if err.get("code") and err.get("message"):
                failed_clear += 1
                errors[err["code"]] += 1
            else:
                lost += 1
    return {
        "fault": fault, "how": how, "accepted": len(task_ids), "completed": completed,
        "failed_with_clear_error": failed_clear, "error_codes": dict(errors), "lost": lost,
        "duplicated": len(changed) + wrong, "hung": hung,
        "reruns": sum(1 for i in index.values() if runs_of[i] > 1),
        "running_at_fault": running_at_fault, "in_flight_at_fault": in_flight_at_fault,
        "never_ran_but_succeeded": sum(1 for tid, i in index.items() if runs_of[i] == 0 and tid in final and final[tid]["state"] == "success"),
        "seconds_fault_to_all_done": round(finished_at - injected_at, 1),
        "seconds_to_restart": round(recovered_at - injected_at, 1),
        "load_at_fault": float(load),
    }


def _run_info() -> dict[str, str]:
    """Commit, date, host and versions the numbers were measured with."""
    import platform

    import parsl

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    slurm = subprocess.run(["sinfo", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {"commit": commit, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node(),
            "cpus": str(os.cpu_count()), "python": platform.python_version(), "parsl": parsl.__version__, "slurm": slurm}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=10_000, help="tasks in all, split over the faults")
    ap.add_argument("--task-ms", type=float, default=20.0, help="how long each task works")
    ap.add_argument("--hung-after", type=float, default=300.0, help="seconds after a fault a task may take to end")
    ap.add_argument("--faults", nargs="*", default=list(FAULTS), choices=FAULTS)
    ap.add_argument("--out", type=Path, help="write the results here (default: benchmarks/results/NAME.json)")
    ap.add_argument("--name", default="chaos", help="results name under benchmarks/results (default chaos)")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows as it happens, also in a log file

    home = Path(tempfile.mkdtemp(prefix="fnserve-chaos-"))
    work = home / "work"
    work.mkdir()
    stack = Stack(home, cwd=home)
    print(f"fnserve up in {home}")
    stack.up()
    rows = []
    try:
        client = stack.client()
        fid = client.register_function(record)
        endpoints = {"local": stack.id_of("local")}
        if any(f.startswith("slurm_") for f in args.faults):
            if shutil.which("sinfo") is None:
                raise SystemExit("the slurm_* faults need Slurm: run scripts/start_slurm.sh")
            endpoints["hpc"] = add_slurm_endpoint(stack)
        per_fault = args.tasks // len(args.faults)
        for k, fault in enumerate(args.faults):
            ep = endpoints["hpc" if fault.startswith("slurm_") else "local"]
            row = run_phase(stack, fault, fid, ep, per_fault, k * per_fault, args.task_ms, args.hung_after, work)
            print(f"  {fault}: " + ", ".join(f"{k2}={v}" for k2, v in row.items() if k2 not in ("fault", "how")))
            rows.append(row)
    finally:
        stack.cli("down")
    totals = {k: sum(r[k] for r in rows) for k in ("accepted", "completed", "failed_with_clear_error", "lost", "duplicated", "hung", "reruns")}
    print("totals: " + ", ".join(f"{k}={v}" for k, v in totals.items()))
    results = {"tasks": args.tasks, "task_ms": args.task_ms, "workers": 2, "faults": rows, "totals": totals,
               "run": _run_info()}
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    else:
        write_results(args.name, results)
    if totals["lost"] or totals["duplicated"] or totals["hung"]:
        raise SystemExit("target missed: tasks were lost, duplicated or hung")
    over = [r["fault"] for r in rows if r["reruns"] > max(r["running_at_fault"], r["in_flight_at_fault"])]
    if over:
        print(f"note: more tasks ran twice than were in flight at the fault in: {', '.join(over)}")


if __name__ == "__main__":
    main()

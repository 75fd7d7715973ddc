"""Helpers for tests that run endpoints on the real single-node Slurm (scripts/start_slurm.sh).

The stack is real throughout: `fnserve up` (Redis, gunicorn web service, ZMQ forwarder) through
the shared harness (fnserve/testing/stack.py: ``Stack``), the `fnserve endpoint ...` CLI, the
site manager, Parsl's SlurmProvider submitting real sbatch jobs, and node managers in worker pools
inside those jobs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fnserve.client import Client


def require_slurm() -> None:
    """Fail (not skip) when Slurm is not up: scripts/test.sh starts it."""
    if shutil.which("sinfo") is None:
        pytest.fail("Slurm is not installed: run scripts/start_slurm.sh (scripts/test.sh does)")
    out = subprocess.run(["sinfo", "-h", "-n", "localhost", "-o", "%t"], capture_output=True, text=True, check=False)
    if out.returncode != 0 or not out.stdout.strip().startswith(("idle", "mix", "alloc")):
        pytest.fail(f"Slurm is not usable ({out.stdout.strip()} {out.stderr.strip()}): run scripts/start_slurm.sh")


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> Any:
    """Test-side wait for an outside effect (a batch job appearing or leaving the queue)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


def queued(run_dir: Path) -> dict[str, str]:
    """Batch jobs in the queue whose submit script lives under ``run_dir``: id -> state (reason)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%T|%r|%o"], capture_output=True, text=True, check=True)
    jobs = {}
    for line in out.stdout.splitlines():
        job_id, state, reason, command = line.split("|", 3)
        if command.startswith(str(run_dir)) and state not in ("COMPLETED", "CANCELLED", "FAILED"):
            jobs[job_id] = f"{state} ({reason})"
    return jobs


def batch_jobs(run_dir: Path) -> list[str]:
    """Ids of the batch jobs in the queue whose submit script lives under ``run_dir``."""
    return sorted(queued(run_dir))


def result_in_block(fc: Client, task_id: str, run_dir: Path, timeout: float = 180) -> Any:
    """The task's result; if it does not come, the failure shows the endpoint's jobs and the whole
    queue (a block pending behind other jobs and a lost task look different)."""
    from fnserve.errors import TaskPending

    try:
        return fc.get_result(task_id, timeout=timeout)
    except TaskPending as exc:
        queue = subprocess.run(["squeue", "-o", "%i %T %C %M %r %o"], capture_output=True, text=True, check=False).stdout
        raise AssertionError(f"{exc}; this endpoint's jobs: {queued(run_dir)}; the queue:\n{queue}") from None


def assert_no_jobs(run_dir: Path, after: str) -> None:
    """No batch job of ``run_dir`` in the queue; if one is, the failure says which, in what state,
    and what Slurm knows of it (a COMPLETING race and a leak look different)."""
    left = queued(run_dir)
    if left:
        details = "\n".join(
            subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, check=False).stdout
            for job in left)
        raise AssertionError(f"batch job(s) left in the queue after {after}: {left}\n{details}")


def failing_scancel(folder: Path) -> dict[str, str]:
    """A PATH that shadows ``scancel`` with a script that refuses, as a broken or overloaded
    scheduler does (exit 1, an error on stderr); everything else is the real Slurm."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "scancel"
    script.write_text("#!/bin/sh\necho \"scancel: error: Kill job error on job id $1: Socket timed out\" >&2\nexit 1\n")
    script.chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def where_am_i() -> dict[str, Any]:
    """Runs on a worker: which batch job it ran in (serialized as source: imports inside)."""
    import os
    import socket

    return {"job": os.environ.get("SLURM_JOB_ID"), "host": socket.gethostname(), "pid": os.getpid()}


def hold_until(path: str, limit: float) -> str | None:
    """Runs on a worker: keeps it busy until ``path`` exists (the test releases it) or ``limit`` s
    passed, then says which batch job it ran in. Keeps a block from going idle while a test looks."""
    import os
    import time

    deadline = time.monotonic() + limit
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.1)
    return os.environ.get("SLURM_JOB_ID")


def nap_then_where(seconds: float) -> str | None:
    """Runs on a worker: sleeps, then says which batch job it finished in."""
    import os
    import time

    time.sleep(seconds)
    return os.environ.get("SLURM_JOB_ID")


def nap(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


def job_processes(job: str) -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of each live process of batch job ``job`` (by its environment)."""
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if f"SLURM_JOB_ID={job}".encode() not in (d / "environ").read_bytes().split(b"\0"):
                continue
            stat = (d / "stat").read_text().rsplit(") ", 1)[1].split()
            if stat[0] in ("Z", "X"):
                continue
            found[int(d.name)] = (int(stat[1]), (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, ValueError, IndexError):
            continue
    return found


def block_pool(procs: dict[int, tuple[int, str]]) -> tuple[int, set[int]]:
    """The worker pool among a job's processes (:func:`job_processes`: the topmost one started
    through ``node_manager.pool`` or as Parsl's ``process_worker_pool.py``, not a shell above it)
    and every process below it (its workers, Parsl's Manager server, and what the workers started)."""
    named = {p for p, (_, cmd) in procs.items() if "node_manager.pool" in cmd or "process_worker_pool" in cmd}
    [pool] = [p for p in named if not any(procs[q][0] == p for q in named)]
    below: set[int] = set()
    frontier = {pool}
    while frontier:
        frontier = {p for p, (ppid, _) in procs.items() if ppid in frontier} - below
        below |= frontier
    return pool, below


def note_then_nap(path: str, seconds: float) -> str | None:
    """Runs on a worker: appends its pid to ``path`` (one line per execution), sleeps, says its job."""
    import os
    import time

    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)
    time.sleep(seconds)
    return os.environ.get("SLURM_JOB_ID")

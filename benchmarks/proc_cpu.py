"""Per-process CPU accounting for the benchmarks, from the kernel's own counters (Linux).

``/proc/<pid>/task/<tid>/schedstat`` gives, per thread, the time spent on a CPU, the time spent
**runnable but waiting for a CPU** (run-queue wait: what other processes on a busy machine cost
a latency path) and the number of times it was scheduled. Summed over a process's threads and
taken before and after a stretch of calls, they say what each process of a path costs per call
and how long it waited for a core, independently of how loaded the machine was.

Used by ``warm_latency.py`` (the CPU every system burns while the others take their turn) and
``warm_profile.py`` (each fnserve process's share of a warm call).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Sched:
    cpu_s: float = 0.0  # on a CPU
    wait_s: float = 0.0  # runnable, waiting for a CPU
    slices: int = 0  # times scheduled in

    def __add__(self, o: "Sched") -> "Sched":
        return Sched(self.cpu_s + o.cpu_s, self.wait_s + o.wait_s, self.slices + o.slices)

    def __sub__(self, o: "Sched") -> "Sched":
        return Sched(self.cpu_s - o.cpu_s, self.wait_s - o.wait_s, self.slices - o.slices)


def sched(pid: int) -> Sched:
    """Sum over ``pid``'s live threads (a thread that ended since is not counted: take
    long-lived processes only)."""
    return _threads(pid)


def _threads(pid: int, skip: str | None = None) -> Sched:
    """Sum of the schedstat of ``pid``'s live threads, but the thread ``skip``."""
    total = Sched()
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        if path.split("/")[4] == skip:
            continue
        try:
            with open(path) as f:
                cpu, wait, n = f.read().split()
        except (OSError, ValueError):
            continue
        total = total + Sched(int(cpu) / 1e9, int(wait) / 1e9, int(n))
    return total


def sched_all(pids: dict[int, str]) -> dict[str, Sched]:
    """Summed per label (several pids may share one)."""
    out: dict[str, Sched] = {}
    for pid, label in pids.items():
        out[label] = out.get(label, Sched()) + sched(pid)
    return out


def delta(after: dict[str, Sched], before: dict[str, Sched]) -> dict[str, Sched]:
    return {k: after[k] - before.get(k, Sched()) for k in after}


def descendants(pid: int) -> set[int]:
    """``pid``'s live descendants (not ``pid``)."""
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        for path in glob.glob(f"/proc/{p}/task/*/children"):
            try:
                with open(path) as f:
                    kids = [int(c) for c in f.read().split()]
            except OSError:
                continue
            todo += [k for k in kids if k not in out]
            out.update(kids)
    return out


def other_threads() -> Sched:
    """This process's threads but the main one (a benchmark's peers run client threads in it)."""
    me = os.getpid()
    return _threads(me, skip=str(me))


def tagged(name: str, value: str) -> set[int]:
    """Live processes whose environment has ``name=value`` (readable ones: this account's)."""
    want = f"{name}={value}".encode()
    out = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                if want in f.read().split(b"\0"):
                    out.add(int(entry.name))
        except OSError:
            continue
    return out


def session_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(") ", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def sessions_pids(sids: set[int]) -> set[int]:
    """Every live process in one of these sessions (Parsl's LocalProvider starts worker pools
    with ``bash -c ... &``: they leave the process tree but keep the session)."""
    out = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and session_of(int(entry.name)) in sids:
            out.add(int(entry.name))
    return out


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


# (label, substring of the command line), first match wins.
_KINDS = (
    ("redis", "redis-server"), ("web (gunicorn master)", "gunicorn: master"), ("web (gunicorn worker)", "gunicorn: worker"),
    ("forwarder", "web_service.forwarder"), ("triggers", "web_service.triggers"), ("site manager", "-m site_manager"),
    ("interchange", "interchange"), ("worker pool manager", "node_manager.pool"), ("worker pool manager", "process_worker_pool"),
    ("resource tracker", "resource_tracker"), ("worker", "spawn_main"), ("walltime watchdog", "import os, select, socket"),
    ("dask", "distributed"),
)


def label(pid: int) -> str | None:
    """What an fnserve or peer process is, from its command line; None for shells and the rest."""
    cmd = command_line(pid)
    for name, pattern in _KINDS:
        if pattern in cmd:
            return name
    return None

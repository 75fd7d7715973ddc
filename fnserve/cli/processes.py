"""Start, find and stop the background processes of an fnserve stack (pid and log files).

Every process started here carries ``FNSERVE_PID_FILE=<its pid file>`` in its environment, and so
does everything it starts (gunicorn workers, the HTEX interchange, worker pools, workers, the
tasks' own children). That tag is how a leftover is recognised as ours after its leader died
(a gunicorn worker holding the web port after its master was killed, a worker pool whose site
manager was killed): :meth:`Managed.leftovers` lists them, :meth:`Managed.start` removes them
before it starts again, and :meth:`Managed.stop` after the leader stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fnserve.private_files import PRIVATE_UMASK, open_private, private_dir, write_private

# The environment variable that ties a process (and its descendants) to the pid file of the
# process fnserve started.
TAG = "FNSERVE_PID_FILE"


@dataclass
class Managed:
    """A background process known by its pid file and log file in ``run_dir``."""

    name: str
    run_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def running(self) -> bool:
        return self.pid() is not None

    def leftovers(self) -> list[int]:
        """Live processes of ours tagged with this pid file (the leader included, if alive)."""
        leader = recorded_pid(self.pid_file)
        return tagged_processes(str(self.pid_file), sessions={leader} if leader else frozenset())

    def clean_leftovers(self, say: Callable[[str], None] | None = None) -> list[int]:
        """With the leader gone: SIGKILL what it left (children that outlived it); returns them."""
        if self.pid() is not None:
            return []
        pids = self.leftovers()
        if pids:
            if say is not None:
                say(f"  removing {len(pids)} process(es) left by a dead {self.name}: {', '.join(map(str, pids))}")
            kill_and_wait(pids)
        return pids

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> int:
        """Start ``argv`` in its own session, output to the log file; returns the pid.

        Processes left by an earlier run whose leader died are killed first.
        """
        private_dir(self.run_dir)
        existing = self.pid()
        if existing:
            return existing
        self.clean_leftovers()
        log = open_private(self.log_file)
        try:
            # umask: whatever the process and its children create is private (0600 / 0700).
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {}), TAG: str(self.pid_file)}, start_new_session=True,
                umask=PRIVATE_UMASK,
            )
        finally:
            os.close(log)
        write_private(self.pid_file, str(proc.pid))
        return proc.pid

    def stop(self, timeout: float = 20.0, leader_first: bool = False) -> bool:
        """SIGTERM, wait up to ``timeout``, then SIGKILL the process group. True if it was running.

        ``leader_first``: send SIGTERM to the process alone and let it stop its own children
        (a site manager drains its tasks through its interchange), then SIGKILL what is left.
        """
        pid = self.pid()
        if pid is None:
            kill_and_wait(self.leftovers())
            self.pid_file.unlink(missing_ok=True)
            return False
        if leader_first:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        else:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid) or leader_first:
            _signal_group(pid, signal.SIGKILL)
        # Children that left the group (local blocks run in their own) or outlived the leader.
        kill_and_wait(self.leftovers())
        self.pid_file.unlink(missing_ok=True)
        return True

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


# Processes of a batch job carry the submitter's environment (its tag too) when the job runs on
# this host; they are the batch system's to end (the endpoint cancels its jobs and checks the queue).
BATCH_JOB_MARKERS = (b"SLURM_JOB_ID=", b"PBS_JOBID=")


def tagged_processes(tag: str, prefix: bool = False, sessions: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """Live processes of this account whose ``FNSERVE_PID_FILE`` is ``tag`` (or starts with it).

    Also those in one of ``sessions`` (the pids fnserve started, each a session leader) whose
    environment cannot be read back: setproctitle (gunicorn, Parsl's interchange) overwrites the
    memory ``/proc/<pid>/environ`` shows. A process of such a session that shows an environment
    without the tag is someone else's (a session id reused long after ours ended).
    """
    want = f"{TAG}={tag}".encode()
    me = os.getpid()
    # fnserve itself may run inside an allocation: its own job's processes are still its own.
    own_jobs = {f"{k}={os.environ[k]}".encode() for k in ("SLURM_JOB_ID", "PBS_JOBID") if k in os.environ}
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = [v for v in f.read().split(b"\0") if v]
        except OSError:
            continue  # gone, or another account's
        tagged = any(v.startswith(want) if prefix else v == want for v in environ)
        if not tagged and (environ or not sessions or _session(pid) not in sessions):
            continue
        if any(v.startswith(BATCH_JOB_MARKERS) and v not in own_jobs for v in environ):
            continue  # inside a batch job (the environment came with sbatch/qsub): the endpoint cancels it
        if _alive(pid):
            found.append(pid)
    return sorted(found)


def _session(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(") ", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def recorded_pid(pid_file: Path) -> int | None:
    """The pid a pid file names, alive or not."""
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def kill_and_wait(pids: list[int], timeout: float = 10.0) -> list[int]:
    """SIGKILL ``pids`` and wait until they are gone; returns those still alive after ``timeout``."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + timeout
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [p for p in left if _alive(p)]
    return left


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return pids


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident memory so far (VmHWM), in MiB; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return round(next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024, 1)
    except (OSError, StopIteration):
        return None


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(") ", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def is_htex_worker(pid: int) -> bool:
    """Whether ``pid`` is one of a Parsl worker pool's workers (started by multiprocessing's
    spawn from the pool, or forked by it), the processes that run functions."""
    if "multiprocessing.spawn" in command_line(pid):
        return True
    parent = parent_pid(pid)
    return parent is not None and "process_worker_pool" in command_line(parent) and "process_worker_pool" in command_line(pid)

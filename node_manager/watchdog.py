"""Walltime enforced from outside the task, in the worker's own PID namespace.

The in-process limit (SIGALRM raising :class:`~node_manager.execute.WalltimeExceeded`) can be
defeated by the task: ignore SIGALRM, catch ``BaseException`` in a loop, or sit in a C call
that holds the GIL. A thread in the worker cannot help then (it needs the GIL too), and the site
manager can only kill processes in its own PID namespace (not in podman/Docker containers, not
on other nodes). So each worker process keeps one small helper process beside it, started once
(on the first task with a walltime), in the same namespace and on the same node:

- the worker tells it ``start <deadline>`` before a task's function runs and ``done`` after it
  returns: one ``write`` to a pipe each (a few microseconds; no fork per task);
- the helper waits on the pipe; when a deadline passes with no ``done``, it SIGKILLs the worker
  (nothing in the task can catch that). Parsl's worker pool reports the task's worker lost and
  starts a fresh worker; the site manager reports such a task ``walltime_exceeded`` (it knows
  when the task started and its walltime: ``site_manager.walltime.lost_past_walltime``);
- when the worker dies for any reason, the pipe closes and the helper exits;
- a shell function's command runs in a session of its own (so that a walltime kills it whole),
  which a dying worker would leave running: the worker tells the helper ``group <pgid>`` while
  the command runs (``group 0`` after), and the helper SIGKILLs that process group when the
  worker dies or is killed for its walltime. So a worker killed with its pool
  (:mod:`node_manager.pool_children`) takes its task's commands along.

Deadlines are ``CLOCK_MONOTONIC`` times, which both processes share.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

# The helper's whole program: stdlib only, run with -I -S so that it starts in milliseconds and
# imports nothing from the worker's environment.
_HELPER = r"""
import os, select, signal, sys, time
worker, fd, deadline, group, buf = int(sys.argv[1]), 0, None, 0, b""
def end():
    if group:
        try:
            os.killpg(group, signal.SIGKILL)
        except OSError:
            pass
    sys.exit(0)
while True:
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    if not select.select([fd], [], [], timeout)[0]:
        if deadline is not None and time.monotonic() >= deadline:
            try:
                os.kill(worker, signal.SIGKILL)
            except ProcessLookupError:
                pass
            end()
        continue
    chunk = os.read(fd, 4096)
    if not chunk:
        end()  # the worker is gone
    buf += chunk
    *lines, buf = buf.split(b"\n")
    for line in lines:
        if line.startswith(b"group "):
            group = int(line[6:])
        else:
            deadline = float(line[6:]) if line.startswith(b"start ") else None
"""


class Watchdog:
    """The helper process of one worker process; :meth:`arm` / :meth:`disarm` around a task."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        # start_new_session: a Ctrl-C or a signal to the worker's process group spares it (it
        # exits on its own when the worker does).
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _HELPER, str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=True, start_new_session=True,
        )
        assert self._proc.stdin is not None
        self._fd = self._proc.stdin.fileno()

    def alive(self) -> bool:
        return self.pid == os.getpid() and self._proc.poll() is None

    def arm(self, seconds: float) -> None:
        """Kill this process ``seconds`` from now unless :meth:`disarm` comes first."""
        os.write(self._fd, b"start %.6f\n" % (time.monotonic() + seconds))

    def disarm(self) -> None:
        os.write(self._fd, b"done\n")

    def guard(self, pgid: int) -> None:
        """Kill process group ``pgid`` if this process dies (0: none)."""
        os.write(self._fd, b"group %d\n" % pgid)


_watchdog: Watchdog | None = None


def arm(seconds: float) -> bool:
    """Arm this worker's watchdog (started on first use); False if no helper could be started
    (the in-process limit and the site manager's own check still apply)."""
    global _watchdog
    try:
        if _watchdog is None or not _watchdog.alive():
            _watchdog = Watchdog()
        _watchdog.arm(seconds)
        return True
    except OSError:
        _watchdog = None
        return False


def guard_group(pgid: int) -> bool:
    """Have this worker's helper (started on first use) SIGKILL process group ``pgid`` if this
    worker dies; ``guard_group(0)`` once the group is done. False if no helper could be started."""
    global _watchdog
    try:
        if _watchdog is None or not _watchdog.alive():
            if not pgid:
                return True
            _watchdog = Watchdog()
        _watchdog.guard(pgid)
        return True
    except OSError:
        _watchdog = None
        return False


def disarm() -> None:
    if _watchdog is not None and _watchdog.pid == os.getpid():
        try:
            _watchdog.disarm()
        except OSError:
            pass  # the helper died: the next arm starts another


__all__ = ["Watchdog", "arm", "disarm", "guard_group"]

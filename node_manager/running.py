"""Which task each worker process runs, for the site manager to stop a cancelled one.

Each worker process keeps one small file, ``<control_dir>/<pid>``, holding the id of the task it
runs now (written when a task starts: one write to a tmpfs file, a few microseconds). The site
manager, on a cancel, finds the pid whose file names the task and kills that process; Parsl's
worker pool then starts a fresh worker in its place.

A cancel also leaves ``<control_dir>/cancel-<task id>``: a worker that picks the task up later
(it was still queued in the interchange) finds the note and returns at once without running it.
Order makes this race-free: the worker marks first and checks second, the site manager notes
the cancel first and looks for marks second, so one of them always sees the other.

Only processes on the site manager's own node, in its PID namespace, can be found this way
(local and single-node endpoints; host, venv and Charliecloud runtimes). Elsewhere the cancelled
task runs to its end and its result is dropped: the service has already ended it.
"""

from __future__ import annotations

import os
from pathlib import Path


def mark(control_dir: str | None, task_id: str) -> None:
    """Record that this process now runs ``task_id`` (best effort: never fails a task)."""
    if not control_dir:
        return
    try:
        fd = os.open(os.path.join(control_dir, str(os.getpid())), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, task_id.encode())
        finally:
            os.close(fd)
    except OSError:
        pass  # no control dir here (another node, a container): the task cannot be killed


def mark_group(control_dir: str | None, task_id: str, pgid: int) -> str | None:
    """Record that process group ``pgid`` (a shell function's command, started in a session of
    its own so that its walltime can kill it whole) belongs to ``task_id``: a cancel that kills
    the worker kills this group too. Returns the note's path, to remove when the command ends."""
    if not control_dir:
        return None
    path = os.path.join(control_dir, f"g{pgid}")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, task_id.encode())
        finally:
            os.close(fd)
    except OSError:
        return None
    return path


def groups_running(control_dir: str | Path, task_ids: set[str]) -> dict[str, list[int]]:
    """``task_id -> process groups`` noted by :func:`mark_group` for ``task_ids``."""
    found: dict[str, list[int]] = {}
    try:
        entries = list(os.scandir(control_dir))
    except OSError:
        return found
    for entry in entries:
        if not (entry.name.startswith("g") and entry.name[1:].isdigit()):
            continue
        try:
            with open(entry.path, "rb") as f:
                task_id = f.read().decode()
        except OSError:
            continue
        if task_id in task_ids:
            found.setdefault(task_id, []).append(int(entry.name[1:]))
    return found


def pids_running(control_dir: str | Path, task_ids: set[str]) -> dict[str, int]:
    """``task_id -> pid`` of the worker processes whose mark names one of ``task_ids``."""
    return {t: pid for t, (pid, _) in tasks_started(control_dir, task_ids).items()}


def tasks_started(control_dir: str | Path, task_ids: set[str]) -> dict[str, tuple[int, float]]:
    """``task_id -> (pid, unix time it started)`` for the marks naming one of ``task_ids``
    (a mark is written when its worker starts the task: its mtime is the start)."""
    found: dict[str, tuple[int, float]] = {}
    try:
        entries = list(os.scandir(control_dir))
    except OSError:
        return found
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            with open(entry.path, "rb") as f:
                task_id = f.read().decode()
            started = entry.stat().st_mtime
        except OSError:
            continue
        if task_id in task_ids:
            found[task_id] = (int(entry.name), started)
    return found


def _cancel_note(control_dir: str | Path, task_id: str) -> str:
    safe = "".join(c for c in task_id if c.isalnum() or c in "-_")
    return os.path.join(control_dir, f"cancel-{safe}")


def note_cancelled(control_dir: str | Path, task_ids: set[str] | tuple[str, ...]) -> None:
    """Note that ``task_ids`` are cancelled: a worker that has not started one will not."""
    for task_id in task_ids:
        try:
            os.close(os.open(_cancel_note(control_dir, task_id), os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError:
            pass


def forget_cancelled(control_dir: str | Path, task_id: str) -> None:
    """Drop the cancel note of a task that will not be looked at again."""
    try:
        os.unlink(_cancel_note(control_dir, task_id))
    except OSError:
        pass


def take_cancelled(control_dir: str | None, task_id: str) -> bool:
    """True (and the note removed) if ``task_id`` was cancelled before this worker started it.

    Call after :func:`mark`. One ``unlink`` on a tmpfs: a few microseconds per task.
    """
    if not control_dir:
        return False
    try:
        os.unlink(_cancel_note(control_dir, task_id))
    except OSError:
        return False
    return True

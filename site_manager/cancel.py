"""Stopping the workers of cancelled tasks (the I/O side; the session decides which).

Workers note the task they run in a node-local control directory (node_manager.running); a
cancel kills the worker process whose note names the task. Parsl's worker pool replaces a
worker that died, and the site manager drops the 'worker lost' report that follows (the
session knows the task was cancelled), so the task is neither retried nor reported twice.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path

from node_manager.running import forget_cancelled, groups_running, note_cancelled, pids_running

logger = logging.getLogger(__name__)


def control_dir(endpoint_id: str) -> Path:
    """A fresh node-local directory for this site manager's workers' notes (tmpfs if there is one)."""
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
    path = base / f"fnserve-{endpoint_id}"
    shutil.rmtree(path, ignore_errors=True)  # notes of a previous run name dead processes
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def kill_tasks(directory: Path, task_ids: tuple[str, ...]) -> None:
    """Stop ``task_ids``: note them cancelled (a worker that has not started one skips it), then
    SIGKILL the local workers running them (the note first: see node_manager.running)."""
    note_cancelled(directory, task_ids)
    found = pids_running(directory, set(task_ids))
    # Shell functions' commands run in process groups of their own: they go with their worker.
    for task_id, groups in groups_running(directory, set(task_ids)).items():
        for pgid in groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
                logger.info("cancelled task %s: killed its command (process group %d)", task_id, pgid)
            except (ProcessLookupError, PermissionError):
                pass
    for task_id, pid in found.items():
        try:
            os.kill(pid, signal.SIGKILL)
            logger.info("cancelled task %s: killed its worker (pid %d)", task_id, pid)
        except ProcessLookupError:
            pass  # it ended on its own meanwhile
        except PermissionError:
            logger.warning("cancelled task %s: not allowed to kill its worker (pid %d)", task_id, pid)
        forget_cancelled(directory, task_id)
    for task_id in set(task_ids) - set(found):
        logger.info("cancelled task %s: not started on this node; a worker here that picks it up skips it, "
                    "one elsewhere runs it and its result is dropped", task_id)

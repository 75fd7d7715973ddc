"""Run one shell-function task: render its command, run it under ``/bin/sh``, keep the tails of
its outputs, stop it at its walltime.

The command runs in its own process group (so that a walltime kills what it started, pipes and
children included), with stdout and stderr going to unnamed temporary files rather than pipes:
a command that writes gigabytes costs disk, not the worker's memory, and only the last
``max_output_bytes`` of each are read back (:func:`fnserve.shell.cut_output` states the cut).
Parsl's MPI mode puts ``PARSL_MPI_PREFIX`` (``mpiexec -n 4 ...``, ``srun ...``) in the worker's
environment; the command sees it like any variable: ``$PARSL_MPI_PREFIX ./a.out``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import IO, Any

from fnserve import shell
from node_manager import running, watchdog

SANDBOX_ROOT_ENV = "FNSERVE_SANDBOX_ROOT"  # where per-task folders go (default: the worker's folder)


def sandbox_dir(task_id: str) -> Path:
    """A fresh folder for this task (0700), under ``$FNSERVE_SANDBOX_ROOT`` or ``./fnserve-sandboxes``."""
    root = Path(os.environ.get(SANDBOX_ROOT_ENV) or Path.cwd() / "fnserve-sandboxes")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = "".join(c for c in task_id if c.isalnum() or c in "-_") or "task"
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root)) if (root / name).exists() else root / name
    path.mkdir(mode=0o700, exist_ok=True)
    return path


# The command's shell waits on a pipe (its stdin) until the worker has noted its process group (for a cancel)
# and told its helper (for the worker's death), then becomes ``/bin/sh -c <command>`` (same pid and
# group). Should the worker die before that, the pipe closes unread and the command never runs.
_GATED = 'IFS= read -r _ || exit 125; exec /bin/sh -c "$0" </dev/null'


def _tail(f: IO[bytes], limit: int) -> tuple[bytes, int]:
    total = f.seek(0, os.SEEK_END)
    f.seek(max(0, total - limit))
    return f.read(limit), total


def run(fn: shell.ShellFunction, args: list[Any], kwargs: dict[str, Any], task_id: str,
        walltime: float | None = None, control_dir: str | None = None) -> dict[str, Any]:
    """Run the shell function's command with these arguments; the result dict of
    :func:`fnserve.shell.result`. ``walltime``: the task's own, when shorter than the function's.

    Bad arguments raise :class:`fnserve.shell.ShellArgumentError` (the task fails with its code).
    """
    spec = fn.spec
    words = shell.check_arguments(spec.command, args, kwargs)
    command = spec.command.format(**words)
    limits = [w for w in (spec.walltime, walltime) if w]
    timeout = min(limits) if limits else None
    cwd = sandbox_dir(task_id) if spec.sandbox else None
    env = {**os.environ, **({"FNSERVE_SANDBOX": str(cwd)} if cwd else {}), "FNSERVE_TASK_ID": task_id}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        gate, opened = os.pipe()
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", _GATED, command], stdin=gate, stdout=out, stderr=err,
                                    cwd=cwd, env=env, start_new_session=True)
        finally:
            os.close(gate)
        try:
            note = running.mark_group(control_dir, task_id, proc.pid)  # a cancel kills the group too
            watchdog.guard_group(proc.pid)  # and so does this worker's death (its pool killed, say)
            os.write(opened, b"\n")  # only now may the command start: nothing it starts goes unguarded
        finally:
            os.close(opened)
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        except BaseException:
            _kill_group(proc)  # the worker is being stopped (cancel, its own walltime): take the command along
            raise
        finally:
            if timed_out:
                _kill_group(proc)
            watchdog.guard_group(0)
        _kill_group(proc, only_leftovers=True)
        if note:
            with contextlib.suppress(OSError):
                os.unlink(note)
        limit = spec.max_output_bytes
        return shell.result(proc.returncode, _tail(out, limit), _tail(err, limit), command=command,
                            sandbox=str(cwd) if cwd else None, timed_out=timed_out)


def _kill_group(proc: subprocess.Popen[bytes], only_leftovers: bool = False) -> None:
    """SIGKILL the command's process group (what it started in the background too), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if not only_leftovers:
        proc.wait()

"""Walltime enforced from outside the task (pure logic; the site manager does the I/O).

The node manager stops a task at its walltime from inside (SIGALRM raising a BaseException),
which a function can defeat: by ignoring SIGALRM, by catching BaseException in a loop, or by
sitting in a C call that never checks signals. So the site manager watches too: each worker
notes the task it runs in the control directory when it starts it (``node_manager.running``;
the note's mtime is the start), and a task still running ``grace`` seconds past its walltime has
its worker process killed (SIGKILL, which nothing in the task can catch). The task fails at once
with ``walltime_exceeded`` and is not retried; Parsl's worker pool starts a fresh worker.

Like cancelling, this reaches workers in the site manager's PID namespace: local blocks, batch
blocks on the same host, and host, venv, Charliecloud and Apptainer runtimes. Elsewhere (podman
or Docker containers, other nodes) the in-process limit applies alone.
"""

from __future__ import annotations

from fnserve.messages import RemoteError, ResultMessage

DEFAULT_GRACE = 5.0


def overdue(started: dict[str, float], walltimes: dict[str, float], now: float, grace: float) -> list[str]:
    """Tasks whose worker must be killed: started at ``started[t]`` and still running at
    ``now``, past ``walltimes[t] + grace``.

    >>> overdue({"a": 100.0, "b": 100.0}, {"a": 1.0, "b": 60.0}, now=107.0, grace=5.0)
    ['a']
    """
    return sorted(t for t, at in started.items() if t in walltimes and now - at > walltimes[t] + grace)


def walltime_result(task_id: str, walltime: float, grace: float, timings: dict[str, float] | None = None) -> ResultMessage:
    """The result of a task whose worker was killed for running past its walltime."""
    return ResultMessage(task_id=task_id, ok=False, timings=dict(timings or {}), error=RemoteError(
        code="walltime_exceeded", type="WalltimeExceeded",
        message=f"task ran longer than its walltime of {walltime:g} s and did not stop within {grace:g} s more; "
                "its worker process was killed"))


__all__ = ["DEFAULT_GRACE", "overdue", "walltime_result"]

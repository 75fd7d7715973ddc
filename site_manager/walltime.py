"""Walltime enforced from outside the task (pure logic; the site manager does the I/O).

The node manager stops a task at its walltime from inside (SIGALRM raising a BaseException),
which a function can defeat: by ignoring SIGALRM, by catching BaseException in a loop, or by
sitting in a C call that never checks signals. So the site manager watches too: each worker
notes the task it runs in the control directory when it starts it (``node_manager.running``;
the note's mtime is the start), and a task still running ``grace`` seconds past its walltime has
its worker process killed (SIGKILL, which nothing in the task can catch). The task fails at once
with ``walltime_exceeded`` and is not retried; Parsl's worker pool starts a fresh worker.

Like cancelling, this reaches workers in the site manager's PID namespace: local blocks, batch
blocks on the same host, and host, venv, Charliecloud and Apptainer runtimes. Everywhere (podman
or Docker containers and other nodes included) each worker also has a watchdog process beside it
(``node_manager.watchdog``) that SIGKILLs it at walltime + grace; the site manager then sees the
worker lost, and :func:`lost_past_walltime` tells that loss from others: a task whose worker was
lost after it had run past walltime + grace failed ``walltime_exceeded``, and is not retried.
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


# Clocks of other nodes may differ a little from ours: a loss this close to the deadline counts.
CLOCK_SLACK = 1.0


def lost_past_walltime(started_at: float | None, walltime: float | None, grace: float, now: float,
                       slack: float = CLOCK_SLACK) -> bool:
    """Whether a task whose worker was lost at ``now`` had run past its walltime + grace (so
    its watchdog killed it, or would have): ``started_at`` is the time of its start marker.

    >>> lost_past_walltime(100.0, 1.0, 5.0, now=106.2)
    True
    >>> lost_past_walltime(100.0, 1.0, 5.0, now=103.0), lost_past_walltime(None, 1.0, 5.0, now=500.0)
    (False, False)
    """
    if started_at is None or not walltime or walltime <= 0:
        return False
    return now - started_at >= walltime + grace - slack


def walltime_result(task_id: str, walltime: float, grace: float, timings: dict[str, float] | None = None) -> ResultMessage:
    """The result of a task whose worker was killed for running past its walltime."""
    return ResultMessage(task_id=task_id, ok=False, timings=dict(timings or {}), error=RemoteError(
        code="walltime_exceeded", type="WalltimeExceeded",
        message=f"task ran longer than its walltime of {walltime:g} s and did not stop within {grace:g} s more; "
                "its worker process was killed"))


__all__ = ["CLOCK_SLACK", "DEFAULT_GRACE", "lost_past_walltime", "overdue", "walltime_result"]

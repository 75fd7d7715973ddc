"""A worker pool's processes end with the pool, whatever ends it (``kill -9`` of its pid too).

Parsl's worker pool starts its workers, and the ``multiprocessing`` Manager server that holds
their shared task table, with the ``spawn`` context. Nothing ties them to the pool: a worker
checks the pool's pid only between tasks (a busy one runs its task to the end), and the Manager
server never does. A pool killed alone (the OOM killer, an admin's ``kill -9``) left them running
as orphans: under Slurm with ``proctrack/linuxproc`` they escape the job's tracking and held the
job COMPLETING for about a minute, so the block's replacement waited (74 s to recovery).

:func:`die_with_pool` wraps the spawn context's ``Process`` in the pool process (an entry-point
hook: no Parsl code is copied or changed) so that each child first asks the kernel for SIGKILL
when the pool dies (``PR_SET_PDEATHSIG``, :func:`node_manager.parent_watch.die_with_parent`) and
then runs what Parsl asked for; a worker first does its first task's one-time work
(:mod:`node_manager.warm_up`), so that a hot spare's first call costs what a warm one does.
The signal is exact and immediate: the child is the pool's direct child, started from a thread
that lives as long as the pool (the main thread, or Parsl's worker watchdog thread for a
replacement worker, which ends only when the pool stops and kills its workers anyway). A child that finds its pool already gone when it starts exits at once.

What a task started below a worker is covered separately: a shell function's command runs in a
session of its own, which the worker's walltime helper kills when the worker dies
(:mod:`node_manager.watchdog`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any


def _child(pool: int, target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    from node_manager import parent_watch, warm_up

    parent_watch.die_with_parent(pool)  # exits at once if the pool is already gone
    if warm_up.wanted(target, os.environ):
        # A worker: its first task's one-time work now, before it takes a task.
        warm_up.run(warm_up.worker_arguments(target, args, kwargs))
    return target(*args, **kwargs)


def die_with_pool(ctx: Any) -> None:
    """Make every process started through ``ctx.Process`` (a multiprocessing context) from now on
    get SIGKILL when this process dies."""
    from node_manager import warm_up

    process_class = type(ctx).Process
    pool = os.getpid()

    def process(group: None = None, target: Callable[..., Any] | None = None, name: str | None = None,
                args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, **other: Any) -> Any:
        if target is None:
            return process_class(group=group, name=name, args=args, kwargs=kwargs or {}, **other)
        if warm_up.wanted(target, os.environ):  # a worker: the pool's first task is put by a running feeder
            warm_up.start_feeder(warm_up.worker_arguments(target, tuple(args), kwargs or {}).get("task_queue"))
        return process_class(group=group, target=_child, name=name,
                             args=(pool, target, tuple(args), dict(kwargs or {})), **other)

    ctx.Process = process

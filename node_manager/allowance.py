"""What a task that asked for cores sees of its worker's node: that many CPUs, no more.

A task with ``resource_specification: {"cores": N}`` runs with its CPU affinity narrowed to N of
the CPUs its worker may use (worker k of a node starts at its k-th share, so that tasks on the
workers of one node do not pile onto the same CPUs) and the usual thread-count variables set
to N, so that OpenMP, BLAS and ``os.sched_getaffinity`` based pools size themselves to what was
asked. Both are put back when the task ends (the worker runs other tasks afterwards).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, MutableMapping
from typing import Any

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def cpus_for(cores: float, available: set[int], worker: int = 0) -> set[int]:
    """The CPUs a task asking for ``cores`` gets of ``available`` on worker number ``worker`` of
    its node: ``ceil(cores)`` of them from the worker's share on (all of them when it asked for
    more than there are: the endpoint refuses that before).

    >>> sorted(cpus_for(2, {0, 1, 2, 3})), sorted(cpus_for(2, {0, 1, 2, 3}, worker=1))
    ([0, 1], [2, 3])
    """
    ordered = sorted(available)
    n = min(max(1, math.ceil(cores)), len(ordered))
    start = (worker * n) % len(ordered)
    return set((ordered + ordered)[start:start + n])


@contextlib.contextmanager
def narrowed(spec: dict[str, Any] | None, env: MutableMapping[str, str] = os.environ) -> Iterator[None]:
    cores = (spec or {}).get("cores")
    if not isinstance(cores, (int, float)) or isinstance(cores, bool) or cores <= 0 or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before_cpus = os.sched_getaffinity(0)
    rank = env.get("PARSL_WORKER_RANK", "0")  # set by Parsl's worker pool, per worker
    mine = cpus_for(cores, before_cpus, int(rank) if rank.isdigit() else 0)
    before_env = {k: env.get(k) for k in THREAD_VARIABLES}
    os.sched_setaffinity(0, mine)
    env.update(dict.fromkeys(THREAD_VARIABLES, str(len(mine))))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before_cpus)
        for k, v in before_env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v

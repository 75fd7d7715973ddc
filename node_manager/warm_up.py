"""A worker's first-task work, done as the worker starts: a hot spare's first call costs a warm one.

Parsl's worker pool spawns each worker as a new interpreter, and the worker did three things on
its *first* task only, while the task waited (measured in a worker at load 8-12 on 2 cores):

- import the task runner (:mod:`node_manager.execute`: Parsl imports a task executor by name
  when the first task names it): 12-130 ms. Since workers start through
  :mod:`node_manager.pool_children` (whose package imports it) this was already done at start;
  it stays here so that it does not hang on that;
- start the fd-capture helper (:mod:`node_manager.fd_capture`), a ``python -S`` process, and
  wait for it to answer at the task's end: 30-100 ms;
- create the ZMQ context's I/O thread for the outputs channel (:mod:`fnserve.outputs`): 10 ms.

:func:`run` does them in each worker before it takes a task (it runs in the spawned child before
Parsl's worker loop: :mod:`node_manager.pool_children`). It is bounded: an import and two local
starts, no task and no network, so it cannot stay outstanding like a warm-up task would (a
runtime whose container never starts would keep asking for blocks); each step that fails is
left to the first task, which does it again and reports the failure as before.
``FNSERVE_WORKER_PRELOAD=0`` in a runtime's ``env`` turns it off (to measure the difference).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

ENV = "FNSERVE_WORKER_PRELOAD"
# The function Parsl's pool runs in each worker process (its Manager server runs another).
WORKER_TARGET = "worker"


def wanted(target: Callable[..., Any] | None, env: Mapping[str, str]) -> bool:
    """Whether a process the pool starts with ``target`` is a worker to warm up (pure).

    >>> def worker(): pass
    >>> def _run_server(): pass
    >>> wanted(worker, {}), wanted(_run_server, {}), wanted(worker, {"FNSERVE_WORKER_PRELOAD": "0"})
    (True, False, False)
    """
    return getattr(target, "__name__", None) == WORKER_TARGET and env.get(ENV, "1") != "0"


def run() -> list[str]:
    """Do the first task's one-time work now; returns the steps that succeeded."""
    done = []
    with contextlib.suppress(Exception):
        import node_manager.execute  # noqa: F401 - what Parsl imports on the first task

        done.append("import")
    with contextlib.suppress(Exception):
        from node_manager import fd_capture

        if fd_capture.start_helper() is not None:
            done.append("fd_capture")
    with contextlib.suppress(Exception):
        import zmq

        zmq.Context.instance().socket(zmq.PUSH).close(linger=0)  # starts the context's I/O thread
        done.append("zmq")
    return done

"""A worker's first-task work, done as the worker starts: a hot spare's first call costs a warm one.

Parsl's worker pool spawns each worker as a new interpreter, and the worker did five things on
its *first* task only, while the task waited (measured in a worker at load 8-12 on 2 cores):

- import the task runner (:mod:`node_manager.execute`: Parsl imports a task executor by name
  when the first task names it): 12-130 ms. Since workers start through
  :mod:`node_manager.pool_children` (whose package imports it) this was already done at start;
  it stays here so that it does not hang on that;
- start the fd-capture helper (:mod:`node_manager.fd_capture`), a ``python -S`` process, and
  wait for it to answer at the task's end: 30-100 ms;
- create the ZMQ context's I/O thread for the outputs channel (:mod:`fnserve.outputs`): 10 ms;
- connect to the pool's ``multiprocessing`` Manager server, which holds the pool's shared task
  table: Parsl's worker writes ``tasks_in_progress[worker_id] = task`` as it takes each task, and
  the proxy's first call in a process opens its connection (a new socket, two authentication
  exchanges and a thread started in the server) while the task waits;
- start its result queue's feeder thread (``multiprocessing.Queue`` starts it on the first
  ``put``, the first result's); the pool does the same for its task queue as it starts its
  workers (:mod:`node_manager.pool_children`): its first ``put`` is the first task's.

:func:`run` does them in each worker before it takes a task (it runs in the spawned child before
Parsl's worker loop: :mod:`node_manager.pool_children`). It is bounded: an import, two local
starts, one read of the pool's task table and a thread started, no task and no network, so it
cannot stay outstanding like a warm-up task would (a
runtime whose container never starts would keep asking for blocks); each step that fails is
left to the first task, which does it again and reports the failure as before.
``FNSERVE_WORKER_PRELOAD=0`` in a runtime's ``env`` turns it off (to measure the difference).
"""

from __future__ import annotations

import contextlib
import inspect
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


def worker_arguments(target: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments Parsl starts its worker with, by parameter name ({} if they do not fit).

    >>> def worker(worker_id, result_queue, tasks_in_progress=None): pass
    >>> sorted(worker_arguments(worker, (0, "q"), {}).items())
    [('result_queue', 'q'), ('worker_id', 0)]
    >>> worker_arguments(worker, (), {})
    {}
    """
    try:
        return dict(inspect.signature(target).bind(*args, **kwargs).arguments)
    except (TypeError, ValueError):
        return {}


def run(shared: Mapping[str, Any] | None = None) -> list[str]:
    """Do the first task's one-time work now; returns the steps that succeeded. ``shared``: the
    worker's arguments (:func:`worker_arguments`): the pool's task table and result queue."""
    shared = shared or {}
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
    table = shared.get("tasks_in_progress")
    if table is not None:
        with contextlib.suppress(Exception):
            len(table)  # a read: opens this process's connection to the Manager server
            done.append("task_table")
    if start_feeder(shared.get("result_queue")):
        done.append("result_queue")
    return done


def start_feeder(queue: Any) -> bool:
    """Start a ``multiprocessing.Queue``'s feeder thread now, exactly as its first ``put`` does
    (under its lock, only if none runs), and send nothing; whether one runs now. ``Queue`` has no
    public way to do this: a ``put`` would hand the other side an item (for the pool's task
    queue, a task), so this takes the steps ``put`` takes, and does nothing where they differ."""
    lock, start = getattr(queue, "_notempty", None), getattr(queue, "_start_thread", None)
    if lock is None or start is None or not hasattr(queue, "_thread"):
        return False
    try:
        with lock:
            if queue._thread is None:
                start()
    except Exception:  # noqa: BLE001 - left to the first put, as before
        return False
    return queue._thread is not None

"""Entry point of a worker pool inside a runtime: ``python -m node_manager.pool ARGS``.

Runs Parsl's ``process_worker_pool`` with the same arguments, after checking that this
interpreter has what a worker needs, so that a container or venv without fnserve or Parsl
fails with a message naming the interpreter and the fix (the site manager reports the last
lines of a block's stderr when its workers never connect).

Two more things a pool started here does:

- it ends with its site manager when that one runs on this host (:mod:`node_manager.parent_watch`):
  the whole process group of the block goes (the pool and its workers), so no worker keeps
  running tasks that the restarted site manager gets again;
- its worker watchdog (Parsl's, paced by ``--hb_period``) checks every ``WORKER_CHECK`` s at most,
  so a worker killed by a cancel or a crash is replaced at once, not at the next 30 s heartbeat;
- its workers (and Parsl's Manager server) die with it, however it ends (a ``kill -9`` of the pool
  alone too): :mod:`node_manager.pool_children`;
- it ends when its interchange has not answered for ``INTERCHANGE_SILENCE`` s (``--hb_threshold``
  capped): the interchange answers each heartbeat (every ``WORKER_CHECK`` s), and it dies with its
  site manager, so a pool on another node (which cannot watch the site manager's pid) ends within
  that time of a site manager's death instead of the endpoint's ``heartbeat_threshold`` (120 s by
  default). Ten missed answers in a row is far beyond what a busy interchange takes to answer one;
- Parsl's file logger keeps the pool's logger at DEBUG and filters at the handler, so the pool
  built a log record for each debug line on its per-task path (about 60 % of the manager's
  busy samples in a py-spy profile of warm calls); unless the pool runs with ``--debug`` (HTEX's
  ``worker_debug``) or ``FNSERVE_WORKER_POOL_DEBUG=1``, ``logging.disable(DEBUG)`` drops them
  before a record is built, as :mod:`site_manager.interchange` does for the interchange. INFO
  lines (what the manager log and :class:`IdleWorkerDeath` need) stay;
- it, its workers and Parsl's Manager server import only the Parsl modules a pool uses (not
  Parsl's package inits, which import all of Parsl): :mod:`node_manager.light_parsl`;
- a worker that dies while idle ends the whole pool (:class:`IdleWorkerDeath`): an idle worker
  waits in ``multiprocessing.Queue.get`` holding the pool's task-queue lock, so once it is killed
  (the OOM killer, an admin's ``kill -9``) no other worker of the pool can take a task again, and
  Parsl, which sees no task lost, would leave every queued task hung. The site manager notices
  the dead pool within a heartbeat and hands its queued tasks to a new one, once each.
"""

from __future__ import annotations

import logging
import os
import runpy
import signal
import sys
from collections.abc import Callable

# Seconds between the worker pool's checks for dead workers (and its heartbeats to the interchange).
WORKER_CHECK = 1
# Seconds without an answer from the interchange after which the pool ends (and its workers).
INTERCHANGE_SILENCE = 10


def paced(argv: list[str], period: int = WORKER_CHECK, silence: int = INTERCHANGE_SILENCE) -> list[str]:
    """``argv`` with ``--hb_period`` at most ``period`` and ``--hb_threshold`` (how long the pool
    waits for its interchange) at most ``silence`` (pure).

    >>> paced(["-p", "0", "--hb_period=30", "--hb_threshold=120"])
    ['-p', '0', '--hb_period=1', '--hb_threshold=10']
    >>> paced(["--hb_period=1", "--hb_threshold=4"])
    ['--hb_period=1', '--hb_threshold=4']
    """
    caps = {"--hb_period": period, "--hb_threshold": silence}
    out = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in caps and value.isdigit():
            arg = f"{key}={min(int(value), caps[key])}"
        out.append(arg)
    return out


def debug_records_wanted(argv: list[str], env: dict[str, str]) -> bool:
    """Whether the pool should build its DEBUG log records (pure).

    >>> debug_records_wanted(["-c", "1.0"], {}), debug_records_wanted(["--debug"], {}), debug_records_wanted([], {"FNSERVE_WORKER_POOL_DEBUG": "1"})
    (False, True, True)
    """
    return "--debug" in argv or "-d" in argv or bool(env.get("FNSERVE_WORKER_POOL_DEBUG"))


# What Parsl's worker watchdog logs when a worker died with no task on it (process_worker_pool).
IDLE_DEATH = "was not busy when it died"
POOL_LOGGER = "parsl.executors.high_throughput.process_worker_pool"


def is_idle_death(message: str) -> bool:
    """Whether a worker-pool log line says a worker died while idle (pure).

    >>> is_idle_death("Worker 1 was not busy when it died"), is_idle_death("Worker 1 was busy when it died")
    (True, False)
    """
    return IDLE_DEATH in message


class IdleWorkerDeath(logging.Handler):
    """Ends the pool (``on_death``) when Parsl's watchdog reports a worker that died idle."""

    def __init__(self, on_death: Callable[[], None]) -> None:
        super().__init__(logging.INFO)
        self.on_death = on_death

    def emit(self, record: logging.LogRecord) -> None:
        if is_idle_death(record.getMessage()):
            sys.stderr.write("fnserve worker pool: a worker died while idle (it may hold the task queue's lock); "
                             "ending the pool so that its site manager starts a new one\n")
            self.on_death()


def _end_block() -> None:
    # The site manager is gone: end this pool and its workers, the block's process group (a local
    # block runs in a group of its own). PID 1 of a container takes its namespace with it.
    try:
        if os.getpid() != 1:
            os.killpg(os.getpgrp(), signal.SIGKILL)
    finally:
        os._exit(0)


def main() -> None:
    import importlib.util

    from node_manager import light_parsl

    light_parsl.skip_package_inits()  # Parsl's package inits import all of Parsl: 3x the import time
    try:
        import node_manager.execute  # noqa: F401 - what each task runs
        # Found, not imported: runpy below runs it as __main__.
        if importlib.util.find_spec("parsl.executors.high_throughput.process_worker_pool") is None:
            raise ImportError(name="parsl")
    except ImportError as exc:
        sys.stderr.write(
            f"fnserve worker pool: {sys.executable} (Python {sys.version.split()[0]}) cannot import "
            f"{exc.name or exc}: install fnserve[site] into this runtime\n"
        )
        sys.exit(3)
    if os.getpid() == 1:
        # PID 1 of a container (podman/docker): the kernel ignores signals it has no handler
        # for, so Parsl's scale-in (SIGTERM through `podman run`) would leave the pool running.
        # Exiting here ends the container and, with it, every worker in its PID namespace.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: os._exit(0))
    # Worker logs land in the endpoint's run dir (bind-mounted into containers): private.
    os.umask(0o077)
    from node_manager import parent_watch, pool_children
    from parsl.multiprocessing import SpawnContext

    pool_children.die_with_pool(SpawnContext)  # the workers Parsl starts die with this pool
    light_parsl.light_children()  # and import no more of Parsl than this pool did
    parent_watch.watch(_end_block)
    logging.getLogger(POOL_LOGGER).addHandler(IdleWorkerDeath(_end_block))
    if not debug_records_wanted(sys.argv[1:], dict(os.environ)):
        logging.disable(logging.DEBUG)
    sys.argv[1:] = paced(sys.argv[1:])
    sys.argv[0] = "process_worker_pool.py"
    runpy.run_module("parsl.executors.high_throughput.process_worker_pool", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

"""Entry point of a worker pool inside a runtime: ``python -m node_manager.pool ARGS``.

Runs Parsl's ``process_worker_pool`` with the same arguments, after checking that this
interpreter has what a worker needs, so that a container or venv without fnserve or Parsl
fails with a message naming the interpreter and the fix (the site manager reports the last
lines of a block's stderr when its workers never connect).
"""

from __future__ import annotations

import os
import runpy
import signal
import sys


def main() -> None:
    import importlib.util

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
    sys.argv[0] = "process_worker_pool.py"
    runpy.run_module("parsl.executors.high_throughput.process_worker_pool", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

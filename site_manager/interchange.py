"""The HTEX interchange as the site manager starts it: Parsl's own, with DEBUG records off.

    python -m site_manager.interchange     (HTEX's ``interchange_launch_cmd``; config on stdin)

Parsl's file logger sets the interchange's logger to DEBUG and filters at the handler, so the
interchange builds a log record for every debug line on its per-task path: about a quarter of
its CPU under a throughput run (py-spy). ``logging.disable(DEBUG)`` drops those calls before a
record is built; then Parsl's interchange module runs exactly as its ``interchange.py`` script
would. Set ``FNSERVE_INTERCHANGE_DEBUG=1`` in the site manager's environment to keep them.

It imports only the Parsl modules the interchange uses (:mod:`node_manager.light_parsl`).

The interchange ends with its site manager (:mod:`node_manager.parent_watch`): a site manager
killed with SIGKILL leaves no interchange behind, still queueing or dispatching its tasks.
"""

from __future__ import annotations

import logging
import os
import runpy
import socket
import sys

INTERCHANGE_MODULE = "parsl.executors.high_throughput.interchange"
LAUNCH_CMD = [sys.executable, "-m", "site_manager.interchange"]


def main() -> None:
    from node_manager import light_parsl, parent_watch

    light_parsl.skip_package_inits()  # Parsl's package inits import all of Parsl: 3x the import time
    parent = parent_watch.parse(os.environ.get(parent_watch.ENV, ""), socket.gethostname())
    if parent is not None and parent[0] == os.getppid():
        parent_watch.die_with_parent(parent[0])
    parent_watch.watch(lambda: os._exit(0))
    if not os.environ.get("FNSERVE_INTERCHANGE_DEBUG"):
        logging.disable(logging.DEBUG)
    sys.argv[0] = "interchange.py"
    runpy.run_module(INTERCHANGE_MODULE, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

"""The integration tests' use of the shared stack harness (fnserve/testing/stack.py).

Their CLI commands run from the repository (they name files as ``examples/functions.py``);
:func:`peak_rss_split` reads what a stack's processes use.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fnserve.testing import stack as harness
from fnserve.testing.stack import Stack

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def running_stack(home: Path, database_url: str | None = None, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """`fnserve up` in ``home`` (registry on SQLite unless ``database_url``; ``extra_env`` for
    every process it starts), commands run from the repository; `fnserve down` after."""
    with harness.running_stack(home, database_url=database_url, extra_env=extra_env, cwd=REPO) as stack:
        yield stack


def peak_rss_split(stack: Stack) -> tuple[dict[str, float], dict[str, float]]:
    """Peak RSS (VmHWM, MiB) of the stack's processes, split into those that only move bytes
    (web, forwarder, Redis, triggers, site manager, interchange, worker pool) and the HTEX
    workers (a worker pool's children), which compute on whole objects. Keys: command lines."""
    from fnserve.cli.processes import (
        command_line,
        is_htex_worker,
        peak_rss_mib,
        process_tree,
        recorded_pid,
        tagged_processes,
    )

    # The pid files' trees, and the processes carrying the stack's tag (the worker pool is
    # started detached by Parsl's provider, so it is no child of the site manager).
    roots = [recorded_pid(f) for f in stack.home.rglob("*.pid")]
    tree = {p for root in roots if root is not None for p in process_tree(root)}
    tree |= set(tagged_processes(f"{stack.home}{os.sep}", prefix=True))
    movers: dict[str, float] = {}
    workers: dict[str, float] = {}
    for p in tree:
        mib = peak_rss_mib(p)
        if mib is not None:
            (workers if is_htex_worker(p) else movers)[f"{p} {command_line(p)[:70]}"] = mib
    return movers, workers

"""The peers fnserve is measured against, set up the same way in every benchmark.

* bare Parsl ``HighThroughputExecutor`` on ``LocalProvider`` (one block, ``workers`` workers), no
  DataFlowKernel: what fnserve's site manager runs tasks on, without anything in front of it;
* Parsl's DataFlowKernel over the same HTEX (``parsl.load`` + ``@python_app``): what Parsl users
  write, with Parsl's own task bookkeeping in front of the executor;
* Dask distributed ``LocalCluster`` with ``workers`` single-threaded worker processes;
* ``concurrent.futures.ProcessPoolExecutor`` with ``workers`` processes: the local floor (no
  network hop, no service; a pickle through a pipe each way).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# Peer workers import benchmark functions by module name: let them find this folder.
_HERE = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_HERE, os.environ.get("PYTHONPATH", "")) if p)


@contextmanager
def bare_htex(workers: int, encrypted: bool = False) -> Iterator[Any]:
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    run_dir = tempfile.mkdtemp(prefix="htex-bench-")
    ex = HighThroughputExecutor(label="bench", provider=LocalProvider(init_blocks=1, min_blocks=0, max_blocks=1),
                                max_workers_per_node=workers, encrypted=encrypted)
    ex.run_dir = run_dir
    ex.provider.script_dir = run_dir
    ex.start()
    ex.scale_out_facade(1)
    try:
        # Warm: every worker has run something.
        for f in [ex.submit(_noop, {}) for _ in range(4 * workers)]:
            f.result(timeout=120)
        yield ex
    finally:
        _cancel_blocks(ex)
        ex.shutdown()


@contextmanager
def parsl_dfk(workers: int) -> Iterator[Any]:
    """Yields ``submit(fn, *args) -> Future`` through Parsl's DataFlowKernel (``@python_app``)."""
    import parsl
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    run_dir = tempfile.mkdtemp(prefix="dfk-bench-")
    config = Config(executors=[HighThroughputExecutor(label="dfk", max_workers_per_node=workers, encrypted=False,
                                                      provider=LocalProvider(init_blocks=1, min_blocks=0, max_blocks=1))],
                    run_dir=run_dir, strategy="none", initialize_logging=False, usage_tracking=0)
    dfk = parsl.load(config)
    apps: dict[Any, Any] = {}

    def submit(fn: Any, *args: Any) -> Any:
        app = apps.get(fn)
        if app is None:
            app = apps[fn] = parsl.python_app(fn, executors=["dfk"])
        return app(*args)

    try:
        for f in [submit(_noop) for _ in range(4 * workers)]:
            f.result(timeout=120)
        yield submit
    finally:
        _cancel_blocks(dfk.executors["dfk"])
        dfk.cleanup()


@contextmanager
def process_pool(workers: int) -> Iterator[Any]:
    """A warm ``ProcessPoolExecutor`` (forked workers, every one has run something)."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        for f in [pool.submit(_noop) for _ in range(4 * workers)]:
            f.result(timeout=60)
        yield pool


@contextmanager
def dask_client(workers: int) -> Iterator[Any]:
    import logging

    from dask.distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    try:
        client.gather(client.map(_noop, range(4 * workers), pure=False))
        yield client
    finally:
        client.close()
        cluster.close()


def _cancel_blocks(ex: Any) -> None:
    """End the executor's worker pools. ``HighThroughputExecutor.shutdown`` (and the DFK's
    cleanup) leave them to their heartbeat timeout: each pool polled a dead interchange for
    minutes after a run, CPU taken from whatever ran next on the machine."""
    job_ids = list(getattr(ex, "blocks_to_job_id", {}).values())
    if job_ids:
        try:
            ex.provider.cancel(job_ids)
        except Exception:  # noqa: BLE001, S110 - best effort; the heartbeat timeout still ends them
            pass


def _noop(*_: Any) -> None:
    return None

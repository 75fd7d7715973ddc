"""A hot spare counts as ready only once its worker has started (site.runtimes[...]["ready"]).

Parsl's worker pool registers with its interchange right after *spawning* its workers, so an
engine reports its workers while a new worker is still importing Parsl (seconds on a busy node):
a call made then waits for the worker (the Slurm benchmark's 1,975 ms hot-spare first call).
``workers_ready`` counts the workers that have opened their log, which each does as it enters
Parsl's worker loop. Real interchange and worker pool; the worker is held back 15 s at start by
a ``sitecustomize`` on the pool's PYTHONPATH (the pool and Parsl's Manager server are not).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from stack_support import REPO

from site_manager.config import EngineConfig, ProviderConfig, ScalingConfig
from site_manager.engine import Engine
from site_manager.engine_build import pool_launch_cmd

pytestmark = pytest.mark.integration

HOLD = 15
# Spawned children run with --multiprocessing-fork: the first is Parsl's Manager server, the
# next the worker (held back, as a slow import would).
SLOW_WORKER = f'''
import os, sys, time
if "--multiprocessing-fork" in sys.argv:
    marks = os.path.join(os.path.dirname(__file__), "children")
    os.makedirs(marks, exist_ok=True)
    if os.listdir(marks):
        open(os.path.join(os.path.dirname(__file__), "held"), "w").close()
        time.sleep({HOLD})
    open(os.path.join(marks, str(os.getpid())), "w").close()
'''


def _until(engine: Engine, check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        st = engine.status()
        if check(st):
            return st
        assert time.monotonic() < deadline, f"no {what} within {timeout} s: {st}"
        time.sleep(0.2)  # polling the engine as the site manager does at heartbeat pace


def test_a_pool_whose_worker_is_still_starting_reports_its_worker_but_not_as_ready(tmp_path: Path) -> None:
    from parsl.executors.high_throughput.executor import DEFAULT_LAUNCH_CMD

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_WORKER)
    cmd = f"env PYTHONPATH={site}:{REPO} " + pool_launch_cmd(DEFAULT_LAUNCH_CMD)
    engine = Engine(EngineConfig(max_workers_per_node=1, heartbeat_period=1), ProviderConfig(), tmp_path / "run",
                    scaling=ScalingConfig(init_blocks=1, min_blocks=1, max_blocks=1), launch_cmd=cmd)
    engine.start()
    try:
        # Registered, and its worker held back (it sleeps HOLD s from there).
        st = _until(engine, lambda s: s.workers >= 1 and (site / "held").exists(), 120, "registered, held worker")
        assert st.workers_ready == 0, "a worker still starting counted as ready"
        st = _until(engine, lambda s: s.workers_ready >= 1, 120, "ready worker")
        assert st.workers == 1
    finally:
        engine.shutdown()

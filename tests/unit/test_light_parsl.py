"""Parsl's worker pool and interchange start without importing the rest of Parsl (real
interpreters: each case runs in a fresh Python, as the pool and interchange do)."""

from __future__ import annotations

import json
import subprocess
import sys

from node_manager.light_parsl import CHILD_MAIN, POOL_MODULE, child_main

# What parsl/__init__.py and its re-exporting packages pull in that no pool or interchange uses.
HEAVY = ["parsl.dataflow.dflow", "parsl.monitoring.db_manager", "parsl.providers.slurm.slurm", "sqlalchemy"]
PROGRAM = """
import json, sys
from node_manager import light_parsl
skipped = light_parsl.skip_package_inits() if sys.argv[1] == "light" else False
import parsl.executors.high_throughput.process_worker_pool as pool
import parsl.executors.high_throughput.interchange as interchange
import parsl.utils
print(json.dumps({"skipped": skipped, "heavy": [m for m in sys.argv[2:] if m in sys.modules],
                  "ready": callable(pool.worker) and callable(interchange.Interchange), "version": parsl.utils.get_version()}))
"""


def _imports(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode, *HEAVY], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout)


def test_the_pool_and_interchange_modules_import_without_the_rest_of_parsl():
    light = _imports("light")
    assert light["skipped"] and light["ready"] and light["heavy"] == []
    assert light["version"]  # parsl.utils reads parsl.__version__
    assert _imports("full")["heavy"] == HEAVY  # what a plain import of the same modules costs


def test_the_pools_workers_load_the_light_main_module_and_its_manager_server_none():
    assert child_main(POOL_MODULE, "HTEX-Worker-1") == CHILD_MAIN
    assert child_main(POOL_MODULE, "SyncManager-1") is None  # multiprocessing's own code only
    assert child_main("some_script", "SyncManager-1") == "some_script"  # not a pool: as multiprocessing says


LAZY = """
import json, sys
from node_manager import light_parsl
light_parsl.skip_package_inits()
from parsl.executors import HighThroughputExecutor
from parsl.providers import SlurmProvider
from parsl.launchers import SrunLauncher
before = [m for m in sys.argv[1:] if m in sys.modules]
import parsl
auto = parsl.AUTO_LOGNAME  # not a re-export: the real parsl/__init__.py runs now
print(json.dumps({"before": before, "after": [m for m in sys.argv[1:] if m in sys.modules], "auto": auto,
                  "same": parsl.HighThroughputExecutor is HighThroughputExecutor}))
"""


def test_names_the_skipped_inits_export_import_alone_and_anything_else_runs_the_real_init():
    out = subprocess.run([sys.executable, "-c", LAZY, *HEAVY[:2]], capture_output=True, text=True, check=True,
                         timeout=120)
    seen = json.loads(out.stdout)
    assert seen["before"] == []  # the site manager's executor, provider and launcher without the rest
    # parsl/__init__.py ran (the DataFlowKernel, monitoring); each package it imports from resolves
    # its names the same lazy way.
    assert seen["auto"] == -1 and seen["after"] == HEAVY[:2] and seen["same"]

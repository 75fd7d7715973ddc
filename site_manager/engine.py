"""The engine: Parsl's HighThroughputExecutor, used directly (no DataFlowKernel).

Each task is submitted as its encoded :class:`~fnserve.messages.TaskMessage` with
``node_manager.execute.execute_task`` as Parsl's ``task_executor``, so the worker runs our
node manager on the bytes as they came from the forwarder and Parsl never pickles a function.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from site_manager.config import PROVIDERS, EngineConfig, ProviderConfig
from site_manager.status import EngineStatus, blocks_to_add, summarize

logger = logging.getLogger(__name__)

TASK_EXECUTOR = {"task_executor": {"f": "node_manager.execute.execute_task"}}


def make_provider(
    provider: ProviderConfig, engine: EngineConfig, script_dir: Path
) -> Any:
    """The Parsl provider object a config's ``provider`` section names."""
    module_name, _, class_name = PROVIDERS[provider.type].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    obj = cls(
        init_blocks=engine.init_blocks,
        min_blocks=engine.min_blocks,
        max_blocks=engine.max_blocks,
        **provider.options,
    )
    obj.script_dir = str(script_dir)
    return obj


def _prepare_environment() -> None:
    # HTEX starts interchange.py and process_worker_pool.py by name, and workers import
    # node_manager: make both findable for the processes the provider launches from here.
    bin_dir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "").split(os.pathsep)
    if bin_dir not in path:
        os.environ["PATH"] = os.pathsep.join([bin_dir, *path])
    spec = importlib.util.find_spec("node_manager")
    if spec is not None and spec.origin:
        root = str(Path(spec.origin).parent.parent)
        pythonpath = [
            p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p
        ]
        if root not in pythonpath:
            os.environ["PYTHONPATH"] = os.pathsep.join([root, *pythonpath])


class Engine:
    """Runs encoded task messages on a HighThroughputExecutor and reports its state.

    Example::

        engine = Engine(EngineConfig(max_workers_per_node=2), ProviderConfig(), Path("/tmp/ep"))
        engine.start()
        result_bytes = engine.submit(encode_task(task)).result()
        engine.shutdown()
    """

    def __init__(
        self,
        engine: EngineConfig,
        provider: ProviderConfig,
        run_dir: Path,
        label: str = "fnserve",
    ) -> None:
        self.config = engine
        self.provider_config = provider
        self.run_dir = run_dir
        self.label = label
        self._executor: Any = None

    def start(self) -> None:
        """Start the interchange and the configured initial blocks."""
        from parsl.executors import HighThroughputExecutor

        _prepare_environment()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        script_dir = self.run_dir / "submit_scripts"
        script_dir.mkdir(exist_ok=True)
        ex = HighThroughputExecutor(
            label=self.label,
            provider=make_provider(self.provider_config, self.config, script_dir),
            max_workers_per_node=self.config.max_workers_per_node,
            heartbeat_period=self.config.worker_heartbeat_period,
            heartbeat_threshold=self.config.worker_heartbeat_threshold,
            encrypted=False,
        )
        ex.run_dir = str(self.run_dir)
        ex.start()
        self._executor = ex
        if self.config.init_blocks:
            ex.scale_out_facade(self.config.init_blocks)
        logger.info("engine started: %r", ex.provider)

    def submit(self, task_bytes: bytes) -> Future[bytes]:
        """Run one encoded task message; the future's result is the encoded result message."""
        future: Future[bytes] = self._executor.submit_payload(TASK_EXECUTOR, task_bytes)
        self.scale()
        return future

    def scale(self) -> int:
        """Start blocks if fewer are alive than needed; returns how many were started."""
        ex = self._executor
        states = [s.state.name for s in ex.status_facade.values()]
        pending, running = states.count("PENDING"), states.count("RUNNING")
        n = blocks_to_add(
            pending + running,
            ex.outstanding(),
            self.config.min_blocks,
            self.config.max_blocks,
        )
        if n:
            logger.info("starting %d block(s)", n)
            ex.scale_out_facade(n)
        return n

    def status(self) -> EngineStatus:
        """Blocks, workers and tasks right now (asks the interchange: call at heartbeat pace)."""
        ex = self._executor
        # A failing batch system or interchange must not stop heartbeats: report what we know.
        try:
            ex.poll_facade()  # refreshes block states at the provider's own polling interval
        except Exception as exc:  # noqa: BLE001
            logger.warning("cannot poll block states: %s", exc)
        try:
            managers = ex.connected_managers()
        except Exception as exc:  # noqa: BLE001
            logger.warning("cannot list worker managers: %s", exc)
            managers = []
        return summarize(
            (s.state.name for s in ex.status_facade.values()),
            managers,
            ex.outstanding(),
        )

    def shutdown(self) -> None:
        """Stop the blocks and the interchange."""
        ex = self._executor
        if ex is None:
            return
        self._executor = None
        try:
            job_ids = [j for j in ex.blocks_to_job_id.values() if j is not None]
            if job_ids:
                ex.provider.cancel(job_ids)
        except Exception:
            logger.exception("cancelling blocks failed")
        ex.shutdown()
        logger.info("engine stopped")

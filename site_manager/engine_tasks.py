"""The tasks the site manager handed to its engine, and the block each started in.

A worker's start marker names the (runtime, block) it started a task in; a task whose block
ended (a Slurm job cancelled, a container gone) is failed at once as ``worker_lost`` (so re-run
within ``max_retries``), at heartbeat pace rather than after the interchange's
``heartbeat_threshold``.
"""

from __future__ import annotations

import contextlib
import logging
import platform
from concurrent.futures import Future, InvalidStateError

from fnserve.messages import TaskOutput
from site_manager.engine_like import EngineLike
from site_manager.failures import BlockLost
from site_manager.runtime_pool import RuntimePool
from site_manager.runtimes import HOST

logger = logging.getLogger("site_manager.manager")  # the loop's log lines, as before the split


class EngineTasks:
    """Futures of the tasks on the engine, by task id, and the block each started in."""

    def __init__(self) -> None:
        self.futures: dict[str, Future[bytes]] = {}
        self.blocks: dict[str, tuple[str, str]] = {}

    def add(self, task_id: str, future: Future[bytes]) -> None:
        self.futures[task_id] = future
        self.blocks.pop(task_id, None)  # a re-run: its new worker's start marker names its block

    def forget(self, task_id: str, future: Future[bytes]) -> None:
        if self.futures.get(task_id) is future:
            self.futures.pop(task_id, None)
            self.blocks.pop(task_id, None)

    def note_blocks(self, outputs: list[TaskOutput]) -> set[tuple[str, str]]:
        """Note the block each start marker names; returns the ``(runtime, block)`` pairs named."""
        named: set[tuple[str, str]] = set()
        for o in outputs:
            if o.kind == "start" and o.values.get("block") and o.task_id in self.futures:
                self.blocks[o.task_id] = where = (str(o.values.get("runtime") or HOST), str(o.values["block"]))
                named.add(where)
        return named

    def fail_those_of_ended_blocks(self, engine: EngineLike) -> None:
        """Fail (as worker_lost, so retried within max_retries) the tasks started in blocks that
        ended: at heartbeat pace, not after the interchange's heartbeat_threshold."""
        if not isinstance(engine, RuntimePool) or not self.blocks:
            return  # (the pool reports blocks by runtime, which the start markers name)
        ended = engine.ended_blocks()
        for task_id, where in list(self.blocks.items()):
            why = ended.get(where)
            future = self.futures.get(task_id)
            if why is None or future is None:
                continue
            self.blocks.pop(task_id, None)
            runtime, block = where
            job = engine.job_of(runtime, block)
            logger.warning("task %s: block %s of runtime %s (job %s) ended: %s; failing it now (re-run within max_retries)",
                           task_id, block, runtime, job, why)
            with contextlib.suppress(InvalidStateError):  # settled meanwhile by Parsl's thread
                future.set_exception(BlockLost(block, job, platform.node(), 0, why))

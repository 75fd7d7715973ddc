"""What the endpoint reports about itself, and how many blocks it should add (pure logic)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fnserve.messages import EndpointStatus


@dataclass(frozen=True)
class EngineStatus:
    """A snapshot of the engine: blocks by state, connected workers, and task counts."""

    blocks_pending: int = 0
    blocks_running: int = 0
    workers: int = 0
    tasks_queued: int = 0
    tasks_running: int = 0
    # Workers that have started (can take a task at once): ``workers`` counts a pool's workers as
    # soon as the pool registers, which Parsl's pool does right after spawning them.
    workers_ready: int = 0
    # Runtime name -> workers, blocks, tasks (and failed starts): see site_manager.runtime_pool.
    runtimes: dict[str, dict[str, int]] = field(default_factory=dict)


def count_blocks(states: Iterable[str]) -> tuple[int, int]:
    """(pending, running) from Parsl job state names such as ``"PENDING"``, ``"RUNNING"``."""
    states = list(states)
    return states.count("PENDING"), states.count("RUNNING")


def summarize(
    block_states: Iterable[str], managers: Iterable[dict[str, Any]], outstanding: int, include_held: bool = False
) -> EngineStatus:
    """Build an :class:`EngineStatus` from Parsl's view of blocks and worker managers.

    ``managers`` are the dicts of ``HighThroughputExecutor.connected_managers()``; a task a
    manager holds counts as running only up to its worker count (the rest are prefetched).
    ``outstanding`` is every task submitted and not finished, so queued is what is left.
    Held managers (Parsl's scale-in, or a stopping endpoint) count only with ``include_held``.
    """
    pending, running = count_blocks(block_states)
    live = [m for m in managers if include_held or m.get("active", True)]
    workers = sum(int(m.get("worker_count", 0)) for m in live)
    busy = sum(min(int(m.get("tasks", 0)), int(m.get("worker_count", 0))) for m in live)
    busy = min(busy, outstanding)
    return EngineStatus(pending, running, workers, outstanding - busy, busy)


def ready_workers(managers: Iterable[dict[str, Any]], started: Callable[[str, str], int]) -> int:
    """How many workers of ``managers`` (``connected_managers()`` dicts) have started (pure):
    ``started(block_id, manager_id)`` says how many of a pool's workers have left a start trace
    (each worker opens its log as it enters Parsl's worker loop, after :mod:`node_manager.warm_up`);
    never more than the pool's worker count.

    >>> ready_workers([{"block_id": "0", "manager": "ab", "worker_count": 2}, {"block_id": "1", "manager": "cd", "worker_count": 1}],
    ...               lambda b, m: {"ab": 1, "cd": 3}[m])
    2
    """
    return sum(min(int(m.get("worker_count", 0)), started(str(m.get("block_id")), str(m.get("manager"))))
               for m in managers)


def endpoint_status(status: EngineStatus) -> EndpointStatus:
    """The wire message for a status snapshot."""
    return EndpointStatus(
        blocks_pending=status.blocks_pending,
        blocks_running=status.blocks_running,
        workers=status.workers,
        tasks_queued=status.tasks_queued,
        tasks_running=status.tasks_running,
        runtimes=dict(status.runtimes),
    )


def blocks_to_add(
    live_blocks: int, outstanding: int, min_blocks: int, max_blocks: int
) -> int:
    """How many blocks to start now.

    Keep at least ``min_blocks``; when tasks wait and no block is alive (a cold start, or every
    block was lost) start one, never going above ``max_blocks``.
    """
    want = min_blocks
    if outstanding > 0:
        want = max(want, 1)
    return max(0, min(want, max_blocks) - live_blocks)

"""Scaling decisions for an engine without a DataFlowKernel (pure logic, no Parsl, no clock).

The engine feeds in what it knows (block states from the provider, blocks whose workers are
connected, outstanding tasks, the time) and carries out the :class:`Decision`:

* a cold start (tasks wait, no block alive) starts a block at once;
* ``min_blocks`` are kept;
* once nothing has been queued or running for ``max_idletime`` seconds, blocks above
  ``min_blocks`` are cancelled: an idle endpoint gives its nodes back to the batch system;
* a block whose workers connected and then vanished is lost (``scancel``, node failure, walltime)
  even while the provider's last poll, which can be a minute old, still calls it running.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from site_manager.status import blocks_to_add

# Parsl JobState names after which a block never runs anything again.
TERMINAL_STATES = frozenset({"CANCELLED", "COMPLETED", "FAILED", "TIMEOUT", "MISSING", "SCALED_IN"})


@dataclass(frozen=True)
class BlockView:
    """Blocks by what they mean to scaling (lists of Parsl block ids)."""

    pending: tuple[str, ...] = ()  # submitted, workers not connected yet
    running: tuple[str, ...] = ()  # workers connected (or running by the provider's word)
    lost: tuple[str, ...] = ()  # workers connected once, now gone, provider not yet aware

    @property
    def live(self) -> int:
        return len(self.pending) + len(self.running)


def classify_blocks(
    states: Mapping[str, str], connected: Iterable[str], seen: Iterable[str]
) -> BlockView:
    """Sort non-terminal blocks into pending, running and lost.

    ``states``: block id -> Parsl job state name from the provider's last poll.
    ``connected``: blocks with a worker manager connected now. ``seen``: blocks that ever had one.
    """
    connected, seen = set(connected), set(seen)
    pending: list[str] = []
    running: list[str] = []
    lost: list[str] = []
    for block, state in sorted(states.items()):
        if state in TERMINAL_STATES:
            continue
        if block in connected:
            running.append(block)
        elif block in seen:
            lost.append(block)
        elif state == "RUNNING":
            running.append(block)  # started by the batch system, workers still starting up
        else:
            pending.append(block)
    return BlockView(tuple(pending), tuple(running), tuple(lost))


@dataclass(frozen=True)
class Decision:
    """Blocks to start and to cancel now, and when the endpoint became idle (``None``: busy)."""

    add: int = 0
    remove: int = 0
    idle_since: float | None = None


def decide(
    now: float,
    live_blocks: int,
    outstanding: int,
    idle_since: float | None,
    min_blocks: int,
    max_blocks: int,
    max_idletime: float,
    slots_per_block: int = 0,
) -> Decision:
    """What to do about blocks at time ``now``.

    While tasks are outstanding, enough blocks to give each a worker slot (``slots_per_block``
    = workers per node x nodes per block; 0 means one block is enough), within
    ``min_blocks``..``max_blocks``. Blocks still pending count, so a slow queue is not flooded.

    >>> decide(100.0, live_blocks=0, outstanding=3, idle_since=None, min_blocks=0, max_blocks=2, max_idletime=60)
    Decision(add=1, remove=0, idle_since=None)
    >>> decide(100.0, live_blocks=1, outstanding=10, idle_since=None, min_blocks=0, max_blocks=4, max_idletime=60, slots_per_block=4)
    Decision(add=2, remove=0, idle_since=None)
    >>> decide(200.0, live_blocks=1, outstanding=0, idle_since=130.0, min_blocks=0, max_blocks=2, max_idletime=60)
    Decision(add=0, remove=1, idle_since=130.0)
    """
    if outstanding > 0:
        want = 1 if slots_per_block <= 0 else -(-outstanding // slots_per_block)
        want = min(max(want, min_blocks), max_blocks)
        return Decision(max(0, want - live_blocks), 0, None)
    idle_since = now if idle_since is None else idle_since
    add = blocks_to_add(live_blocks, 0, min_blocks, max_blocks)
    remove = 0
    if now - idle_since >= max_idletime and live_blocks > min_blocks:
        remove = live_blocks - min_blocks
    return Decision(add, remove, idle_since)


def idle_from(idle_since: float | None, last_activity: float | None) -> float | None:
    """When idleness began, given the last time a task was submitted or finished.

    Outstanding tasks are sampled at heartbeat pace, and sequential short calls spend most of
    their time outside the engine (the REST and forwarder hops): a sample can find none
    outstanding while calls keep coming. Idleness counts from the last task, never from before it,
    so a block is not scaled in under a steady stream of calls.

    >>> idle_from(None, None), idle_from(100.0, None), idle_from(100.0, 130.0), idle_from(140.0, 130.0)
    (None, 100.0, 130.0, 140.0)
    """
    if idle_since is None or last_activity is None:
        return idle_since
    return max(idle_since, last_activity)

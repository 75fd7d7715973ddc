"""The task store's rules as pure functions: what the Lua scripts do inside Redis, decided here.

The scripts (``web_service/store/scripts/*.lua``) do not spell out state names or which state
may follow which: :func:`lua_preamble` generates their first lines from these functions and
:class:`fnserve.states.TaskState`, so there is one definition. The numeric rules (claim room,
the rate-limit bucket, quota reservation) are written in Lua once more next to the data, and
``tests/integration/test_store_scripts.py`` runs one table of cases through each function here
and through its script against a real redis-server.

Every state change a script makes is one :func:`fnserve.states.may_move` allows
(``tests/unit/test_store_rules.py``).
"""

from __future__ import annotations

import math
from typing import Callable

from fnserve.states import TERMINAL, TaskState, may_move
from web_service.result_origin import Verdict, result_verdict

__all__ = [
    "Verdict", "bucket_take", "claim_room", "claimable", "finishable", "lua_preamble", "quota_allows", "requeueable",
    "result_verdict", "startable", "transitions",
]


def transitions() -> dict[TaskState, frozenset[TaskState]]:
    """The allowed moves, state -> states it may move to (:func:`fnserve.states.may_move`)."""
    return {a: frozenset(b for b in TaskState if may_move(a, b)) for a in TaskState}


def claimable(state: TaskState) -> bool:
    """A task popped from its endpoint's queue is dispatched only if it still waits (one
    cancelled while queued stays in the queue until popped, and is skipped then)."""
    return state is TaskState.WAITING


def startable(state: TaskState) -> bool:
    """A site manager's "running" report moves only a dispatched task (a late report must not
    move a requeued or finished task)."""
    return state is TaskState.DISPATCHED


def requeueable(state: TaskState) -> bool:
    """An in-flight task of a lost endpoint goes back to waiting unless it finished meanwhile."""
    return state in (TaskState.DISPATCHED, TaskState.RUNNING)


def finishable(state: TaskState) -> bool:
    """Cancel (or fail) ends a task only if it has not finished: the first end wins."""
    return state not in TERMINAL


def claim_room(capacity: int, inflight: int, want: int) -> int:
    """How many tasks a claim may take for an endpoint with ``inflight`` tasks out of
    ``capacity`` (0: no limit): at most ``want`` and what leaves ``capacity`` in flight, and
    none until a quarter of it is free (a busy endpoint gets a few large batches rather than
    one per finished task).

    >>> claim_room(100, 80, 50), claim_room(100, 70, 50), claim_room(0, 10**6, 50)
    (0, 30, 50)
    """
    if capacity <= 0:
        return want
    room = capacity - inflight
    if room < max(1, capacity // 4):
        return 0
    return min(want, room)


def bucket_take(tokens: float | None, ts: float | None, now: float, rate: float, burst: float,
                cost: int) -> tuple[float, int]:
    """A token bucket (``rate`` per second, up to ``burst``) asked for ``cost`` tokens at ``now``:
    ``(tokens left, milliseconds to wait)``; a wait of 0 means allowed (and ``cost`` taken). A
    bucket never seen is full. A ``cost`` of 0 only looks: allowed while a token is left."""
    level = burst if tokens is None else tokens
    last = now if ts is None else ts
    level = min(burst, level + max(0.0, now - last) * rate)
    need = max(cost, 1)
    if level >= need:
        return level - cost, 0
    return level, math.ceil((need - level) / rate * 1000)


def quota_allows(count_after: int, max_tasks: int) -> bool:
    """A reservation that brought a user's task counter to ``count_after`` stays within
    ``max_tasks`` (otherwise it is given back and the submit refused)."""
    return count_after <= max_tasks


def _lua_set(name: str, rule: Callable[[TaskState], bool]) -> str:
    members = ", ".join(f"['{s.value}'] = true" for s in TaskState if rule(s))
    return f"local {name} = {{{members}}}"


# Each script rule and the state it moves a task to.
SCRIPT_MOVES: dict[str, tuple[Callable[[TaskState], bool], tuple[TaskState, ...]]] = {
    "CLAIMABLE": (claimable, (TaskState.DISPATCHED,)),
    "STARTABLE": (startable, (TaskState.RUNNING,)),
    "REQUEUEABLE": (requeueable, (TaskState.WAITING,)),
    "FINISHABLE": (finishable, (TaskState.SUCCESS, TaskState.FAILED, TaskState.CANCELLED)),
}


def lua_preamble() -> str:
    """Lua lines that every task store script starts with: the state names (``S_WAITING`` ...)
    and the state sets of the rules above, generated from them. Refuses to generate a rule set
    that would let a script make a move :func:`fnserve.states.may_move` forbids."""
    for name, (rule, targets) in SCRIPT_MOVES.items():
        bad = [(s.value, t.value) for s in TaskState if rule(s) for t in targets if not may_move(s, t)]
        if bad:
            raise AssertionError(f"{name} allows moves fnserve.states.may_move forbids: {bad}")
    lines = [f"local S_{s.name} = '{s.value}'" for s in TaskState]
    lines.append(_lua_set("TERMINAL", lambda s: s in TERMINAL))
    lines += [_lua_set(name, rule) for name, (rule, _) in SCRIPT_MOVES.items()]
    return "\n".join(lines) + "\n"

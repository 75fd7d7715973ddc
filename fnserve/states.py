"""Task states and the rules for moving between them (pure: no I/O)."""

from __future__ import annotations

from enum import Enum


class TaskState(str, Enum):
    WAITING = "waiting-for-endpoint"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({TaskState.SUCCESS, TaskState.FAILED, TaskState.CANCELLED})

# Order of progress: a state update never moves a task backwards, except that a task whose
# endpoint was lost goes back to waiting (re-dispatch) as long as it has not finished.
_RANK = {TaskState.WAITING: 0, TaskState.DISPATCHED: 1, TaskState.RUNNING: 2}


def may_move(current: TaskState, new: TaskState) -> bool:
    """Whether a task in ``current`` may move to ``new``.

    Terminal states are final (the first result wins). Non-terminal states only move forward,
    except the requeue of an in-flight task back to ``waiting-for-endpoint``.
    """
    if current in TERMINAL:
        return False
    if new in TERMINAL or new is TaskState.WAITING:
        return True
    return _RANK[new] > _RANK[current]

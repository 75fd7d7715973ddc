"""Reading a user's completion log: the tasks that finished since a cursor, with a long-poll.

Every recorded result (and every cancellation) appends the finished task ids to the owner's log
in Redis (see :mod:`web_service.task_store`), one entry per recorded batch; tasks that start
running are logged too, for readers that ask for them (``running=true``). A client keeps one
cursor and one long-poll open for all its outstanding tasks, however many there are, instead of
naming them in each request or asking per task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fnserve.states import TaskState
from web_service.auth import Identity
from web_service.task_store import TaskRecord, TaskStore
from web_service.validation import invalid, is_stream_id

if TYPE_CHECKING:
    from redis.client import Pipeline

DEFAULT_MAX_TASKS = 5000
MAX_LINGER = 1.0


@dataclass
class CompletionPage:
    """What one read of the log answers: the cursor to send next, the finished tasks, and
    whether entries were trimmed past the given cursor (the reader may have missed tasks)."""

    cursor: str
    tasks: list[TaskRecord]
    gap: bool


def parse_cursor(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not is_stream_id(value):
        raise invalid("cursor", "must be a cursor returned by this route (like '1716000000000-0')")
    return value


def parse_max_tasks(value: Any, max_batch: int, field: str = "max_tasks", default: int = DEFAULT_MAX_TASKS) -> int:
    if value is None or value == "":
        return min(default, max_batch)
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise invalid(field, "must be a positive integer") from None
    if n < 1:
        raise invalid(field, "must be a positive integer")
    return min(n, max_batch)


def parse_linger(value: Any) -> float:
    """Seconds to keep gathering after the first completion (0 when absent), at most 1 s."""
    if value is None or value == "":
        return 0.0
    try:
        linger = float(value)
    except (TypeError, ValueError):
        raise invalid("linger", "must be a number of seconds between 0 and 1") from None
    if not 0 <= linger <= MAX_LINGER:
        raise invalid("linger", "must be a number of seconds between 0 and 1")
    return linger


def parse_flag(value: Any, field: str) -> bool:
    """A true/false query parameter."""
    if value is None or value == "":
        return False
    text = str(value).lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise invalid(field, "must be true or false")
    return text in ("true", "1", "yes")


def read_completions(store: TaskStore, owner: Identity, cursor: str | None, wait: float, max_tasks: int,
                     min_tasks: int = 1, linger: float = 0.0, running: bool = False,
                     also: Callable[[Pipeline], None] | None = None) -> CompletionPage:
    """The owner's tasks that finished after ``cursor``, waiting up to ``wait`` s for the first,
    then up to ``linger`` s more while fewer than ``min_tasks`` are in.

    Without a cursor, answers at once with the cursor of the log's end: a reader takes it
    *before* submitting, so no completion of its tasks can fall before it.

    With ``running``, tasks that started running after ``cursor`` and still run come too (state
    ``running``); one that already finished is left to its own completion entry.

    ``also`` adds the caller's commands to the round trip that reads the tasks (the long-poll's
    admission release: one round trip less on the way to the answer); not run when none came.
    """
    if cursor is None:
        return CompletionPage(store.completion_cursor(owner.user_id), [], False)
    batch = store.completed_since(owner.user_id, cursor, wait, max_tasks, min(min_tasks, max_tasks), linger, running)
    if not batch.task_ids and not batch.running:
        return CompletionPage(batch.cursor, [], batch.gap)
    records = store.get_many(batch.task_ids + batch.running, also=also)
    finished = set(batch.task_ids)
    # The log is per owner, so every id is the owner's; an expired task is simply left out.
    tasks = [rec for tid, rec in records.items() if rec is not None and rec.owner == owner.user_id
             and (rec.finished if tid in finished else rec.state is TaskState.RUNNING)]
    return CompletionPage(batch.cursor, tasks, batch.gap)


__all__ = ["CompletionPage", "parse_cursor", "parse_flag", "parse_linger", "parse_max_tasks", "read_completions"]

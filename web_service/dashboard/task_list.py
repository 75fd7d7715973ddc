"""The user's recent tasks, as the dashboard lists them.

Reads the user's task index (``user:{id}:tasks``, a sorted set by submit time written by
:meth:`TaskStore.submit`) one page at a time, then only the fields a table row shows (never a
payload, result or output): a page costs two Redis round trips whatever the history's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import redis

from fnserve.states import TERMINAL, TaskState
from web_service.task_store import task_key, user_tasks_key

PAGE_SIZE = 50
MAX_PAGE = 1000  # 50,000 tasks: the index's cap
_ROW_FIELDS = ("owner", "function_id", "endpoint_id", "state", "runtime", "t_submitted", "t_running", "t_finished")


@dataclass(frozen=True)
class TaskRow:
    """One task as a table row shows it."""

    task_id: str
    function_id: str
    endpoint_id: str
    state: str
    runtime: str
    submitted: float | None
    running: float | None
    finished: float | None

    @property
    def done(self) -> bool:
        return TaskState(self.state) in TERMINAL

    def duration(self, now: float) -> float | None:
        """Seconds from submit to finish, or so far for a task still going."""
        if self.submitted is None:
            return None
        return (self.finished if self.finished is not None else now) - self.submitted

    @property
    def key(self) -> tuple[str, float | None]:
        """What a live view compares to tell that a row changed."""
        return (self.state, self.finished)


@dataclass(frozen=True)
class TaskPage:
    rows: list[TaskRow]
    page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, min(MAX_PAGE, -(-self.total // PAGE_SIZE)))


def _float(value: bytes | None) -> float | None:
    return float(value) if value else None


def read_rows(r: redis.Redis, owner: str, task_ids: Iterable[str]) -> list[TaskRow]:
    """Rows of ``owner``'s tasks among ``task_ids``, in order; gone (expired) and other
    users' tasks are left out."""
    ids = list(task_ids)
    pipe = r.pipeline(transaction=False)
    for tid in ids:
        pipe.hmget(task_key(tid), _ROW_FIELDS)
    rows = []
    for tid, values in zip(ids, pipe.execute()):
        row = dict(zip(_ROW_FIELDS, values))
        if row["state"] is None or (row["owner"] or b"").decode() != owner:
            continue
        rows.append(TaskRow(
            task_id=tid, function_id=(row["function_id"] or b"").decode(), endpoint_id=(row["endpoint_id"] or b"").decode(),
            state=row["state"].decode(), runtime=(row["runtime"] or b"").decode(),
            submitted=_float(row["t_submitted"]), running=_float(row["t_running"]), finished=_float(row["t_finished"]),
        ))
    return rows


def recent_ids(r: redis.Redis, owner: str, offset: int = 0, count: int = PAGE_SIZE) -> list[str]:
    """Ids of ``owner``'s most recent tasks, newest first."""
    return [m.decode() for m in r.zrevrange(user_tasks_key(owner), offset, offset + count - 1)]


def recent_tasks(r: redis.Redis, owner: str, page: int = 0) -> TaskPage:
    """One page of ``owner``'s tasks, newest first (page 0 is the most recent)."""
    page = max(0, min(page, MAX_PAGE - 1))
    pipe = r.pipeline(transaction=False)
    pipe.zrevrange(user_tasks_key(owner), page * PAGE_SIZE, (page + 1) * PAGE_SIZE - 1)
    pipe.zcard(user_tasks_key(owner))
    members, total = pipe.execute()
    ids = [m.decode() for m in members]
    rows = read_rows(r, owner, ids)
    gone = set(ids) - {row.task_id for row in rows}
    if gone:  # expired after their result TTL: drop them from the index as they are met
        r.zrem(user_tasks_key(owner), *gone)
    return TaskPage(rows, page, int(total) - len(gone))


__all__ = ["PAGE_SIZE", "TaskPage", "TaskRow", "read_rows", "recent_ids", "recent_tasks"]

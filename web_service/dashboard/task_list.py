"""The user's recent tasks, as the dashboard lists them.

Reads the user's submission log (``submitted:{user}``, a Redis stream with one entry per
submitted batch, written by :meth:`TaskStore.submit`) newest first, one page at a time, then only
the fields a table row shows (never a payload, result or output). A page starts at a cursor into
the log, so any page costs what the first does, whatever the history's size; tasks that expired
after their result TTL are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import redis

from fnserve.states import TERMINAL, TaskState
from web_service.task_store import submit_log_key, task_key
from web_service.redis_replies import stream_entries

PAGE_SIZE = 50
# Ids one page may look at: a history of expired tasks cannot make a page read without end.
SCAN_LIMIT = 2000
_ENTRIES_PER_READ = 64
_ROW_FIELDS = ("owner", "function_id", "endpoint_id", "state", "runtime", "t_submitted", "t_running", "t_finished")
_CURSOR = re.compile(r"^(\d{1,20}-\d{1,20}):(\d{1,9})$")


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
class Cursor:
    """A place in a submission log: entry ``entry``, after its first ``skip`` ids (newest first)."""

    entry: str
    skip: int

    def __str__(self) -> str:
        return f"{self.entry}:{self.skip}"


def parse_cursor(text: str | None) -> Cursor | None:
    """A cursor from a page link (None: the newest page; a malformed one too)."""
    match = _CURSOR.match(text or "")
    return Cursor(match.group(1), int(match.group(2))) if match else None


@dataclass(frozen=True)
class TaskPage:
    rows: list[TaskRow]
    first: bool  # the newest page
    older: Cursor | None  # where the next (older) page starts; None at the end


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


def recent_ids(r: redis.Redis, owner: str, before: Cursor | None = None, count: int = PAGE_SIZE) -> tuple[list[str], Cursor | None]:
    """Up to ``count`` ids of ``owner``'s tasks from ``before`` (or the newest), newest first,
    and the cursor after them (None when the log ends there)."""
    key = submit_log_key(owner)
    top, skip = ("+", 0) if before is None else (before.entry, before.skip)
    out: list[str] = []
    while True:
        entries = stream_entries(r.xrevrange(key, max=top, min="-", count=_ENTRIES_PER_READ))
        if not entries:
            return out, None
        for entry_id, fields in entries:
            ids = fields[b"ids"].decode().split(",")[::-1]
            taken = ids[skip:skip + count - len(out)]
            out += taken
            skip += len(taken)
            if len(out) == count:
                return out, Cursor(entry_id.decode(), skip)
            skip = 0
        top = "(" + entries[-1][0].decode()


def recent_tasks(r: redis.Redis, owner: str, before: Cursor | None = None, count: int = PAGE_SIZE) -> TaskPage:
    """One page of ``owner``'s tasks, newest first, starting at ``before`` (None: the newest)."""
    rows: list[TaskRow] = []
    cursor, scanned = before, 0
    while len(rows) < count and scanned < SCAN_LIMIT:
        ids, cursor = recent_ids(r, owner, cursor, count - len(rows))
        scanned += len(ids)
        rows += read_rows(r, owner, ids)
        if cursor is None:
            break
    return TaskPage(rows, before is None, cursor)


__all__ = ["PAGE_SIZE", "Cursor", "TaskPage", "TaskRow", "parse_cursor", "read_rows", "recent_ids", "recent_tasks"]

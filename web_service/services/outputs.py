"""Reading a task's live outputs, with a long-poll that wakes on a new output or on the task
finishing (``XREAD BLOCK`` on the task's output stream and its owner's completion log).

A page is ``complete`` when the task finished and nothing more will come: the worker's ``end``
marker arrived (the function returned), or :data:`END_GRACE` seconds passed since the task
finished without one (a task that never reported, or a lost worker). The site manager relays a
task's outputs ahead of its result, so the grace is only a safety net.
"""

from __future__ import annotations

import time
from typing import Any

from web_service.auth import Identity
from web_service.services.tasks import get_tasks
from web_service.task_outputs import LATE_OUTPUT_GRACE, MAX_READ, OutputPage
from web_service.task_store import TaskRecord, TaskStore
from web_service.validation import invalid, is_stream_id

END_GRACE = LATE_OUTPUT_GRACE  # late outputs are accepted for as long (web_service.task_outputs)
START = "0-0"


def parse_since(value: Any) -> str:
    """The ``since`` cursor (absent: from the first output)."""
    if value is None or value == "":
        return START
    if not is_stream_id(value):
        raise invalid("since", "must be a cursor returned by this route (like '1716000000000-0'), or absent to read from the start")
    return value


def _complete(rec: TaskRecord, page: OutputPage, now: float) -> bool:
    if not rec.finished or page.full:
        return False
    return page.ended or now - rec.timestamps.get("finished", now) >= END_GRACE


def _view(rec: TaskRecord, page: OutputPage, now: float) -> dict[str, Any]:
    return {
        "task_id": rec.task_id, "state": rec.state.value, "outputs": page.outputs, "cursor": page.cursor,
        "complete": _complete(rec, page, now), "truncated": page.truncated,
    }


def read_outputs(store: TaskStore, owner: Identity, task_id: str, since: str = START, wait: float = 0.0,
                 count: int = MAX_READ) -> dict[str, Any]:
    """The owner's task's outputs after ``since``; waits up to ``wait`` s for one to arrive or
    for the task to end. Unknown ids are ``task_not_found``, other users' ``forbidden``."""
    # The completion cursor is taken before the task is read: a finish in between still wakes us.
    finished_cursor = store.completion_cursor(owner.user_id)
    rec = get_tasks(store, owner, [task_id])[0]
    deadline = time.monotonic() + wait
    while True:
        page = store.read_outputs(task_id, since, count)
        now = time.time()
        left = deadline - time.monotonic()
        if page.outputs or _complete(rec, page, now) or left <= 0:
            return _view(rec, page, now)
        since = page.cursor  # past any end marker that carries no output
        if rec.finished:  # only the grace for late outputs is left to wait for
            left = min(left, max(0.001, rec.timestamps.get("finished", now) + END_GRACE - now))
        left = min(left, store.block_cap())
        finished_cursor = store.wait_outputs_or_finish(task_id, since, owner.user_id, finished_cursor, left, MAX_READ)
        if not rec.finished:
            rec = get_tasks(store, owner, [task_id])[0]


__all__ = ["END_GRACE", "parse_since", "read_outputs"]

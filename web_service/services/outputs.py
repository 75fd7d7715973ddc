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
from web_service.task_outputs import LATE_OUTPUT_GRACE, MAX_READ, OutputPage, outputs_key, read
from web_service.task_store import TaskRecord, TaskStore, completed_key
from web_service.validation import invalid, is_stream_id
from web_service.redis_replies import stream_reads

END_GRACE = LATE_OUTPUT_GRACE  # late outputs are accepted for as long (web_service.task_outputs)
_DEFAULT_SOCKET_TIMEOUT = 5.0  # redis-py's own default when the client sets none
START = "0-0"


def parse_since(value: Any) -> str:
    """The ``since`` cursor (absent: from the first output)."""
    if value is None or value == "":
        return START
    if not is_stream_id(value):
        raise invalid("since", "must be a cursor returned by this route (like '1716000000000-0'), or absent to read from the start")
    return value


def _block_cap(store: TaskStore) -> float:
    """Longest single ``XREAD BLOCK`` (s): under the Redis client's socket timeout, or the
    blocked read fails as a timeout (redis-py 8 sets 5 s unless told otherwise); a longer wait
    blocks again, so it still wakes on the event, not on an interval."""
    timeout = store.r.connection_pool.connection_kwargs.get("socket_timeout", _DEFAULT_SOCKET_TIMEOUT)
    return max(0.1, float(timeout) - 1.0) if timeout else 3600.0


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
        page = read(store.r, task_id, since, count)
        now = time.time()
        left = deadline - time.monotonic()
        if page.outputs or _complete(rec, page, now) or left <= 0:
            return _view(rec, page, now)
        since = page.cursor  # past any end marker that carries no output
        if rec.finished:  # only the grace for late outputs is left to wait for
            left = min(left, max(0.001, rec.timestamps.get("finished", now) + END_GRACE - now))
        left = min(left, _block_cap(store))
        done_key = completed_key(owner.user_id)
        answer = store.r.xread({outputs_key(task_id): since, done_key: finished_cursor}, count=MAX_READ,
                               block=max(1, int(left * 1000)))
        for key, entries in stream_reads(answer):
            if key.decode() == done_key and entries:
                finished_cursor = entries[-1][0].decode()
        if not rec.finished:
            rec = get_tasks(store, owner, [task_id])[0]


__all__ = ["END_GRACE", "parse_since", "read_outputs"]

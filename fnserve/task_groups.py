"""Task groups: getting an Executor's futures back, e.g. after a kernel restart.

Every task an Executor submits carries its ``task_group_id`` (a new one per Executor unless
given). The service keeps, per user, the ids of each group's tasks in submission order for as
long as the tasks themselves (``GET /v1/task_groups/{id}/tasks``). :func:`reload_group` turns
them into futures again: finished tasks resolve at once, the others join the executor's
outstanding tasks and complete when their results arrive, like any other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fnserve.batching import chunks
from fnserve.errors import FnserveError
from fnserve.futures import TaskFuture, mark_running

if TYPE_CHECKING:
    from fnserve.pipeline import Pipeline

_FINISHED = ("success", "failed", "cancelled")


def group_tasks(pipeline: Pipeline, task_group_id: str) -> list[dict[str, Any]]:
    """Every task object of the group, oldest first, page by page."""
    tasks: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = pipeline.client.get_task_group(task_group_id, offset=offset)
        tasks += page["tasks"]
        offset = page["next_offset"]
    return tasks


def reload_group(pipeline: Pipeline, task_group_id: str) -> list[TaskFuture]:
    """Futures for the tasks of a group, in submission order (see the module docstring)."""
    pipeline.ensure_cursor()  # from now on the reader sees every completion
    futures: list[TaskFuture] = []
    finished: list[tuple[TaskFuture, dict[str, Any]]] = []
    waiting: list[str] = []
    for task in group_tasks(pipeline, task_group_id):
        future = TaskFuture(pipeline, task["task_id"])
        future._taken = True
        if task["state"] in _FINISHED:
            finished.append((future, task))
        else:
            future = pipeline.adopt(task["task_id"], future)
            if task["state"] == "running":
                mark_running(future)
            waiting.append(task["task_id"])
        futures.append(future)
    pipeline.resolve_all(finished)
    _catch_up(pipeline, waiting)
    return futures


def _catch_up(pipeline: Pipeline, task_ids: list[str]) -> None:
    """Tasks that finished between the group read and their adoption: the reader may have
    passed over their completions while they were unknown, so read them once more."""
    for part in chunks(task_ids, 1000):  # type: ignore[arg-type]
        try:
            tasks = pipeline.client.transport.post("/v1/tasks/results", {"task_ids": part})["tasks"]
        except FnserveError:
            continue  # e.g. one expired meanwhile: the reader still completes the rest
        done = [(t["task_id"], t) for t in tasks if t["state"] in _FINISHED]
        with pipeline.lock:
            ready = pipeline.outstanding.completed(done)
        pipeline.resolve_all(ready)


__all__ = ["group_tasks", "reload_group"]

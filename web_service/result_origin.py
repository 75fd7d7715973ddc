"""Which endpoint may report a task's result or live outputs (pure rules).

A result is code the victim's client may run (a dill buffer), and it is billed to the endpoint
that reports it, so only the endpoint that holds the task may report it. The task store's Lua
scripts (``web_service/store/scripts/record.lua``, ``_APPEND`` in
:mod:`web_service.task_outputs`) apply exactly these rules inside Redis, next to the data;
``tests/unit/test_result_origin.py`` pins them down and ``tests/integration/test_store_scripts.py``
checks the record script against them.
"""

from __future__ import annotations

from typing import Literal

from fnserve.states import TaskState

Verdict = Literal["record", "duplicate", "reject"]
_TERMINAL = {TaskState.SUCCESS.value, TaskState.FAILED.value, TaskState.CANCELLED.value}


def result_verdict(state: str | None, task_endpoint: str | None, reporter: str, held: bool, dispatched_before: bool) -> Verdict:
    """What to do with a result that endpoint ``reporter`` sent for a task.

    ``state`` / ``task_endpoint``: the task's record (``None`` when unknown or expired);
    ``held``: the task is in ``reporter``'s in-flight set (dispatched to it, not finished);
    ``dispatched_before``: it was dispatched at least once (a requeued task waits again).

    - ``record``: the task is in flight on ``reporter``, or waits again after ``reporter`` lost
      its connection (the result of that earlier dispatch, replayed after a reconnect);
    - ``duplicate``: ``reporter``'s own task that already finished (first result wins);
    - ``reject``: anything else: another endpoint's task, a task never sent anywhere, an
      unknown id. Dropped, counted and logged by the forwarder; never billed.

    >>> result_verdict("running", "ep-a", "ep-a", held=True, dispatched_before=True)
    'record'
    >>> result_verdict("running", "ep-a", "ep-b", held=False, dispatched_before=True)
    'reject'
    >>> result_verdict("success", "ep-a", "ep-a", held=False, dispatched_before=True)
    'duplicate'
    """
    if state is None or task_endpoint != reporter:
        return "reject"
    if state in _TERMINAL:
        return "duplicate"
    if held:
        return "record"
    if state == TaskState.WAITING.value and dispatched_before:
        return "record"
    return "reject"


def output_accepted(task_endpoint: str | None, reporter: str, held: bool, finished_ago: float | None = None,
                    grace: float = 2.0) -> bool:
    """A live output counts only for a task in flight on the endpoint that reports it, or one
    that finished there less than ``grace`` seconds ago (its ``end`` marker can trail its result).

    >>> output_accepted("ep-a", "ep-b", held=True)
    False
    """
    if task_endpoint != reporter:
        return False
    return held or (finished_ago is not None and finished_ago <= grace)

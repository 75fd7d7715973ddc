"""Stale work expires: tasks waiting for an endpoint that does not connect fail after a while.

A task accepted for an endpoint waits in its queue until the endpoint's site manager connects.
An endpoint that never connects (a typo'd id on a shared endpoint, a site that was shut down)
would otherwise hold its callers' tasks until the task record's own TTL drops them silently.
Every forwarder sweeps the queues of endpoints that are not connected every
:func:`sweep_interval` seconds and fails the tasks that waited ``FNSERVE_WAITING_EXPIRY`` seconds
(default a day; 0: never) with code ``endpoint_not_connected``. A connected endpoint's queue is
never expired: its tasks move as fast as it takes them. Tasks of a *deleted* endpoint fail at
once with ``endpoint_deleted`` (web_service.services.endpoints.delete_endpoint).

Several forwarders may sweep the same queue: ending a task is one Lua script and the first end
wins, so a task fails once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fnserve.messages import RemoteError
from fnserve.states import TaskState
from web_service.task_store import TaskStore

log = logging.getLogger(__name__)

DEFAULT_WAITING_EXPIRY = 24 * 3600.0
CODE = "endpoint_not_connected"


def expired(waiting: Mapping[str, float], connected: bool, now: float, expiry: float) -> list[str]:
    """Ids of ``waiting`` tasks (id -> submitted at, epoch s) that have waited ``expiry`` s or more
    for an endpoint that is not ``connected`` (pure).

    >>> expired({"a": 0.0, "b": 50.0}, connected=False, now=100.0, expiry=60.0)
    ['a']
    >>> expired({"a": 0.0}, connected=True, now=100.0, expiry=60.0)
    []
    >>> expired({"a": 0.0}, connected=False, now=100.0, expiry=0)
    []
    """
    if expiry <= 0 or connected:
        return []
    return sorted(t for t, at in waiting.items() if now - at >= expiry)


def sweep_interval(expiry: float) -> float:
    """Seconds between sweeps: a tenth of the expiry, between 1 s and 60 s (an expiry is kept
    within 10 % or a minute)."""
    return min(60.0, max(1.0, expiry / 10))


def expiry_error(endpoint_id: str, expiry: float) -> RemoteError:
    return RemoteError(code=CODE, type="EndpointNotConnected",
                       message=f"the task waited {expiry:g} s for endpoint {endpoint_id}, which did not connect in that time; "
                               "start the endpoint (`fnserve endpoint start`) and submit it again, or submit it to another "
                               "endpoint (the service's FNSERVE_WAITING_EXPIRY sets this time)")


def expire_waiting(store: TaskStore, expiry: float, now: float) -> int:
    """Fail the tasks that waited ``expiry`` s for an endpoint that is not connected; returns how many."""
    if expiry <= 0:
        return 0
    ended = 0
    for endpoint_id in store.queued_endpoints():
        if store.is_connected(endpoint_id):
            continue
        queued = store.waiting_tasks(endpoint_id)
        waiting = {task_id: submitted for task_id, (submitted, _) in queued.items()}
        error = expiry_error(endpoint_id, expiry)
        here = 0
        for task_id in expired(waiting, False, now, expiry):
            if store.end_unfinished(task_id, queued[task_id][1], TaskState.FAILED, error) == TaskState.WAITING.value:
                store.unqueue(endpoint_id, task_id)
                here += 1
        if here:
            log.warning("endpoint %s has not connected: %d task(s) that waited %g s failed (%s)", endpoint_id, here,
                        expiry, CODE)
        ended += here
    return ended

"""``/v1/tasks``: submit a batch, read one task (optionally long-polling), read many, cancel;
``/v1/task_groups/{id}/tasks``: the tasks of one of the caller's task groups.

A submitted batch is judged task by task (unless it asks to be ``atomic``): the answer is 202
when every task was accepted, 207 (Multi-Status) when some were and others refused, with
``task_ids`` in batch order (``null`` for a refused task) and ``errors`` naming each refused
task's ``index``, ``status``, ``code`` and ``message``; a batch in which no task was accepted is
answered with the first refused task's error status and body, every task's error in
``details.errors``.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from flask import Blueprint, Response, request
from msgspec import UNSET

from fnserve.user_endpoint_config import unstamp
from fnserve import serialize
from fnserve.errors import FnserveError, SerializationError, ServiceUnavailable
from web_service.metrics import RESULT_BYTES
from web_service.redis_client import primary_changes, replicated
from web_service.rest_bodies.requests import TaskResultsRequest, TaskSubmission
from web_service.rest_bodies.responses import Task, TaskError, TaskGroupPage, TaskList, TasksSubmitted
from web_service.routes._http import body_as, identity, require_identity, respond
from web_service.services import tasks as service
from web_service.state import current
from web_service.task_store import TaskRecord
from web_service.validation import encode_base64

bp = Blueprint("tasks", __name__)
bp.before_request(require_identity)


def task_view(rec: TaskRecord) -> Task:
    view = Task(task_id=rec.task_id, state=rec.state.value, function_id=rec.function_id,
                endpoint_id=rec.endpoint_id, runtime=rec.runtime, timestamps=rec.timestamps,
                result=encode_base64(rec.result) if rec.result else None, error=_error_view(rec.error), stdout=rec.stdout,
                stderr=rec.stderr, timings=rec.timings, resources=rec.resources, placement=rec.placement)
    if rec.max_retries is not None:
        view.max_retries = rec.max_retries
    if rec.task_group_id:
        view.task_group_id = rec.task_group_id
    own, stamp = unstamp(rec.resource_specification)
    if own is not None:
        view.resource_specification = own
    if stamp is not None and stamp.get("config"):
        view.user_endpoint_config = stamp["config"]
    if rec.result:
        RESULT_BYTES.observe(len(rec.result))
        try:
            text = serialize.json_body(rec.result)
        except SerializationError:
            text = None  # not fnserve's format: the client still gets the base64 result
        if text is not None:
            # Parsing JSON is not deserializing code: safe for the service to do.
            try:
                view.result_json = json.loads(text)
            except ValueError:
                pass
    return view


def _error_view(error: dict[str, Any] | None) -> TaskError | None:
    if not error:
        return None
    view = TaskError(code=error.get("code", "error"), type=error.get("type", ""), message=error.get("message", ""),
                     traceback=error.get("traceback", ""))
    # Where the exception's class lives and its plain args: a client raises the same class.
    if error.get("module"):
        view.module = error["module"]
    if error.get("qualname"):
        view.qualname = error["qualname"]
    if error.get("args"):
        view.args = error["args"]
    return view


@bp.post("/tasks")
def submit() -> Response:
    state = current()
    body = body_as(TaskSubmission)
    items = service.judge_tasks(body, max_payload_bytes=state.settings.max_payload_bytes, max_batch=state.settings.max_batch,
                                max_walltime=state.settings.max_walltime)
    atomic = body.atomic
    wait = min(body.wait, state.settings.max_wait)
    if wait <= 0:
        with state.sessions() as session:
            outcomes = _submit(session, items, atomic)
        return _submitted(outcomes)
    # Submit-and-wait: one round trip for interactive calls. Subscribing to completions before
    # submitting means no result can slip past; the tasks are durable once submitted, and the
    # wait only decides how much of their outcome this answer carries.
    # Admitted before submitting: a refused wait must not leave tasks the caller never heard of.
    with state.waits.admit(identity().user_id, wait) as admission, state.store.completions(identity().user_id) as completions:
        with state.sessions() as session:
            outcomes = _submit(session, items, atomic)
        task_ids = [o for o in outcomes if isinstance(o, str)]
        # The wait's place is given back in the same round trip as the final read of the tasks.
        recs = completions.wait(task_ids, wait, fresh=True, also=admission.release_in)
    return _submitted(outcomes, [task_view(r) for r in recs.values() if r is not None])


def _submit(session: Any, items: list[service.Outcome], atomic: bool) -> list[str | FnserveError]:
    state = current()
    since = primary_changes(state.store.r)  # a failover between the writes and WAIT: not confirmed
    outcomes = service.submit_tasks(session, state.store, identity(), items, state.ownership, state.quotas, atomic=atomic)
    settings = state.settings
    try:
        confirmed = replicated(state.store.r, settings.redis_replicas_ack, settings.redis_wait_ms, since)
    except redis.RedisError:
        # The failover itself cut the confirmation (the demoted primary refuses the probe's write,
        # or closes the connection): the tasks are written and as unconfirmed as after a WAIT that
        # timed out. Answered below with their ids; a bare 503 would hide tasks that may run.
        confirmed = False
    if not confirmed:
        # Accepted means durable: on the primary alone it could vanish in a failover.
        # Not "accepted": written to the primary only. Their ids let the caller look before
        # submitting again (a failover may have lost them, or they may run).
        raise ServiceUnavailable(
            f"the tasks were written but are not yet on {settings.redis_replicas_ack} Redis replica(s), so a failover "
            "could lose them; look them up by id (details.task_ids) before submitting again",
            details={"task_ids": [o for o in outcomes if isinstance(o, str)]})
    return outcomes


def _submitted(outcomes: list[str | FnserveError], tasks: list[Task] | None = None) -> Response:
    task_ids = [o if isinstance(o, str) else None for o in outcomes]
    errors = [service.error_entry(i, o) for i, o in enumerate(outcomes) if isinstance(o, FnserveError)]
    body = TasksSubmitted(task_ids=task_ids, errors=errors, tasks=UNSET if tasks is None else tasks)
    return respond(body, 207 if errors else 202)


@bp.get("/tasks/<task_id>")
def get(task_id: str) -> Response:
    state = current()
    service.check_task_id(task_id)
    wait = min(service.parse_wait(request.args.get("wait")), state.settings.max_wait)
    with state.waits.admit(identity().user_id, wait):
        rec = service.get_tasks(state.store, identity(), [task_id], wait)[0]
    return respond(task_view(rec))


@bp.post("/tasks/results")
def results() -> Response:
    state = current()
    body = body_as(TaskResultsRequest)
    task_ids = service.check_task_ids(body.task_ids, state.settings.max_batch)
    wait = min(body.wait, state.settings.max_wait)
    any_ = body.return_when == "FIRST_COMPLETED"
    with state.waits.admit(identity().user_id, wait):
        recs = service.get_tasks(state.store, identity(), task_ids, wait, any_)
    return respond(TaskList(tasks=[task_view(r) for r in recs]))


@bp.post("/tasks/<task_id>/cancel")
def cancel(task_id: str) -> Response:
    state = current()
    service.check_task_id(task_id)
    return respond(task_view(service.cancel_task(state.store, identity(), task_id)))


@bp.get("/task_groups/<task_group_id>/tasks")
def group_tasks(task_group_id: str) -> Response:
    """A page of the caller's tasks in a task group, oldest first (expired tasks left out)."""
    state = current()
    offset = service.parse_count(request.args.get("offset"), "offset", 0, minimum=0)
    limit = min(service.parse_count(request.args.get("limit"), "limit", 1000), state.settings.max_batch)
    recs, total = service.group_tasks(state.store, identity(), task_group_id, offset, limit)
    next_offset = offset + limit if offset + limit < total else None
    return respond(TaskGroupPage(task_group_id=task_group_id, tasks=[task_view(r) for r in recs], total=total,
                                 next_offset=next_offset))

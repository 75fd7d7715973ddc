"""``/v1/tasks``: submit a batch, read one task (optionally long-polling), read many, cancel."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, request

from fnserve import serialize
from fnserve.errors import SerializationError
from web_service.routes._http import identity, json_body, require_identity, respond
from web_service.services import tasks as service
from web_service.state import current
from web_service.task_store import TaskRecord
from web_service.validation import encode_base64

bp = Blueprint("tasks", __name__)
bp.before_request(require_identity)


def task_view(rec: TaskRecord) -> dict[str, Any]:
    view: dict[str, Any] = {
        "task_id": rec.task_id, "state": rec.state.value, "function_id": rec.function_id,
        "endpoint_id": rec.endpoint_id, "runtime": rec.runtime, "timestamps": rec.timestamps,
        "result": encode_base64(rec.result) if rec.result else None,
        "error": _error_view(rec.error), "stdout": rec.stdout, "stderr": rec.stderr,
        "timings": rec.timings, "resources": rec.resources, "placement": rec.placement,
    }
    if rec.result:
        try:
            text = serialize.json_body(rec.result)
        except SerializationError:
            text = None  # not fnserve's format: the client still gets the base64 result
        if text is not None:
            # Parsing JSON is not deserializing code: safe for the service to do.
            try:
                view["result_json"] = json.loads(text)
            except ValueError:
                pass
    return view


def _error_view(error: dict[str, Any] | None) -> dict[str, Any] | None:
    if not error:
        return None
    return {
        "code": error.get("code", "error"), "type": error.get("type", ""),
        "message": error.get("message", ""), "traceback": error.get("traceback", ""),
    }


@bp.post("/tasks")
def submit() -> Response:
    state = current()
    body = json_body()
    specs = service.parse_task_batch(body, max_payload_bytes=state.settings.max_payload_bytes, max_batch=state.settings.max_batch,
                                     max_walltime=state.settings.max_walltime)
    wait = min(service.parse_wait(body.get("wait")), state.settings.max_wait)
    if wait <= 0:
        with state.sessions() as session:
            task_ids = service.submit_tasks(session, state.store, identity(), specs, state.ownership, state.quotas)
        return respond({"task_ids": task_ids}, 202)
    # Submit-and-wait: one round trip for interactive calls. Subscribing to completions before
    # submitting means no result can slip past; the tasks are durable once submitted, and the
    # wait only decides how much of their outcome this answer carries.
    # Admitted before submitting: a refused wait must not leave tasks the caller never heard of.
    with state.waits.admit(identity().user_id, wait), state.store.completions(identity().user_id) as completions:
        with state.sessions() as session:
            task_ids = service.submit_tasks(session, state.store, identity(), specs, state.ownership, state.quotas)
        recs = completions.wait(task_ids, wait, fresh=True)
    return respond({"task_ids": task_ids, "tasks": [task_view(r) for r in recs.values() if r is not None]}, 202)


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
    body = json_body()
    task_ids = service.parse_task_ids(body, state.settings.max_batch)
    wait = min(service.parse_wait(body.get("wait")), state.settings.max_wait)
    any_ = service.parse_return_when(body)
    with state.waits.admit(identity().user_id, wait):
        recs = service.get_tasks(state.store, identity(), task_ids, wait, any_)
    return respond({"tasks": [task_view(r) for r in recs]})


@bp.post("/tasks/<task_id>/cancel")
def cancel(task_id: str) -> Response:
    state = current()
    service.check_task_id(task_id)
    return respond(task_view(service.cancel_task(state.store, identity(), task_id)))

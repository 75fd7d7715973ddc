"""``GET /v1/tasks/<id>/outputs``: a task's live outputs (``fnserve.report``), long-polled.

    GET /v1/tasks/ID/outputs                   -> everything reported so far, at once
    GET /v1/tasks/ID/outputs?since=C&wait=30   -> outputs after cursor C; blocks until one
                                                  arrives or the task ends (or wait passes)

Answer: ``{"task_id", "state", "outputs": [{"seq", "time", "values"}], "cursor", "complete",
"truncated"}``. Send ``cursor`` back as ``since``; stop once ``complete`` is true. An entry
``{"seq", "time", "truncated": true, "message"}`` marks where the task passed its output limit.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from web_service.routes._http import identity, require_identity, respond
from web_service.services import outputs as service
from web_service.services.tasks import check_task_id, parse_wait
from web_service.state import current

bp = Blueprint("outputs", __name__)
bp.before_request(require_identity)


@bp.get("/tasks/<task_id>/outputs")
def task_outputs(task_id: str) -> Response:
    state = current()
    since = service.parse_since(request.args.get("since"))
    check_task_id(task_id)
    wait = min(parse_wait(request.args.get("wait")), state.settings.max_wait)
    with state.waits.admit(identity().user_id, wait):
        return respond(service.read_outputs(state.store, identity(), task_id, since, wait))

"""``GET /v1/tasks/completions``: the caller's finished tasks, pushed through one long-poll.

    GET /v1/tasks/completions                       -> {"cursor": "…", "tasks": [], "gap": false}
    GET /v1/tasks/completions?cursor=C&wait=30      -> {"cursor": "…", "tasks": [task objects], "gap": false}

Without ``cursor`` it answers at once with the end of the caller's completion log: take it before
submitting. With a ``cursor`` it blocks until at least one of the caller's tasks finishes after
it (or ``wait`` seconds pass, capped by ``FNSERVE_MAX_WAIT``) and answers with those finished tasks,
as ``GET /v1/tasks/{id}`` shows them (results included), and the cursor to send next. One
request serves any number of outstanding tasks, so a client never asks per task.
``max_tasks`` (default 5000) bounds the tasks in one answer; the rest come with the next cursor.
``min_tasks`` and ``linger`` (s, at most 1) coalesce under load: once the first task is in, the
answer waits up to ``linger`` more for ``min_tasks`` in all (a reader with many tasks outstanding
makes fewer, larger requests; with one outstanding task it sends neither and pays no delay).

``running=true`` also answers, at once, with tasks that started running after ``cursor`` (state
``running``): how ``fnserve.Executor`` knows a future is running.

``gap`` is true when the log was trimmed past ``cursor`` (the reader fell more than
10,000 batches behind): some finished tasks may be missing from the answers, so the reader should
read the tasks it still waits for with ``POST /v1/tasks/results``. Each user's log is their own:
it also lists tasks other clients of the same user submitted, which a reader ignores.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from web_service.routes._http import identity, require_identity, respond
from web_service.rest_bodies.responses import Completions
from web_service.routes.tasks import task_view
from web_service.services import completions as service
from web_service.services.tasks import parse_wait
from web_service.state import current

bp = Blueprint("completions", __name__)
bp.before_request(require_identity)


@bp.get("/tasks/completions")
def completions() -> Response:
    state = current()
    cursor = service.parse_cursor(request.args.get("cursor"))
    wait = min(parse_wait(request.args.get("wait")), state.settings.max_wait)
    max_tasks = service.parse_max_tasks(request.args.get("max_tasks"), state.settings.max_batch)
    min_tasks = service.parse_max_tasks(request.args.get("min_tasks"), state.settings.max_batch, "min_tasks", 1)
    linger = service.parse_linger(request.args.get("linger"))
    running = service.parse_flag(request.args.get("running"), "running")
    # Without a cursor it answers at once: no long-poll place needed.
    # The long-poll's place is given back in the round trip that reads the tasks it answers with.
    with state.waits.admit(identity().user_id, wait if cursor is not None else 0) as admission:
        page = service.read_completions(state.store, identity(), cursor, wait, max_tasks, min_tasks, linger, running,
                                        also=admission.release_in)
    return respond(Completions(cursor=page.cursor, tasks=[task_view(r) for r in page.tasks], gap=page.gap))

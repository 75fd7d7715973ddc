"""Tasks: the caller's recent tasks (a live table) and one task's page (arguments' size, result
or remote traceback, stdout/stderr, live outputs, the per-hop timeline). Reading, waiting and
cancelling go through :mod:`web_service.services.tasks` and ``outputs``, as ``/v1/tasks`` does:
another user's task is a 403 here too."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from msgspec import UNSET
from flask import Response, redirect, render_template, request, url_for

from web_service.dashboard import live
from web_service.dashboard.blueprint import bp, who
from web_service.dashboard.charts import task_hops, timeline
from web_service.dashboard.labels import task_names
from web_service.dashboard.task_list import PAGE_SIZE, TaskRow, parse_cursor, read_rows, recent_ids, recent_tasks
from web_service.routes._http import respond
from web_service.routes.tasks import task_view
from web_service.services import outputs as output_service
from web_service.services import tasks as task_service
from web_service.state import current
from web_service.task_store import done_channel, status_channel, submitted_channel, task_key

# A result shown on the page is cut to this many characters (the SDK gets all of it).
RESULT_PREVIEW = 20_000


def render_rows(rows: list[TaskRow]) -> list[dict[str, str]]:
    state, me = current(), who()
    with state.sessions() as session:
        labels = task_names(session, me, rows)
    now = time.time()
    return [{"id": r.task_id, "html": render_template("dashboard/_task_row.html", row=r, names=labels, now=now)} for r in rows]


@bp.get("/tasks")
def tasks() -> str:
    state, me = current(), who()
    page = recent_tasks(state.store.r, me.user_id, parse_cursor(request.args.get("before")))
    with state.sessions() as session:
        labels = task_names(session, me, page.rows)
    return render_template("dashboard/tasks.html", page=page, names=labels, now=time.time(), page_size=PAGE_SIZE)


def task_details(task_id: str) -> dict[str, Any]:
    """What a task page shows; raises like ``GET /v1/tasks/<id>`` (404 unknown, 403 not yours)."""
    state, me = current(), who()
    task_service.check_task_id(task_id)  # not a task id (say "<id>:out"): 404 before any Redis key
    rec = task_service.get_tasks(state.store, me, [task_id])[0]
    view = task_view(rec)
    arg_bytes = state.store.r.hget(task_key(task_id), "arg_bytes")
    result_text = None
    if view.result_json is not UNSET:
        result_text = json.dumps(view.result_json, indent=2)[:RESULT_PREVIEW]
    with state.sessions() as session:
        labels = task_names(session, me, [TaskRow(rec.task_id, rec.function_id, rec.endpoint_id, rec.state.value, "", None, None, None)])
    return {
        "task": rec, "view": view, "names": labels, "arg_bytes": int(arg_bytes) if arg_bytes else None,
        "result_bytes": len(rec.result) if rec.result else 0, "result_text": result_text,
        "chart": timeline(task_hops(rec.timestamps, rec.timings)), "now": time.time(),
    }


@bp.get("/tasks/<task_id>")
def task(task_id: str) -> str:
    return render_template("dashboard/task.html", **task_details(task_id))


@bp.get("/tasks/<task_id>/detail")
def task_detail(task_id: str) -> str:
    """The part of a task page that changes as the task moves on (fetched by the page's script)."""
    return render_template("dashboard/_task_detail.html", **task_details(task_id))


@bp.post("/tasks/<task_id>/cancel")
def cancel(task_id: str) -> Response:
    task_service.check_task_id(task_id)
    task_service.cancel_task(current().store, who(), task_id)
    return redirect(url_for("dashboard.task", task_id=task_id))  # type: ignore[return-value]


@bp.get("/api/tasks/<task_id>/outputs")
def outputs(task_id: str) -> Response:
    """``GET /v1/tasks/<id>/outputs`` for the page's script (session instead of bearer token)."""
    state = current()
    since = output_service.parse_since(request.args.get("since"))
    task_service.check_task_id(task_id)
    wait = min(task_service.parse_wait(request.args.get("wait")), state.settings.max_wait)
    with state.waits.admit(who().user_id, wait):  # a long-poll like any other: same caps
        return respond(output_service.read_outputs(state.store, who(), task_id, since, wait))


@bp.get("/stream/tasks")
def task_stream() -> Response:
    """Live rows of the first page of Tasks: new tasks appear on top, and rows change as tasks
    are dispatched, run (seen at the endpoints' heartbeats) and finish."""
    state, me = current(), who()
    r = state.store.r
    done, submitted = done_channel(me.user_id), submitted_channel(me.user_id)
    listener = live.Listener(r, [done, submitted])
    order: list[str] = []  # the ids on the page, newest first
    shown: dict[str, TaskRow] = {}

    def remember(rows: list[TaskRow]) -> None:
        del order[PAGE_SIZE:]
        on_page = set(order)
        shown.update((row.task_id, row) for row in rows if row.task_id in on_page)
        for gone in set(shown) - on_page:
            del shown[gone]
        # Only endpoints with unfinished tasks on the page: their heartbeats show running tasks.
        busy = {status_channel(row.endpoint_id) for row in shown.values() if not row.done}
        listener.unfollow(listener.channels - busy - {done, submitted})
        listener.follow(busy)

    def snapshot() -> Iterator[str]:
        rows = recent_tasks(r, me.user_id).rows
        order[:] = [row.task_id for row in rows]
        remember(rows)
        yield live.event("reset", {"html": "".join(row["html"] for row in render_rows(rows))})

    def on_wake(wake: live.Wake) -> Iterator[str]:
        changed: list[TaskRow] = []
        if submitted in wake.channels():
            fresh = read_rows(r, me.user_id, [i for i in recent_ids(r, me.user_id)[0] if i not in shown])
            order[:0] = [row.task_id for row in fresh]
            changed += reversed(fresh)  # oldest first: each new row goes on top
        finished = {i for data in wake.data_on(done) for i in data.split(",")} & set(shown)
        heartbeat = bool(wake.channels() - {done, submitted})
        unfinished = {i for i, row in shown.items() if not row.done} if heartbeat else set()
        changed += [row for row in read_rows(r, me.user_id, sorted(finished | unfinished))
                    if row.key != shown[row.task_id].key]
        remember(changed)
        if changed:
            yield live.event("rows", render_rows(changed))

    return live.stream(listener, snapshot, on_wake, live.lifetime())


__all__ = ["task_details"]

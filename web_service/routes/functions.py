"""``/v1/functions``: register, list, get, delete."""

from __future__ import annotations

import msgspec
from flask import Blueprint, Response, request

from fnserve import serialize, shell
from web_service.registry.models import Function
from web_service.rest_bodies.requests import FunctionRegistration
from web_service.rest_bodies.responses import Function as FunctionView, FunctionDeleted, FunctionList
from web_service.routes._http import body_as, identity, iso, require_identity, respond
from web_service.services import functions as service
from web_service.services.runtimes import resolve_runtime
from web_service.state import current
from web_service.validation import decode_base64, invalid

bp = Blueprint("functions", __name__)
bp.before_request(require_identity)


def function_view(fn: Function) -> FunctionView:
    return FunctionView(function_id=fn.id, name=fn.name, description=fn.description, strategy=fn.strategy,
                        python=fn.python, created_at=iso(fn.created_at), owner_id=fn.owner_id, runtime_id=fn.runtime_id)


@bp.post("/functions")
def register() -> Response:
    state = current()
    body = body_as(FunctionRegistration)
    if body.shell is not None:
        # A command-line template, plain JSON (no Python needed): {"command": "wc -l {path}", ...}
        if body.function is not None:
            raise invalid("function", "cannot be combined with shell: send one or the other")
        buf = serialize.serialize_shell(shell.spec_from_json(body.shell))
    elif body.function is None:
        raise invalid("function", "is required (base64 of a buffer made by fnserve.serialize), or send "
                      '"shell": {"command": "..."} for a shell function')
    else:
        buf = decode_base64(body.function, "function", state.settings.max_payload_bytes)
    runtime = body.runtime
    with state.sessions() as session:
        # The function's default runtime (id or name), checked now: a typo is a 404 here, not at submit.
        runtime_id = resolve_runtime(session, identity(), runtime, state.ownership).runtime_id if runtime else None
        fn = service.register_function(session, state.store, identity(), body.name, buf, body.description or "", runtime_id)
    return respond(function_view(fn), 201)


@bp.get("/functions")
def list_() -> Response:
    state = current()
    with state.sessions() as session:
        fns = service.list_functions(session, identity(), shared=request.args.get("shared", "").lower() in ("1", "true", "yes"))
    return respond(FunctionList(functions=[function_view(f) for f in fns]))


@bp.get("/functions/<function_id>")
def get(function_id: str) -> Response:
    state = current()
    with state.sessions() as session:
        fn = service.get_function(session, identity(), function_id)
        view = function_view(fn)
        if fn.strategy == serialize.SHELL:  # its template is data: show it, and what a task must pass
            spec = service.shell_spec(fn.body)
            view.shell = {**msgspec.structs.asdict(spec), "placeholders": shell.placeholders(spec.command)}
    return respond(view)


@bp.delete("/functions/<function_id>")
def delete(function_id: str) -> Response:
    state = current()
    with state.sessions() as session:
        service.delete_function(session, state.store, identity(), function_id, state.ownership)
    return respond(FunctionDeleted(function_id=function_id, deleted=True))

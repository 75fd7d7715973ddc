"""``/v1/objects``: the object store (large arguments, results and files by reference).

    POST   /v1/objects            {"size", "sha256"?, "ttl"?, "name"?} -> 201 the object's metadata
                                  (no sha256: the last chunk sends it as X-Checksum-SHA256)
                                  with "chunk_bytes" (largest chunk a PUT may carry)
    PUT    /v1/objects/ID/data    a chunk; header "Content-Range: bytes START-LAST/SIZE" (none:
                                  the whole object in one body) -> {"received", "complete", ...}
    GET    /v1/objects/ID         metadata: size, sha256, received, complete, expires
    GET    /v1/objects/ID/data    the bytes (HTTP Range requests resume a download); with
                                  ``?wait=S`` an object still being uploaded is streamed as its
                                  chunks arrive (at most S s of waiting for each next one)
    DELETE /v1/objects/ID

Callers: a user's bearer token, or a task's data token (``fnsd1.``; see
:mod:`web_service.object_rules`) acting for the task's owner while the task runs. Uploads are
sequential and resumable: after a broken connection read ``received`` and send from there.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, g, request, stream_with_context

from fnserve.errors import Unauthorized
from web_service.object_rules import (
    READ_TOKEN_PREFIX,
    ObjectMeta,
    Principal,
    check_object_id,
    check_readable,
    check_writer,
    data_token_live,
    data_token_task,
    finishing_upload,
    follow_wait,
    object_ttl,
    parse_content_range,
    mint_read_token,
    parse_range,
    read_principal,
    read_token_object,
)
from web_service.rest_bodies.requests import ObjectCreation
from web_service.rest_bodies.responses import ObjectDeleted, ObjectMetadata
from web_service.routes._http import body_as, check_address, require_identity, respond
from web_service.state import current
from web_service.task_store import task_key
from web_service.redis_replies import optional_texts

bp = Blueprint("objects", __name__)


@bp.before_request
def authenticate() -> None:
    """A task's data token, or else the usual user token."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    state = current()
    task_id = data_token_task(state.data_key, token) if scheme.lower() == "bearer" else None
    if task_id is None and token.startswith(READ_TOKEN_PREFIX):
        object_id = read_token_object(state.data_key, token)
        meta = state.objects.meta(object_id) if object_id and state.objects is not None else None
        if meta is None:
            check_address()
            raise Unauthorized("this read token is not valid (wrong signature, or its object is gone)",
                               code="invalid_token")
        g.principal = read_principal(meta.owner, meta.object_id)
        return
    if task_id is None:
        if token.startswith("fnsd1."):
            check_address()
            raise Unauthorized("this data token is not valid (wrong signature)", code="invalid_token")
        require_identity()
        g.principal = Principal(g.identity.user_id)
        return
    owner, task_state, finished, arg_ref = optional_texts(state.store.r.hmget(task_key(task_id), "owner", "state", "t_finished",
                                                                              "arg_ref"))
    object_id = (request.view_args or {}).get("object_id")
    if owner is None or not data_token_live(task_state, float(finished) if finished else None, time.time()) and not (
            object_id and state.objects is not None and finishing_upload(state.objects.meta(object_id), task_id)):
        check_address()
        raise Unauthorized(f"the data token of task {task_id} is no longer valid (the task finished)",
                           code="invalid_token")
    g.principal = Principal(owner, task_id=task_id, objects=frozenset({arg_ref}) if arg_ref else frozenset())


def _who() -> Principal:
    return g.principal  # type: ignore[no-any-return]


def _view(meta: ObjectMeta, chunk_bytes: int) -> ObjectMetadata:
    return ObjectMetadata(object_id=meta.object_id, size=meta.size, sha256=meta.sha256, received=meta.received,
                          complete=meta.complete, expires=meta.expires, chunk_bytes=chunk_bytes)


@bp.post("/objects")
def create_object() -> Response:
    state = current()
    assert state.objects is not None
    body = body_as(ObjectCreation)
    ttl = object_ttl(body.ttl, state.settings.object_ttl, state.settings.max_object_ttl)
    check_writer(_who())
    meta = state.objects.create(_who(), body.size, body.sha256, ttl, body.name)
    view = _view(meta, state.objects.chunk_bytes)
    # The creator may hand this out (a ProxyStore proxy carries it): it reads this object only.
    view.read_token = mint_read_token(state.data_key, meta.object_id)
    return respond(view, 201)


@bp.get("/objects/<object_id>")
def get_object(object_id: str) -> Response:
    state = current()
    assert state.objects is not None
    check_object_id(object_id)
    return respond(_view(state.objects.get(object_id, _who()), state.objects.chunk_bytes))


@bp.put("/objects/<object_id>/data")
def put_data(object_id: str) -> Response:
    state = current()
    assert state.objects is not None
    check_object_id(object_id)
    check_writer(_who())
    meta = state.objects.get(object_id, _who())
    start, end = parse_content_range(request.headers.get("Content-Range"), request.content_length, meta.size)
    # With a Content-Length the server's own input is read as is (WSGI bounds it to that length;
    # each chunk is exactly ``end - start`` bytes): Werkzeug's wrapper would copy every block
    # twice more. A chunked body goes through the wrapper, which enforces the request limit.
    body = request.environ["wsgi.input"] if request.content_length is not None else request.stream
    meta = state.objects.write_chunk(object_id, _who(), start, end, body, request.headers.get("X-Checksum-SHA256"))
    return respond(_view(meta, state.objects.chunk_bytes))


@bp.get("/objects/<object_id>/data")
def get_data(object_id: str) -> Response:
    state = current()
    assert state.objects is not None
    check_object_id(object_id)
    meta = state.objects.get(object_id, _who())
    wait = follow_wait(request.args.get("wait"))
    if wait is None or meta.complete:
        check_readable(meta)
    start, end = parse_range(request.headers.get("Range"), meta.size)
    resp = Response(_body(meta, start, end, wait), mimetype="application/octet-stream",
                    status=206 if (start, end) != (0, meta.size) else 200)
    resp.headers["Content-Length"] = str(end - start)
    resp.headers["Accept-Ranges"] = "bytes"
    resp.headers["X-Checksum-SHA256"] = meta.sha256
    if resp.status_code == 206:
        resp.headers["Content-Range"] = f"bytes {start}-{end - 1}/{meta.size}"
    return resp


def _body(meta: ObjectMeta, start: int, end: int, wait: float | None) -> Any:
    """What a download sends: the backend's blocks; for an object still being uploaded, its
    chunks as they are stored."""
    objects = current().objects
    assert objects is not None
    if not meta.complete:
        assert wait is not None
        return stream_with_context(objects.follow(meta.object_id, start, end, wait))
    return stream_with_context(objects.backend.read(meta.object_id, start, end))


@bp.delete("/objects/<object_id>")
def delete_object(object_id: str) -> Response:
    state = current()
    assert state.objects is not None
    check_object_id(object_id)
    check_writer(_who())
    state.objects.delete(object_id, _who())
    return respond(ObjectDeleted(object_id=object_id, deleted=True))


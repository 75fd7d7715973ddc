"""Functions and runtimes: the registry a user may use, with a function's source text where it
was registered as source (the service never loads code: it only reads the buffer's text)."""

from __future__ import annotations

import sqlalchemy as sa
from flask import render_template

from fnserve import serialize
from fnserve.errors import SerializationError
from web_service.dashboard.blueprint import bp, who
from web_service.dashboard.labels import usernames
from web_service.registry.models import Function
from web_service.services import access as access_service
from web_service.services import functions as function_service
from web_service.services import runtimes as runtime_service
from web_service.state import current

MAX_SOURCE_CHARS = 200_000


def source_text(buf: bytes) -> str | None:
    """The source of a ``source`` buffer (``<entry name>\\n<source>`` after the header), else None."""
    try:
        header = serialize.parse_header(buf)
    except SerializationError:
        return None
    if header.strategy != serialize.SOURCE:
        return None
    _, _, text = buf[header.length:].partition(b"\n")
    return text.decode("utf-8", errors="replace")[:MAX_SOURCE_CHARS]


@bp.get("/functions")
def functions() -> str:
    state, me = current(), who()
    with state.sessions() as session:
        fns = function_service.list_functions(session, me, shared=True)
        runtimes = runtime_service.list_runtimes(session, me, shared=True)
        owners = usernames(session, {f.owner_id for f in fns} | {r.owner_id for r in runtimes})
    runtime_names = {r.id: r.name for r in runtimes}
    return render_template("dashboard/functions.html", functions=fns, runtimes=runtimes, owners=owners,
                           runtime_names=runtime_names)


@bp.get("/functions/<function_id>")
def function(function_id: str) -> str:
    state, me = current(), who()
    with state.sessions() as session:
        fn = function_service.get_function(session, me, function_id)  # 404 / 403 as the REST route
        body = session.scalar(sa.select(Function.body).where(Function.id == fn.id))
        owners = usernames(session, {fn.owner_id})
        sharing = access_service.get_sharing(session, me, "function", fn.id) if fn.owner_id == me.user_id else None
        runtime = None
        if fn.runtime_id:
            runtime = next((r for r in runtime_service.list_runtimes(session, me, shared=True) if r.id == fn.runtime_id), None)
    return render_template("dashboard/function.html", fn=fn, source=source_text(body or b""), size=len(body or b""),
                           owners=owners, sharing=sharing, runtime=runtime)


__all__ = ["source_text"]

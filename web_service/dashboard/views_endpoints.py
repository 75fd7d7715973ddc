"""Endpoints: live state of the ones a user may use; runtimes, warm pools, failures, and for
owners the sharing and allowlist. Access goes through the same services as ``/v1/endpoints``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import Response, redirect, render_template, request, url_for

from web_service.dashboard import live
from web_service.dashboard.blueprint import bp, who
from web_service.dashboard.labels import names, usernames
from web_service.dashboard.usage_series import failures_since, recent_failures
from web_service.registry.models import Endpoint
from web_service.services import access as access_service
from web_service.services import endpoints as endpoint_service
from web_service.state import current
from web_service.task_store import done_channel, status_channel, submitted_channel
from web_service.usage import endpoint_totals

USE_DAYS = 7  # the owner's table of who used the endpoint covers this many days


@dataclass
class EndpointCard:
    """An endpoint with its live status, as a row or a detail panel shows it."""

    ep: Endpoint
    status: dict[str, Any]
    owner: str
    mine: bool
    failures_24h: int = 0
    runtimes: list[tuple[str, dict[str, int]]] = field(default_factory=list)

    @property
    def site(self) -> dict[str, Any]:
        return self.status.get("site") or {}


def card(ep: Endpoint, status: dict[str, Any], owners: dict[str, str], failures: dict[str, int]) -> EndpointCard:
    me = who()
    runtimes = sorted(((status.get("site") or {}).get("runtimes") or {}).items())
    return EndpointCard(ep, status, owners.get(ep.owner_id, ep.owner_id), ep.owner_id == me.user_id,
                        failures.get(ep.id, 0), runtimes)


def _visible(detail_id: str | None) -> tuple[list[Endpoint], dict[str, str], dict[str, int]]:
    """The endpoints a view shows (one, for a detail page), their owners' names and the
    caller's failures on them in the last day."""
    state, me = current(), who()
    with state.sessions() as session:
        if detail_id:
            eps = [endpoint_service.get_endpoint(session, me, detail_id)]
        else:
            eps = endpoint_service.list_endpoints(session, me, shared=True)
        owners = usernames(session, (ep.owner_id for ep in eps))
        failures = failures_since(session, me.user_id, datetime.now(timezone.utc) - timedelta(days=1))
    return eps, owners, failures


@bp.get("/")
def home() -> Response:
    return redirect(url_for("dashboard.endpoints"))  # type: ignore[return-value]


@bp.get("/endpoints")
def endpoints() -> str:
    eps, owners, failures = _visible(None)
    store = current().store
    cards = [card(ep, store.endpoint_status(ep.id), owners, failures) for ep in eps]
    return render_template("dashboard/endpoints.html", cards=cards)


@bp.get("/endpoints/<endpoint_id>")
def endpoint(endpoint_id: str) -> str:
    state, me = current(), who()
    eps, owners, failures = _visible(endpoint_id)
    ep = eps[0]
    sharing = allowlist = None
    allowed_names: dict[str, str] = {}
    with state.sessions() as session:
        fails = recent_failures(session, me.user_id, ep.id)
        use = None
        if ep.owner_id == me.user_id:
            sharing = access_service.get_sharing(session, me, "endpoint", ep.id)
            allowlist = access_service.get_allowlist(session, me, ep.id)
            allowed_names = names(session, me, allowlist.function_ids, ())
            until = datetime.now(timezone.utc)
            use = endpoint_totals(session, [ep.id], until - timedelta(days=USE_DAYS), until)[ep.id]
            owners.update(usernames(session, use["by_user"]))
    return render_template("dashboard/endpoint.html", card=card(ep, state.store.endpoint_status(ep.id), owners, failures),
                           failures=fails, sharing=sharing, allowlist=allowlist, allowed_names=allowed_names, use=use,
                           use_days=USE_DAYS, users=owners)


def render_card(c: EndpointCard, view: str) -> str:
    template = "dashboard/_endpoint_status.html" if view == "detail" else "dashboard/_endpoint_row.html"
    return render_template(template, card=c)


@bp.get("/stream/endpoints")
def endpoint_stream() -> Response:
    """Live rows of the Endpoints page, or (``?id=``) the status panel of one endpoint."""
    state, me = current(), who()
    detail_id = request.args.get("id") or None
    view = "detail" if detail_id else "row"
    eps, owners, failures = _visible(detail_id)
    by_id = {ep.id: ep for ep in eps}
    channels = {status_channel(e): e for e in by_id}
    own = {submitted_channel(me.user_id), done_channel(me.user_id)}
    listener = live.Listener(state.store.r, [*channels, *own])

    def render(ids: list[str]) -> Iterator[str]:
        yield live.event("rows", [{"id": i, "html": render_card(card(by_id[i], state.store.endpoint_status(i), owners, failures), view)}
                                  for i in ids])

    def on_wake(wake: live.Wake) -> Iterator[str]:
        # The caller's own submits and results move queues and in-flight counts everywhere.
        ids = list(by_id) if wake.channels() & own else [channels[c] for c in wake.channels() if c in channels]
        yield from render(ids)

    return live.stream(listener, lambda: render(list(by_id)), on_wake, live.lifetime())


__all__ = ["EndpointCard", "card", "render_card"]

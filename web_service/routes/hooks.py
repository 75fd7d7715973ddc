"""``POST /v1/hooks/{trigger_id}``: a webhook delivery, authenticated by its HMAC signature
(the trigger's secret; see :mod:`fnserve.webhooks`), not by a bearer token.

Refused deliveries (401 ``bad_signature``) count against the sender's address like bad tokens
do; accepted ones against the trigger's event rate (429 ``rate_limited``). The answer is 202
with the event id and its firings, or 200 with ``duplicate: true`` for an event already taken.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from fnserve import webhooks
from fnserve.errors import PayloadTooLarge, Unauthorized
from web_service.routes._http import check_address, respond
from web_service.routes.triggers import _recorded
from web_service.services import triggers as service
from web_service.state import current

bp = Blueprint("hooks", __name__)


@bp.post("/hooks/<trigger_id>")
def deliver(trigger_id: str) -> Response:
    state = current()
    check_address(cost=0)
    limit = state.settings.max_event_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"a webhook body may be at most {limit} bytes", details={"limit": limit})
    raw = request.get_data(cache=False)[: limit + 1]
    headers = {h: request.headers.get(h) for h in (webhooks.TIMESTAMP_HEADER, webhooks.SIGNATURE_HEADER, webhooks.EVENT_ID_HEADER)}
    with state.sessions() as session:
        try:
            rec = service.deliver_webhook(session, state.store, trigger_id, raw, headers, limit, state.ownership, state.quotas,
                                          limiter=state.trigger_limiter)
        except Unauthorized:
            check_address()
            raise
        return respond(_recorded(rec), 200 if rec.duplicate else 202)

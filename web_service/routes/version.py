"""``GET /v1/version`` and ``GET /v1/health``: no token needed."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Blueprint, Response

from fnserve.version import PROTOCOL_VERSION, __version__
from web_service.rest_bodies.responses import Health, Version, VersionLimits
from web_service.routes._http import check_address, respond
from web_service.state import ServiceState, current

bp = Blueprint("version", __name__)
# Public routes cost a Redis ping and a SQL query (health): rate-limited per client address.
bp.before_request(check_address)
log = logging.getLogger("fnserve.web.health")


@bp.get("/version")
def version() -> Response:
    settings = current().settings
    auth: dict[str, str] = {"mode": settings.auth_mode}
    if settings.auth_mode == "globus":
        # What `fnserve login` needs to start a Globus login for this service (all public).
        auth.update(scope=settings.globus_scope, native_client_id=settings.globus_native_client_id)
    # Clients size their submit requests by these (the SDK splits batches to fit them).
    limits = VersionLimits(max_payload_bytes=settings.max_payload_bytes, max_request_bytes=settings.max_request_bytes,
                           max_batch=settings.max_batch)
    return respond(Version(version=__version__, protocol_version=PROTOCOL_VERSION, api="v1", auth=auth, limits=limits))


@bp.get("/openapi.json")
def openapi() -> Response:
    """The REST contract (OpenAPI 3), built once per process: it is constant data."""
    global _openapi
    if _openapi is None:
        from web_service.openapi import document

        _openapi = respond(document()).get_data()
    return Response(_openapi, mimetype="application/json")


_openapi: bytes | None = None


def check_health(state: ServiceState) -> dict[str, bool]:
    """Whether Redis and the registry database answer (also shown on the dashboard)."""
    redis_ok = database_ok = True
    try:
        state.store.r.ping()
    except Exception as exc:  # noqa: BLE001 - health reports any failure, it never raises
        log.warning("health: redis unreachable: %s", type(exc).__name__)
        redis_ok = False
    try:
        with state.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - health reports any failure, it never raises
        log.warning("health: database unreachable: %s", type(exc).__name__)
        database_ok = False
    return {"redis": redis_ok, "database": database_ok}


@bp.get("/health")
def health() -> Response:
    checks = check_health(current())
    ok = all(checks.values())
    return respond(Health(status="ok" if ok else "unavailable", **checks), 200 if ok else 503)

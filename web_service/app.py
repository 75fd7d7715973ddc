"""The Flask application: ``create_app(settings)`` wires the registry, task store and routes."""

from __future__ import annotations

import logging

import redis
from flask import Flask, Response, request
from msgspec import UNSET
from werkzeug.exceptions import HTTPException

from fnserve.errors import FnserveError, ServiceUnavailable
from web_service.auth import Authenticator, GlobusAuthenticator, LocalTokenAuthenticator
from web_service.dashboard import register_dashboard
from web_service.log_safety import register_access_log
from web_service.metrics import register_metrics
from web_service.object_store import ObjectStore, load_data_key, object_backend
from web_service.quotas import QuotaChecker, RateLimiter
from web_service.registry.db import make_engine, make_session_factory, migrate
from web_service.rest_bodies.responses import Error, ErrorDetail
from web_service.routes import register_blueprints
from web_service.routes._http import respond
from web_service.services import OwnershipCache
from web_service.redis_client import redis_from_settings
from web_service.settings import Settings
from web_service.state import EXTENSION, ServiceState
from web_service.task_store import TaskStore
from web_service.validation import too_deep as validation_too_deep
from web_service.waits import WaitGate

log = logging.getLogger("fnserve.web")

# Werkzeug's HTTP errors, as stable codes.
_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def create_app(settings: Settings | None = None) -> Flask:
    """Build the REST service. Migrates the registry first unless ``settings.migrate_on_start``
    is false. Example (gunicorn uses :mod:`web_service.wsgi`)::

        app = create_app(Settings(database_url="sqlite:///registry.db", redis_url="redis://..."))
    """
    settings = settings or Settings.from_env()
    engine = make_engine(settings.database_url)
    if settings.migrate_on_start:
        migrate(engine)
    sessions = make_session_factory(engine)
    # No socket_timeout: long-polls legitimately sit on the connection for up to max_wait.
    # Each open long-poll holds a connection (redis-py 8's pool stops at 100 unless told).
    client = redis_from_settings(settings, socket_connect_timeout=5, health_check_interval=30,
                                 max_connections=settings.max_open_waits + 256)
    state = ServiceState(
        settings=settings, engine=engine, sessions=sessions,
        store=TaskStore(client, result_ttl=settings.result_ttl),
        authenticator=_authenticator(settings, sessions),
        ownership=OwnershipCache(settings.cache_seconds),
        quotas=QuotaChecker(client, settings.cache_seconds),
        limiter=RateLimiter(client, settings.rate_limit, settings.rate_burst),
        address_limiter=RateLimiter(client, settings.anon_rate_limit, settings.anon_rate_burst, scope="address"),
        waits=WaitGate(client, settings.max_waits_per_user, settings.max_open_waits),
        trigger_limiter=RateLimiter(client, settings.trigger_rate_limit, settings.trigger_rate_burst, scope="trigger"),
    )
    state.objects = ObjectStore(client, object_backend(settings), quota_bytes=settings.object_quota_bytes,
                                max_object_bytes=settings.max_object_bytes, chunk_bytes=settings.object_chunk_bytes)
    state.data_key = load_data_key(settings.data_key_file)
    app = Flask("web_service", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.extensions[EXTENSION] = state
    if settings.proxy_hops > 0:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops)  # type: ignore[method-assign]
    register_metrics(app, settings.metrics_token)  # first: its clock starts before other hooks run
    if settings.access_log:
        register_access_log(app)
    register_blueprints(app)
    register_dashboard(app, state)
    _register_error_handlers(app)
    return app


def _authenticator(settings: Settings, sessions: object) -> Authenticator:
    if settings.auth_mode == "local":
        return LocalTokenAuthenticator(sessions, settings.cache_seconds)  # type: ignore[arg-type]
    if settings.auth_mode == "globus":
        return GlobusAuthenticator(
            sessions, settings.globus_client_id, settings.globus_client_secret, settings.globus_scope,  # type: ignore[arg-type]
            cache_seconds=settings.cache_seconds,
        )
    raise ValueError(f"FNSERVE_AUTH_MODE={settings.auth_mode!r} is not supported; use 'local' or 'globus'")


def _error(code: str, message: str, status: int) -> Response:
    return respond(Error(error=ErrorDetail(code=code, message=message)), status)


def _error_body(exc: FnserveError) -> Error:
    return Error(error=ErrorDetail(code=exc.code, message=exc.message, details=exc.details or UNSET))


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(FnserveError)
    def fnserve_error(exc: FnserveError) -> Response:
        resp = respond(_error_body(exc), exc.http_status)
        if exc.http_status in (429, 503) and "retry_after" in exc.details:
            resp.headers["Retry-After"] = str(exc.details["retry_after"])
        elif exc.http_status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="fnserve"'
        return resp

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = _HTTP_CODES.get(status, (exc.name or "error").lower().replace(" ", "_"))
        message = exc.description or exc.name or "error"
        if status == 413:
            message = f"request body is larger than the limit of {app.config['MAX_CONTENT_LENGTH']} bytes"
        elif status == 404:
            message = f"no route {request.path}"
        elif status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        return _error(code, message, status)

    @app.errorhandler(RecursionError)
    def too_deep(exc: RecursionError) -> Response:
        # Only input nests this deep here (JSON bodies, arguments): the caller's to fix, not a 500.
        err = validation_too_deep()
        return respond(_error_body(err), err.http_status)

    @app.errorhandler(redis.ConnectionError)
    @app.errorhandler(redis.TimeoutError)
    def redis_down(exc: Exception) -> Response:
        log.error("redis unavailable during %s %s: %s", request.method, request.path, type(exc).__name__)
        err = ServiceUnavailable("the task store (Redis) is unavailable; retry shortly")
        return respond(_error_body(err), err.http_status)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        # The traceback stays in the server log (SQL parameters are hidden by the engine).
        log.exception("unexpected error in %s %s", request.method, request.path)
        return _error("internal_error", "internal error; the operator can find details in the service log", 500)

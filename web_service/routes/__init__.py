"""REST routes under ``/v1``: one blueprint per resource, thin over :mod:`web_service.services`."""

from flask import Flask


def register_blueprints(app: Flask) -> None:
    from web_service.routes import (
        access, completions, endpoints, functions, hooks, identity, objects, outputs, runtimes, tasks, triggers, version,
    )

    for module in (version, functions, endpoints, runtimes, tasks, completions, outputs, objects, access, identity, triggers, hooks):
        app.register_blueprint(module.bp, url_prefix="/v1")

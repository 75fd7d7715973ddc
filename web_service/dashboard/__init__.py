"""The web dashboard: Endpoints, Tasks, Functions and runtimes, Usage, and Operators pages,
served by the web service under ``/dashboard`` (see docs/dashboard.md).

Server-rendered Jinja2 templates, one small script and one stylesheet from ``static/`` (no CDN,
no build step), inline SVG charts, and live updates by server-sent events woken by the task
store's Redis channels. Pages read through the same service layer as the REST routes, so the
same access rules hold. Modules:

- :mod:`.blueprint`: the blueprint, session check, CSRF, security headers, error pages
- :mod:`.sessions`: sessions in Redis and the CSRF/cookie rules; :mod:`.login`: log in and out
- :mod:`.views_endpoints`, :mod:`.views_tasks`, :mod:`.views_registry`, :mod:`.views_usage`: pages
- :mod:`.live`: server-sent event streams; :mod:`.charts`: chart geometry (pure)
- :mod:`.task_list`, :mod:`.usage_series`, :mod:`.operator_stats`: what the pages read
"""

from __future__ import annotations

from flask import Flask, redirect

from web_service.state import ServiceState


def register_dashboard(app: Flask, state: ServiceState) -> None:
    """Mount the dashboard on ``app`` (and send ``/`` to it)."""
    from web_service.dashboard import login, views_endpoints, views_registry, views_tasks, views_usage  # noqa: F401 (routes)
    from web_service.dashboard.blueprint import bp, init_state
    from web_service.dashboard.formatting import FILTERS

    init_state(app, state)
    app.register_blueprint(bp)
    app.jinja_env.filters.update(FILTERS)
    app.add_url_rule("/", "root", lambda: redirect("/dashboard/"))


__all__ = ["register_dashboard"]

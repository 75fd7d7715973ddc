"""WSGI entry point: ``gunicorn -k gevent 'web_service.wsgi:app'`` (what ``python -m
web_service.server`` runs by default).

Long-polls stay open for up to ``FNSERVE_MAX_WAIT`` seconds: use gevent, or gthread with
``--threads`` at least 32 + ``FNSERVE_MAX_OPEN_WAITS`` (each allowed wait holds a thread), never
sync workers. Configuration comes from ``FNSERVE_*`` environment variables (see
:mod:`web_service.settings`).
"""

from web_service.app import create_app

app = create_app()

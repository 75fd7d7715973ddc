"""WSGI entry point: ``gunicorn -k gthread --threads 16 'web_service.wsgi:app'``.

Long-polls hold a thread each, so use threaded (gthread) or async workers, not sync ones.
Configuration comes from ``FNSERVE_*`` environment variables (see :mod:`web_service.settings`).
"""

from web_service.app import create_app

app = create_app()

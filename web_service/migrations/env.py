"""Alembic environment for the registry.

Normally run through :func:`web_service.registry.db.migrate`, which passes an open connection.
Operators can also run Alembic by hand::

    FNSERVE_DATABASE_URL=postgresql+psycopg://... alembic -c web_service/migrations/alembic.ini upgrade head
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

# Any constant: makes concurrent starts (several gunicorn workers) migrate one at a time.
_PG_LOCK_ID = 0x666E7365  # "fnse"


def _run(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=None, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_ID})
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from web_service.registry.db import make_engine
    from web_service.settings import Settings

    url = context.config.get_main_option("sqlalchemy.url") or os.environ.get("FNSERVE_DATABASE_URL") or Settings().database_url
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()

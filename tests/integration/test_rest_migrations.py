"""The registry's Alembic migrations, on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from web_service.registry.db import make_engine, migrate
from web_service.registry.models import Base


def test_migrations_create_the_schema_the_models_describe(database_url):
    migrate(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            assert {"users", "tokens", "functions", "endpoints", "alembic_version"} <= tables
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0007"
            # No difference between the hand-written migration and the ORM models.
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        engine.dispose()


def test_migrating_twice_is_harmless(database_url):
    migrate(database_url)
    migrate(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        engine.dispose()


def test_unique_usernames_and_token_hashes_are_enforced_by_the_database(database_url):
    migrate(database_url)
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO users (id, username, created_at) VALUES ('u1', 'ann', CURRENT_TIMESTAMP)"))
        with engine.begin() as conn:
            try:
                conn.execute(sa.text("INSERT INTO users (id, username, created_at) VALUES ('u2', 'ann', CURRENT_TIMESTAMP)"))
            except sa.exc.IntegrityError:
                pass
            else:
                raise AssertionError("duplicate username accepted")
    finally:
        engine.dispose()


def test_processes_starting_together_migrate_one_sqlite_file_once(tmp_path):
    """The web service and the forwarder start at the same moment and both migrate."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'registry.db'}"
    code = f"from web_service.registry.db import migrate; migrate({url!r})"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], "\n".join(errors)

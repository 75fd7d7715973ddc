"""Migration 0002 (access and accounting) upgrades a registry holding 0001 data, on SQLite and
PostgreSQL, keeping users, tokens and endpoints; and downgrades cleanly."""

from __future__ import annotations

import sqlalchemy as sa

from web_service.registry.db import make_engine, migrate


def test_upgrade_from_0001_keeps_data_and_adds_the_new_tables(database_url):
    migrate(database_url, "0001")
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO users (id, username, created_at) VALUES ('u1', 'ann', CURRENT_TIMESTAMP)"))
            conn.execute(sa.text(
                "INSERT INTO endpoints (id, owner_id, name, description, secret_hash, created_at) "
                "VALUES ('e1', 'u1', 'old', '', :h, CURRENT_TIMESTAMP)"), {"h": "0" * 64})
        migrate(database_url, "0002")  # this migration alone (later ones have their own tests)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0002"
            row = conn.execute(sa.text("SELECT name, curve_public_key, restrict_functions FROM endpoints")).one()
            assert row[0] == "old" and row[1] is None and not row[2]  # old endpoints: unrestricted, no key yet
            assert conn.execute(sa.text("SELECT username, globus_sub FROM users")).one() == ("ann", None)
            tables = set(sa.inspect(conn).get_table_names())
            assert {"groups", "group_members", "grants", "endpoint_allowed_functions", "quotas", "usage"} <= tables
        _downgrade(engine, "0001")  # and back
        with engine.connect() as conn:
            assert "grants" not in set(sa.inspect(conn).get_table_names())
            assert conn.execute(sa.text("SELECT name FROM endpoints")).scalar() == "old"
    finally:
        engine.dispose()


def _downgrade(engine, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from web_service.registry.db import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

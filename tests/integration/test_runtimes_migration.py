"""Migration 0003 (runtimes) upgrades a registry holding functions, and downgrades cleanly."""

from __future__ import annotations

import sqlalchemy as sa

from test_security_migration import _downgrade
from web_service.registry.db import make_engine, migrate


def test_upgrade_to_0003_keeps_functions_without_a_runtime_and_adds_runtimes(database_url):
    migrate(database_url, "0002")
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO users (id, username, created_at) VALUES ('u1', 'ann', CURRENT_TIMESTAMP)"))
            conn.execute(sa.text(
                "INSERT INTO functions (id, owner_id, name, description, strategy, python, body, body_sha256, created_at) "
                "VALUES ('f1', 'u1', 'old', '', 'source', '3.11', :b, :h, CURRENT_TIMESTAMP)"), {"b": b"x", "h": "0" * 64})
        migrate(database_url, "0003")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT name, runtime_id FROM functions")).one() == ("old", None)
            assert "runtimes" in set(sa.inspect(conn).get_table_names())
        _downgrade(engine, "0002")
        with engine.connect() as conn:
            assert "runtimes" not in set(sa.inspect(conn).get_table_names())
            assert conn.execute(sa.text("SELECT name FROM functions")).scalar() == "old"
    finally:
        engine.dispose()

